// The README's main command: synthesize the example stacks (as `cdktf synth` does) and print
// what each pool will create and where the Terraform JSON is.
import { App } from "cdktf";
import { join, relative } from "node:path";
import { describePlan } from "../core";
import { POOL_FILE_SUFFIX, VmPool, readStackDir } from "../engines/cdktf";
import { LinuxDesktopPoolStack } from "../examples/linux-desktop-pool";
import { WindowsServerPoolStack } from "../examples/windows-server-pool";

const outdir = process.env.VMPOOLS_OUTDIR ?? "cdktf.out";
const app = new App({ outdir });
const stacks = [
  new LinuxDesktopPoolStack(app, "linux-desktop-pool"),
  new WindowsServerPoolStack(app, "windows-server-pool"),
];
app.synth();

for (const stack of stacks) {
  const dir = join(outdir, "stacks", stack.node.id);
  const json = readStackDir(dir) as { resource: Record<string, Record<string, unknown>> };
  const counts = Object.entries(json.resource)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([type, r]) => `${Object.keys(r).length} ${type}`);
  for (const pool of stack.node.findAll().filter((c): c is VmPool => c instanceof VmPool)) {
    console.log(`\n${describePlan(pool.plan)}`);
  }
  console.log(`Stack ${stack.node.id}: ${counts.join(", ")}`);
  console.log(
    `Terraform JSON: ${relative(process.cwd(), dir)}/{cdk.tf.json,*${POOL_FILE_SUFFIX}}  (deploy with: npx cdktf deploy ${stack.node.id})`,
  );
}
