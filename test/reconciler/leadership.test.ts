// One active reconciler per store: processes contending for the PostgreSQL leadership, a takeover
// after kill -9, a lost connection, fencing of a store whose term has passed, and the SQLite
// sidecar lock.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { PostgresLeadership, SqliteLeadership } from "../../reconciler/store/leader";
import { LeadershipLostError, PostgresStateStore } from "../../reconciler/store/postgres";
import { adminQuery, createTestDatabase } from "./pg-support";

const fixture = (name: string): string => join(__dirname, "fixtures", name);

/** A database per test: leadership locks are per database, so tests cannot see each other's. */
let pg: ReturnType<typeof createTestDatabase> | undefined;
const cleanups: (() => unknown)[] = [];
beforeEach(() => {
  pg = createTestDatabase();
});
afterEach(async () => {
  try {
    for (const c of cleanups.splice(0).reverse()) await c();
  } finally {
    pg?.drop(); // also after a failed clean-up: no database is left behind
  }
});

const leadership = (): PostgresLeadership => {
  const l = new PostgresLeadership(pg!.url, { pollMs: 200, checkMs: 500 });
  cleanups.push(() => l.release());
  return l;
};

/** Terminates the sessions of `application` on this test's database; how many there were. */
const terminate = (application: string): number => {
  const name = new URL(pg!.url).pathname.slice(1);
  return adminQuery(
    pg!.url,
    `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${name}' AND application_name = '${application}'`,
  ).length;
};

interface Worker {
  readonly child: ChildProcessWithoutNullStreams;
  /** Resolves with the first line that matches, after the lines seen so far. */
  readonly line: (pattern: RegExp, timeoutMs: number) => Promise<string>;
  readonly seen: () => readonly string[];
}

function startWorker(): Worker {
  const child = spawn(process.execPath, [fixture("leader-worker.js"), pg!.url]);
  child.stderr.pipe(process.stderr);
  cleanups.push(() => child.kill("SIGKILL"));
  const seen: string[] = [];
  const waiters: { pattern: RegExp; resolve: (l: string) => void }[] = [];
  createInterface({ input: child.stdout }).on("line", (l) => {
    seen.push(l);
    for (const w of waiters.splice(0)) {
      if (w.pattern.test(l)) w.resolve(l);
      else waiters.push(w);
    }
  });
  return {
    child,
    seen: () => seen,
    line: (pattern, timeoutMs) =>
      new Promise((resolve, reject) => {
        const already = seen.find((l) => pattern.test(l));
        if (already !== undefined) return resolve(already);
        const timer = setTimeout(
          () => reject(new Error(`no line ${pattern} within ${timeoutMs} ms: ${seen}`)),
          timeoutMs,
        );
        waiters.push({ pattern, resolve: (l) => (clearTimeout(timer), resolve(l)) });
      }),
  };
}

const termOf = (line: string): number => Number(/^leader (\d+)$/.exec(line)![1]);

describe("PostgreSQL leadership between processes", () => {
  it("has exactly one leader; after kill -9 of it the standby leads within 10 s, with a newer term", async () => {
    const workers = [startWorker(), startWorker()];
    await Promise.all(workers.map((w) => w.line(/^standby$/, 20_000)));
    const first = await Promise.race(workers.map((w) => w.line(/^leader /, 20_000).then((l) => ({ w, l }))));
    const other = workers.find((w) => w !== first.w)!;
    // The other keeps standing by (it polls every 500 ms: it would have taken a free lock by now).
    await new Promise((r) => setTimeout(r, 2000));
    expect(other.seen().filter((l) => l.startsWith("leader"))).toEqual([]);

    const killedAt = Date.now();
    first.w.child.kill("SIGKILL");
    const second = await other.line(/^leader /, 10_000);
    const takeoverMs = Date.now() - killedAt;
    console.log(`standby took over ${takeoverMs} ms after kill -9 of the leader`);
    expect(takeoverMs).toBeLessThan(10_000);
    expect(termOf(second)).toBeGreaterThan(termOf(first.l));
  });

  it("hands over at once when the leader releases", async () => {
    const a = startWorker();
    await a.line(/^leader /, 20_000);
    const b = startWorker();
    await b.line(/^standby$/, 20_000);
    a.child.stdin.write("release\n");
    await a.line(/^released$/, 10_000);
    const releasedAt = Date.now();
    await b.line(/^leader /, 5_000);
    expect(Date.now() - releasedAt).toBeLessThan(2_000);
  });
});

describe("PostgreSQL leadership in one process", () => {
  it("tryAcquire answers undefined while another leads, the term once it is free", async () => {
    const a = leadership();
    const b = leadership();
    const term = await a.tryAcquire();
    expect(term).toBeGreaterThan(0);
    expect(a.term).toBe(term);
    expect(await b.tryAcquire()).toBeUndefined();
    expect(b.term).toBeUndefined();
    await a.release();
    expect(a.term).toBeUndefined();
    expect(await b.tryAcquire()).toBe(term! + 1);
  });

  it("emits lost within seconds when its connection is terminated, and a standby takes over", async () => {
    const a = leadership();
    await a.acquire();
    const lost = new Promise<Error>((resolve) => a.once("lost", resolve));
    const standby = leadership();
    const taken = standby.acquire();
    const killedAt = Date.now();
    expect(terminate("vmpools-leader")).toBeGreaterThanOrEqual(1);
    const error = await lost;
    const lostMs = Date.now() - killedAt;
    console.log(`leader learnt of its terminated connection after ${lostMs} ms`);
    expect(lostMs).toBeLessThan(5_000);
    expect(error.message).toMatch(/lost the leadership of term \d+/);
    expect(a.term).toBeUndefined();
    // The standby's session was terminated too (same application name); it reconnects and leads.
    expect(await taken).toBeGreaterThan(0);
  });

  it("emits lost when its connection stops answering (the check times out), freeing the lock", async () => {
    const a = new PostgresLeadership(pg!.url, { pollMs: 200, checkMs: 300, checkTimeoutMs: 1000 });
    cleanups.push(() => a.release());
    await a.acquire();
    const name = new URL(pg!.url).pathname.slice(1);
    const [backend] = adminQuery(
      pg!.url,
      `SELECT pid FROM pg_stat_activity WHERE datname = '${name}' AND application_name = 'vmpools-leader'`,
    );
    const pid = Number(backend!.pid);
    // A server that hangs: its backend process stopped, the socket open, nothing answered.
    process.kill(pid, "SIGSTOP");
    const resume = () => {
      try {
        process.kill(pid, "SIGCONT");
      } catch {
        // Gone already: it ended the session once resumed.
      }
    };
    cleanups.push(resume);
    const stoppedAt = Date.now();
    const error = await new Promise<Error>((resolve) => a.once("lost", resolve));
    const lostMs = Date.now() - stoppedAt;
    console.log(`leader learnt of its unanswering connection after ${lostMs} ms`);
    expect(error.message).toMatch(/did not answer within 1000 ms/);
    expect(lostMs).toBeLessThan(3_000);
    resume();
    // It closed its session, so the lock is free for a standby.
    const b = leadership();
    expect(await b.acquire()).toBeGreaterThan(0);
  });

  it("acquire gives up when its signal aborts", async () => {
    const a = leadership();
    await a.acquire();
    const b = leadership();
    const controller = new AbortController();
    const waiting = b.acquire({ signal: controller.signal });
    setTimeout(() => controller.abort(new Error("shutting down")), 300);
    await expect(waiting).rejects.toThrow("shutting down");
    expect(b.term).toBeUndefined();
  });
});

describe("fencing", () => {
  it("refuses every write of a store whose leader term has passed, and writes nothing", async () => {
    const a = leadership();
    const termA = await a.acquire();
    const old = PostgresStateStore.open(pg!.url, { leaderTerm: termA });
    cleanups.push(() => old.close());
    expect(old.claim("p", "alice", ["vm-1"], 1)).toMatchObject({ vm: "vm-1" });

    // The old leader's lock connection breaks (it might be paused meanwhile); a standby takes over.
    const lost = new Promise<Error>((resolve) => a.once("lost", resolve));
    terminate("vmpools-leader");
    await lost;
    const b = leadership();
    const termB = await b.acquire();
    expect(termB).toBeGreaterThan(termA);

    // Its store connection still works, but the term it was opened with is over.
    const writes: [string, () => unknown][] = [
      ["claim", () => old.claim("p", "bob", ["vm-2"], 1)],
      ["release", () => old.release("p", "vm-1")],
      ["beginIntent", () => old.beginIntent("revert", "p", "vm-1")],
      ["setConsoleOptions", () => old.setConsoleOptions("p", "alice", { fullScreen: true })],
      ["detachPool", () => old.detachPool("p")],
    ];
    for (const [name, write] of writes) {
      let error: unknown;
      try {
        write();
      } catch (e) {
        error = e;
      }
      expect([name, error]).toEqual([name, expect.any(LeadershipLostError)]);
      expect((error as LeadershipLostError).currentTerm).toBe(termB);
    }
    // Reads still answer; nothing of the refused writes is there.
    expect(old.assignments().map((a) => a.vm)).toEqual(["vm-1"]);
    expect(old.consoleOptions("p", "alice")).toBeUndefined();
    expect(old.pendingIntents()).toHaveLength(1);

    // The new leader's store writes.
    const current = PostgresStateStore.open(pg!.url, { leaderTerm: termB });
    cleanups.push(() => current.close());
    expect(current.claim("p", "bob", ["vm-1", "vm-2"], 1)).toMatchObject({ vm: "vm-2" });
  });
});

describe("SQLite leadership", () => {
  it("lets one process-local holder lead at a time through the sidecar lock, counting terms", async () => {
    const dir = mkdtempSync(join(tmpdir(), "vmpools-leader-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, "state.db");
    const a = new SqliteLeadership(path);
    const b = new SqliteLeadership(path, { pollMs: 50 });
    cleanups.push(
      () => a.release(),
      () => b.release(),
    );
    const term = await a.tryAcquire();
    expect(term).toBe(1);
    expect(await b.tryAcquire()).toBeUndefined();
    const taken = b.acquire();
    await a.release();
    expect(await taken).toBe(2);
    expect(await a.tryAcquire()).toBeUndefined();
  });

  it("always leads an in-memory store", async () => {
    expect(await new SqliteLeadership(":memory:").tryAcquire()).toBe(1);
  });
});
