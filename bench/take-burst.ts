// Scenarios on libvirt's test hypervisor through the HTTP API (createApiServer on loopback, a real
// Reconciler, store on disk with synchronous=FULL). Used by bench/reconciler.ts.
import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Worker } from "node:worker_threads";
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
  /** For bursts: started and answering before the burst, so its start-up is not timed. */
  readonly burstClient: BurstClient;
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
  let burstClient: BurstClient | undefined;
  try {
    await reconciler.start();
    await reconciler.idle();
    server = createApiServer(reconciler, new TokenAuth(issued.map(([, t]) => t.entry)));
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
    const url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    client.current = new ApiClient(url);
    burstClient = new BurstClient(url);
    await burstClient.ready();
    const c = client.current;
    const take = (user: string, p = pool) => c.post(`/v1/pools/${encodeURIComponent(p)}/take`, tokens.get(user)!);
    return await body({ client: c, burstClient, pool, plan, reconciler, store, calls, tokens, take, storeTime });
  } finally {
    await client.current?.close();
    await burstClient?.close();
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

// The burst client's thread. Each take on a connection of its own, as 1000 users' tools would
// open, written as one HTTP/1.1 request and its answer read up to its length (Content-Length or
// chunked), the connection kept open until the burst ends (as a keep-alive agent would). Raw
// sockets rather than node:http's client, which is the fairer floor: measured 2026-12-02 on this
// machine (2 cores), 1000 requests to a server answering each at once took 275-560 ms through
// the http client, sent one worker message per request, with the worker started inside the
// timing (the old floor), and 150-210 ms this way. That difference was the client's own work
// on the second core, not the server's; the server sees the same bytes either way.
const BURST_CLIENT = `
const { parentPort, workerData } = require("node:worker_threads");
const net = require("node:net");
const CRLF2 = Buffer.from("\\r\\n\\r\\n");
function answerOf(buf) {
  const end = buf.indexOf(CRLF2);
  if (end < 0) return undefined;
  const head = buf.subarray(0, end).toString("latin1");
  const status = Number(head.slice(9, 12));
  const rest = buf.subarray(end + 4);
  const length = /\\r\\ncontent-length: *(\\d+)/i.exec(head);
  if (length) return rest.length < Number(length[1]) ? undefined : { status, text: rest.subarray(0, Number(length[1])).toString("utf8") };
  if (!/\\r\\ntransfer-encoding: *chunked/i.test(head)) return undefined;
  const parts = [];
  for (let at = 0;;) {
    const eol = rest.indexOf("\\r\\n", at);
    if (eol < 0) return undefined;
    const size = parseInt(rest.subarray(at, eol).toString("latin1"), 16);
    if (size === 0) return rest.length < eol + 4 ? undefined : { status, text: Buffer.concat(parts).toString("utf8") };
    if (rest.length < eol + 2 + size + 2) return undefined;
    parts.push(rest.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}
parentPort.on("message", (m) => {
  if (m.ping) return parentPort.postMessage({ pong: true });
  const answers = new Array(m.requests.length);
  const sockets = [];
  let left = m.requests.length;
  const t0 = performance.now();
  m.requests.forEach(({ path, token }, i) => {
    const sentAt = performance.now();
    const socket = net.connect({ host: workerData.host, port: workerData.port });
    sockets.push(socket);
    socket.setNoDelay(true);
    socket.write("POST " + path + " HTTP/1.1\\r\\nhost: " + workerData.host + ":" + workerData.port +
      "\\r\\nauthorization: Bearer " + token + "\\r\\ncontent-type: application/json\\r\\ncontent-length: 2\\r\\n\\r\\n{}");
    let buf = Buffer.alloc(0);
    const done = (a) => {
      if (answers[i]) return;
      answers[i] = { ...a, sentAt: performance.timeOrigin + sentAt, ms: performance.now() - sentAt };
      if (--left > 0) return;
      const totalMs = performance.now() - t0;
      for (const s of sockets) s.destroy();
      parentPort.postMessage({ answers, totalMs });
    };
    socket.on("data", (chunk) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      const a = answerOf(buf);
      if (a) done(a);
    });
    socket.on("error", (e) => done({ error: e.message }));
    socket.on("close", () => done({ error: "closed before the whole answer" }));
  });
});
`;

/** A client for bursts on a thread of its own; see BURST_CLIENT. */
export class BurstClient {
  private readonly worker: Worker;

  constructor(base: URL) {
    this.worker = new Worker(BURST_CLIENT, {
      eval: true,
      workerData: { host: base.hostname, port: Number(base.port) },
    });
  }

  private ask<T>(message: unknown): Promise<T> {
    return new Promise((resolve, reject) => {
      const fail = (e: Error) => reject(e);
      this.worker.once("error", fail);
      this.worker.once("message", (m: T) => {
        this.worker.off("error", fail);
        resolve(m);
      });
      this.worker.postMessage(message);
    });
  }

  /** Resolves once the thread answers (its start-up is then behind it). */
  async ready(): Promise<void> {
    await this.ask({ ping: true });
  }

  /**
   * Sends every request at once; resolves when all are answered. `totalMs`: first request
   * written → last answer read, on the client's thread.
   */
  async send(requests: readonly { readonly path: string; readonly token: string }[]): Promise<{
    readonly totalMs: number;
    readonly answers: readonly Answer[];
  }> {
    const r = await this.ask<{
      totalMs: number;
      answers: { status?: number; text?: string; error?: string; sentAt: number; ms: number }[];
    }>({ requests });
    const answers = r.answers.map((a, i): Answer => {
      if (a.error !== undefined) throw new Error(`request ${i}: ${a.error}`);
      let body: Answer["body"];
      try {
        body = JSON.parse(a.text!) as Answer["body"];
      } catch (e) {
        throw new Error(`answer ${a.status} is not JSON: ${(e as Error).message}`);
      }
      return { status: a.status!, body, ms: a.ms, sentAt: a.sentAt - performance.timeOrigin };
    });
    return { totalMs: r.totalMs, answers };
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

/** Sends every take at once (BurstClient); resolves when all are answered. */
export async function burst(s: Setup, users: readonly string[]): Promise<BurstResult> {
  const path = `/v1/pools/${encodeURIComponent(s.pool)}/take`;
  const { totalMs, answers } = await s.burstClient.send(users.map((u) => ({ path, token: s.tokens.get(u)! })));
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
