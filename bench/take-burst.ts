// Scenarios on libvirt's test hypervisor through the HTTP API (createApiServer on loopback, a real
// Reconciler, store on disk with synchronous=FULL). Used by bench/reconciler.ts.
import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { PoolPlan } from "../core/plan";
import { TokenAuth, newToken } from "../reconciler/api/auth";
import { createApiServer } from "../reconciler/api/server";
import type { DomainEvents } from "../reconciler/driver/events";
import type { VirshDriver } from "../reconciler/driver/libvirt-driver";
import { deployPool, removePool } from "../reconciler/local/deploy";
import { Reconciler } from "../reconciler/reconciler";
import { StateStore, type ClaimRequest } from "../reconciler/store/store";
import { ApiClient, recordingDriver, type Answer, type DriverCall } from "./api-load";

export interface Bench {
  readonly driver: VirshDriver;
  readonly events: DomainEvents;
}

export interface Setup {
  readonly client: ApiClient;
  readonly pool: string;
  readonly plan: PoolPlan;
  readonly reconciler: Reconciler;
  readonly store: StateStore;
  readonly calls: DriverCall[];
  readonly tokens: ReadonlyMap<string, string>;
  readonly take: (user: string, pool?: string) => Promise<Answer>;
  /** Per store method: calls and milliseconds spent (synchronous: the event loop waits). */
  readonly storeTime: Record<string, [number, number]>;
}

/** A fresh pool, store, reconciler and API server for one run; torn down after `body`. */
export async function withSetup<T>(
  b: Bench,
  o: {
    readonly size: number;
    readonly prestarted: number;
    readonly maxVmsPerUser: number;
    readonly users: readonly string[];
  },
  body: (s: Setup) => Promise<T>,
  wrapStore: (s: StateStore) => StateStore = (s) => s,
): Promise<T> {
  const tag = Math.random().toString(36).slice(2, 8);
  const pool = `Bench${tag}-???`;
  const plan = await deployPool(b.driver, {
    name: pool,
    template: { name: "t", version: 1, baseImagePath: "/images/base.qcow2", diskSizeGiB: 10, memoryMiB: 512, vcpus: 1 },
    size: o.size,
    prestarted: o.prestarted,
    maxVmsPerUser: o.maxVmsPerUser,
  });
  const dir = mkdtempSync(join(tmpdir(), "vmpools-bench-"));
  const store = StateStore.open(join(dir, "state.db"));
  const calls: DriverCall[] = [];
  const storeTime: Record<string, [number, number]> = {};
  const timed = new Proxy(store, {
    get(target, prop) {
      const value = (target as unknown as Record<string | symbol, unknown>)[prop];
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        const t = performance.now();
        try {
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        } finally {
          const e = (storeTime[String(prop)] ??= [0, 0]);
          e[0]++;
          e[1] += performance.now() - t;
        }
      };
    },
  });
  const reconciler = new Reconciler({
    driver: recordingDriver(b.driver, calls),
    store: wrapStore(timed),
    events: b.events,
    retry: { maxAttempts: 3, baseDelayMs: 50 },
    onlyPools: [pool],
  });
  const issued = o.users.map((u) => [u, newToken(u, "user")] as const);
  const tokens = new Map(issued.map(([u, t]) => [u, t.token]));
  let server: Server | undefined;
  const client = { current: undefined as ApiClient | undefined };
  try {
    await reconciler.start();
    await reconciler.idle();
    server = createApiServer(reconciler, new TokenAuth(issued.map(([, t]) => t.entry)));
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
    const url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    client.current = new ApiClient(url);
    const c = client.current;
    const take = (user: string, p = pool) => c.post(`/v1/pools/${encodeURIComponent(p)}/take`, tokens.get(user)!);
    return await body({ client: c, pool, plan, reconciler, store, calls, tokens, take, storeTime });
  } finally {
    await client.current?.close();
    server?.closeAllConnections();
    await new Promise((r) => (server ? server.close(r) : r(undefined)));
    await reconciler.stop();
    store.close();
    rmSync(dir, { recursive: true, force: true });
    await removePool(b.driver, plan);
  }
}

export interface BurstResult {
  readonly totalMs: number;
  readonly ok: readonly Answer[];
  readonly refused: ReadonlyMap<string, readonly Answer[]>;
  readonly other: readonly Answer[];
}

/** Sends every take at once; resolves when all are answered. */
export async function burst(s: Setup, users: readonly string[]): Promise<BurstResult> {
  const t0 = performance.now();
  const answers = await Promise.all(users.map((u) => s.take(u)));
  const totalMs = performance.now() - t0;
  const refused = new Map<string, Answer[]>();
  const ok: Answer[] = [];
  const other: Answer[] = [];
  for (const a of answers) {
    if (a.status === 201) ok.push(a);
    else if (a.status === 409 || a.status === 404) {
      const list = refused.get(a.body.error!) ?? [];
      list.push(a);
      refused.set(a.body.error!, list);
    } else other.push(a);
  }
  return { totalMs, ok, refused, other };
}

/**
 * The take path before group commit, as the baseline: every claim and every take's completion
 * its own transaction (and fsync), the pool's free members worked out for each claim.
 */
export function oneTransactionPerTake(store: StateStore): StateStore {
  return new Proxy(store, {
    get(target, prop) {
      if (prop === "claimMany") {
        return (requests: readonly ClaimRequest[], candidates: (pool: string) => readonly string[]) =>
          requests.map((r) => target.claim(r.pool, r.user, candidates(r.pool), r.maxPerUser, r.how));
      }
      if (prop === "completeIntents") return (ids: readonly string[]) => ids.map((id) => target.completeIntent(id));
      const value = (target as unknown as Record<string | symbol, unknown>)[prop];
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}
