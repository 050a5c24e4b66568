// The state store on PostgreSQL, for several reconcilers sharing one store (one active, the others
// standing by: see leader.ts). Same methods and semantics as the SQLite StateStore.
//
// Synchronous, through pg-native (libpq's blocking calls), for the reason the SQLite store is: a
// claim (count the user's VMs, claim a free one, record the intent) runs as one transaction with
// no other work interleaved, and the answer path calls the store in many places without
// awaiting. An async driver would make every caller async and let other requests interleave
// inside a claim's transaction. The cost is that a query blocks the event loop for its round
// trip; on loopback that is small. Measured here (2 cores, PostgreSQL 15 on 127.0.0.1, mean of
// 300–1000 claims; test/reconciler/postgres-store.test.ts prints it on every run):
//   - a claim transaction (5 round trips: BEGIN + write lock, count, insert, intent, COMMIT):
//     0.8–1.8 ms with fsync on, ~0.9 ms with synchronous_commit off;
//     SQLite's (WAL, synchronous = FULL) on the same disk: 0.5–0.6 ms (3.4 ms once, disk noise);
//   - one read (holder): 0.1–0.2 ms.
// So a burst of takes blocks the loop about twice as long per claim as SQLite does; claimMany
// (one transaction, one commit for many) is the way to batch them.
import { randomUUID } from "node:crypto";
import type Client from "pg-native";
import type { MemberMetadata } from "../../core/metadata";
import type { StateStoreApi } from "./api";
import {
  connectionString,
  endClient,
  loadPgNative,
  PostgresStoreError,
  redactLocation,
  serverKeepaliveSql,
  storeError,
  TYPE_PARSERS,
} from "./postgres-connection";
import { LOCK_KEYS, LOCK_NAMESPACE, migratePostgres, rollbackQuietly } from "./postgres-schema";
import { SchemaTooNewError } from "./schema";
import {
  checkMaxPerUser,
  NotHolderError,
  type AssignedHow,
  type Assignment,
  type ClaimRequest,
  type ClaimResult,
  type ConsoleOptions,
  type Intent,
  type IntentKind,
  type IntentState,
  type MemberCondition,
  type MemberConditionKind,
} from "./store";
import { toIntent, type IntentRow } from "./rows";

export { POSTGRES_SCHEMA_VERSION } from "./postgres-schema";

/** Writes of a store whose leadership term has passed: another reconciler is active now. */
export class LeadershipLostError extends PostgresStoreError {
  constructor(
    readonly term: number,
    readonly currentTerm: number,
  ) {
    super(
      `this reconciler's leadership (term ${term}) has passed to another one (term ${currentTerm}); ` +
        "its writes are refused so that it cannot undo the active reconciler's work: stop it, or let it stand by",
    );
    this.name = "LeadershipLostError";
  }
}

export interface PostgresStoreOptions {
  /**
   * Fencing: every write transaction checks that the leader term is still this one (the term
   * PostgresLeadership.acquire resolved with) and throws LeadershipLostError otherwise. Can also
   * be set later with {@link PostgresStateStore.fence}. @default no check
   */
  readonly leaderTerm?: number;
  /**
   * A transaction left open this long (a paused process) is ended by PostgreSQL, so that it
   * cannot hold the write lock, or block a new leader's term bump, indefinitely. @default 10000
   */
  readonly idleInTransactionTimeoutMs?: number;
}

type Value = string | null;
type Row = Record<string, unknown>;

interface AssignmentRow {
  pool: string;
  vm: string;
  user: string;
  since: number;
  how: AssignedHow;
  admin_access: boolean;
}

const toAssignment = (r: AssignmentRow): Assignment => ({
  pool: r.pool,
  vm: r.vm,
  user: r.user,
  since: r.since,
  how: r.how,
  adminAccess: r.admin_access,
});

const ASSIGNMENT_COLUMNS = `pool, vm, "user", since, how, admin_access`;
const INTENT_COLUMNS = `id, kind, pool, vm, "user", state, attempts, next_attempt_at, last_error, payload, created_at, updated_at`;

/** Every statement, prepared on first use per connection. `$n` parameters are sent as text. */
const SQL = {
  countHeld: `SELECT count(*) AS n FROM assignments WHERE pool = $1 AND "user" = $2`,
  // Picks the first candidate nobody holds inside PostgreSQL: one call however stale the caller's
  // list is. The write lock is held, so nobody inserts between the check and the insert.
  assignFirstFree: `
    INSERT INTO assignments (pool, vm, "user", since, how, admin_access)
    SELECT $1, c.vm, $2, $3, $4, $5 FROM jsonb_array_elements_text($6::jsonb) WITH ORDINALITY AS c (vm, ord)
    WHERE NOT EXISTS (SELECT 1 FROM assignments AS a WHERE a.pool = $1 AND a.vm = c.vm)
    ORDER BY c.ord LIMIT 1
    RETURNING vm`,
  holder: `SELECT ${ASSIGNMENT_COLUMNS} FROM assignments WHERE pool = $1 AND vm = $2`,
  unassign: `DELETE FROM assignments WHERE pool = $1 AND vm = $2 RETURNING vm`,
  unassignPool: `DELETE FROM assignments WHERE pool = $1 RETURNING vm`,
  markAdmin: `UPDATE assignments SET admin_access = true WHERE pool = $1 AND vm = $2 RETURNING vm`,
  all: `SELECT ${ASSIGNMENT_COLUMNS} FROM assignments ORDER BY pool, vm`,
  inPool: `SELECT ${ASSIGNMENT_COLUMNS} FROM assignments WHERE pool = $1 ORDER BY vm`,
  byUser: `SELECT ${ASSIGNMENT_COLUMNS} FROM assignments WHERE "user" = $1 ORDER BY pool, vm`,
  byUserInPool: `SELECT ${ASSIGNMENT_COLUMNS} FROM assignments WHERE "user" = $1 AND pool = $2 ORDER BY vm`,
  insertIntent: `
    INSERT INTO intents (id, kind, pool, vm, "user", payload, state, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)`,
  intent: `SELECT ${INTENT_COLUMNS} FROM intents WHERE id = $1`,
  completeIntent: `
    UPDATE intents SET state = 'done', next_attempt_at = NULL, updated_at = $1
    WHERE id = $2 AND state = 'pending' RETURNING id`,
  failIntent: `
    UPDATE intents SET state = $1, attempts = attempts + 1, next_attempt_at = $2, last_error = $3, updated_at = $4
    WHERE id = $5 AND state = 'pending' RETURNING id`,
  pending: `SELECT ${INTENT_COLUMNS} FROM intents WHERE state = 'pending' ORDER BY created_at, seq`,
  pendingDue: `
    SELECT ${INTENT_COLUMNS} FROM intents
    WHERE state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= $1) ORDER BY created_at, seq`,
  cancelVmIntents: `
    UPDATE intents SET state = 'failed', last_error = $1, next_attempt_at = NULL, updated_at = $2
    WHERE pool = $3 AND vm = $4 AND state = 'pending' AND kind <> 'detach'`,
  cancelPoolIntents: `
    UPDATE intents SET state = 'failed', last_error = $1, next_attempt_at = NULL, updated_at = $2
    WHERE pool = $3 AND state = 'pending' AND kind <> 'detach'`,
  pruneIntents: `DELETE FROM intents WHERE state <> 'pending' AND updated_at < $1 RETURNING id`,
  intentCounts: `SELECT state, count(*) AS n FROM intents GROUP BY state`,
  setCondition: `
    INSERT INTO member_conditions (pool, vm, condition, reason, since) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (pool, vm, condition) DO UPDATE SET reason = excluded.reason`,
  clearCondition: `DELETE FROM member_conditions WHERE pool = $1 AND vm = $2 AND condition = $3`,
  clearVmConditions: `DELETE FROM member_conditions WHERE pool = $1 AND vm = $2`,
  clearPoolConditions: `DELETE FROM member_conditions WHERE pool = $1`,
  conditions: `SELECT pool, vm, condition, reason, since FROM member_conditions ORDER BY pool, vm, condition`,
  addSpare: `
    INSERT INTO spare_volumes (storage_pool, volume, backing_path, allocation_bytes, created_at)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (storage_pool, volume) DO UPDATE SET backing_path = excluded.backing_path,
      allocation_bytes = excluded.allocation_bytes, created_at = excluded.created_at`,
  spare: `SELECT backing_path, allocation_bytes FROM spare_volumes WHERE storage_pool = $1 AND volume = $2`,
  dropSpare: `DELETE FROM spare_volumes WHERE storage_pool = $1 AND volume = $2`,
  setConsole: `
    INSERT INTO console_options (pool, "user", options, updated_at) VALUES ($1, $2, $3::jsonb, $4)
    ON CONFLICT (pool, "user") DO UPDATE SET options = excluded.options, updated_at = excluded.updated_at`,
  console: `SELECT options::text AS options FROM console_options WHERE pool = $1 AND "user" = $2`,
  forgetConsole: `DELETE FROM console_options WHERE pool = $1`,
  setPolicy: `
    INSERT INTO policy_documents (pool, policy, updated_at) VALUES ($1, $2::jsonb, $3)
    ON CONFLICT (pool) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at`,
  policies: `SELECT pool, policy::text AS policy FROM policy_documents`,
  setMaintenance: `INSERT INTO host_maintenance (host, since) VALUES ($1, $2) ON CONFLICT (host) DO NOTHING RETURNING host`,
  clearMaintenance: `DELETE FROM host_maintenance WHERE host = $1 RETURNING host`,
  maintenance: `SELECT host, since FROM host_maintenance`,
} as const;
type StatementName = keyof typeof SQL;

const DETACHED = "cancelled: VM detached from its pool";

/** A parameter as libpq takes it: text, or NULL. */
const param = (v: string | number | boolean | null | undefined): Value =>
  v === null || v === undefined ? null : typeof v === "boolean" ? (v ? "t" : "f") : String(v);

/**
 * Begins a write transaction: PostgreSQL's default READ COMMITTED plus one transaction-level
 * advisory lock that every write transaction takes first. That is SQLite's BEGIN IMMEDIATE (one
 * writer at a time, across connections and processes): each statement after the lock sees
 * every write committed before it, so a claim's count and its "first free candidate" cannot be
 * raced by a concurrent claim. In one round trip.
 */
const BEGIN_WRITE = `BEGIN; SELECT pg_advisory_xact_lock(${LOCK_NAMESPACE}, ${LOCK_KEYS.write})`;
/** Read under FOR SHARE: a new leader's term bump waits for write transactions in flight, and later ones see it. */
const BEGIN_FENCED_WRITE = `${BEGIN_WRITE}; SELECT term FROM leader_term FOR SHARE`;

/**
 * The reconciler's runtime facts on PostgreSQL: see the SQLite {@link StateStore} for what each
 * method means; both implement {@link StateStoreApi}. One connection per store, used
 * synchronously; open one store per process.
 */
export class PostgresStateStore implements StateStoreApi {
  /** The connection string holds the password: a private field, so that inspecting the store does not show it. */
  readonly #location: string;
  private readonly db: Client;
  private readonly prepared = new Set<StatementName>();
  private inTransaction = false;
  private term: number | undefined;

  private constructor(location: string, db: Client, options: PostgresStoreOptions) {
    this.#location = location;
    this.db = db;
    this.term = options.leaderTerm;
  }

  /**
   * Connects (TCP keepalives on) and migrates the database; throws SchemaTooNewError for a
   * database of a newer release, PostgresStoreError (password redacted) when it cannot connect.
   */
  static open(location: string, options: PostgresStoreOptions = {}): PostgresStateStore {
    const ClientClass = loadPgNative();
    const db = new ClientClass({ types: TYPE_PARSERS });
    try {
      db.connectSync(connectionString(location, "vmpools-store"));
    } catch (e) {
      throw storeError(e, "connecting", location);
    }
    try {
      const idleMs = options.idleInTransactionTimeoutMs ?? 10_000;
      db.querySync(`${serverKeepaliveSql()}; SET idle_in_transaction_session_timeout = ${Math.floor(idleMs)}`);
      migratePostgres(db, redactLocation(location));
      return new PostgresStateStore(location, db, options);
    } catch (e) {
      endClient(db);
      if (e instanceof SchemaTooNewError) throw e;
      throw storeError(e, "opening", location);
    }
  }

  /** The location with its password redacted, for messages. */
  get location(): string {
    return redactLocation(this.#location);
  }

  close(): void {
    endClient(this.db);
  }

  /** From now on every write checks that `term` is still the current leader term (see PostgresStoreOptions.leaderTerm). */
  fence(term: number): void {
    this.term = term;
  }

  claim(
    pool: string,
    user: string,
    candidates: readonly string[],
    maxPerUser: number,
    how: AssignedHow = "user",
  ): ClaimResult {
    checkMaxPerUser(maxPerUser);
    return this.write((): ClaimResult => this.claimOne(pool, user, candidates, maxPerUser, how));
  }

  claimMany(requests: readonly ClaimRequest[], candidates: (pool: string) => readonly string[]): ClaimResult[] {
    for (const r of requests) checkMaxPerUser(r.maxPerUser);
    return this.write((): ClaimResult[] => {
      // As in the SQLite store: per pool its candidates, and how many leading ones are known held.
      const pools = new Map<string, { names: readonly string[]; from: number }>();
      return requests.map((r): ClaimResult => {
        if (this.countHeld(r.pool, r.user) >= r.maxPerUser) return { refused: "limit" };
        let p = pools.get(r.pool);
        if (!p) pools.set(r.pool, (p = { names: candidates(r.pool), from: 0 }));
        if (p.from >= p.names.length) return { refused: "none-free" };
        const rest = p.from === 0 ? p.names : p.names.slice(p.from);
        const claimed = this.claimOne(r.pool, r.user, rest, r.maxPerUser, r.how ?? "user", true);
        p.from = "vm" in claimed ? p.from + rest.indexOf(claimed.vm) + 1 : p.names.length;
        return claimed;
      });
    });
  }

  /** One claim; the caller holds the write transaction. */
  private claimOne(
    pool: string,
    user: string,
    candidates: readonly string[],
    maxPerUser: number,
    how: AssignedHow,
    limitChecked = false,
  ): ClaimResult {
    if (!limitChecked && this.countHeld(pool, user) >= maxPerUser) return { refused: "limit" };
    const now = Date.now();
    const rows = this.run("assignFirstFree", [
      pool,
      user,
      param(now),
      how,
      param(how === "admin"),
      JSON.stringify(candidates),
    ]);
    const vm = rows[0]?.vm as string | undefined;
    if (vm === undefined) return { refused: "none-free" };
    const intentId = randomUUID();
    this.run("insertIntent", [intentId, "take", pool, vm, user, null, param(now)]);
    return { vm, intentId };
  }

  private countHeld(pool: string, user: string): number {
    return this.run("countHeld", [pool, user])[0]!.n as number;
  }

  release(pool: string, vm: string, byUser?: string): boolean {
    return this.write((): boolean => {
      const held = this.run("holder", [pool, vm])[0] as AssignmentRow | undefined;
      if (held === undefined) return false;
      if (byUser !== undefined && held.user !== byUser) throw new NotHolderError(pool, vm, held.user, byUser);
      this.run("unassign", [pool, vm]);
      return true;
    });
  }

  markAdminAccess(pool: string, vm: string): boolean {
    return this.write(() => this.run("markAdmin", [pool, vm]).length === 1);
  }

  holder(pool: string, vm: string): Assignment | undefined {
    const row = this.run("holder", [pool, vm])[0] as AssignmentRow | undefined;
    return row && toAssignment(row);
  }

  assignments(pool?: string): readonly Assignment[] {
    const rows = pool === undefined ? this.run("all", []) : this.run("inPool", [pool]);
    return (rows as unknown as AssignmentRow[]).map(toAssignment);
  }

  heldBy(user: string, pool?: string): readonly Assignment[] {
    const rows = pool === undefined ? this.run("byUser", [user]) : this.run("byUserInPool", [user, pool]);
    return (rows as unknown as AssignmentRow[]).map(toAssignment);
  }

  beginIntent(kind: IntentKind, pool: string, vm: string, user?: string, payload?: string): string {
    const id = randomUUID();
    this.write(() => this.run("insertIntent", [id, kind, pool, vm, param(user), param(payload), param(Date.now())]));
    return id;
  }

  beginIntents(
    requests: readonly { readonly kind: IntentKind; readonly pool: string; readonly vm: string }[],
  ): string[] {
    return this.write((): string[] => requests.map((r) => this.beginIntent(r.kind, r.pool, r.vm)));
  }

  intent(id: string): Intent | undefined {
    const row = this.run("intent", [id])[0] as IntentRow | undefined;
    return row && toIntent(row);
  }

  completeIntent(id: string): boolean {
    return this.write((): boolean => {
      if (this.run("completeIntent", [param(Date.now()), id]).length === 1) return true;
      if (this.run("intent", [id]).length === 0) throw new Error(`unknown intent ${id}`);
      return false;
    });
  }

  completeIntents(ids: readonly string[]): boolean[] {
    return this.write((): boolean[] => ids.map((id) => this.completeIntent(id)));
  }

  failIntent(id: string, error: string, retryAt: number | null): Intent {
    return this.write((): Intent => {
      const state: IntentState = retryAt === null ? "failed" : "pending";
      const changed = this.run("failIntent", [state, param(retryAt), error, param(Date.now()), id]);
      const row = this.run("intent", [id])[0] as IntentRow | undefined;
      if (row === undefined) throw new Error(`unknown intent ${id}`);
      if (changed.length === 0) throw new Error(`intent ${id} is already ${row.state}`);
      return toIntent(row);
    });
  }

  pendingIntents(dueBy?: number): readonly Intent[] {
    const rows = dueBy === undefined ? this.run("pending", []) : this.run("pendingDue", [param(dueBy)]);
    return (rows as unknown as IntentRow[]).map(toIntent);
  }

  pruneIntents(before: number): number {
    return this.write(() => this.run("pruneIntents", [param(before)]).length);
  }

  intentCounts(): Record<IntentState, number> {
    const counts: Record<IntentState, number> = { pending: 0, done: 0, failed: 0 };
    for (const r of this.run("intentCounts", [])) counts[r.state as IntentState] = r.n as number;
    return counts;
  }

  setCondition(pool: string, vm: string, condition: MemberConditionKind, reason: string): void {
    this.write(() => this.run("setCondition", [pool, vm, condition, reason, param(Date.now())]));
  }

  clearCondition(pool: string, vm: string, condition: MemberConditionKind): void {
    this.write(() => this.run("clearCondition", [pool, vm, condition]));
  }

  conditions(): readonly MemberCondition[] {
    return this.run("conditions", []) as unknown as MemberCondition[];
  }

  addSpareVolume(storagePool: string, volume: string, backingPath: string, allocationBytes: number): void {
    this.write(() =>
      this.run("addSpare", [storagePool, volume, backingPath, param(allocationBytes), param(Date.now())]),
    );
  }

  spareVolume(storagePool: string, volume: string): { backingPath: string; allocationBytes: number } | undefined {
    const row = this.run("spare", [storagePool, volume])[0] as
      { backing_path: string; allocation_bytes: number | null } | undefined;
    return row && row.allocation_bytes !== null
      ? { backingPath: row.backing_path, allocationBytes: row.allocation_bytes }
      : undefined;
  }

  dropSpareVolume(storagePool: string, volume: string): void {
    this.write(() => this.run("dropSpare", [storagePool, volume]));
  }

  setConsoleOptions(pool: string, user: string, opts: ConsoleOptions): void {
    this.write(() => this.run("setConsole", [pool, user, JSON.stringify(opts), param(Date.now())]));
  }

  savePolicyDocument(pool: string, policy: MemberMetadata): void {
    this.write(() => this.run("setPolicy", [pool, JSON.stringify(policy), param(Date.now())]));
  }

  setHostMaintenance(host: string, on: boolean): boolean {
    return this.write(
      () =>
        (on ? this.run("setMaintenance", [host, param(Date.now())]) : this.run("clearMaintenance", [host])).length > 0,
    );
  }

  hostsInMaintenance(): Map<string, number> {
    return new Map(this.run("maintenance", []).map((r) => [r.host as string, Number(r.since)]));
  }

  policyDocuments(): Map<string, MemberMetadata> {
    return new Map(
      this.run("policies", []).map((r) => [r.pool as string, JSON.parse(r.policy as string) as MemberMetadata]),
    );
  }

  consoleOptions(pool: string, user: string): ConsoleOptions | undefined {
    const row = this.run("console", [pool, user])[0];
    return row === undefined ? undefined : (JSON.parse(row.options as string) as ConsoleOptions);
  }

  forgetVm(pool: string, vm: string): boolean {
    return this.write((): boolean => {
      this.run("cancelVmIntents", [DETACHED, param(Date.now()), pool, vm]);
      this.run("clearVmConditions", [pool, vm]);
      return this.run("unassign", [pool, vm]).length === 1;
    });
  }

  detachPool(pool: string): number {
    return this.write((): number => {
      this.run("cancelPoolIntents", [DETACHED, param(Date.now()), pool]);
      this.run("forgetConsole", [pool]);
      this.run("clearPoolConditions", [pool]);
      return this.run("unassignPool", [pool]).length;
    });
  }

  /**
   * Runs `fn` in a write transaction (nested calls join the outer one, as better-sqlite3's do),
   * checking the leader term first when fenced. Throwing rolls everything back.
   */
  private write<T>(fn: () => T): T {
    if (this.inTransaction) return fn();
    this.inTransaction = true;
    try {
      const rows = this.query(this.term === undefined ? BEGIN_WRITE : BEGIN_FENCED_WRITE, "beginning a transaction");
      if (this.term !== undefined) {
        const current = rows[0]!.term as number;
        if (current !== this.term) throw new LeadershipLostError(this.term, current);
      }
      const result = fn();
      this.query("COMMIT", "committing");
      return result;
    } catch (e) {
      rollbackQuietly(this.db);
      throw e;
    } finally {
      this.inTransaction = false;
    }
  }

  /** A prepared statement; its errors are PostgresStoreErrors naming the statement. */
  private run(name: StatementName, values: readonly Value[]): Row[] {
    try {
      if (!this.prepared.has(name)) {
        this.db.prepareSync(name, SQL[name], values.length);
        this.prepared.add(name);
      }
      return this.db.executeSync(name, values);
    } catch (e) {
      throw storeError(e, name, this.#location);
    }
  }

  private query(text: string, doing: string): Row[] {
    try {
      return this.db.querySync(text);
    } catch (e) {
      throw storeError(e, doing, this.#location);
    }
  }
}
