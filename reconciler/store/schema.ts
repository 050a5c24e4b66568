import type Database from "better-sqlite3";

/**
 * Ordered schema migrations; migration `i` takes the file from `PRAGMA user_version` i to i+1.
 * Shipped entries are history: never edit one, append a new one.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: who holds what, and the intents that guard side effects. Times are epoch milliseconds.
  `
  CREATE TABLE assignments (
    pool  TEXT NOT NULL,
    vm    TEXT NOT NULL,
    user  TEXT NOT NULL,
    since INTEGER NOT NULL,
    how   TEXT NOT NULL CHECK (how IN ('user', 'admin')),
    PRIMARY KEY (pool, vm)
  ) STRICT, WITHOUT ROWID;
  CREATE INDEX assignments_by_user ON assignments (user, pool);

  CREATE TABLE intents (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('take', 'return', 'revert', 'prestart', 'detach')),
    pool            TEXT NOT NULL,
    vm              TEXT NOT NULL,
    user            TEXT,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
  ) STRICT;
  `,
  // 2: the seed's admin-access note (such a VM is not stateless) and per-user console defaults.
  `
  ALTER TABLE assignments ADD COLUMN admin_access INTEGER NOT NULL DEFAULT 0 CHECK (admin_access IN (0, 1));

  CREATE TABLE console_options (
    pool       TEXT NOT NULL,
    user       TEXT NOT NULL,
    options    TEXT NOT NULL CHECK (json_valid(options) AND json_type(options) = 'object'),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (pool, user)
  ) STRICT, WITHOUT ROWID;

  -- Recovery scans only unfinished intents; finished ones are history.
  CREATE INDEX intents_pending ON intents (created_at) WHERE state = 'pending';
  CREATE INDEX intents_by_vm ON intents (pool, vm) WHERE state = 'pending';
  `,
  // 3: what an intent's side effect needs to be redone after a crash (e.g. the overlay a revert recreates).
  `
  ALTER TABLE intents ADD COLUMN payload TEXT CHECK (payload IS NULL OR json_valid(payload));
  `,
  // 4: the last policy document read per pool, so a restart while the engines replace one (delete,
  // then create) does not fall back to the members' older creation-time policy.
  `
  CREATE TABLE policy_documents (
    pool       TEXT PRIMARY KEY,
    policy     TEXT NOT NULL CHECK (json_valid(policy) AND json_type(policy) = 'object'),
    updated_at INTEGER NOT NULL
  ) STRICT, WITHOUT ROWID;
  `,
  // 5: what keeps a member out of service across restarts (a revert that must happen first, a
  // prestart that kept failing), and the fresh spare overlays a revert switches a member to.
  `
  CREATE TABLE member_conditions (
    pool      TEXT NOT NULL,
    vm        TEXT NOT NULL,
    condition TEXT NOT NULL CHECK (condition IN ('revert-needed', 'prestart-gave-up')),
    reason    TEXT NOT NULL,
    since     INTEGER NOT NULL,
    PRIMARY KEY (pool, vm, condition)
  ) STRICT, WITHOUT ROWID;

  CREATE TABLE spare_volumes (
    storage_pool TEXT NOT NULL,
    volume       TEXT NOT NULL,
    backing_path TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (storage_pool, volume)
  ) STRICT, WITHOUT ROWID;
  `,
  // 6: a spare is fresh only while it takes the space it took when it was made (nothing was
  // written to it since, whoever might have attached it).
  `
  ALTER TABLE spare_volumes ADD COLUMN allocation_bytes INTEGER;
  `,
  // 7: cluster hosts an admin put in maintenance (kept across restarts and shared by reconcilers
  // on one store: a standby that takes over must not start members there).
  `
  CREATE TABLE host_maintenance (
    host  TEXT PRIMARY KEY,
    since INTEGER NOT NULL
  ) STRICT, WITHOUT ROWID;
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** The file was written by a newer vmpools; running older code on it could corrupt it. */
export class SchemaTooNewError extends Error {
  constructor(
    readonly path: string,
    readonly found: number,
    readonly supported: number,
  ) {
    super(
      `state store ${path} has schema version ${found}, but this vmpools build understands versions up to ` +
        `${supported}; run a vmpools release that supports version ${found} (downgrades are not supported)`,
    );
    this.name = "SchemaTooNewError";
  }
}

/** Brings the file up to SCHEMA_VERSION. Idempotent and safe when several processes open at once. */
export function migrate(db: Database.Database, path: string): void {
  // IMMEDIATE: the version is re-read under the write lock, so two openers never both apply a step.
  db.transaction(() => {
    const current = db.pragma("user_version", { simple: true }) as number;
    if (current > SCHEMA_VERSION) throw new SchemaTooNewError(path, current, SCHEMA_VERSION);
    for (let v = current; v < SCHEMA_VERSION; v++) db.exec(MIGRATIONS[v]!);
    if (current !== SCHEMA_VERSION) db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}
