import { RefusalError } from "../refusal";
import type { MemberMetadata } from "../../core/metadata";
import { randomUUID } from "node:crypto";
import Database from "better-sqlite3";
import { chmodSync, existsSync } from "node:fs";
import { migrate } from "./schema";
import type { StateStoreApi } from "./api";
import { toIntent, type IntentRow } from "./rows";

export { SchemaTooNewError, SCHEMA_VERSION } from "./schema";

/** How a VM came to be held: taken by the user, or handed out / accessed by an admin. */
export type AssignedHow = "user" | "admin";

export interface Assignment {
  readonly pool: string;
  readonly vm: string;
  readonly user: string;
  /** Epoch milliseconds. */
  readonly since: number;
  readonly how: AssignedHow;
  /** An admin wrote to this VM: per the seed it is not stateless, so return must not discard its disk blindly. */
  readonly adminAccess: boolean;
}

export type IntentKind = "take" | "return" | "revert" | "prestart" | "detach";
export type IntentState = "pending" | "done" | "failed";

export interface Intent {
  readonly id: string;
  readonly kind: IntentKind;
  readonly pool: string;
  readonly vm: string;
  readonly user?: string;
  readonly state: IntentState;
  /** Failed attempts so far. */
  readonly attempts: number;
  /** Epoch ms before which a retry should not run; null = now. */
  readonly nextAttemptAt: number | null;
  readonly lastError: string | null;
  /** JSON the side effect needs to be redone after a crash; set when the intent began. */
  readonly payload: string | null;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** Why a member is kept out of service until the condition is cleared; survives restarts. */
export const MEMBER_CONDITIONS = ["revert-needed", "prestart-gave-up"] as const;
export type MemberConditionKind = (typeof MEMBER_CONDITIONS)[number];

export interface MemberCondition {
  readonly pool: string;
  readonly vm: string;
  readonly condition: MemberConditionKind;
  readonly reason: string;
  /** Epoch ms when it was first set. */
  readonly since: number;
}

export type JsonValue = string | number | boolean | null | readonly JsonValue[] | { readonly [key: string]: JsonValue };
/** Per-user console settings for a pool, e.g. `{ fullScreen: true, usbAutoShare: false }`. */
export type ConsoleOptions = { readonly [key: string]: JsonValue };

export type ClaimResult =
  { readonly vm: string; readonly intentId: string } | { readonly refused: "limit" | "none-free" };

/** One take in a {@link StateStore.claimMany} batch. */
export interface ClaimRequest {
  readonly pool: string;
  readonly user: string;
  readonly maxPerUser: number;
  /** @default "user" */
  readonly how?: AssignedHow;
}

/** Throws a RangeError naming the value unless `maxPerUser` is an integer ≥ 1 or Infinity. */
export const checkMaxPerUser = (maxPerUser: number): void => {
  if (!(Number.isInteger(maxPerUser) && maxPerUser >= 1) && maxPerUser !== Infinity) {
    throw new RangeError(`maxPerUser must be an integer ≥ 1 (or Infinity), got ${maxPerUser}`);
  }
};

/** A user tried to return a VM that someone else holds. */
export class NotHolderError extends RefusalError {
  readonly code = "not-holder" as const;
  constructor(
    readonly pool: string,
    readonly vm: string,
    readonly holder: string,
    readonly requestedBy: string,
    /** What was refused, for the message. @default "return" */
    readonly action: "return" | "open a console of" = "return",
  ) {
    super(`${pool}/${vm} is held by another user; ${requestedBy} can only ${action} their own VMs`);
    this.name = "NotHolderError";
  }
}

/**
 * An assignments row as an array (the statements below are `.raw()`), in ASSIGNMENT_COLUMNS order.
 * Measured 2026-12-02: a pool's 200 assignments read in 161 µs this way against 279 µs as
 * better-sqlite3's row objects (SELECT *) mapped to Assignment; a burst of 1000 takes reads them
 * once per claim batch (30-180 batches when the requests trickle in), 35-100 ms of the burst before.
 */
type AssignmentRow = [pool: string, vm: string, user: string, since: number, how: AssignedHow, adminAccess: 0 | 1];
const ASSIGNMENT_COLUMNS = "pool, vm, user, since, how, admin_access";

const toAssignment = (r: AssignmentRow): Assignment => ({
  pool: r[0],
  vm: r[1],
  user: r[2],
  since: r[3],
  how: r[4],
  adminAccess: r[5] === 1,
});

/** Every statement, prepared once per connection. */
const statements = (db: Database.Database) => ({
  countHeld: db
    .prepare<[string, string], number>("SELECT count(*) FROM assignments WHERE pool = ? AND user = ?")
    .pluck(),
  // Picks the first candidate nobody holds inside SQLite: one call however stale the caller's list is.
  assignFirstFree: db
    .prepare<
      [{ pool: string; user: string; since: number; how: AssignedHow; adminAccess: number; candidates: string }],
      string
    >(
      `INSERT INTO assignments (pool, vm, user, since, how, admin_access)
       SELECT @pool, c.value, @user, @since, @how, @adminAccess FROM json_each(@candidates) AS c
       WHERE NOT EXISTS (SELECT 1 FROM assignments AS a WHERE a.pool = @pool AND a.vm = c.value)
       ORDER BY c.key LIMIT 1
       RETURNING vm`,
    )
    .pluck(),
  holder: db
    .prepare<[string, string], AssignmentRow>(`SELECT ${ASSIGNMENT_COLUMNS} FROM assignments WHERE pool = ? AND vm = ?`)
    .raw(),
  unassign: db.prepare<[string, string]>("DELETE FROM assignments WHERE pool = ? AND vm = ?"),
  unassignPool: db.prepare<[string]>("DELETE FROM assignments WHERE pool = ?"),
  markAdmin: db.prepare<[string, string]>("UPDATE assignments SET admin_access = 1 WHERE pool = ? AND vm = ?"),
  all: db.prepare<[], AssignmentRow>(`SELECT ${ASSIGNMENT_COLUMNS} FROM assignments ORDER BY pool, vm`).raw(),
  inPool: db
    .prepare<[string], AssignmentRow>(`SELECT ${ASSIGNMENT_COLUMNS} FROM assignments WHERE pool = ? ORDER BY vm`)
    .raw(),
  byUser: db
    .prepare<[string], AssignmentRow>(`SELECT ${ASSIGNMENT_COLUMNS} FROM assignments WHERE user = ? ORDER BY pool, vm`)
    .raw(),
  byUserInPool: db
    .prepare<[string, string], AssignmentRow>(
      `SELECT ${ASSIGNMENT_COLUMNS} FROM assignments WHERE user = ? AND pool = ? ORDER BY vm`,
    )
    .raw(),
  insertIntent: db.prepare<[string, IntentKind, string, string, string | null, string | null, number, number]>(
    `INSERT INTO intents (id, kind, pool, vm, user, payload, state, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)`,
  ),
  intent: db.prepare<[string], IntentRow>("SELECT * FROM intents WHERE id = ?"),
  completeIntent: db.prepare<[number, string]>(
    "UPDATE intents SET state = 'done', next_attempt_at = NULL, updated_at = ? WHERE id = ? AND state = 'pending'",
  ),
  failIntent: db.prepare<[IntentState, number | null, string, number, string]>(
    `UPDATE intents SET state = ?, attempts = attempts + 1, next_attempt_at = ?, last_error = ?, updated_at = ?
       WHERE id = ? AND state = 'pending'`,
  ),
  pending: db.prepare<[], IntentRow>("SELECT * FROM intents WHERE state = 'pending' ORDER BY created_at, rowid"),
  pendingDue: db.prepare<[number], IntentRow>(
    `SELECT * FROM intents WHERE state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
       ORDER BY created_at, rowid`,
  ),
  cancelVmIntents: db.prepare<[string, number, string, string]>(
    `UPDATE intents SET state = 'failed', last_error = ?, next_attempt_at = NULL, updated_at = ?
       WHERE pool = ? AND vm = ? AND state = 'pending' AND kind <> 'detach'`,
  ),
  cancelPoolIntents: db.prepare<[string, number, string]>(
    `UPDATE intents SET state = 'failed', last_error = ?, next_attempt_at = NULL, updated_at = ?
       WHERE pool = ? AND state = 'pending' AND kind <> 'detach'`,
  ),
  pruneIntents: db.prepare<[number]>("DELETE FROM intents WHERE state <> 'pending' AND updated_at < ?"),
  intentCounts: db.prepare<[], { state: IntentState; n: number }>(
    "SELECT state, count(*) AS n FROM intents GROUP BY state",
  ),
  setCondition: db.prepare<[string, string, MemberConditionKind, string, number]>(
    `INSERT INTO member_conditions (pool, vm, condition, reason, since) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (pool, vm, condition) DO UPDATE SET reason = excluded.reason`,
  ),
  clearCondition: db.prepare<[string, string, MemberConditionKind]>(
    "DELETE FROM member_conditions WHERE pool = ? AND vm = ? AND condition = ?",
  ),
  clearVmConditions: db.prepare<[string, string]>("DELETE FROM member_conditions WHERE pool = ? AND vm = ?"),
  clearPoolConditions: db.prepare<[string]>("DELETE FROM member_conditions WHERE pool = ?"),
  conditions: db.prepare<[], MemberCondition>(
    "SELECT pool, vm, condition, reason, since FROM member_conditions ORDER BY pool, vm, condition",
  ),
  addSpare: db.prepare<[string, string, string, number, number]>(
    `INSERT INTO spare_volumes (storage_pool, volume, backing_path, allocation_bytes, created_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (storage_pool, volume) DO UPDATE SET backing_path = excluded.backing_path,
         allocation_bytes = excluded.allocation_bytes, created_at = excluded.created_at`,
  ),
  spare: db.prepare<[string, string], { backing_path: string; allocation_bytes: number | null }>(
    "SELECT backing_path, allocation_bytes FROM spare_volumes WHERE storage_pool = ? AND volume = ?",
  ),
  dropSpare: db.prepare<[string, string]>("DELETE FROM spare_volumes WHERE storage_pool = ? AND volume = ?"),
  setConsole: db.prepare<[string, string, string, number]>(
    `INSERT INTO console_options (pool, user, options, updated_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (pool, user) DO UPDATE SET options = excluded.options, updated_at = excluded.updated_at`,
  ),
  console: db
    .prepare<[string, string], string>("SELECT options FROM console_options WHERE pool = ? AND user = ?")
    .pluck(),
  forgetConsole: db.prepare<[string]>("DELETE FROM console_options WHERE pool = ?"),
  setPolicy: db.prepare<[string, string, number]>(
    `INSERT INTO policy_documents (pool, policy, updated_at) VALUES (?, ?, ?)
       ON CONFLICT (pool) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at`,
  ),
  policies: db.prepare<[], { pool: string; policy: string }>("SELECT pool, policy FROM policy_documents"),
  setMaintenance: db.prepare<[string, number]>(
    "INSERT INTO host_maintenance (host, since) VALUES (?, ?) ON CONFLICT (host) DO NOTHING",
  ),
  clearMaintenance: db.prepare<[string]>("DELETE FROM host_maintenance WHERE host = ?"),
  maintenance: db.prepare<[], { host: string; since: number }>("SELECT host, since FROM host_maintenance"),
});

const DETACHED = "cancelled: VM detached from its pool";

/**
 * The reconciler's runtime facts (holders, console defaults, in-flight intents) in one SQLite file.
 * libvirt stays the source of truth for which VMs exist. All calls are synchronous; every
 * read-then-write runs in an IMMEDIATE transaction, so several connections or processes on the
 * same file serialize on SQLite's write lock instead of racing.
 */
/**
 * Opens the SQLite file. better-sqlite3 is a native module built at install time, and npm
 * (from 11.19) skips dependencies' install scripts unless the project allows them: say so.
 */
function openDatabase(path: string): Database.Database {
  try {
    // timeout = busy_timeout: a connection waits this long for another one's write lock before SQLITE_BUSY.
    const db = new Database(path, { timeout: 10_000 });
    // Holders, intents and console options are nobody else's business; SQLite gives the WAL and
    // shared-memory files the database file's mode, so this is set before they exist.
    if (path !== ":memory:" && !path.startsWith("file:")) {
      for (const file of [path, `${path}-wal`, `${path}-shm`]) if (existsSync(file)) chmodSync(file, 0o600);
    }
    return db;
  } catch (e) {
    if (/Could not locate the bindings file|better_sqlite3\.node/.test((e as Error).message)) {
      throw new Error(
        "the state store needs better-sqlite3's native module, which was not built when vmpools was installed " +
          "(npm skips install scripts it was not allowed to run): run `npm install-scripts approve better-sqlite3 && " +
          "npm rebuild better-sqlite3` in the project that installed vmpools",
        { cause: e },
      );
    }
    throw e;
  }
}

export class StateStore implements StateStoreApi {
  private readonly q: ReturnType<typeof statements>;

  private constructor(private readonly db: Database.Database) {
    this.q = statements(db);
  }

  /** Opens (creating if needed) and migrates the store; throws SchemaTooNewError for a newer file. */
  static open(path: string): StateStore {
    const db = openDatabase(path);
    try {
      // WAL: readers never block the writer, and a commit survives kill -9 of the process.
      db.pragma("journal_mode = WAL");
      // FULL syncs the WAL on every commit, so an intent also survives power loss before its side effect.
      db.pragma("synchronous = FULL");
      // Off by default and per connection; on so that references added by later migrations hold.
      db.pragma("foreign_keys = ON");
      migrate(db, path);
      return new StateStore(db);
    } catch (e) {
      db.close();
      throw e;
    }
  }

  close(): void {
    this.db.close();
  }

  /**
   * Atomically gives `user` the first of `candidates` (free VMs, in preference order) that nobody
   * holds, and records a pending "take" intent for the start that follows. Refuses with "limit" when
   * the user already holds `maxPerUser` VMs in the pool, "none-free" when every candidate is taken.
   */
  claim(
    pool: string,
    user: string,
    candidates: readonly string[],
    maxPerUser: number,
    how: AssignedHow = "user",
  ): ClaimResult {
    checkMaxPerUser(maxPerUser);
    return this.db.transaction((): ClaimResult => this.claimOne(pool, user, candidates, maxPerUser, how)).immediate();
  }

  /**
   * {@link claim} for many takes in one IMMEDIATE transaction: one commit (one fsync) for all,
   * which is what makes a burst of takes cheap (group commit). Each claim is still checked
   * against the user's limit and the holders as they stand after the claims before it in the
   * batch, so the results are those of calling {@link claim} once per request, in order.
   * `candidates(pool)` is called at most once per pool, inside the transaction, when the first
   * take of that pool within its limit comes up: the pool's free members in preference order as
   * of that moment (the ones the batch claims after it are skipped, as they become held).
   */
  claimMany(requests: readonly ClaimRequest[], candidates: (pool: string) => readonly string[]): ClaimResult[] {
    for (const r of requests) checkMaxPerUser(r.maxPerUser);
    return this.db
      .transaction((): ClaimResult[] => {
        // Per pool: its candidates, and how many of their leading ones are known held. The first
        // free candidate is claimed, so everything before it is held; the next claim looks after it.
        const pools = new Map<string, { names: readonly string[]; from: number }>();
        return requests.map((r): ClaimResult => {
          if (this.q.countHeld.get(r.pool, r.user)! >= r.maxPerUser) return { refused: "limit" };
          let p = pools.get(r.pool);
          if (!p) pools.set(r.pool, (p = { names: candidates(r.pool), from: 0 }));
          if (p.from >= p.names.length) return { refused: "none-free" };
          const rest = p.from === 0 ? p.names : p.names.slice(p.from);
          const claimed = this.claimOne(r.pool, r.user, rest, r.maxPerUser, r.how ?? "user", true);
          p.from = "vm" in claimed ? p.from + rest.indexOf(claimed.vm) + 1 : p.names.length;
          return claimed;
        });
      })
      .immediate();
  }

  /** One claim; the caller holds the transaction. */
  private claimOne(
    pool: string,
    user: string,
    candidates: readonly string[],
    maxPerUser: number,
    how: AssignedHow,
    limitChecked = false,
  ): ClaimResult {
    if (!limitChecked && this.q.countHeld.get(pool, user)! >= maxPerUser) return { refused: "limit" };
    const now = Date.now();
    const vm = this.q.assignFirstFree.get({
      pool,
      user,
      since: now,
      how,
      adminAccess: how === "admin" ? 1 : 0,
      candidates: JSON.stringify(candidates),
    });
    if (vm === undefined) return { refused: "none-free" };
    const intentId = randomUUID();
    this.q.insertIntent.run(intentId, "take", pool, vm, user, null, now, now);
    return { vm, intentId };
  }

  /**
   * Frees the VM; returns whether it was held. With `byUser`, only that user's own VM is freed
   * (NotHolderError otherwise); without it the caller acts as admin or as the shutdown handler.
   */
  release(pool: string, vm: string, byUser?: string): boolean {
    return this.db
      .transaction((): boolean => {
        const row = this.q.holder.get(pool, vm);
        if (row === undefined) return false;
        const held = toAssignment(row);
        if (byUser !== undefined && held.user !== byUser) throw new NotHolderError(pool, vm, held.user, byUser);
        this.q.unassign.run(pool, vm);
        return true;
      })
      .immediate();
  }

  /** Records that an admin accessed the held VM; returns false when nobody holds it. */
  markAdminAccess(pool: string, vm: string): boolean {
    return this.q.markAdmin.run(pool, vm).changes === 1;
  }

  holder(pool: string, vm: string): Assignment | undefined {
    const row = this.q.holder.get(pool, vm);
    return row && toAssignment(row);
  }

  /** Sorted by pool, then VM name. */
  assignments(pool?: string): readonly Assignment[] {
    return (pool === undefined ? this.q.all.all() : this.q.inPool.all(pool)).map(toAssignment);
  }

  /** Sorted by pool, then VM name. */
  heldBy(user: string, pool?: string): readonly Assignment[] {
    return (pool === undefined ? this.q.byUser.all(user) : this.q.byUserInPool.all(user, pool)).map(toAssignment);
  }

  /**
   * Persists a pending intent; call before the side effect it describes. `payload` (JSON) is what
   * recovery needs to redo the side effect. Returns the intent's id.
   */
  beginIntent(kind: IntentKind, pool: string, vm: string, user?: string, payload?: string): string {
    const id = randomUUID();
    const now = Date.now();
    this.q.insertIntent.run(id, kind, pool, vm, user ?? null, payload ?? null, now, now);
    return id;
  }

  /** {@link beginIntent} for several intents in one transaction (one commit, one fsync); ids in order. */
  beginIntents(
    requests: readonly { readonly kind: IntentKind; readonly pool: string; readonly vm: string }[],
  ): string[] {
    return this.db.transaction((): string[] => requests.map((r) => this.beginIntent(r.kind, r.pool, r.vm))).immediate();
  }

  intent(id: string): Intent | undefined {
    const row = this.q.intent.get(id);
    return row && toIntent(row);
  }

  /** Marks a pending intent done; false when it was already finished (recovery may finish twice). */
  completeIntent(id: string): boolean {
    if (this.q.completeIntent.run(Date.now(), id).changes === 1) return true;
    if (this.q.intent.get(id) === undefined) throw new Error(`unknown intent ${id}`);
    return false;
  }

  /** {@link completeIntent} for several intents in one transaction (one commit, one fsync). */
  completeIntents(ids: readonly string[]): boolean[] {
    return this.db.transaction((): boolean[] => ids.map((id) => this.completeIntent(id))).immediate();
  }

  /**
   * Records a failed attempt. With `retryAt` (epoch ms) the intent stays pending until then;
   * with null it is given up ("failed") — the caller bounds the attempts.
   */
  failIntent(id: string, error: string, retryAt: number | null): Intent {
    const changed = this.q.failIntent.run(retryAt === null ? "failed" : "pending", retryAt, error, Date.now(), id);
    const row = this.q.intent.get(id);
    if (row === undefined) throw new Error(`unknown intent ${id}`);
    if (changed.changes === 0) throw new Error(`intent ${id} is already ${row.state}`);
    return toIntent(row);
  }

  /** Unfinished intents, oldest first; with `dueBy` (epoch ms) only those whose retry time has come. */
  pendingIntents(dueBy?: number): readonly Intent[] {
    return (dueBy === undefined ? this.q.pending.all() : this.q.pendingDue.all(dueBy)).map(toIntent);
  }

  /** Deletes finished (done or failed) intents last touched before `before` (epoch ms); returns how many. */
  pruneIntents(before: number): number {
    return this.q.pruneIntents.run(before).changes;
  }

  /** How many intents are in each state (finished ones are kept until pruned). */
  intentCounts(): Record<IntentState, number> {
    const counts: Record<IntentState, number> = { pending: 0, done: 0, failed: 0 };
    for (const r of this.q.intentCounts.all()) counts[r.state] = r.n;
    return counts;
  }

  /** Sets (or re-words) a condition on a member; `since` stays the time it was first set. */
  setCondition(pool: string, vm: string, condition: MemberConditionKind, reason: string): void {
    this.q.setCondition.run(pool, vm, condition, reason, Date.now());
  }

  clearCondition(pool: string, vm: string, condition: MemberConditionKind): void {
    this.q.clearCondition.run(pool, vm, condition);
  }

  conditions(): readonly MemberCondition[] {
    return this.q.conditions.all();
  }

  /**
   * Records that `volume` is a fresh overlay of `backingPath`, taking `allocationBytes` on disk,
   * that nobody has attached since it was made.
   */
  addSpareVolume(storagePool: string, volume: string, backingPath: string, allocationBytes: number): void {
    this.q.addSpare.run(storagePool, volume, backingPath, allocationBytes, Date.now());
  }

  /** What a fresh spare overlay was made with, or undefined when `volume` is not known to be one. */
  spareVolume(storagePool: string, volume: string): { backingPath: string; allocationBytes: number } | undefined {
    const row = this.q.spare.get(storagePool, volume);
    return row && row.allocation_bytes !== null
      ? { backingPath: row.backing_path, allocationBytes: row.allocation_bytes }
      : undefined;
  }

  dropSpareVolume(storagePool: string, volume: string): void {
    this.q.dropSpare.run(storagePool, volume);
  }

  /** Remembers `opts` as the user's console defaults for the pool (replacing earlier ones). */
  setConsoleOptions(pool: string, user: string, opts: ConsoleOptions): void {
    this.q.setConsole.run(pool, user, JSON.stringify(opts), Date.now());
  }

  /** Remembers the newest policy document read for a pool (parsed, as JSON). */
  savePolicyDocument(pool: string, policy: MemberMetadata): void {
    this.q.setPolicy.run(pool, JSON.stringify(policy), Date.now());
  }

  /** Puts a cluster host in maintenance, or takes it out; returns whether that changed anything. */
  setHostMaintenance(host: string, on: boolean): boolean {
    const r = on ? this.q.setMaintenance.run(host, Date.now()) : this.q.clearMaintenance.run(host);
    return r.changes > 0;
  }

  /** Hosts in maintenance, with the time (epoch ms) each went in. */
  hostsInMaintenance(): Map<string, number> {
    return new Map(this.q.maintenance.all().map((r) => [r.host, r.since]));
  }

  policyDocuments(): Map<string, MemberMetadata> {
    return new Map(this.q.policies.all().map((r) => [r.pool, JSON.parse(r.policy) as MemberMetadata]));
  }

  consoleOptions(pool: string, user: string): ConsoleOptions | undefined {
    const json = this.q.console.get(pool, user);
    return json === undefined ? undefined : (JSON.parse(json) as ConsoleOptions);
  }

  /**
   * The VM leaves its pool (it lives on as an independent VM): drops its holder and cancels its
   * pending intents other than the detach itself. Returns whether it was held.
   */
  forgetVm(pool: string, vm: string): boolean {
    return this.db
      .transaction((): boolean => {
        this.q.cancelVmIntents.run(DETACHED, Date.now(), pool, vm);
        this.q.clearVmConditions.run(pool, vm);
        return this.q.unassign.run(pool, vm).changes === 1;
      })
      .immediate();
  }

  /** forgetVm for every member, plus the pool's console defaults. Returns how many VMs were held. */
  detachPool(pool: string): number {
    return this.db
      .transaction((): number => {
        this.q.cancelPoolIntents.run(DETACHED, Date.now(), pool);
        this.q.forgetConsole.run(pool);
        this.q.clearPoolConditions.run(pool);
        return this.q.unassignPool.run(pool).changes;
      })
      .immediate();
  }
}
