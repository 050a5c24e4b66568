// The same pool as Windows Server 2022 members joining a domain: per member an Unattend.xml ISO.
import { App, TerraformStack } from "cdktf";
import { SysprepConfig } from "vmpools/core";
import { VmPool } from "vmpools/cdktf";
import { BASE, benchPool, timed } from "./timing";

timed(() => {
  const app = new App();
  new VmPool(
    new TerraformStack(app, "bench"),
    "Bench",
    benchPool({
      template: {
        name: "ws2022",
        version: 1,
        baseImagePath: BASE,
        diskSizeGiB: 40,
        memoryMiB: 4096,
        vcpus: 2,
        operatingSystem: "windows-server-2022",
      },
      initialRun: {
        sysprep: new SysprepConfig({
          domain: { name: "addomain.local", user: "Sarah_Smith", password: "bench-only" },
          localAdministrator: { password: "bench-only" },
        }),
      },
    }),
  );
  return app;
});
