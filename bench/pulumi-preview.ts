// What a reviewer waits for on a pull request, Pulumi against cdktf, for the same pool: `pulumi
// preview` of a new 100- and 1000-member pool (the real CLI through the Automation API, the
// terraform-provider plugin, the provider stand-in, qemu:///system), next to `cdktf synth` +
// `terraform plan` of it (real Terraform, the same stand-in). Both probe the host as their plan
// runs. Nothing is deployed. Run:
//   npx ts-node --transpile-only bench/pulumi-preview.ts [sizes, default 100,1000]
import { join } from "node:path";
import { cpus, loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { VmPool } from "../engines/pulumi";
import { median, min } from "./api-load";
import { makeSite, prefixOf, siteProps, stackWith } from "../test/deploy/support";
import { requireLibvirtd } from "../test/support/libvirt";
import { openStack } from "../test/support/pulumi";
import { TerraformProject } from "../test/support/terraform";

const RUNS = Number(process.env.RUNS ?? 3);
const sizes = (process.argv[2] ?? "100,1000").split(",").map(Number);

const fmt = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const stats = (values: number[]) => ({ min: min(values), median: median(values) });

async function main(): Promise<void> {
  requireLibvirtd("qemu:///system");
  const site = makeSite("pbench");
  const load = () => loadavg()[0]!.toFixed(1);
  const loadBefore = load();
  const rows: string[] = [];
  try {
    for (const size of sizes) {
      const props = siteProps(site, `${prefixOf(site.id)}p${size}-????`, { size, prestarted: 0 });
      const pulumiMs: number[] = [];
      const cdktfMs: number[] = [];
      const stack = await openStack({
        project: "vmpools-bench",
        stack: `p${size}`,
        program: async () => {
          const pool = new VmPool("Pool", props, { assetDir: join(site.dir, `pulumi-assets-${size}`) });
          return { members: pool.memberNames };
        },
      });
      const project = new TerraformProject(join(site.dir, `cdktf-${size}`), "bench");
      try {
        project.synth(stackWith(props));
        await project.init();
        // Interleaved, so that load from elsewhere falls on both alike.
        for (let run = 0; run < RUNS; run++) {
          let t0 = performance.now();
          const preview = await stack.preview();
          pulumiMs.push(performance.now() - t0);
          const creates = preview.changeSummary.create ?? 0;
          if (creates < 2 * size) throw new Error(`pulumi preview of ${size} members planned only ${creates} creates`);
          t0 = performance.now();
          project.synth(stackWith(props));
          await project.run(["plan", "-no-color", "-input=false"]);
          cdktfMs.push(performance.now() - t0);
        }
      } finally {
        await stack.close();
      }
      const p = stats(pulumiMs);
      const c = stats(cdktfMs);
      rows.push(
        `| ${size} members | ${fmt(p.min)} / ${fmt(p.median)} | ${fmt(c.min)} / ${fmt(c.median)} | ${(p.median / c.median).toFixed(2)}x |`,
      );
    }
  } finally {
    site.remove();
  }
  console.log(
    `pulumi preview vs cdktf synth + terraform plan on ${cpus().length} x ${cpus()[0]?.model ?? "cpu"}, ` +
      `Node ${process.version}, ${RUNS} runs (min / median), load average ${loadBefore} → ${load()}\n`,
  );
  console.log(
    "| new pool | `pulumi preview` | `cdktf synth` + `terraform plan` | ratio (medians) |\n|---|---|---|---|",
  );
  for (const r of rows) console.log(r);
}

main().catch((e: unknown) => {
  console.error(`pulumi preview benchmark failed: ${(e as Error).stack ?? String(e)}`);
  process.exit(1);
});
