// The cdktf app (cdktf.json "app"): every example stack, synthesized by `npx cdktf synth`.
import { App } from "cdktf";
import { LinuxDesktopPoolStack } from "../examples/linux-desktop-pool";
import { WindowsServerPoolStack } from "../examples/windows-server-pool";

const app = new App();
new LinuxDesktopPoolStack(app, "linux-desktop-pool");
new WindowsServerPoolStack(app, "windows-server-pool");
app.synth();
