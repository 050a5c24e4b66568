// VmPool of BENCH_SIZE Linux members (per member: qcow2 overlay, NoCloud ISO volume, domain).
import { App, TerraformStack } from "cdktf";
import { VmPool } from "vmpools/cdktf";
import { benchPool, timed } from "./timing";

timed(() => {
  const app = new App();
  new VmPool(new TerraformStack(app, "bench"), "Bench", benchPool());
  return app;
});
