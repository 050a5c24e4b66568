// The cluster on real libvirt hosts (test/support/cluster-hosts.ts: libvirtd instances in
// network namespaces on this machine, qemu+tcp, one shared storage pool) with tiny real guests:
//   npx ts-node --transpile-only bench/cluster-hosts.ts      (RUNS=3 by default)
// - take p50 / p99 through the HTTP API of sequential takes of prestarted members (each followed
//   by its replacement prestart), 3 hosts against the baseline of 1 host, in the same run;
// - live migration of an idle tiny guest (booted, then doing nothing) through the API's admin
//   migrate, h1 ↔ h2, as a user sees it (request → answer) and as qemu reports it (the job).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { planPool } from "../core/plan";
import { TokenAuth, newToken } from "../reconciler/api/auth";
import { createApiServer } from "../reconciler/api/server";
import { DomainEvents } from "../reconciler/driver/events";
import { VirshDriver } from "../reconciler/driver/libvirt-driver";
import { Reconciler } from "../reconciler/reconciler";
import { StateStore } from "../reconciler/store/store";
import { ensureGuest, guestCmdline } from "../test/guest/guest";
import { startTestCluster } from "../test/support/cluster-hosts";
import { deployQemuMember, tinyPoolProps } from "../test/support/qemu-pool";
import { ApiClient, median, min, quantile } from "./api-load";

const RUNS = Number(process.env.RUNS ?? 3);
const TAKES = 6;
const MIGRATIONS = 3;

interface Result {
  takeP50: number;
  takeP99: number;
  migrateMs: number[];
  jobMs: number[];
}

async function run(hostCount: number): Promise<Result> {
  const g = ensureGuest();
  const cluster = await startTestCluster({ hosts: hostCount, name: `bench${hostCount}` });
  const drivers = new Map(cluster.hosts.map((h) => [h.name, new VirshDriver({ uri: h.uri })]));
  const events = cluster.hosts.map((h) => new DomainEvents({ uri: h.uri }));
  const dir = mkdtempSync(join(tmpdir(), "vmpools-bench-hosts-"));
  const base = join(cluster.imageDir, "base.raw");
  writeFileSync(base, Buffer.alloc(1024 * 1024));
  const plan = planPool(
    tinyPoolProps(base, "Bench-??", {
      size: 8,
      prestarted: 2,
      maxVmsPerUser: 8,
      cluster: { name: "bench", hosts: cluster.hosts.map((h) => ({ name: h.name, uri: h.uri })) },
    }),
  );
  for (const vm of plan.members) {
    const d = drivers.get(vm.host.name)!;
    await d.refreshStoragePool(cluster.storagePool);
    await deployQemuMember(d, cluster.storagePool, base, vm, () => ({
      directKernelBoot: {
        kernelPath: g.kernelPath,
        initrdPath: g.initrdPath,
        cmdline: guestCmdline({ kind: "read-marker" }, { stay: true }),
      },
    }));
  }
  const store = StateStore.open(join(dir, "state.db"));
  const reconciler = new Reconciler({
    hosts: cluster.hosts.map((h, i) => ({
      name: h.name,
      uri: h.uri,
      driver: drivers.get(h.name)!,
      events: events[i]!,
      unsafeMigration: true,
    })),
    store,
    retry: { maxAttempts: 3, baseDelayMs: 200 },
    resyncIntervalMs: 3_600_000,
  });
  const user = newToken("bench", "user");
  const root = newToken("root", "admin");
  let server: Server | undefined;
  let client: ApiClient | undefined;
  try {
    await reconciler.start();
    await reconciler.idle();
    server = createApiServer(reconciler, new TokenAuth([user.entry, root.entry]));
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
    client = new ApiClient(new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
    const takes: number[] = [];
    const taken: string[] = [];
    for (let i = 0; i < TAKES; i++) {
      const a = await client.post(`/v1/pools/${encodeURIComponent("Bench-??")}/take`, user.token);
      if (a.status !== 201) throw new Error(`take ${i}: ${a.status} ${JSON.stringify(a.body)}`);
      takes.push(a.ms);
      taken.push(a.body.vm!);
      await reconciler.idle();
    }
    const migrateMs: number[] = [];
    const jobMs: number[] = [];
    if (hostCount > 1) {
      const vm = taken[0]!;
      // Idle: booted and doing nothing (give the guest time to finish booting).
      await new Promise((r) => setTimeout(r, 15_000));
      for (let i = 0; i < MIGRATIONS; i++) {
        const from = reconciler.status().pools[0]!.members.find((m) => m.name === vm)!.host;
        const to = from === "h1" ? "h2" : "h1";
        const t = performance.now();
        await reconciler.migrate("Bench-??", vm, to);
        migrateMs.push(performance.now() - t);
        const job = await drivers.get(to)!.session.run(["domjobinfo", "--completed", "--domain", vm]);
        const total = /Time elapsed:\s+(\d+)\s+ms/.exec(job);
        if (total) jobMs.push(Number(total[1]));
      }
    }
    return { takeP50: quantile(takes, 0.5), takeP99: quantile(takes, 0.99), migrateMs, jobMs };
  } finally {
    await client?.close();
    server?.closeAllConnections();
    await new Promise((r) => (server ? server.close(r) : r(undefined)));
    await reconciler.stop();
    store.close();
    for (const e of events) await e.close();
    for (const d of drivers.values()) await d.close();
    await cluster.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const results = new Map<number, Result[]>([
    [1, []],
    [3, []],
  ]);
  for (let i = 0; i < RUNS; i++) for (const n of results.keys()) results.get(n)!.push(await run(n));
  const mm = (v: number[]) => `${min(v).toFixed(1)} / ${median(v).toFixed(1)}`;
  console.log(
    `machine: ${cpus().length} x ${cpus()[0]?.model ?? "?"}, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}, ${RUNS} runs, min / median`,
  );
  console.log("| real hosts | take p50 (ms) | take p99 (ms) |");
  console.log("|---|---:|---:|");
  for (const [n, r] of results)
    console.log(`| ${n} | ${mm(r.map((x) => x.takeP50))} | ${mm(r.map((x) => x.takeP99))} |`);
  const r3 = results.get(3)!;
  const base = median(results.get(1)!.map((x) => x.takeP99));
  console.log(`take p99, 3 hosts vs 1 (medians): ${(median(r3.map((x) => x.takeP99)) / base).toFixed(2)}x`);
  const all = r3.flatMap((x) => x.migrateMs);
  const jobs = r3.flatMap((x) => x.jobMs);
  console.log(
    `live migration of an idle tiny guest (${all.length} migrations): request → answer ${mm(all)} ms; qemu's job ${jobs.length ? mm(jobs) : "—"} ms`,
  );
}

void main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
