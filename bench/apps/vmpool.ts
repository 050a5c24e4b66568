// VmPool of BENCH_SIZE Linux members (per member: qcow2 overlay, NoCloud ISO volume, domain).
import { App, TerraformStack } from "cdktf";
import { VmPool } from "vmpools/cdktf";
import { BASE, SIZE, timed } from "./timing";

timed(() => {
  const app = new App();
  const stack = new TerraformStack(app, "bench");
  new VmPool(stack, "Bench", {
    name: "Bench-????",
    size: SIZE,
    maxVmsInPool: Math.max(SIZE, 1000),
    template: { name: "debian-12", version: 1, baseImagePath: BASE, diskSizeGiB: 10, memoryMiB: 1024, vcpus: 2 },
  });
  return app;
});
