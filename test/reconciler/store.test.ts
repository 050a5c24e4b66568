import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import Database from "better-sqlite3";
import fc from "fast-check";
import {
  NotHolderError,
  SCHEMA_VERSION,
  SchemaTooNewError,
  StateStore,
  type Assignment,
  type ClaimResult,
} from "../../reconciler/store/store";
import type { StateStoreApi } from "../../reconciler/store/api";
import { openStateStore } from "../../reconciler/store/open";
import { createTestDatabase, freshSchemaUrl } from "./pg-support";

const fixture = (name: string): string => join(__dirname, "fixtures", name);

let dir: string;
let n = 0;
const dbFile = (): string => join(dir, `store-${++n}.db`);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "vmpools-store-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const VMS = ["vm-1", "vm-2", "vm-3"] as const;

/** PostgreSQL: a database of this file run's own, dropped at the end; a fresh schema per store. */
let pg: ReturnType<typeof createTestDatabase> | undefined;
beforeAll(() => {
  pg = createTestDatabase();
});
afterAll(() => pg?.drop());

/** A store that each test closes; :memory: unless a file is asked for. */
const stores: StateStoreApi[] = [];
const openAt = (location: string): StateStoreApi => {
  const s = openStateStore(location);
  stores.push(s);
  return s;
};
const open = (path = ":memory:"): StateStoreApi => openAt(path);
afterEach(() => {
  for (const s of stores.splice(0)) s.close(); // a no-op for a store the test closed itself
});

/** The behavioural tests run against both stores. */
const KINDS = [
  {
    name: "SQLite",
    /** A location of a fresh, empty store that dies with the test. */
    fresh: (): string => ":memory:",
    /** A location of a fresh store that outlives a close, for reopening and other processes. */
    lasting: (): string => dbFile(),
  },
  {
    name: "PostgreSQL",
    fresh: (): string => freshSchemaUrl(pg!.url),
    lasting: (): string => freshSchemaUrl(pg!.url),
  },
] as const;

const vmOf = (r: ClaimResult): string => {
  if ("refused" in r) throw new Error(`claim refused: ${r.refused}`);
  return r.vm;
};

describe("open and schema versions", () => {
  it("creates a WAL file at the current schema version", () => {
    const path = dbFile();
    open(path).close();
    const raw = new Database(path, { readonly: true });
    expect(raw.pragma("user_version", { simple: true })).toBe(SCHEMA_VERSION);
    expect(raw.pragma("journal_mode", { simple: true })).toBe("wal");
    raw.close();
  });

  it("upgrades a version-1 file and keeps its rows", () => {
    const path = dbFile();
    // The version-1 schema as it shipped, frozen here so that editing migration 1 is caught.
    const v1 = new Database(path);
    v1.exec(`
      CREATE TABLE assignments (
        pool TEXT NOT NULL, vm TEXT NOT NULL, user TEXT NOT NULL, since INTEGER NOT NULL,
        how TEXT NOT NULL CHECK (how IN ('user', 'admin')), PRIMARY KEY (pool, vm)
      ) STRICT, WITHOUT ROWID;
      CREATE INDEX assignments_by_user ON assignments (user, pool);
      CREATE TABLE intents (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('take', 'return', 'revert', 'prestart', 'detach')),
        pool TEXT NOT NULL, vm TEXT NOT NULL, user TEXT,
        state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER, last_error TEXT,
        created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL
      ) STRICT;
      INSERT INTO assignments VALUES ('p', 'vm-2', 'bob', 1000, 'admin');
      INSERT INTO intents (id, kind, pool, vm, user, state, created_at, updated_at)
        VALUES ('i-1', 'take', 'p', 'vm-2', 'bob', 'pending', 1000, 1000);
      PRAGMA user_version = 1;
    `);
    v1.close();

    const s = open(path);
    expect(s.holder("p", "vm-2")).toEqual({
      pool: "p",
      vm: "vm-2",
      user: "bob",
      since: 1000,
      how: "admin",
      adminAccess: false,
    });
    expect(s.pendingIntents().map((i) => i.id)).toEqual(["i-1"]);
    s.setConsoleOptions("p", "bob", { usbAutoShare: false });
    expect(s.consoleOptions("p", "bob")).toEqual({ usbAutoShare: false });
    expect(vmOf(s.claim("p", "carol", VMS, 1))).toBe("vm-1");
    s.close();
    const raw = new Database(path, { readonly: true });
    expect(raw.pragma("user_version", { simple: true })).toBe(SCHEMA_VERSION);
    raw.close();
  });

  it("refuses a file from a newer release, naming both versions, and leaves it untouched", () => {
    const path = dbFile();
    const future = new Database(path);
    future.exec(`CREATE TABLE from_the_future (x); PRAGMA user_version = ${SCHEMA_VERSION + 1};`);
    future.close();

    let error: unknown;
    try {
      StateStore.open(path);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(SchemaTooNewError);
    expect((error as Error).message).toContain(`schema version ${SCHEMA_VERSION + 1}`);
    expect((error as Error).message).toContain(`up to ${SCHEMA_VERSION}`);
    expect((error as Error).message).toContain(path);

    const raw = new Database(path, { readonly: true });
    expect(raw.pragma("user_version", { simple: true })).toBe(SCHEMA_VERSION + 1);
    expect(raw.prepare("SELECT name FROM sqlite_schema WHERE name = 'assignments'").get()).toBeUndefined();
    raw.close();
  });
});

describe.each(KINDS)("$name store", ({ fresh, lasting }) => {
  const open = (location = fresh()): StateStoreApi => openAt(location);

  it("keeps data across close and reopen", () => {
    const path = lasting();
    const s = open(path);
    vmOf(s.claim("p", "alice", VMS, 1));
    s.setConsoleOptions("p", "alice", { fullScreen: true });
    s.close();
    const again = open(path);
    expect(again.holder("p", "vm-1")?.user).toBe("alice");
    expect(again.consoleOptions("p", "alice")).toEqual({ fullScreen: true });
  });

  describe("claim", () => {
    it("hands out the first free candidate in preference order and records a pending take intent", () => {
      const s = open();
      const before = Date.now();
      const r = s.claim("p", "alice", ["vm-3", "vm-1"], 2);
      if ("refused" in r) throw new Error("refused");
      expect(r.vm).toBe("vm-3");

      const a = s.holder("p", "vm-3")!;
      expect(a).toMatchObject({ pool: "p", vm: "vm-3", user: "alice", how: "user", adminAccess: false });
      expect(a.since).toBeGreaterThanOrEqual(before);

      expect(s.intent(r.intentId)).toMatchObject({
        kind: "take",
        pool: "p",
        vm: "vm-3",
        user: "alice",
        state: "pending",
        attempts: 0,
        nextAttemptAt: null,
        lastError: null,
      });
      expect(s.pendingIntents().map((i) => i.id)).toEqual([r.intentId]);
    });

    it("skips candidates someone already holds", () => {
      const s = open();
      expect(vmOf(s.claim("p", "alice", VMS, 1))).toBe("vm-1");
      expect(vmOf(s.claim("p", "bob", VMS, 1))).toBe("vm-2");
    });

    it("refuses with none-free when every candidate is held, without an intent", () => {
      const s = open();
      vmOf(s.claim("p", "alice", ["vm-1"], 1));
      expect(s.claim("p", "bob", ["vm-1"], 1)).toEqual({ refused: "none-free" });
      expect(s.claim("p", "bob", [], 1)).toEqual({ refused: "none-free" });
      expect(s.pendingIntents()).toHaveLength(1);
    });

    it("refuses with limit once the user holds maxPerUser VMs in that pool", () => {
      const s = open();
      vmOf(s.claim("p", "alice", VMS, 2));
      vmOf(s.claim("p", "alice", VMS, 2));
      expect(s.claim("p", "alice", VMS, 2)).toEqual({ refused: "limit" });
      // The limit is per pool and per user.
      expect(vmOf(s.claim("q", "alice", VMS, 2))).toBe("vm-1");
      expect(vmOf(s.claim("p", "bob", VMS, 2))).toBe("vm-3");
      expect(s.heldBy("alice", "p")).toHaveLength(2);
    });

    it("scopes VM names to their pool", () => {
      const s = open();
      vmOf(s.claim("p", "alice", ["vm-1"], 1));
      expect(vmOf(s.claim("q", "bob", ["vm-1"], 1))).toBe("vm-1");
    });

    it("records an admin take with the admin-access flag and accepts an unlimited maxPerUser", () => {
      const s = open();
      VMS.forEach(() => vmOf(s.claim("p", "root", VMS, Infinity, "admin")));
      expect(s.heldBy("root").map((a) => [a.how, a.adminAccess])).toEqual([
        ["admin", true],
        ["admin", true],
        ["admin", true],
      ]);
    });

    it.each([0, -1, 1.5, NaN])("rejects maxPerUser %p", (max) => {
      expect(() => open().claim("p", "alice", VMS, max)).toThrow(RangeError);
    });
  });

  describe("release, holder, assignments, heldBy", () => {
    it("frees a held VM once and reports whether it was held", () => {
      const s = open();
      const vm = vmOf(s.claim("p", "alice", VMS, 1));
      expect(s.release("p", vm)).toBe(true);
      expect(s.holder("p", vm)).toBeUndefined();
      expect(s.release("p", vm)).toBe(false);
      expect(s.release("p", "vm-never", "alice")).toBe(false);
    });

    it("lets a user return only their own VM", () => {
      const s = open();
      const vm = vmOf(s.claim("p", "alice", VMS, 1));
      let error: unknown;
      try {
        s.release("p", vm, "mallory");
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(NotHolderError);
      expect(error).toMatchObject({ pool: "p", vm, holder: "alice", requestedBy: "mallory" });
      // The message is shown to mallory, so it must not name the holder.
      expect((error as Error).message).not.toContain("alice");
      expect(s.holder("p", vm)?.user).toBe("alice");
      expect(s.release("p", vm, "alice")).toBe(true);
    });

    it("lists assignments by pool and VM, filtered by pool or user", () => {
      const s = open();
      vmOf(s.claim("q", "alice", ["vm-9"], 5));
      vmOf(s.claim("p", "bob", ["vm-2"], 5));
      vmOf(s.claim("p", "alice", ["vm-1"], 5));
      const key = (as: readonly Assignment[]): string[] => as.map((a) => `${a.pool}/${a.vm}:${a.user}`);
      expect(key(s.assignments())).toEqual(["p/vm-1:alice", "p/vm-2:bob", "q/vm-9:alice"]);
      expect(key(s.assignments("p"))).toEqual(["p/vm-1:alice", "p/vm-2:bob"]);
      expect(key(s.assignments("none"))).toEqual([]);
      expect(key(s.heldBy("alice"))).toEqual(["p/vm-1:alice", "q/vm-9:alice"]);
      expect(key(s.heldBy("alice", "q"))).toEqual(["q/vm-9:alice"]);
      expect(key(s.heldBy("nobody"))).toEqual([]);
    });

    it("marks admin access on a held VM only", () => {
      const s = open();
      const vm = vmOf(s.claim("p", "alice", VMS, 1));
      expect(s.markAdminAccess("p", vm)).toBe(true);
      expect(s.holder("p", vm)).toMatchObject({ how: "user", adminAccess: true });
      expect(s.markAdminAccess("p", "vm-3")).toBe(false);
    });
  });

  describe("intents", () => {
    it("persists a pending intent with its user, and without one", () => {
      const s = open();
      const a = s.beginIntent("revert", "p", "vm-1");
      const b = s.beginIntent("return", "p", "vm-2", "alice");
      expect(s.intent(a)).not.toHaveProperty("user");
      expect(s.intent(b)).toMatchObject({ kind: "return", user: "alice", state: "pending" });
      expect(s.pendingIntents().map((i) => i.id)).toEqual([a, b]);
      expect(s.intent("nope")).toBeUndefined();
    });

    it("completes once; completing again is a no-op, an unknown id an error", () => {
      const s = open();
      const id = s.beginIntent("prestart", "p", "vm-1");
      expect(s.completeIntent(id)).toBe(true);
      expect(s.intent(id)?.state).toBe("done");
      expect(s.completeIntent(id)).toBe(false);
      expect(s.pendingIntents()).toEqual([]);
      expect(() => s.completeIntent("nope")).toThrow(/unknown intent nope/);
    });

    it("retries a failed attempt later, then gives up when no retry time is given", () => {
      const s = open();
      const id = s.beginIntent("revert", "p", "vm-1");
      const retryAt = Date.now() + 60_000;
      expect(s.failIntent(id, "qemu-img: lock held", retryAt)).toMatchObject({
        state: "pending",
        attempts: 1,
        nextAttemptAt: retryAt,
        lastError: "qemu-img: lock held",
      });
      expect(s.pendingIntents().map((i) => i.id)).toEqual([id]);
      expect(s.pendingIntents(retryAt - 1)).toEqual([]);
      expect(s.pendingIntents(retryAt).map((i) => i.id)).toEqual([id]);

      const given = s.failIntent(id, "still locked", null);
      expect(given).toMatchObject({ state: "failed", attempts: 2, nextAttemptAt: null, lastError: "still locked" });
      expect(given.updatedAt).toBeGreaterThanOrEqual(given.createdAt);
      expect(s.pendingIntents()).toEqual([]);
      expect(() => s.failIntent(id, "again", null)).toThrow(/already failed/);
      expect(() => s.failIntent("nope", "x", null)).toThrow(/unknown intent/);
    });

    it("lists an intent due immediately (no retry time) for any dueBy", () => {
      const s = open();
      const id = s.beginIntent("take", "p", "vm-1", "alice");
      expect(s.pendingIntents(0).map((i) => i.id)).toEqual([id]);
    });

    it("prunes finished intents older than the cutoff and keeps pending ones", () => {
      const s = open();
      const done = s.beginIntent("take", "p", "vm-1");
      const failed = s.beginIntent("revert", "p", "vm-2");
      const pending = s.beginIntent("return", "p", "vm-3");
      s.completeIntent(done);
      s.failIntent(failed, "boom", null);
      expect(s.pruneIntents(0)).toBe(0);
      expect(s.pruneIntents(Date.now() + 1)).toBe(2);
      expect(s.intent(done)).toBeUndefined();
      expect(s.intent(failed)).toBeUndefined();
      expect(s.intent(pending)?.state).toBe("pending");
    });
  });

  describe("host maintenance", () => {
    it("keeps the hosts an admin put in maintenance across reopening, each once, until taken out", () => {
      const location = lasting();
      const s = open(location);
      expect(s.hostsInMaintenance()).toEqual(new Map());
      const before = Date.now();
      expect(s.setHostMaintenance("kvm2", true)).toBe(true);
      expect(s.setHostMaintenance("kvm2", true)).toBe(false);
      expect(s.setHostMaintenance("kvm3", false)).toBe(false);
      s.close();
      const again = open(location);
      const hosts = again.hostsInMaintenance();
      expect([...hosts.keys()]).toEqual(["kvm2"]);
      expect(hosts.get("kvm2")).toBeGreaterThanOrEqual(before);
      expect(again.setHostMaintenance("kvm2", false)).toBe(true);
      expect(again.hostsInMaintenance()).toEqual(new Map());
      again.close();
    });
  });

  describe("console options", () => {
    it("remembers the latest options per pool and user", () => {
      const s = open();
      expect(s.consoleOptions("p", "alice")).toBeUndefined();
      s.setConsoleOptions("p", "alice", { fullScreen: true, usbAutoShare: true, monitors: 2 });
      s.setConsoleOptions("p", "alice", { fullScreen: false, hotkeys: { releaseCursor: "shift+f12" } });
      s.setConsoleOptions("q", "alice", { fullScreen: true });
      expect(s.consoleOptions("p", "alice")).toEqual({ fullScreen: false, hotkeys: { releaseCursor: "shift+f12" } });
      expect(s.consoleOptions("q", "alice")).toEqual({ fullScreen: true });
      expect(s.consoleOptions("p", "bob")).toBeUndefined();
    });

    it("rejects a non-object at the database too", () => {
      expect(() => open().setConsoleOptions("p", "alice", [true] as never)).toThrow(/check constraint/i);
    });
  });

  describe("conditions, spare volumes, policy documents", () => {
    it("sets, re-words (keeping since), lists in order and clears member conditions", async () => {
      const s = open();
      s.setCondition("p", "vm-2", "revert-needed", "overlay gone");
      s.setCondition("p", "vm-1", "prestart-gave-up", "3 attempts");
      s.setCondition("p", "vm-1", "revert-needed", "admin wrote to it");
      const first = s.conditions().find((c) => c.vm === "vm-1" && c.condition === "revert-needed")!;
      await new Promise((r) => setTimeout(r, 5));
      s.setCondition("p", "vm-1", "revert-needed", "admin wrote to it again");
      expect(s.conditions().map((c) => [c.vm, c.condition, c.reason])).toEqual([
        ["vm-1", "prestart-gave-up", "3 attempts"],
        ["vm-1", "revert-needed", "admin wrote to it again"],
        ["vm-2", "revert-needed", "overlay gone"],
      ]);
      expect(s.conditions().find((c) => c.vm === "vm-1" && c.condition === "revert-needed")!.since).toBe(first.since);
      s.clearCondition("p", "vm-1", "revert-needed");
      expect(s.conditions().map((c) => `${c.vm}:${c.condition}`)).toEqual([
        "vm-1:prestart-gave-up",
        "vm-2:revert-needed",
      ]);
      // Detaching forgets a VM's conditions.
      s.forgetVm("p", "vm-1");
      expect(s.conditions().map((c) => c.vm)).toEqual(["vm-2"]);
    });

    it("remembers a spare overlay with its size until dropped; re-adding replaces it", () => {
      const s = open();
      expect(s.spareVolume("default", "spare-1")).toBeUndefined();
      s.addSpareVolume("default", "spare-1", "/var/lib/base.qcow2", 196_608);
      s.addSpareVolume("default", "spare-1", "/var/lib/base-2.qcow2", 2 ** 40 + 1);
      expect(s.spareVolume("default", "spare-1")).toEqual({
        backingPath: "/var/lib/base-2.qcow2",
        allocationBytes: 2 ** 40 + 1,
      });
      expect(s.spareVolume("other", "spare-1")).toBeUndefined();
      s.dropSpareVolume("default", "spare-1");
      expect(s.spareVolume("default", "spare-1")).toBeUndefined();
    });

    it("keeps the newest policy document per pool", () => {
      const s = open();
      expect(s.policyDocuments()).toEqual(new Map());
      s.savePolicyDocument("p", { pool: "p", maxPerUser: 1 } as never);
      s.savePolicyDocument("p", { pool: "p", maxPerUser: 2 } as never);
      s.savePolicyDocument("q", { pool: "q", nested: { a: [1, "x"] } } as never);
      expect(s.policyDocuments()).toEqual(
        new Map<string, unknown>([
          ["p", { pool: "p", maxPerUser: 2 }],
          ["q", { pool: "q", nested: { a: [1, "x"] } }],
        ]),
      );
    });

    it("counts intents by state and lists names in byte order", () => {
      const s = open();
      s.completeIntent(s.beginIntent("take", "p", "vm-1"));
      s.failIntent(s.beginIntent("revert", "p", "vm-2"), "x", null);
      s.beginIntent("return", "p", "vm-3");
      expect(s.intentCounts()).toEqual({ pending: 1, done: 1, failed: 1 });
      // Byte order as in SQLite (upper case first), whatever a database's locale would say.
      for (const vm of ["b", "B", "a", "_z", "ä"]) vmOf(s.claim("p", "alice", [vm], 10));
      expect(s.assignments("p").map((a) => a.vm)).toEqual(["B", "_z", "a", "b", "ä"]);
    });
  });

  describe("detach", () => {
    it("forgetVm drops the holder and cancels the VM's pending work except the detach itself", () => {
      const s = open();
      const claim = s.claim("p", "alice", ["vm-1"], 1);
      if ("refused" in claim) throw new Error("refused");
      const other = s.beginIntent("revert", "p", "vm-2");
      const detach = s.beginIntent("detach", "p", "vm-1");
      expect(s.forgetVm("p", "vm-1")).toBe(true);
      expect(s.holder("p", "vm-1")).toBeUndefined();
      expect(s.intent(claim.intentId)).toMatchObject({ state: "failed", lastError: expect.stringMatching(/detached/) });
      expect(s.pendingIntents().map((i) => i.id)).toEqual([other, detach]);
      expect(s.forgetVm("p", "vm-1")).toBe(false);
    });

    it("detachPool forgets every member and the pool's console defaults, and nothing of other pools", () => {
      const s = open();
      vmOf(s.claim("p", "alice", VMS, 3));
      vmOf(s.claim("p", "bob", VMS, 3));
      vmOf(s.claim("q", "alice", VMS, 3));
      s.setConsoleOptions("p", "alice", { fullScreen: true });
      s.setConsoleOptions("q", "alice", { fullScreen: false });
      const keep = s.beginIntent("prestart", "q", "vm-2");
      expect(s.detachPool("p")).toBe(2);
      expect(s.assignments().map((a) => a.pool)).toEqual(["q"]);
      expect(s.consoleOptions("p", "alice")).toBeUndefined();
      expect(s.consoleOptions("q", "alice")).toEqual({ fullScreen: false });
      expect(s.pendingIntents().map((i) => i.pool)).toEqual(["q", "q"]);
      expect(s.pendingIntents().map((i) => i.id)).toContain(keep);
      expect(s.detachPool("p")).toBe(0);
    });
  });

  describe("claim/release against an in-memory model (property)", () => {
    const POOLS = ["a", "b"] as const;
    const USERS = ["u0", "u1", "u2", "u3"] as const;
    const vm = (i: number): string => `vm-${i}`;
    type Op =
      | {
          readonly t: "claim";
          readonly pool: string;
          readonly user: string;
          readonly prefs: number[];
          readonly max: number;
        }
      | { readonly t: "release"; readonly pool: string; readonly vm: number; readonly by?: string };
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({
        t: fc.constant("claim" as const),
        pool: fc.constantFrom(...POOLS),
        user: fc.constantFrom(...USERS),
        prefs: fc.uniqueArray(fc.integer({ min: 0, max: 5 }), { maxLength: 6 }),
        max: fc.integer({ min: 1, max: 3 }),
      }),
      fc.record(
        {
          t: fc.constant("release" as const),
          pool: fc.constantFrom(...POOLS),
          vm: fc.integer({ min: 0, max: 5 }),
          by: fc.constantFrom(...USERS),
        },
        { requiredKeys: ["t", "pool", "vm"] },
      ),
    );

    it("agrees with the model on every result and every intermediate state", () => {
      const shared = open();
      fc.assert(
        fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
          // One store for all runs (a fresh PostgreSQL schema per run would dominate the time),
          // emptied at the start of each.
          const s = shared;
          for (const pool of POOLS) s.detachPool(pool);
          {
            const model = new Map<string, string>(); // "pool/vm" → user
            for (const o of ops) {
              if (o.t === "claim") {
                const held = [...model].filter(([k, u]) => k.startsWith(`${o.pool}/`) && u === o.user).length;
                const free = o.prefs.map(vm).find((v) => !model.has(`${o.pool}/${v}`));
                const got = s.claim(o.pool, o.user, o.prefs.map(vm), o.max);
                if (held >= o.max) expect(got).toEqual({ refused: "limit" });
                else if (free === undefined) expect(got).toEqual({ refused: "none-free" });
                else {
                  expect(got).toMatchObject({ vm: free });
                  model.set(`${o.pool}/${free}`, o.user);
                }
              } else {
                const key = `${o.pool}/${vm(o.vm)}`;
                const holder = model.get(key);
                if (holder !== undefined && o.by !== undefined && o.by !== holder) {
                  expect(() => s.release(o.pool, vm(o.vm), o.by)).toThrow(NotHolderError);
                } else {
                  expect(s.release(o.pool, vm(o.vm), o.by)).toBe(holder !== undefined);
                  model.delete(key);
                }
              }
              const actual = s.assignments().map((a) => [`${a.pool}/${a.vm}`, a.user]);
              expect(actual).toEqual([...model].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));
            }
          }
        }),
        { numRuns: 200 },
      );
    });
  });

  interface WorkerReport {
    readonly claims: readonly { readonly user: string; readonly vm: string; readonly intentId: string }[];
    readonly refusals: readonly { readonly user: string; readonly refused: "limit" | "none-free" }[];
    readonly violations: readonly string[];
    readonly ms: number;
  }

  /** Reads a child's stdout line by line; a line that never comes is an error. */
  const lineReader = (child: ChildProcessWithoutNullStreams): (() => Promise<string>) => {
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    return async () => {
      const next = await lines.next();
      if (next.done === true) throw new Error("worker exited before writing a line");
      return next.value;
    };
  };

  /**
   * Runs `count` OS processes on the same file, each with its own connection, and releases them
   * together once all have started, so their claims really overlap.
   */
  const hammer = async (
    path: string,
    count: number,
    args: { rounds: number; vms: number; users: number; max: number; mode: "fill" | "churn" },
  ): Promise<WorkerReport[]> => {
    const workers = Array.from({ length: count }, (_, i) =>
      spawn(process.execPath, [
        fixture("claim-worker.js"),
        path,
        String(i + 1),
        String(args.rounds),
        "lab",
        String(args.vms),
        String(args.users),
        String(args.max),
        args.mode,
      ]),
    );
    for (const w of workers) w.stderr.pipe(process.stderr);
    const readers = workers.map(lineReader);
    expect(await Promise.all(readers.map((next) => next()))).toEqual(workers.map(() => "ready"));
    for (const w of workers) w.stdin.end("go\n");
    return (await Promise.all(readers.map((next) => next()))).map((line) => JSON.parse(line) as WorkerReport);
  };

  describe("atomicity across processes on one store", () => {
    const WORKERS = 4;
    const ROUNDS = 300;

    it("never hands a VM out twice nor lets a user exceed the limit while filling a pool", async () => {
      const path = lasting(); // fresh: the workers also race to create and migrate it
      // Supply (90 VMs) < what the limits allow (20 users × 5) < demand (1200 claims): both refusals occur.
      const reports = await hammer(path, WORKERS, { rounds: ROUNDS, vms: 90, users: 20, max: 5, mode: "fill" });

      expect(reports.flatMap((r) => r.violations)).toEqual([]);
      const claims = reports.flatMap((r) => r.claims);
      const refusals = reports.flatMap((r) => r.refusals);
      expect(claims.length + refusals.length).toBe(WORKERS * ROUNDS);
      expect(new Set(claims.map((c) => c.vm)).size).toBe(claims.length);

      const perUser = new Map<string, number>();
      for (const c of claims) perUser.set(c.user, (perUser.get(c.user) ?? 0) + 1);
      for (const count of perUser.values()) expect(count).toBeLessThanOrEqual(5);

      const s = open(path);
      // The file agrees with what the workers were told, and every hand-out has its take intent.
      const byVm = new Map(s.assignments("lab").map((a) => [a.vm, a.user]));
      expect(byVm.size).toBe(claims.length);
      for (const c of claims) {
        expect(byVm.get(c.vm)).toBe(c.user);
        expect(s.intent(c.intentId)).toMatchObject({ kind: "take", vm: c.vm, user: c.user, state: "pending" });
      }
      // Nothing is released in this run, so a refusal stays justified at the end.
      expect(claims).toHaveLength(90);
      expect(refusals.some((r) => r.refused === "none-free")).toBe(true);
      const limited = refusals.filter((r) => r.refused === "limit");
      expect(limited.length).toBeGreaterThan(0);
      for (const r of limited) expect(perUser.get(r.user)).toBe(5);
    });

    it("keeps every holder unique and every user within the limit under claim/release churn", async () => {
      const path = lasting();
      open(path).close();
      // Three users at most one VM each, four processes: every claim races for a user's only slot.
      const reports = await hammer(path, WORKERS, { rounds: ROUNDS, vms: 12, users: 3, max: 1, mode: "churn" });

      expect(reports.flatMap((r) => r.violations)).toEqual([]);
      const claims = reports.flatMap((r) => r.claims);
      const refusals = reports.flatMap((r) => r.refusals);
      expect(claims.length + refusals.length).toBe(WORKERS * ROUNDS);
      expect(claims.length).toBeGreaterThan(0);

      const s = open(path);
      expect(s.assignments()).toEqual([]);
      expect(s.pendingIntents()).toEqual([]);
    });
  });
});

describe("crash safety", () => {
  it("after kill -9 mid-work, committed claims and intents are there and consistent", async () => {
    const path = dbFile();
    const child = spawn(process.execPath, [fixture("crash-worker.js"), path, "lab"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const committed: string[][] = [];
    let buffered = "";
    await new Promise<void>((resolve, reject) => {
      child.on("error", reject);
      child.on("exit", (code) => reject(new Error(`crash worker exited early (${code})`)));
      child.stdout.on("data", (chunk: Buffer) => {
        buffered += chunk.toString();
        const lines = buffered.split("\n");
        buffered = lines.pop()!;
        committed.push(...lines.map((l) => l.split(" ")));
        if (committed.length >= 150) resolve();
      });
    });
    child.removeAllListeners("exit");
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_, signal) => resolve(signal)));
    child.kill("SIGKILL");
    expect(await exited).toBe("SIGKILL");
    expect(existsSync(`${path}-wal`)).toBe(true);

    const s = open(path);
    for (const [vm, takeId, revertId] of committed) {
      expect(s.holder("lab", vm!)).toBeDefined();
      expect(s.intent(takeId!)).toMatchObject({ kind: "take", vm, state: "pending" });
      expect(s.intent(revertId!)).toMatchObject({ kind: "revert", vm, state: "pending" });
    }
    // claim() is one transaction: the kill can land between claims, never inside one.
    const held = s.assignments("lab").map((a) => a.vm);
    const takes = s.pendingIntents().filter((i) => i.kind === "take");
    expect(takes.map((i) => i.vm).sort()).toEqual([...held].sort());
    expect(held.length).toBeGreaterThanOrEqual(committed.length);
    s.close();

    const raw = new Database(path, { readonly: true });
    expect(raw.pragma("integrity_check", { simple: true })).toBe("ok");
    raw.close();
  });
});
