// One active reconciler per state store (issue 11): several may run against one PostgreSQL store,
// one of them active, the others standing by in acquire() until it is gone.
//
// PostgreSQL: a session-level advisory lock on a connection of its own. The lock lives exactly
// as long as that session, so it dies with the process: after kill -9 the kernel closes the
// socket, PostgreSQL ends the session at once and a standby (polling every pollMs) takes over;
// a machine that vanishes is noticed through TCP keepalives on both sides in a few seconds. The
// leader checks its connection every checkMs; a failed or unanswered check means the lock may be
// gone, and it emits `lost`. Each new leader bumps `leader_term`; a store fenced with its term
// (PostgresStateStore.fence) refuses writes once another leader's term has begun, so a paused
// old leader cannot write after a standby took over.
//
// SQLite: the file is local, and on one hypervisor HypervisorLease (../lease.ts) already keeps a
// second reconciler of the same pools out. The store leadership for SQLite is an exclusive lock
// on a sidecar file (`<db>.leader`, SQLite's own locking, freed when the process dies): a second
// process on the same file stands by instead of failing. It is never lost.
import { EventEmitter } from "node:events";
import Database from "better-sqlite3";
import type Client from "pg-native";
import {
  connectionString,
  endClient,
  isPostgresLocation,
  loadPgNative,
  redactLocation,
  serverKeepaliveSql,
  storeError,
  TYPE_PARSERS,
  type KeepaliveOptions,
} from "./postgres-connection";
import { LOCK_KEYS, LOCK_NAMESPACE, migratePostgres } from "./postgres-schema";
import { SchemaTooNewError } from "./schema";

export interface StoreLeadershipEvents {
  /** The leadership is gone (its connection broke); stop acting. Emitted once per term. */
  lost: [Error];
  /** A standby's attempt failed (e.g. PostgreSQL unreachable); it tries again after pollMs. */
  retrying: [Error];
}

/** Leadership of one state store: exactly one holder at a time among the processes that ask. */
export interface StoreLeadership extends EventEmitter<StoreLeadershipEvents> {
  /** Resolves with the leader term once this process leads (waiting as a standby until then). */
  acquire(options?: { readonly signal?: AbortSignal }): Promise<number>;
  /** Leads now if nobody else does: the term, or undefined when another process leads. */
  tryAcquire(): Promise<number | undefined>;
  /** Gives the leadership up (a standby may take it at once); idempotent. */
  release(): Promise<void>;
  /** The term while this process leads, undefined otherwise. */
  readonly term: number | undefined;
}

export interface LeadershipOptions {
  /** How often a standby tries to take the leadership. @default 500 */
  readonly pollMs?: number;
  /** How often the leader checks its PostgreSQL connection. @default 1000 */
  readonly checkMs?: number;
  /** A check unanswered for this long counts as a lost connection. @default 3000 */
  readonly checkTimeoutMs?: number;
  /** TCP keepalives of the lock connection (both ends). @default 2 s idle, 1 s interval, 3 probes */
  readonly keepalive?: KeepaliveOptions;
}

/** PostgresLeadership for a PostgreSQL URL, SqliteLeadership for a file path. */
export function openLeadership(location: string, options: LeadershipOptions = {}): StoreLeadership {
  return isPostgresLocation(location)
    ? new PostgresLeadership(location, options)
    : new SqliteLeadership(location, options);
}

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener("abort", abort);
      resolve();
    }
    function abort() {
      clearTimeout(timer);
      reject(signal!.reason);
    }
    signal?.addEventListener("abort", abort, { once: true });
  });

/** Waits as a standby: tries every pollMs until `tryAcquire` leads, reporting failed attempts. */
async function waitForLeadership(
  leadership: StoreLeadership,
  pollMs: number,
  signal: AbortSignal | undefined,
): Promise<number> {
  for (;;) {
    if (signal?.aborted) throw signal.reason;
    try {
      const term = await leadership.tryAcquire();
      if (term !== undefined) return term;
    } catch (e) {
      leadership.emit("retrying", e instanceof Error ? e : new Error(String(e)));
    }
    await sleep(pollMs, signal);
  }
}

export class PostgresLeadership extends EventEmitter<StoreLeadershipEvents> implements StoreLeadership {
  /** Holds the password: private, so that inspecting the object does not show it. */
  readonly #location: string;
  private readonly pollMs: number;
  private readonly checkMs: number;
  private readonly checkTimeoutMs: number;
  private readonly keepalive: KeepaliveOptions;
  private client: Client | undefined;
  private current: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private checking = false;
  /** One attempt at a time: concurrent tryAcquire calls share it. */
  private attempt: Promise<number | undefined> | undefined;

  constructor(location: string, options: LeadershipOptions = {}) {
    super();
    this.#location = location;
    this.pollMs = options.pollMs ?? 500;
    this.checkMs = options.checkMs ?? 1000;
    this.checkTimeoutMs = options.checkTimeoutMs ?? 3000;
    this.keepalive = options.keepalive ?? {};
  }

  get term(): number | undefined {
    return this.current;
  }

  acquire(options: { readonly signal?: AbortSignal } = {}): Promise<number> {
    return waitForLeadership(this, this.pollMs, options.signal);
  }

  tryAcquire(): Promise<number | undefined> {
    if (this.current !== undefined) return Promise.resolve(this.current);
    this.attempt ??= this.takeLock().finally(() => (this.attempt = undefined));
    return this.attempt;
  }

  async release(): Promise<void> {
    this.stopChecks();
    const client = this.client;
    const held = this.current !== undefined;
    this.client = undefined;
    this.current = undefined;
    if (client === undefined) return;
    // Closing the session frees the lock too; unlocking first says so explicitly.
    if (held) await query(client, `SELECT pg_advisory_unlock(${LOCK_NAMESPACE}, ${LOCK_KEYS.leader})`).catch(() => {});
    endClient(client);
  }

  private async takeLock(): Promise<number | undefined> {
    const client = await this.connection();
    try {
      const [row] = await query(client, `SELECT pg_try_advisory_lock(${LOCK_NAMESPACE}, ${LOCK_KEYS.leader}) AS got`);
      if (row?.got !== true) return undefined;
      // Waits for write transactions of an old leader's fenced store in flight (FOR SHARE), then
      // every later one sees the new term and is refused.
      const [bumped] = await query(client, "UPDATE leader_term SET term = term + 1 RETURNING term");
      this.current = bumped!.term as number;
      this.startChecks(client);
      return this.current;
    } catch (e) {
      this.drop(client);
      throw storeError(e, "taking the leadership", this.#location);
    }
  }

  /** The lock connection, opened (and the schema migrated, for leader_term) on first use. */
  private async connection(): Promise<Client> {
    if (this.client !== undefined) return this.client;
    const ClientClass = loadPgNative();
    const client = new ClientClass({ types: TYPE_PARSERS });
    const conninfo = connectionString(this.#location, "vmpools-leader", this.keepalive);
    try {
      await new Promise<void>((resolve, reject) => client.connect(conninfo, (e) => (e ? reject(e) : resolve())));
    } catch (e) {
      throw storeError(e, "connecting for the leadership", this.#location);
    }
    // A broken connection is reported here while a query is in flight: treat it as a failed check.
    client.on("error", (e) => {
      if (this.client === client && this.current !== undefined) this.lose(e);
    });
    try {
      client.querySync(serverKeepaliveSql(this.keepalive));
      migratePostgres(client, redactLocation(this.#location));
    } catch (e) {
      endClient(client);
      if (e instanceof SchemaTooNewError) throw e;
      throw storeError(e, "preparing the leadership connection", this.#location);
    }
    this.client = client;
    return client;
  }

  private startChecks(client: Client): void {
    this.timer = setInterval(() => void this.check(client), this.checkMs);
    this.timer.unref();
  }

  private stopChecks(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** The connection answers and the term is still ours; otherwise the leadership is lost. */
  private async check(client: Client): Promise<void> {
    if (this.checking || this.client !== client || this.current === undefined) return;
    this.checking = true;
    let timeout: NodeJS.Timeout | undefined;
    try {
      const answered = query(client, "SELECT term FROM leader_term");
      const late = new Promise<never>((_, reject) => {
        timeout = setTimeout(
          () => reject(new Error(`the leadership connection did not answer within ${this.checkTimeoutMs} ms`)),
          this.checkTimeoutMs,
        );
      });
      const [row] = await Promise.race([answered, late]);
      if (row?.term !== this.current) {
        throw new Error(`the leader term is ${String(row?.term)}, not this reconciler's ${this.current}`);
      }
    } catch (e) {
      if (this.client === client && this.current !== undefined) {
        this.lose(storeError(e, "checking the leadership", this.#location));
      }
    } finally {
      clearTimeout(timeout);
      this.checking = false;
    }
  }

  private lose(e: Error): void {
    const term = this.current;
    this.stopChecks();
    this.current = undefined;
    if (this.client !== undefined) this.drop(this.client);
    // Ending the session (if it still lives) frees the lock: nobody may think it still leads.
    this.emit("lost", new Error(`lost the leadership of term ${term}: ${e.message}`, { cause: e }));
  }

  private drop(client: Client): void {
    if (this.client === client) this.client = undefined;
    try {
      endClient(client);
    } catch {
      // Already closed.
    }
  }
}

function query(client: Client, text: string): Promise<Record<string, unknown>[]> {
  return new Promise((resolve, reject) => client.query(text, (e, rows) => (e ? reject(e) : resolve(rows))));
}

/**
 * SQLite: an exclusive lock on `<path>.leader`, held by a connection in exclusive locking mode
 * from the first write until it closes (or the process dies). The sidecar also counts terms.
 * ":memory:" (one process by definition) always leads.
 */
export class SqliteLeadership extends EventEmitter<StoreLeadershipEvents> implements StoreLeadership {
  private readonly pollMs: number;
  private db: Database.Database | undefined;
  private current: number | undefined;

  constructor(
    private readonly path: string,
    options: Pick<LeadershipOptions, "pollMs"> = {},
  ) {
    super();
    this.pollMs = options.pollMs ?? 500;
  }

  get term(): number | undefined {
    return this.current;
  }

  acquire(options: { readonly signal?: AbortSignal } = {}): Promise<number> {
    return waitForLeadership(this, this.pollMs, options.signal);
  }

  async tryAcquire(): Promise<number | undefined> {
    if (this.current !== undefined) return this.current;
    if (this.path === ":memory:") return (this.current = 1);
    // timeout 0: a held lock answers SQLITE_BUSY at once instead of waiting.
    const db = new Database(`${this.path}.leader`, { timeout: 0 });
    try {
      db.pragma("locking_mode = EXCLUSIVE");
      db.exec("BEGIN EXCLUSIVE");
      db.exec("CREATE TABLE IF NOT EXISTS leader_term (term INTEGER NOT NULL)");
      const row = db.prepare("SELECT term FROM leader_term").get() as { term: number } | undefined;
      const term = (row?.term ?? 0) + 1;
      db.prepare(row === undefined ? "INSERT INTO leader_term VALUES (?)" : "UPDATE leader_term SET term = ?").run(
        term,
      );
      db.exec("COMMIT"); // the exclusive lock stays: locking_mode = EXCLUSIVE
      this.db = db;
      this.current = term;
      return term;
    } catch (e) {
      db.close();
      if ((e as { code?: string }).code === "SQLITE_BUSY") return undefined;
      throw e;
    }
  }

  async release(): Promise<void> {
    this.db?.close();
    this.db = undefined;
    this.current = undefined;
  }
}
