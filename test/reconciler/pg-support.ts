// PostgreSQL for the store and leadership tests: the tests' own cluster (scripts/postgres-up.sh,
// started here when not running yet), a fresh database per test file run, a fresh schema per store.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import Client from "pg-native";
import { endClient } from "../../reconciler/store/postgres-connection";

const ROOT = join(__dirname, "../..");

/** The cluster's admin URL: $VMPOOLS_TEST_PG_URL, or the one scripts/postgres-up.sh starts and prints. */
export function adminUrl(): string {
  const fromEnv = process.env.VMPOOLS_TEST_PG_URL;
  if (fromEnv) return fromEnv;
  return execFileSync("bash", [join(ROOT, "scripts/postgres-up.sh")], { encoding: "utf8" }).trim();
}

/** Runs statements as the cluster's admin on `url` (autocommit, one connection per call). */
export function adminQuery(url: string, sql: string): Record<string, unknown>[] {
  const client = new Client();
  client.connectSync(url);
  try {
    return client.querySync(sql);
  } finally {
    endClient(client);
  }
}

/** A database of its own for one test file: its URL and a drop function for afterAll. */
export function createTestDatabase(): { readonly url: string; readonly drop: () => void } {
  const admin = adminUrl();
  const name = `vmpools_test_${randomBytes(6).toString("hex")}`;
  adminQuery(admin, `CREATE DATABASE ${name}`);
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return { url: url.href, drop: () => void adminQuery(admin, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

let schemas = 0;
/** A fresh, empty schema in `databaseUrl`: the URL of a store that sees only it. */
export function freshSchemaUrl(databaseUrl: string): string {
  const schema = `s${process.pid}_${++schemas}`;
  adminQuery(databaseUrl, `CREATE SCHEMA ${schema}`);
  // synchronous_commit off: these tests are about semantics and atomicity, not durability (the
  // server stays up), and a commit then costs a round trip rather than an fsync.
  const options = encodeURIComponent(`-csearch_path=${schema} -csynchronous_commit=off`);
  return `${databaseUrl}${databaseUrl.includes("?") ? "&" : "?"}options=${options}`;
}
