// Issue 9, D7 and D8: what a local user could do to `vmpools serve` through its files and CLI.
import { execFile } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TokenAuth, newToken } from "../../reconciler/api/auth";
import { StateStore } from "../../reconciler/store/store";

let dir: string;
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), "vmpools-local-"))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const vmpools = (args: string[]) =>
  new Promise<{ code: number; out: string }>((resolve) =>
    execFile("node", [join(__dirname, "../../bin/vmpools"), ...args], (error, stdout, stderr) =>
      resolve({ code: error ? ((error.code as number | undefined) ?? 1) : 0, out: stdout + stderr }),
    ),
  );

test("D8: a tokens file others can write is refused, naming the fix", () => {
  const file = join(dir, "tokens.json");
  writeFileSync(file, JSON.stringify({ tokens: [newToken("alice", "user").entry] }));
  chmodSync(file, 0o600);
  expect(() => TokenAuth.fromFile(file)).not.toThrow();
  for (const mode of [0o666, 0o620, 0o602]) {
    chmodSync(file, mode);
    expect(() => TokenAuth.fromFile(file)).toThrow(
      new RegExp(
        `tokens file .*tokens\\.json is writable by group or others \\(mode ${mode.toString(8)}\\).*chmod go-w`,
      ),
    );
  }
});

test("D8: the state store's files are 0600, also when they existed with another mode", () => {
  const db = join(dir, "state.db");
  const store = StateStore.open(db);
  store.close();
  for (const f of [db, `${db}-wal`, `${db}-shm`]) {
    try {
      expect({ f, mode: statSync(f).mode & 0o777 }).toEqual({ f, mode: 0o600 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
  }
  chmodSync(db, 0o644);
  StateStore.open(db).close();
  expect(statSync(db).mode & 0o777).toBe(0o600);
});

test("D7: vmpools token refuses a name serve would refuse, and unknown options", async () => {
  for (const user of ["alice smith", "jürgen", "a".repeat(65)]) {
    const r = await vmpools(["token", user]);
    expect(r.code).toBe(2);
    expect(r.out).toContain("token: user ");
    expect(r.out).toContain("use 1-64 of letters, digits and '._@-'");
    expect(r.out).not.toMatch(/tokens-file entry: \{/);
  }
  const role = await vmpools(["token", "alice", "--role", "admin"]);
  expect(role.code).toBe(2);
  expect(role.out).toContain("token: unknown option --role (token takes --admin)");
  expect(() => newToken("alice smith", "user")).toThrow(/use 1-64 of letters/);
  // What it prints for a valid name, serve takes.
  const ok = await vmpools(["token", "a".repeat(64), "--admin"]);
  expect(ok.code).toBe(0);
  const entry = JSON.parse(ok.out.split("tokens-file entry: ")[1]!);
  expect(() => new TokenAuth([entry])).not.toThrow();
  expect(entry.role).toBe("admin");
});
