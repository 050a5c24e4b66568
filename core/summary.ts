import type { PoolPlan } from "./plan";

/** A short human-readable account of a pool plan, for the CLI and the README's main command. */
export function describePlan(plan: PoolPlan): string {
  const { pool, members } = plan;
  const lines: string[] = [];
  const range = members.length > 1 ? `${members[0]!.name} … ${members[members.length - 1]!.name}` : members[0]!.name;
  lines.push(`Pool ${pool.name}: ${members.length} members (${range})`);
  lines.push(
    `  type ${pool.type}${pool.stateful ? ", stateful" : ", stateless (reverted on return)"}, optimized for ${pool.optimizedFor}, ` +
      `max ${pool.maxVmsPerUser} per user${pool.deleteProtection ? ", delete protection on" : ""}`,
  );
  lines.push(
    `  template ${pool.template.name} v${pool.template.version}: ${pool.template.vcpus} vCPU, ${pool.template.memoryMiB} MiB, ` +
      `${pool.template.diskSizeGiB} GiB ${pool.storage.format} disk on ${pool.template.baseImagePath}`,
  );
  const pools = pool.storage.candidates.map((c) => c.name).join(", ");
  lines.push(
    pool.storage.autoSelectTarget && pool.storage.candidates.length > 1
      ? `  disks: storage pool picked at plan time by most free space among ${pools}`
      : `  disks: storage pool ${pool.storage.candidates[0]!.name}`,
  );
  const prestart = members.filter((m) => m.prestartCandidate).map((m) => m.name);
  lines.push(
    pool.prestarted > 0
      ? `  prestarted: ${pool.prestarted} kept up and idle by the reconciler (first picks: ${prestart.join(", ")})`
      : "  prestarted: none (members start when taken)",
  );
  if (pool.spiceProxy) lines.push(`  SPICE proxy override: ${pool.spiceProxy}`);
  const first = members[0]!.configMedia;
  if (first?.kind === "sysprep") {
    lines.push(
      `  initial run: sysprep answer file on ${first.device} per member, ComputerName ${first.computerName} …`,
    );
  } else if (first?.kind === "cloud-init") {
    lines.push("  initial run: cloud-init NoCloud disk per member (own hostname and instance-id)");
  }
  const perHost = new Map<string, number>();
  for (const m of members) perHost.set(m.host.name, (perHost.get(m.host.name) ?? 0) + 1);
  lines.push(`  hosts: ${[...perHost].map(([h, n]) => `${h} (${n})`).join(", ")}`);
  lines.push("  members:");
  for (const m of members) {
    const disks = m.disks.map((d) => `${d.targetDev}=${d.volumeName}`).join(" ");
    lines.push(
      `    ${m.name.padEnd(20)} host ${m.host.name}  hostname ${m.hostname}  ${disks}${m.prestartCandidate ? "  [prestart]" : ""}`,
    );
  }
  for (const w of plan.warnings) lines.push(`  warning: ${w}`);
  return lines.join("\n");
}
