// The PostgreSQL store's own concerns (its behaviour shared with SQLite is in store.test.ts):
// several processes claiming and migrating at once, schema versions, the password kept out of
// errors, and what a claim costs.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { inspect } from "node:util";
import { POSTGRES_SCHEMA_VERSION, PostgresStateStore } from "../../reconciler/store/postgres";
import { PostgresStoreError } from "../../reconciler/store/postgres-connection";
import { SchemaTooNewError, StateStore } from "../../reconciler/store/store";
import { adminQuery, createTestDatabase, freshSchemaUrl } from "./pg-support";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";

const fixture = (name: string): string => join(__dirname, "fixtures", name);

let pg: ReturnType<typeof createTestDatabase>;
beforeAll(() => {
  pg = createTestDatabase();
});
afterAll(() => pg.drop());

/** The schema name a freshSchemaUrl URL selects. */
const schemaOf = (url: string): string => /search_path%3D(\w+)/.exec(url)![1]!;

const lines = (child: ChildProcessWithoutNullStreams): (() => Promise<string>) => {
  const it = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  return async () => {
    const next = await it.next();
    if (next.done === true) throw new Error("worker exited before writing a line");
    return next.value;
  };
};

/** Starts `count` workers, waits until each says "ready", then releases them together. */
async function together(script: string, count: number, args: (i: number) => string[]) {
  const workers = Array.from({ length: count }, (_, i) => spawn(process.execPath, [fixture(script), ...args(i)]));
  for (const w of workers) w.stderr.pipe(process.stderr);
  const readers = workers.map(lines);
  expect(await Promise.all(readers.map((next) => next()))).toEqual(workers.map(() => "ready"));
  for (const w of workers) w.stdin.end("go\n");
  return Promise.all(readers.map((next) => next()));
}

describe("several processes on one database", () => {
  it("migrate a fresh database once when they open it at the same moment", async () => {
    const url = freshSchemaUrl(pg.url);
    expect(await together("pg-open-worker.js", 4, () => [url])).toEqual(["opened", "opened", "opened", "opened"]);
    const schema = schemaOf(url);
    expect(adminQuery(pg.url, `SELECT version FROM ${schema}.schema_version`)).toEqual([
      { version: POSTGRES_SCHEMA_VERSION },
    ]);
    expect(adminQuery(pg.url, `SELECT count(*) AS n FROM ${schema}.leader_term`)).toEqual([{ n: "1" }]);
  });

  it("never hand a VM out twice nor let a user exceed the limit, two processes claiming at once", async () => {
    // The database's own default schema, fsync on: two stores as two reconcilers would have them.
    const url = pg.url;
    const reports = (
      await together("claim-worker.js", 2, (i) => [url, String(i + 7), "200", "lab", "60", "12", "4", "fill"])
    ).map(
      (line) =>
        JSON.parse(line) as {
          claims: { user: string; vm: string; intentId: string }[];
          refusals: { user: string; refused: string }[];
          violations: string[];
          ms: number;
        },
    );
    expect(reports.flatMap((r) => r.violations)).toEqual([]);
    const claims = reports.flatMap((r) => r.claims);
    expect(new Set(claims.map((c) => c.vm)).size).toBe(claims.length);
    // 12 users × 4 = 48 < 60 VMs: the limit, not the supply, ends the hand-outs.
    expect(claims).toHaveLength(48);
    const perUser = new Map<string, number>();
    for (const c of claims) perUser.set(c.user, (perUser.get(c.user) ?? 0) + 1);
    expect([...perUser.values()].every((n) => n === 4)).toBe(true);
    // Both processes got some: they really ran side by side.
    expect(reports.every((r) => r.claims.length > 0)).toBe(true);

    const s = PostgresStateStore.open(url);
    try {
      expect(new Map(s.assignments("lab").map((a) => [a.vm, a.user]))).toEqual(
        new Map(claims.map((c) => [c.vm, c.user])),
      );
      for (const c of claims) expect(s.intent(c.intentId)).toMatchObject({ kind: "take", vm: c.vm, state: "pending" });
    } finally {
      s.close();
    }
    console.log(`two processes, 400 claim attempts: ${reports.map((r) => `${r.ms} ms`).join(", ")}`);
  });
});

describe("schema versions", () => {
  it("refuses a database of a newer release, naming both versions and not the password, untouched", () => {
    const url = freshSchemaUrl(pg.url);
    const schema = schemaOf(url);
    adminQuery(
      pg.url,
      `CREATE TABLE ${schema}.schema_version (version INTEGER NOT NULL);
       INSERT INTO ${schema}.schema_version VALUES (${POSTGRES_SCHEMA_VERSION + 1})`,
    );
    // Trust authentication ignores the password; it is there to be kept out of the message.
    const withPassword = url.replace("postgres@", "postgres:pa55-w0rd@");
    let error: unknown;
    try {
      PostgresStateStore.open(withPassword);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(SchemaTooNewError);
    const message = (error as Error).message;
    expect(message).toContain(`schema version ${POSTGRES_SCHEMA_VERSION + 1}`);
    expect(message).toContain(`up to ${POSTGRES_SCHEMA_VERSION}`);
    expect(message).toContain("postgres:<redacted>@127.0.0.1");
    expect(message).not.toContain("pa55-w0rd");
    expect(adminQuery(pg.url, `SELECT to_regclass('${schema}.assignments') AS t`)).toEqual([{ t: null }]);
  });
});

describe("the password stays out of errors and of the store object", () => {
  it.each([
    ["in the authority", "postgres://vmpools:s3cr%23t-pw@127.0.0.1:1/vmpools", ["s3cr%23t-pw", "s3cr#t-pw"]],
    ["as a parameter", "postgresql://vmpools@127.0.0.1:1/vmpools?password=s3cr3t-pw&sslmode=disable", ["s3cr3t-pw"]],
  ])("when it cannot connect (password %s)", (_, url, secrets) => {
    let error: unknown;
    try {
      PostgresStateStore.open(url);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(PostgresStoreError);
    const message = (error as Error).message;
    expect(message).toMatch(/connecting failed: .*Connection refused/s);
    expect(message).toContain("<redacted>");
    expect(message).toContain("127.0.0.1:1");
    for (const secret of secrets) expect(`${message} ${inspect(error)}`).not.toContain(secret);
  });

  it("in a query's error and when the store is inspected", () => {
    const url = freshSchemaUrl(pg.url).replace("postgres@", "postgres:an0ther-pw@");
    const s = PostgresStateStore.open(url);
    try {
      expect(s.location).toContain("postgres:<redacted>@");
      expect(inspect(s, { depth: 5, showHidden: true })).not.toContain("an0ther-pw");
      let error: unknown;
      try {
        s.setConsoleOptions("p", "alice", "not an object" as never);
      } catch (e) {
        error = e;
      }
      expect((error as Error).message).toMatch(/setConsole failed: .*check constraint/);
      expect((error as Error).message).not.toContain("an0ther-pw");
    } finally {
      s.close();
    }
  });
});

describe("cost of a claim transaction", () => {
  it("is measured on loopback against SQLite's (both durable: fsync on, synchronous = FULL)", () => {
    const N = 300;
    const time = (claim: (i: number) => unknown): number => {
      const started = process.hrtime.bigint();
      for (let i = 0; i < N; i++) claim(i);
      return Number(process.hrtime.bigint() - started) / N / 1000;
    };
    const pgStore = PostgresStateStore.open(pg.url.replace(/\?.*$/, "")); // default schema, fsync on
    const dir = mkdtempSync(join(tmpdir(), "vmpools-pg-cost-"));
    const sqlite = StateStore.open(join(dir, "cost.db"));
    try {
      const pgUs = time((i) => pgStore.claim("cost", `u${i}`, [`vm-${i}`], 1));
      const sqliteUs = time((i) => sqlite.claim("cost", `u${i}`, [`vm-${i}`], 1));
      const readUs = time((i) => pgStore.holder("cost", `vm-${i}`));
      expect(pgStore.assignments("cost")).toHaveLength(N);
      expect(sqlite.assignments("cost")).toHaveLength(N);
      console.log(
        `claim transaction: PostgreSQL ${pgUs.toFixed(0)} µs, SQLite ${sqliteUs.toFixed(0)} µs; ` +
          `one PostgreSQL read ${readUs.toFixed(0)} µs (mean of ${N})`,
      );
    } finally {
      pgStore.close();
      sqlite.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
