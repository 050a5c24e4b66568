// The cluster reconciler at scale, on fakes (test/support/fake-driver.ts, no latency): 10 hosts
// with 1000 members each (10 pools of 1000, every pool on every host) against the baseline of
// one host with 1000 members, in the same run. Through the HTTP API as a user sees it:
//   npx ts-node --transpile-only bench/cluster.ts      (RUNS=5 by default)
// - start-up: Reconciler.start() until idle (leases, listing every host, recovery, first resync);
// - take p50/p99: sequential takes of prestarted members through the API (a replacement prestart
//   follows each, as in production);
// - resync: one full level-triggered resync (every host listed, rules applied);
// - takeover: a second reconciler starting on the same store and hosts once the first stopped
//   (what a standby does after winning the leadership; the leadership itself is PostgreSQL's,
//   measured in test/reconciler/leadership.test.ts and the HA test).
import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { planPool } from "../core/plan";
import { TokenAuth, newToken } from "../reconciler/api/auth";
import { createApiServer } from "../reconciler/api/server";
import { Reconciler } from "../reconciler/reconciler";
import { StateStore } from "../reconciler/store/store";
import { FakeDriver } from "../test/support/fake-driver";
import { deployMemberOnFake } from "../test/support/fake-pool";
import { ApiClient, median, min, quantile } from "./api-load";

const RUNS = Number(process.env.RUNS ?? 5);
const MEMBERS_PER_HOST = 1000;
const TAKES = 200;

interface Shape {
  readonly hosts: number;
  readonly pools: number;
}

interface Result {
  startMs: number;
  takeP50: number;
  takeP99: number;
  resyncMs: number;
  takeoverMs: number;
}

async function run(shape: Shape): Promise<Result> {
  const names = Array.from({ length: shape.hosts }, (_, i) => `h${i + 1}`);
  const peers = new Map<string, FakeDriver>();
  const sharedStorage = new Map<string, unknown>();
  const fakes = new Map(
    names.map((h) => {
      const f = new FakeDriver({ uri: `fake://${h}/system`, peers, sharedStorage });
      peers.set(`fake://${h}/system`, f);
      return [h, f] as const;
    }),
  );
  const poolNames: string[] = [];
  const size = (MEMBERS_PER_HOST * shape.hosts) / shape.pools;
  for (let p = 0; p < shape.pools; p++) {
    const plan = planPool({
      name: `P${p}-????`,
      template: {
        name: "t",
        version: 1,
        baseImagePath: "/images/base.qcow2",
        diskSizeGiB: 10,
        memoryMiB: 512,
        vcpus: 1,
      },
      size,
      prestarted: 10,
      maxVmsPerUser: 32767,
      maxVmsInPool: 10_000,
      cluster: { name: "bench", hosts: names.map((name) => ({ name, uri: `fake://${name}/system` })) },
    });
    poolNames.push(plan.pool.name);
    for (const vm of plan.members) await deployMemberOnFake(fakes.get(vm.host.name)!, vm);
  }
  const dir = mkdtempSync(join(tmpdir(), "vmpools-bench-cluster-"));
  const store = StateStore.open(join(dir, "state.db"));
  const make = () =>
    new Reconciler({
      hosts: names.map((name) => ({
        name,
        uri: `fake://${name}/system`,
        driver: fakes.get(name)!,
        events: fakes.get(name)!.events,
      })),
      store,
      retry: { maxAttempts: 3, baseDelayMs: 50 },
      resyncIntervalMs: 3_600_000,
    });
  const reconciler = make();
  let t = performance.now();
  await reconciler.start();
  await reconciler.idle();
  const startMs = performance.now() - t;

  const issued = newToken("bench", "user");
  const server: Server = createApiServer(reconciler, new TokenAuth([issued.entry]));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const client = new ApiClient(new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  const takes: number[] = [];
  for (let i = 0; i < TAKES; i++) {
    const a = await client.post(`/v1/pools/${encodeURIComponent(poolNames[i % poolNames.length]!)}/take`, issued.token);
    if (a.status !== 201) throw new Error(`take ${i}: ${a.status} ${JSON.stringify(a.body)}`);
    takes.push(a.ms);
    await reconciler.idle();
  }
  await client.close();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));

  t = performance.now();
  await reconciler.resync();
  const resyncMs = performance.now() - t;
  await reconciler.idle();
  await reconciler.stop();

  const standby = make();
  t = performance.now();
  await standby.start();
  await standby.idle();
  const takeoverMs = performance.now() - t;
  await standby.stop();
  store.close();
  for (const f of fakes.values()) await f.close();
  rmSync(dir, { recursive: true, force: true });
  return { startMs, takeP50: quantile(takes, 0.5), takeP99: quantile(takes, 0.99), resyncMs, takeoverMs };
}

async function main(): Promise<void> {
  const shapes: [string, Shape][] = [
    ["1 host × 1000 members (baseline)", { hosts: 1, pools: 1 }],
    ["10 hosts × 1000 members (10 pools of 1000)", { hosts: 10, pools: 10 }],
  ];
  const results = new Map<string, Result[]>(shapes.map(([n]) => [n, []]));
  // Interleaved, so a drift of the machine's speed hits both alike.
  for (let i = 0; i < RUNS; i++) for (const [name, shape] of shapes) results.get(name)!.push(await run(shape));
  const mm = (v: number[], digits = 1) => `${min(v).toFixed(digits)} / ${median(v).toFixed(digits)}`;
  const base = results.get(shapes[0]![0])!;
  console.log(
    `machine: ${cpus().length} x ${cpus()[0]?.model ?? "?"}, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}, ${RUNS} runs, min / median`,
  );
  console.log("| cluster | start-up (ms) | take p50 (ms) | take p99 (ms) | resync (ms) | takeover start (ms) |");
  console.log("|---|---:|---:|---:|---:|---:|");
  for (const [name] of shapes) {
    const r = results.get(name)!;
    const pick = (k: keyof Result) => r.map((x) => x[k]);
    console.log(
      `| ${name} | ${mm(pick("startMs"), 0)} | ${mm(pick("takeP50"))} | ${mm(pick("takeP99"))} | ${mm(pick("resyncMs"), 0)} | ${mm(pick("takeoverMs"), 0)} |`,
    );
  }
  const ratio = (k: keyof Result) => {
    const r = results.get(shapes[1]![0])!;
    return (median(r.map((x) => x[k])) / median(base.map((x) => x[k]))).toFixed(1);
  };
  console.log(
    `ratios to the baseline (medians): start-up ${ratio("startMs")}x, take p99 ${ratio("takeP99")}x, resync ${ratio("resyncMs")}x, takeover ${ratio("takeoverMs")}x (10x the members)`,
  );
}

void main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
