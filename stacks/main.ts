// The cdktf app (cdktf.json "app"): every example stack, synthesized by `npx cdktf synth`.
import { App } from "cdktf";
import { LinuxDesktopPoolStack } from "../examples/linux-desktop-pool";

const app = new App();
new LinuxDesktopPoolStack(app, "linux-desktop-pool");
app.synth();
