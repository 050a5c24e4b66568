// Issue 9 D12: the vmpools CLI's arguments, help and client-side errors. In-process (main()),
// against real sockets on loopback; serve's lifecycle is in serve-lifecycle.test.ts.
import { createServer, type Server } from "node:http";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main } from "../../reconciler/cli";

let dir: string;
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), "vmpools-cli-"))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the CLI in this process; what it prints, and its exit code. */
async function cli(args: string[], env: Record<string, string | undefined> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const log = jest.spyOn(console, "log").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
  const error = jest.spyOn(console, "error").mockImplementation((...a: unknown[]) => void err.push(a.join(" ")));
  const saved = { ...process.env };
  Object.assign(process.env, { VMPOOLS_TOKEN: "t".repeat(43) }, env);
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete process.env[k];
  try {
    const code = await main(args);
    return { code, out: out.join("\n"), err: err.join("\n") };
  } finally {
    process.env = saved;
    log.mockRestore();
    error.mockRestore();
  }
}

/** A port on loopback that nothing listens on (bound, then released). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

const COMMANDS = ["init", "serve", "token", "take", "return", "status", "detach", "console", "help"];

describe("help", () => {
  test.each([[["--help"]], [["-h"]], [["help"]]])("vmpools %j prints every command on stdout, exit 0", async (args) => {
    const r = await cli(args);
    expect(r).toMatchObject({ code: 0, err: "" });
    expect(r.out).toMatch(/^usage:/);
    for (const c of COMMANDS) expect(r.out).toContain(`vmpools ${c}`);
    expect(r.out).toContain("VMPOOLS_URL");
  });

  test("help COMMAND, COMMAND --help and COMMAND -h print that command's usage and options", async () => {
    const forms = [
      ["help", "console"],
      ["console", "--help"],
      ["console", "-h"],
      ["console", "P", "--help"],
    ];
    const printed = await Promise.all(forms.map((f) => cli(f)));
    for (const r of printed) {
      expect(r).toMatchObject({ code: 0, err: "" });
      expect(r.out).toMatch(/^usage: vmpools console POOL VM/);
      expect(r.out).toMatch(/--out FILE .*VM\.vv/);
      expect(r.out).toMatch(/--option KEY=VALUE .*repeat/);
    }
    expect(new Set(printed.map((r) => r.out)).size).toBe(1);
  });

  test("serve --help names every option with its default", async () => {
    const r = await cli(["serve", "--help"]);
    expect(r.code).toBe(0);
    for (const o of [
      /--uri URI .*qemu:\/\/\/system/,
      /--db FILE .*\/var\/lib\/vmpools\/state\.db/,
      /--listen ADDRESS .*PORT, HOST:PORT or \[IPv6\]:PORT.*127\.0\.0\.1:8480/,
      /--tokens FILE .*\/etc\/vmpools\/tokens\.json/,
      /--console-host HOST/,
      /--resync-seconds N .*30/,
      /--pools POOL,\.\.\./,
      /--drain-seconds N .*30/,
    ])
      expect(r.out).toMatch(o);
  });

  test("help for an unknown command, no command, an unknown command: exit 2 on stderr", async () => {
    expect(await cli(["help", "tak"])).toMatchObject({
      code: 2,
      out: "",
      err: expect.stringMatching(/unknown command tak/),
    });
    expect(await cli([])).toMatchObject({ code: 2, err: expect.stringMatching(/^vmpools: no command\nusage:/) });
    expect(await cli(["tak", "P"])).toMatchObject({ code: 2, err: expect.stringMatching(/unknown command tak/) });
    expect(await cli(["--lisen", "8481"])).toMatchObject({ code: 2, err: expect.stringMatching(/command first/) });
  });
});

describe("strict arguments", () => {
  test("an unknown option is refused, naming it and the command's options", async () => {
    const lisen = await cli(["serve", "--lisen", "8481", "--db", join(dir, "s.db")]);
    expect(lisen.code).toBe(2);
    expect(lisen.err).toMatch(
      /^vmpools: serve: unknown option --lisen \(serve takes --uri, --host, --migration-uri, --unsafe-migration, --db, --listen, --tokens, --console-host, --resync-seconds, --pools, --drain-seconds, --attestation-key\)\nusage: vmpools serve/,
    );
    expect(existsSync(join(dir, "s.db"))).toBe(false);
    expect((await cli(["take", "P", "-x"])).err).toMatch(/take: unknown option -x \(take takes no options\)/);
    expect((await cli(["status", "--json"])).err).toMatch(/status: unknown option --json/);
    expect((await cli(["token", "alice", "--role", "admin"])).err).toContain(
      "token: unknown option --role (token takes --admin)",
    );
  });

  test("an option without its value is named", async () => {
    expect(await cli(["serve", "--db"])).toMatchObject({
      code: 2,
      err: expect.stringMatching(/serve: --db needs a value/),
    });
    expect((await cli(["serve", "--db", "--uri", "test:///default"])).err).toMatch(/serve: --db needs a value/);
    expect((await cli(["serve", "--drain-seconds", "-1"])).err).toMatch(
      /serve: --drain-seconds needs a value \(for one that starts with -, write --drain-seconds=-1\)/,
    );
    expect((await cli(["console", "P", "V", "--out"])).err).toMatch(/console: --out needs a value/);
    expect((await cli(["token", "alice", "--admin=yes"])).err).toMatch(/token: --admin takes no value/);
  });

  test("a wrong number of arguments is named with what was given", async () => {
    expect((await cli(["take"])).err).toMatch(/^vmpools: take: expected POOL\nusage: vmpools take POOL/);
    expect(await cli(["take", "a", "b"])).toMatchObject({
      code: 2,
      err: expect.stringMatching(/take: expected POOL, got 2 arguments: a b\n/),
    });
    expect((await cli(["return", "P"])).err).toMatch(/return: expected POOL VM, got 1 argument: P\n/);
    expect((await cli(["detach", "P", "V", "W"])).err).toMatch(/detach: expected POOL VM, got 3 arguments: P V W\n/);
    expect((await cli(["status", "x"])).err).toMatch(/status: takes no arguments, got 1: x\n/);
    expect((await cli(["serve", "x"])).err).toMatch(/serve: takes no arguments, got 1: x\n/);
    expect((await cli(["init", "a", "b"])).err).toMatch(/init: expected \[DIR\], got 2 arguments: a b\n/);
    expect((await cli(["token"])).err).toMatch(/token: expected USER\n/);
  });
});

describe("serve refuses bad option values before it opens anything", () => {
  const serveWith = (...args: string[]) => cli(["serve", "--db", join(dir, "never.db"), ...args]);

  test.each([
    "abc",
    "8481x",
    "::1:8480",
    "127.0.0.1:",
    "127.0.0.1:70000",
    "127.0.0.1:-1",
    "[::1]",
    "[not-ipv6]:8480",
    "[::1]8480",
    "a b:8480",
    ":8480",
    "",
  ])("--listen %j", async (value) => {
    const r = await serveWith("--listen", value);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`--listen ${value}: give PORT, HOST:PORT or [IPv6]:PORT`);
    expect(r.err).not.toContain("NaN");
    expect(existsSync(join(dir, "never.db"))).toBe(false);
  });

  test("--listen ::1:8480 hints at brackets", async () => {
    expect((await serveWith("--listen", "::1:8480")).err).toMatch(/in brackets, e\.g\. \[::1\]:8480/);
  });

  test.each([
    ["a,,b", /--pools a,,b: an empty pool name/],
    ["Desk-??,bad name", /--pools Desk-\?\?,bad name: "bad name": use only letters, digits/],
    ["A,B,A", /--pools A,B,A: "A" is listed twice/],
  ])("--pools %j", async (value, message) => {
    const r = await serveWith("--pools", value);
    expect(r).toMatchObject({ code: 2, err: expect.stringMatching(message) });
    expect(existsSync(join(dir, "never.db"))).toBe(false);
  });

  test.each(["0", "1.5", "x", "100000"])("--resync-seconds %j", async (value) => {
    const r = await serveWith("--resync-seconds", value);
    expect(r).toMatchObject({ code: 2, err: expect.stringContaining(`--resync-seconds ${value}: give whole seconds`) });
  });

  test.each([
    [["--host", "kvm1"], /--host kvm1: give NAME=VALUE, e\.g\. --host kvm1=qemu\+ssh:/],
    [["--host", "bad name=qemu:///system"], /--host bad name=qemu:\/\/\/system: give NAME=VALUE/],
    [["--host", "a=x", "--host", "a=y"], /--host a=y: a is given twice/],
    [["--host", "a=qemu:///system", "--uri", "qemu:///system"], /--uri and --host: give one libvirt connection/],
    [["--host", "a=x", "--migration-uri", "b=tcp://1.2.3.4"], /--migration-uri b=tcp:\/\/1\.2\.3\.4: no --host b=URI/],
    [["--host", "a=x", "--migration-uri", "a=1.2.3.4"], /--migration-uri a=1\.2\.3\.4: give tcp:\/\/ADDRESS/],
  ])("cluster hosts %j", async (args, message) => {
    const r = await serveWith(...args);
    expect(r).toMatchObject({ code: 2, err: expect.stringMatching(message) });
    expect(existsSync(join(dir, "never.db"))).toBe(false);
  });

  test("--attestation-key: the file must be private and hold a PEM key; named with the fix", async () => {
    const key = join(dir, "client.key");
    writeFileSync(key, "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n", { mode: 0o644 });
    chmodSync(key, 0o644);
    expect(await serveWith("--attestation-key", `secure=${key}`)).toMatchObject({
      code: 2,
      err: expect.stringContaining(
        `--attestation-key secure=${key}: secret file ${key} has mode 0644; make it private: chmod 600 ${key}`,
      ),
    });
    chmodSync(key, 0o600);
    const notKey = join(dir, "not.key");
    writeFileSync(notKey, "hello\n", { mode: 0o600 });
    expect(await serveWith("--attestation-key", `secure=${notKey}`)).toMatchObject({
      code: 2,
      err: expect.stringContaining(`--attestation-key secure=${notKey}: the file holds no PEM private key`),
    });
    expect(await serveWith("--attestation-key", "secure")).toMatchObject({
      code: 2,
      err: expect.stringMatching(/--attestation-key secure: give NAME=VALUE, e\.g\. --attestation-key trusted=/),
    });
    expect(await serveWith("--attestation-key", `secure=${join(dir, "missing.key")}`)).toMatchObject({
      code: 2,
      err: expect.stringContaining("cannot be read: ENOENT"),
    });
    expect(existsSync(join(dir, "never.db"))).toBe(false);
  });

  test.each(["-1", "x", "3601"])("--drain-seconds %j", async (value) => {
    const r = await serveWith(`--drain-seconds=${value}`);
    expect(r).toMatchObject({ code: 2, err: expect.stringContaining(`--drain-seconds ${value}: give whole seconds`) });
  });
});

describe("client commands", () => {
  test("the API's address down: names the URL and what to do, not `fetch failed`", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const r = await cli(["status"], { VMPOOLS_URL: url });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      new RegExp(
        `^vmpools: cannot reach the vmpools API at ${url}/ \\(connection refused\\): .*vmpools serve.*VMPOOLS_URL`,
      ),
    );
    expect(r.err).not.toContain("fetch failed");
  });

  test("a host that does not resolve is named", async () => {
    const r = await cli(["take", "P"], { VMPOOLS_URL: "http://no-such-host.invalid:8480" });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/cannot reach the vmpools API at http:\/\/no-such-host\.invalid:8480\/ \(host not found\)/);
  });

  test.each(["ftp://127.0.0.1:8480", "127.0.0.1:8480", "localhost:8480", "not a url", "http//x"])(
    "VMPOOLS_URL %j is refused with an example",
    async (value) => {
      const r = await cli(["status"], { VMPOOLS_URL: value });
      expect(r.code).toBe(2);
      expect(r.err).toContain(`VMPOOLS_URL ${value} is not an http:// or https:// URL`);
      expect(r.err).toContain("e.g. VMPOOLS_URL=http://127.0.0.1:8480");
    },
  );

  test("a password in VMPOOLS_URL, or the token by mistake, is not printed", async () => {
    const withPassword = await cli(["status"], { VMPOOLS_URL: "ftp://u:hunter2@h:1" });
    expect(withPassword.err).toContain("VMPOOLS_URL ftp://u:<redacted>@h:1/ is not");
    expect(withPassword.err).not.toContain("hunter2");
    const token = "s3cr3t-".repeat(6);
    const swapped = await cli(["status"], { VMPOOLS_URL: token, VMPOOLS_TOKEN: token });
    expect(swapped).toMatchObject({ code: 2, err: expect.stringContaining("VMPOOLS_URL holds your token") });
    expect(swapped.err).not.toContain(token);
  });

  test("no token: names VMPOOLS_TOKEN and how to get one", async () => {
    const r = await cli(["status"], { VMPOOLS_TOKEN: undefined });
    expect(r).toMatchObject({ code: 2, err: expect.stringMatching(/set VMPOOLS_TOKEN .*vmpools token USER/) });
  });

  describe("against a recording server (what the CLI sends and writes)", () => {
    let server: Server;
    let url: string;
    const seen: { method?: string; url?: string; auth?: string; body: string }[] = [];
    beforeAll(async () => {
      server = createServer((req, res) => {
        let body = "";
        req.on("data", (c) => (body += c));
        req.on("end", () => {
          seen.push({ method: req.method, url: req.url, auth: req.headers.authorization, body });
          if (req.url!.endsWith("/console")) {
            res.writeHead(200, { "content-type": "application/x-virt-viewer" }).end("[virt-viewer]\ntype=spice\n");
          } else {
            res
              .writeHead(409, { "content-type": "application/json" })
              .end(JSON.stringify({ error: "no-free-vm", message: "every member is held" }));
          }
        });
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    afterAll(() => new Promise((r) => server.close(r)));

    test("console: repeated --option typed into the body, --out written 0600", async () => {
      const out = join(dir, "desk.vv");
      const r = await cli(
        ["console", "Desk-??", "Desk-01", "--option", "fullscreen=1", "--option", "title=a=b", "--out", out],
        { VMPOOLS_URL: url, VMPOOLS_TOKEN: "tok" },
      );
      expect(r).toMatchObject({ code: 0, out: expect.stringContaining(`console file written to ${out}`) });
      expect(seen.at(-1)).toEqual({
        method: "POST",
        url: "/v1/pools/Desk-%3F%3F/vms/Desk-01/console",
        auth: "Bearer tok",
        body: JSON.stringify({ options: { fullscreen: true, title: "a=b" } }),
      });
      expect(readFileSync(out, "utf8")).toBe("[virt-viewer]\ntype=spice\n");
      expect(statSync(out).mode & 0o777).toBe(0o600);
      expect((await cli(["console", "P", "V", "--option", "=1"], { VMPOOLS_URL: url })).err).toMatch(
        /--option =1: use key=value/,
      );
    });

    test("console options the API would refuse are refused before anything is sent", async () => {
      const before = seen.length;
      const r = await cli(
        ["console", "P", "V", "--option", "fulscreen=1", "--option", "title=x", "--option", "enableUsbRedirect=maybe"],
        { VMPOOLS_URL: url },
      );
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/^vmpools: console: --option: .*fulscreen.*console options are fullscreen, title/);
      expect(r.err).toMatch(/enableUsbRedirect: expected true or false, got "maybe"/);
      expect(seen.length).toBe(before);
      expect(existsSync("V.vv")).toBe(false);
    });

    test("a refusal prints the server's message and code, exit 1", async () => {
      const r = await cli(["take", "Desk-??"], { VMPOOLS_URL: `${url}/` });
      expect(r).toMatchObject({ code: 1, err: "vmpools: every member is held (HTTP 409, no-free-vm)" });
      expect(seen.at(-1)).toMatchObject({ method: "POST", url: "/v1/pools/Desk-%3F%3F/take" });
    });
  });
});
