// What the PostgreSQL store and the leadership share: telling a PostgreSQL location from a
// SQLite path, the connection string (TCP keepalives on), its redaction, and loading pg-native.
import type Client from "pg-native";

const REDACTED = "<redacted>";

/** `postgres://…` or `postgresql://…` (libpq's URI forms); anything else is a SQLite file path. */
export const isPostgresLocation = (location: string): boolean => /^postgres(ql)?:\/\//i.test(location);

/** The location with its password (if any) replaced, for messages and logs. */
export function redactLocation(location: string): string {
  const url = parseUrl(location);
  if (url === undefined) return "<an unparsable PostgreSQL URL>";
  // A plain placeholder, swapped afterwards: URL would percent-encode "<redacted>".
  const placeholder = "REDACTEDPASSWORD";
  if (url.password !== "") url.password = placeholder;
  // Edited as text: URLSearchParams would re-encode the rest (a space as "+", which libpq reads as "+").
  const href = url.href.replace(/([?&]password=)[^&#]*/gi, `$1${placeholder}`);
  return href.split(placeholder).join(REDACTED);
}

/** Replaces the location's password wherever it appears in `text` (e.g. an error from libpq). */
export function scrubSecret(text: string, location: string): string {
  const url = parseUrl(location);
  const secrets = [url?.password, url?.searchParams.get("password") ?? undefined]
    .filter((s): s is string => s !== undefined && s !== "")
    .flatMap((s) => [s, safeDecode(s)]);
  let out = text.split(location).join(redactLocation(location));
  for (const s of secrets) out = out.split(s).join(REDACTED);
  return out;
}

/** A failure of the PostgreSQL store or leadership; its message never holds the password. */
export class PostgresStoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PostgresStoreError";
  }
}

/** Re-throws `e` as a PostgresStoreError that names what failed and where, password scrubbed. */
export function storeError(e: unknown, doing: string, location: string): PostgresStoreError {
  const detail = scrubSecret(e instanceof Error ? e.message : String(e), location).trim();
  return new PostgresStoreError(`PostgreSQL state store ${redactLocation(location)}: ${doing} failed: ${detail}`);
}

export interface KeepaliveOptions {
  /** Seconds of silence before the first TCP keepalive probe. @default 2 */
  readonly idleSeconds?: number;
  /** Seconds between probes. @default 1 */
  readonly intervalSeconds?: number;
  /** Unanswered probes after which the connection counts as dead. @default 3 */
  readonly count?: number;
}

/**
 * The libpq connection string: the location with TCP keepalives on (so a vanished peer is
 * noticed within idle + interval × count seconds rather than the kernel's two hours), a
 * connect timeout, and an application_name that pg_stat_activity shows. Parameters the location
 * already sets win.
 */
export function connectionString(location: string, applicationName: string, keepalive: KeepaliveOptions = {}): string {
  const url = parseUrl(location);
  if (url === undefined) {
    throw new PostgresStoreError(
      `the PostgreSQL state store location is not a valid URL (${redactLocation(location)}); ` +
        "write it as postgres://user:password@host:port/database",
    );
  }
  const idle = keepalive.idleSeconds ?? 2;
  const interval = keepalive.intervalSeconds ?? 1;
  const count = keepalive.count ?? 3;
  const defaults: Record<string, string> = {
    keepalives: "1",
    keepalives_idle: String(idle),
    keepalives_interval: String(interval),
    keepalives_count: String(count),
    // Unacknowledged data (a query sent to a vanished server) also fails in bounded time.
    tcp_user_timeout: String((idle + interval * count) * 1000),
    connect_timeout: "10",
    application_name: applicationName,
  };
  // Appended as text: URLSearchParams would re-encode the location's own parameters (a space in
  // `options` as "+", which libpq does not read as a space).
  const added = Object.entries(defaults)
    .filter(([key]) => !url.searchParams.has(key))
    .map(([key, value]) => `${key}=${encodeURIComponent(value)}`);
  if (added.length === 0) return location;
  const [base, fragment] = location.split("#", 2);
  const joined = `${base}${base!.includes("?") ? "&" : "?"}${added.join("&")}`;
  return fragment === undefined ? joined : `${joined}#${fragment}`;
}

/**
 * Server-side keepalives for the session: PostgreSQL then notices a vanished client (a machine
 * that died, a partition) in seconds and ends its session, which frees its advisory locks.
 */
export const serverKeepaliveSql = (keepalive: KeepaliveOptions = {}): string => {
  const idle = keepalive.idleSeconds ?? 2;
  const interval = keepalive.intervalSeconds ?? 1;
  const count = keepalive.count ?? 3;
  return (
    // Quiet: the migration's CREATE TABLE IF NOT EXISTS would print a NOTICE on every open.
    `SET client_min_messages = warning; SET tcp_keepalives_idle = ${idle}; SET tcp_keepalives_interval = ${interval}; ` +
    `SET tcp_keepalives_count = ${count}; SET tcp_user_timeout = ${(idle + interval * count) * 1000}`
  );
};

/** Column values as the store wants them: integers as numbers, booleans as booleans, the rest as text. */
const toSafeNumber = (text: string): number => {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new RangeError(`PostgreSQL returned ${text}, beyond JavaScript's safe integers`);
  return n;
};
const asText = (text: string): string => text;
const INT_OIDS = new Set([20, 21, 23]); // int8, int2, int4
const BOOL_OID = 16;
export const TYPE_PARSERS = {
  getTypeParser: (oid: number): ((text: string) => unknown) =>
    INT_OIDS.has(oid) ? toSafeNumber : oid === BOOL_OID ? (text: string) => text === "t" : asText,
};

type ClientClass = typeof Client;

/**
 * pg-native, loaded on first use: SQLite users need neither it nor libpq. It is a native module
 * built at install time against Debian's libpq-dev; say how to get it when it is missing.
 */
export function loadPgNative(): ClientClass {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require("pg-native") as ClientClass;
  } catch (e) {
    throw new PostgresStoreError(
      "the PostgreSQL state store needs the pg-native package and its libpq addon, which could not be loaded " +
        `(${(e as Error).message.split("\n")[0]}): install libpq-dev (apt-get install libpq-dev), then ` +
        "`npm install pg-native` with `libpq` allowed to run its install script (package.json allowScripts)",
    );
  }
}

function parseUrl(location: string): URL | undefined {
  try {
    return new URL(location);
  } catch {
    return undefined;
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Ended clients, kept reachable for a moment: see {@link endClient}. */
const ending = new Set<Client>();

/**
 * Closes a pg-native client. libpq@1.11's finish() hands its socket watcher, which lives inside
 * the client's native object, to libuv to close on the next loop turn; if the garbage collector
 * frees the object before that turn, libuv reads freed memory and aborts the process (seen here:
 * "uv__finish_close: Assertion `handle->flags & UV_HANDLE_CLOSING' failed" at exit). So the
 * client stays referenced until well after the close has run.
 */
export function endClient(client: Client): void {
  if (ending.has(client)) return;
  ending.add(client);
  try {
    client.end();
  } finally {
    setTimeout(() => ending.delete(client), 1000).unref();
  }
}
