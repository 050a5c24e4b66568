import type Client from "pg-native";
import { SchemaTooNewError } from "./schema";

/**
 * Advisory lock keys, (namespace, key) pairs: advisory locks are per database, and the namespace
 * keeps ours apart from any other application's on the same database.
 */
export const LOCK_NAMESPACE = 0x766d706c; // "vmpl"
export const LOCK_KEYS = {
  /** Held (transaction-level) while migrating, so two openers never both apply a step. */
  migrate: 1,
  /** Held (transaction-level) by every write transaction: SQLite's IMMEDIATE, one writer at a time. */
  write: 2,
  /** Held (session-level) by the active reconciler on its own connection. */
  leader: 3,
} as const;

/**
 * Ordered PostgreSQL migrations; migration `i` takes the database from `schema_version` i to
 * i+1. Shipped entries are history: never edit one, append a new one. Their own history, not
 * SQLite's: version 1 is the SQLite schema as of its version 6, plus the leader term.
 *
 * Text that is sorted or compared is `COLLATE "C"`, byte order as in SQLite, whatever the
 * database's locale. Times are epoch milliseconds (BIGINT).
 */
export const POSTGRES_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE assignments (
    pool         TEXT COLLATE "C" NOT NULL,
    vm           TEXT COLLATE "C" NOT NULL,
    "user"       TEXT COLLATE "C" NOT NULL,
    since        BIGINT NOT NULL,
    how          TEXT NOT NULL CHECK (how IN ('user', 'admin')),
    admin_access BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (pool, vm)
  );
  CREATE INDEX assignments_by_user ON assignments ("user", pool);

  CREATE TABLE intents (
    -- Insertion order among intents created in the same millisecond (SQLite's rowid).
    seq             BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('take', 'return', 'revert', 'prestart', 'detach')),
    pool            TEXT COLLATE "C" NOT NULL,
    vm              TEXT COLLATE "C" NOT NULL,
    "user"          TEXT,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    last_error      TEXT,
    -- Kept as written (JSONB would re-format it); the cast rejects what is not JSON.
    payload         TEXT CHECK (payload IS NULL OR payload::jsonb IS NOT NULL),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
  );
  CREATE INDEX intents_pending ON intents (created_at, seq) WHERE state = 'pending';
  CREATE INDEX intents_by_vm ON intents (pool, vm) WHERE state = 'pending';

  CREATE TABLE console_options (
    pool       TEXT COLLATE "C" NOT NULL,
    "user"     TEXT COLLATE "C" NOT NULL,
    options    JSONB NOT NULL CHECK (jsonb_typeof(options) = 'object'),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (pool, "user")
  );

  CREATE TABLE policy_documents (
    pool       TEXT COLLATE "C" PRIMARY KEY,
    policy     JSONB NOT NULL CHECK (jsonb_typeof(policy) = 'object'),
    updated_at BIGINT NOT NULL
  );

  CREATE TABLE member_conditions (
    pool      TEXT COLLATE "C" NOT NULL,
    vm        TEXT COLLATE "C" NOT NULL,
    condition TEXT COLLATE "C" NOT NULL CHECK (condition IN ('revert-needed', 'prestart-gave-up')),
    reason    TEXT NOT NULL,
    since     BIGINT NOT NULL,
    PRIMARY KEY (pool, vm, condition)
  );

  CREATE TABLE spare_volumes (
    storage_pool     TEXT NOT NULL,
    volume           TEXT NOT NULL,
    backing_path     TEXT NOT NULL,
    allocation_bytes BIGINT,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (storage_pool, volume)
  );

  -- Fencing: bumped by each new leader; a store opened for a term writes only while it is current.
  CREATE TABLE leader_term (
    only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    term     BIGINT NOT NULL
  );
  INSERT INTO leader_term (term) VALUES (0);
  `,
  // 2: cluster hosts an admin put in maintenance (SQLite's version 7).
  `
  CREATE TABLE host_maintenance (
    host  TEXT COLLATE "C" PRIMARY KEY,
    since BIGINT NOT NULL
  );
  `,
];

export const POSTGRES_SCHEMA_VERSION = POSTGRES_MIGRATIONS.length;

/**
 * Brings the database up to POSTGRES_SCHEMA_VERSION in one transaction (PostgreSQL's DDL is
 * transactional: a failed step leaves the previous version). Idempotent and safe when several
 * processes open at once: the version is read and the steps applied under a transaction-level
 * advisory lock, taken before `schema_version` itself is created (two concurrent CREATE TABLE IF
 * NOT EXISTS can otherwise collide). `location` is the redacted URL, for the error.
 */
export function migratePostgres(db: Client, location: string): void {
  db.querySync("BEGIN");
  try {
    db.querySync(`SELECT pg_advisory_xact_lock(${LOCK_NAMESPACE}, ${LOCK_KEYS.migrate})`);
    db.querySync("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
    const rows = db.querySync("SELECT version FROM schema_version");
    if (rows.length === 0) db.querySync("INSERT INTO schema_version (version) VALUES (0)");
    const current = rows.length === 0 ? 0 : Number(rows[0]!.version);
    if (current > POSTGRES_SCHEMA_VERSION) {
      throw new SchemaTooNewError(location, current, POSTGRES_SCHEMA_VERSION);
    }
    for (let v = current; v < POSTGRES_SCHEMA_VERSION; v++) db.querySync(POSTGRES_MIGRATIONS[v]!);
    if (current !== POSTGRES_SCHEMA_VERSION) {
      db.querySync("UPDATE schema_version SET version = $1", [String(POSTGRES_SCHEMA_VERSION)]);
    }
    db.querySync("COMMIT");
  } catch (e) {
    rollbackQuietly(db);
    throw e;
  }
}

/** Ends a failed transaction; a broken connection cannot, and the error that broke it is the one to report. */
export function rollbackQuietly(db: Client): void {
  try {
    if (db.getTransactionStatus() !== "I") db.querySync("ROLLBACK");
  } catch {
    // The connection is gone: PostgreSQL rolls the transaction back itself.
  }
}
