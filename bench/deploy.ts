// Deploy times through real Terraform on qemu:///system, with the provider stand-ins built by
// scripts/terraform-tools.sh (the real dmacvicar/libvirt cannot be had here, and libvirt's test
// hypervisor cannot take volume uploads, so the test driver is out). Run:
//   npx ts-node --transpile-only bench/deploy.ts [sizes for apply, default 10,100] [plan size, default 1000]
// Baseline, in the same run: the same member resources (overlay, NoCloud media volume, domain per
// member) without what vmpools adds (the plan-time host probe, the policy volume and its
// revision), i.e. what a user writing the resources by hand would apply.
import { readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { VmPoolProps } from "../core";
import { makeSite, prefixOf, siteProps, stackWith, type Site } from "../test/deploy/support";
import { requireLibvirtd } from "../test/support/libvirt";
import { TerraformProject } from "../test/support/terraform";

const RUNS = 3;
const applySizes = (process.argv[2] ?? "10,100").split(",").map(Number);
const planSize = Number(process.argv[3] ?? "1000");

const props = (site: Site, name: string, size: number): VmPoolProps => siteProps(site, name, { size });

/** The same pool's member resources alone, under its own names (the baseline). */
function baselineProject(dir: string, poolProps: VmPoolProps): TerraformProject {
  const baseline = new TerraformProject(dir, "bench");
  baseline.synth(stackWith(poolProps));
  const file = join(baseline.stackDir, "cdk.tf.json");
  const json = JSON.parse(readFileSync(file, "utf8"));
  delete json.data;
  delete json.output;
  delete json.removed;
  delete json.resource.terraform_data;
  for (const name of Object.keys(json.resource.libvirt_volume)) {
    if (name.includes("_policy_")) delete json.resource.libvirt_volume[name];
  }
  delete json.terraform.required_providers.external;
  delete json.provider.external;
  writeFileSync(file, JSON.stringify(json));
  return baseline;
}

const ms = async (work: () => Promise<unknown>) => {
  const t0 = performance.now();
  await work();
  return performance.now() - t0;
};
const stats = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return { min: sorted[0]!, median: sorted[Math.floor(sorted.length / 2)]! };
};
const fmt = (v: number) => `${(v / 1000).toFixed(2)} s`;

async function main(): Promise<void> {
  requireLibvirtd("qemu:///system");
  const site = makeSite("bench");
  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}, Node ${process.version}`);
  try {
    for (const size of applySizes) {
      const ours: number[] = [];
      const theirs: number[] = [];
      for (let run = 0; run < RUNS; run++) {
        const project = new TerraformProject(join(site.dir, `apply-${size}-${run}`), "bench");
        project.synth(stackWith(props(site, `${prefixOf(site.id)}a${size}r${run}-????`, size)));
        const baseline = baselineProject(
          join(site.dir, `base-${size}-${run}`),
          props(site, `${prefixOf(site.id)}b${size}r${run}-????`, size),
        );
        await project.init();
        await baseline.init();
        ours.push(await ms(() => project.apply()));
        await project.destroy();
        theirs.push(await ms(() => baseline.apply()));
        await baseline.destroy();
      }
      const o = stats(ours);
      const t = stats(theirs);
      console.log(
        `apply ${size} members: vmpools min ${fmt(o.min)} median ${fmt(o.median)}; ` +
          `baseline min ${fmt(t.min)} median ${fmt(t.median)}; ratio (median) ${(o.median / t.median).toFixed(2)}x`,
      );
    }

    const project = new TerraformProject(join(site.dir, `plan-${planSize}`), "bench");
    const synthMs = await ms(async () => project.synth(stackWith(props(site, `${prefixOf(site.id)}p-????`, planSize))));
    const baseline = baselineProject(
      join(site.dir, `plan-base-${planSize}`),
      props(site, `${prefixOf(site.id)}q-????`, planSize),
    );
    await project.init();
    await baseline.init();
    const planOurs: number[] = [];
    const planTheirs: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      planOurs.push(await ms(() => project.run(["plan", "-no-color", "-input=false"])));
      planTheirs.push(await ms(() => baseline.run(["plan", "-no-color", "-input=false"])));
    }
    const po = stats(planOurs);
    const pt = stats(planTheirs);
    console.log(
      `plan ${planSize} members, nothing deployed yet (synth ${fmt(synthMs)}): vmpools min ${fmt(po.min)} median ${fmt(po.median)}; ` +
        `baseline min ${fmt(pt.min)} median ${fmt(pt.median)}; ratio (median) ${(po.median / pt.median).toFixed(2)}x`,
    );

    // The plan a reviewer waits for on every pull request: the pool deployed, nothing changed.
    const applyMs = await ms(() => project.apply());
    const baseApplyMs = await ms(() => baseline.apply());
    const refreshOurs: number[] = [];
    const refreshTheirs: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      refreshOurs.push(await ms(() => project.run(["plan", "-no-color", "-input=false"])));
      refreshTheirs.push(await ms(() => baseline.run(["plan", "-no-color", "-input=false"])));
    }
    const ro = stats(refreshOurs);
    const rt = stats(refreshTheirs);
    console.log(
      `apply ${planSize} members: vmpools ${fmt(applyMs)}, baseline ${fmt(baseApplyMs)} (one run each)\n` +
        `plan ${planSize} members, deployed, no change: vmpools min ${fmt(ro.min)} median ${fmt(ro.median)}; ` +
        `baseline min ${fmt(rt.min)} median ${fmt(rt.median)}; ratio (median) ${(ro.median / rt.median).toFixed(2)}x`,
    );
    await project.destroy();
    await baseline.destroy();
  } finally {
    site.remove();
  }
}

main().catch((e: unknown) => {
  console.error(`deploy benchmark failed: ${(e as Error).message}`);
  process.exit(1);
});
