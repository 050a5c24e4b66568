// Latency of the persistent virsh session vs one virsh process per call, and listDomains over
// 1000 members, on libvirt's test hypervisor. Run: npx ts-node --transpile-only bench/driver.ts
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { promisify } from "node:util";
import { renderMetadataXml, type MemberMetadata } from "../core/metadata";
import { VirshDriver } from "../reconciler/driver/libvirt-driver";

const URI = process.env.VIRSH_URI ?? "test+unix:///default";
const run = promisify(execFile);

function summary(samples: readonly number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!.toFixed(3);
  return `p50 ${at(0.5)} ms  p99 ${at(0.99)} ms  (n=${s.length})`;
}

async function timed(n: number, once: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await once();
    out.push(performance.now() - t);
  }
  return out;
}

const member = (index: number): MemberMetadata => ({
  pool: "BenchPool",
  cluster: "local",
  index,
  templateName: "tiny",
  templateVersion: 1,
  baseImagePath: "/var/lib/libvirt/images/tiny.qcow2",
  baseImageFormat: "qcow2",
  diskFormat: "qcow2",
  type: "automatic",
  stateful: false,
  prestarted: 10,
  maxVmsPerUser: 1,
  deleteProtection: false,
  allowedHosts: [],
  migrationMode: "migratable",
  autoConverge: "inherit",
  compression: "inherit",
});

async function main(): Promise<void> {
  const driver = new VirshDriver({ uri: URI });
  const session = driver.session;
  try {
    await session.run(["echo", "warm-up"]);
    console.log(`virsh session vs process per call on ${URI}`);
    console.log(`  session echo (no RPC)        ${summary(await timed(2000, () => session.run(["echo", "x"])))}`);
    console.log(`  session domstate (1 RPC)     ${summary(await timed(2000, () => driver.domainState("test")))}`);
    console.log(`  session's own stats          ${JSON.stringify(session.latencyStats())}`);
    const spawned = await timed(200, () => run("virsh", ["-q", "-c", URI, "domstate", "--domain", "test"]));
    console.log(`  virsh process per domstate   ${summary(spawned)}`);
    let t = performance.now();
    await Promise.all(Array.from({ length: 2000 }, () => driver.domainState("test")));
    console.log(`  2000 domstate pipelined      ${((performance.now() - t) / 2000).toFixed(3)} ms each`);

    const prefix = `vmp-bench-${randomBytes(3).toString("hex")}`;
    const names = Array.from({ length: 1000 }, (_, i) => `${prefix}-${String(i + 1).padStart(4, "0")}`);
    t = performance.now();
    await Promise.all(
      names.map((name, i) =>
        driver.defineDomain(
          `<domain type="test"><name>${name}</name><memory unit="KiB">1024</memory><os><type>hvm</type></os>` +
            `<metadata>${renderMetadataXml(member(i + 1))}</metadata></domain>`,
        ),
      ),
    );
    console.log(`  define 1000 domains          ${(performance.now() - t).toFixed(0)} ms`);
    try {
      const times: number[] = [];
      for (let i = 0; i < 5; i++) {
        t = performance.now();
        const domains = await driver.listDomains();
        times.push(performance.now() - t);
        const members = domains.filter((d) => d.name.startsWith(prefix) && d.metadataXml);
        if (members.length !== 1000) throw new Error(`listDomains saw ${members.length} of 1000 members`);
      }
      console.log(`  listDomains, 1000 members    ${times.map((x) => x.toFixed(0)).join(" / ")} ms (5 runs)`);
      t = performance.now();
      const bare = await driver.listDomains({ metadata: false });
      console.log(`  same without metadata        ${(performance.now() - t).toFixed(1)} ms (${bare.length} domains)`);
    } finally {
      t = performance.now();
      await Promise.all(names.map((name) => driver.undefineDomain(name)));
      console.log(`  undefine 1000 domains        ${(performance.now() - t).toFixed(0)} ms`);
    }
  } finally {
    await driver.close();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
