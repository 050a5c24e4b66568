// Issue 9 D3, D14 (rest), bodies by schema, bind-before-acting: what the API server does with
// idle and excess connections, oversized bodies, unencoded names, bad bodies, and before the
// reconciler has started.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import { connect, type AddressInfo, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { TokenAuth, newToken } from "../../reconciler/api/auth";
import { consoleBodySchema, consoleOptionsSchema, emptyBodySchema } from "../../reconciler/api/schemas";
import { createApiServer, maxConnectionsFor, type ApiServerOptions } from "../../reconciler/api/server";
import { CONSOLE_OPTION_NAMES } from "../../reconciler/console";
import { VirshDriver } from "../../reconciler/driver/libvirt-driver";
import { Reconciler } from "../../reconciler/reconciler";
import { StateStore } from "../../reconciler/store/store";
import { TEST_URI, requireLibvirtd } from "../support/libvirt";

const alice = newToken("alice", "user");
const root = newToken("root", "admin");
const auth = new TokenAuth([alice.entry, root.entry]);
const dir = mkdtempSync(join(tmpdir(), "vmpools-api-limits-"));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A client socket, and whether the server (not this test) closed it. */
interface Held {
  readonly socket: Socket;
  closed: boolean;
  received: string;
}

function hold(port: number, send?: string): Promise<Held> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    const held: Held = { socket, closed: false, received: "" };
    socket.on("data", (d) => (held.received += String(d)));
    socket.on("close", () => (held.closed = true));
    socket.once("error", (e) => (socket.connecting ? reject(e) : undefined));
    socket.once("connect", () => {
      if (send !== undefined) socket.write(send);
      resolve(held);
    });
  });
}

async function until(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(20);
  }
}

const bearer = (t: { token: string }) => ({ authorization: `Bearer ${t.token}` });

describe("connections: a client holding many idle sockets locks no one out (D3)", () => {
  let child: ChildProcessWithoutNullStreams;
  let port: number;
  const lines: Record<string, unknown>[] = [];
  // The child's fd limit is set low, as a service manager's default soft limit is (1024), so the
  // server's default cap must come from the limit: before the fix, accept() ran out of fds.
  const FD_LIMIT = 512;
  const options: ApiServerOptions = { idleTimeoutMs: 600, keepAliveTimeoutMs: 600 };

  beforeAll(async () => {
    requireLibvirtd();
    const fixture = join(__dirname, "fixtures", "api-server-child.js");
    const args = [`--nofile=${FD_LIMIT}:${FD_LIMIT}`, "--", process.execPath, fixture, join(dir, "child.db")];
    child = spawn("prlimit", [...args, JSON.stringify(alice.entry), JSON.stringify(options)], { stdio: "pipe" });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += String(d)));
    createInterface({ input: child.stdout }).on("line", (l) => lines.push(JSON.parse(l) as Record<string, unknown>));
    await until(`child ready (stderr: ${stderr})`, () => lines.some((l) => l.ready || l.fatal), 30_000);
    const ready = lines.find((l) => l.ready || l.fatal)!;
    if (ready.fatal) throw new Error(`child failed: ${String(ready.fatal)}`);
    port = ready.port as number;
  });
  afterAll(async () => {
    if (child.exitCode === null) {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
  });

  const fds = () => readdirSync(`/proc/${child.pid}/fd`).length;

  it("1000 idle sockets: others are answered promptly, the idle ones are closed, fds stay bounded", async () => {
    const cap = maxConnectionsFor(FD_LIMIT);
    const baseline = fds();
    let peak = baseline;
    const idle: Held[] = [];
    for (let batch = 0; batch < 10; batch++) {
      idle.push(...(await Promise.all(Array.from({ length: 100 }, () => hold(port)))));
      peak = Math.max(peak, fds());
    }
    expect(idle).toHaveLength(1000);

    const started = Date.now();
    const status = await fetch(`http://127.0.0.1:${port}/v1/status`, {
      headers: bearer(alice),
      signal: AbortSignal.timeout(5000),
    });
    expect(status.status).toBe(200);
    expect(await status.json()).toMatchObject({ pools: [] });
    // A call that goes to libvirt: virsh still gets the descriptors it needs.
    const take = await fetch(`http://127.0.0.1:${port}/v1/pools/NoSuchPool/take`, {
      method: "POST",
      headers: bearer(alice),
      signal: AbortSignal.timeout(5000),
    });
    expect(take.status).toBe(404);
    expect(await take.json()).toMatchObject({ error: "unknown-pool" });
    expect(Date.now() - started).toBeLessThan(1500);
    peak = Math.max(peak, fds());
    // Connections beyond the cap evicted the oldest idle ones: the server never held all 1000.
    expect(peak).toBeLessThanOrEqual(baseline + cap + 16);
    expect(idle.filter((h) => h.closed).length).toBeGreaterThanOrEqual(1000 - cap);

    // The rest are closed by the server once idle for idleTimeoutMs (this side never closes them).
    await until("every idle socket closed by the server", () => idle.every((h) => h.closed), 5000);
    expect(fds()).toBeLessThanOrEqual(baseline + 4);
  });

  it("a keep-alive connection is closed keepAliveTimeoutMs after its last answer", async () => {
    const req = `GET /v1/status HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${alice.token}\r\n\r\n`;
    const h = await hold(port, req);
    await until("an answer", () => h.received.includes("\r\n\r\n"), 5000);
    expect(h.received).toMatch(/^HTTP\/1\.1 200/);
    await until("closed after the keep-alive timeout", () => h.closed, 3000);
  });
});

describe("one in-process server per test, on a real reconciler with no pools", () => {
  const driver = new VirshDriver({ uri: TEST_URI });
  const store = StateStore.open(join(dir, "state.db"));
  const reconciler = new Reconciler({ driver, store, retry: { maxAttempts: 2, baseDelayMs: 50 }, onlyPools: ["None"] });
  const servers: Server[] = [];
  const sockets: Held[] = [];

  beforeAll(async () => {
    requireLibvirtd();
    await reconciler.start();
  });
  afterEach(() => {
    for (const h of sockets.splice(0)) h.socket.destroy();
    for (const s of servers.splice(0)) {
      s.closeAllConnections();
      s.close();
    }
  });
  afterAll(async () => {
    await reconciler.stop();
    await driver.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function serve(options?: Parameters<typeof createApiServer>[2]) {
    const server = createApiServer(reconciler, auth, options);
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    return { server, port, url: `http://127.0.0.1:${port}` };
  }
  const held = async (port: number, send?: string) => {
    const h = await hold(port, send);
    sockets.push(h);
    return h;
  };
  const connections = (server: Server) =>
    new Promise<number>((resolve, reject) => server.getConnections((e, n) => (e ? reject(e) : resolve(n))));

  describe("connection limits (D3)", () => {
    it("the default cap is a quarter of the fd limit, between 16 and 1024", () => {
      expect(maxConnectionsFor(1024)).toBe(256);
      expect(maxConnectionsFor(512)).toBe(128);
      expect(maxConnectionsFor(20)).toBe(16);
      expect(maxConnectionsFor(1_048_576)).toBe(1024);
      expect(maxConnectionsFor(Infinity)).toBe(1024);
    });

    it("a socket that never sends a request is closed after idleTimeoutMs", async () => {
      const { port } = await serve({ idleTimeoutMs: 300 });
      const started = Date.now();
      const h = await held(port);
      await until("the silent socket closed", () => h.closed, 3000);
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    });

    it("headers sent too slowly get a 408 after headersTimeoutMs", async () => {
      const { port } = await serve({ headersTimeoutMs: 300, requestTimeoutMs: 600, idleTimeoutMs: 5000 });
      const h = await held(port, "GET /v1/status HTTP/1.1\r\nhost: x\r\n");
      await until("the socket closed", () => h.closed, 3000);
      expect(h.received).toMatch(/^HTTP\/1\.1 408/);
    });

    it("at the cap, a newcomer evicts the longest-idle connection and is answered", async () => {
      const { server, port, url } = await serve({ maxConnections: 3, idleTimeoutMs: 60_000 });
      const [a, b, c] = [await held(port), await held(port), await held(port)];
      let n = 0;
      await until("3 connections", () => (void connections(server).then((c) => (n = c)), n === 3), 2000);
      const res = await fetch(`${url}/v1/status`, { headers: bearer(alice), signal: AbortSignal.timeout(3000) });
      expect(res.status).toBe(200);
      await until("the oldest idle socket closed", () => a.closed, 2000);
      expect([b.closed, c.closed]).toEqual([false, false]);
    });

    it("at the cap with every connection busy, a newcomer gets a 503 with Retry-After", async () => {
      const { port } = await serve({ maxConnections: 2, idleTimeoutMs: 60_000 });
      // Two requests whose bodies have not arrived yet: both connections are in use.
      const busy = `POST /v1/pools/p/vms/v/return HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${alice.token}\r\ncontent-length: 10\r\n\r\n`;
      const [x, y] = [await held(port, busy), await held(port, busy)];
      await sleep(100);
      const late = await held(port, "GET /v1/status HTTP/1.1\r\nhost: x\r\n\r\n");
      await until("the newcomer closed", () => late.closed, 2000);
      expect(late.received).toMatch(/^HTTP\/1\.1 503/);
      expect(late.received).toMatch(/retry-after: 1/i);
      expect(late.received).toMatch(/"error":"too-many-connections"/);
      expect([x.closed, y.closed]).toEqual([false, false]);
      // The busy ones finish normally.
      x.socket.write("{}        ");
      await until("an answer to the busy request", () => x.received.includes("\r\n\r\n"), 3000);
      expect(x.received).toMatch(/^HTTP\/1\.1 404/);
    });

    it("bad options are refused, naming the option and the fix", async () => {
      expect(() => createApiServer(reconciler, auth, { idleTimeoutMs: 0 })).toThrow(
        /idleTimeoutMs 0: give a whole number of milliseconds from 1/,
      );
      expect(() => createApiServer(reconciler, auth, { maxConnections: 1.5 })).toThrow(/maxConnections 1.5: give/);
      expect(() => createApiServer(reconciler, auth, { headersTimeoutMs: 5000, requestTimeoutMs: 1000 })).toThrow(
        /headersTimeoutMs 5000 is over requestTimeoutMs 1000/,
      );
    });
  });

  describe("D14: oversized bodies and unencoded names", () => {
    it("an 8 MiB body gets a 413 with a message, not a reset, and the server carries on", async () => {
      const { url } = await serve();
      const res = await fetch(`${url}/v1/pools/p/vms/v/return`, {
        method: "POST",
        headers: { ...bearer(alice), "content-type": "application/json" },
        body: Buffer.alloc(8 * 1024 * 1024, 0x20),
      });
      expect(res.status).toBe(413);
      expect(await res.json()).toEqual({
        error: "body-too-large",
        message: "the request body is 8388608 bytes; the API takes at most 65536 (64 KiB)",
      });
      const next = await fetch(`${url}/v1/status`, { headers: bearer(alice) });
      expect(next.status).toBe(200);
    });

    it("a client sending 8 MiB at its own pace can finish sending and then reads the 413", async () => {
      const { port } = await serve();
      const size = 8 * 1024 * 1024;
      const h = await held(
        port,
        `POST /v1/pools/p/vms/v/console HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${alice.token}\r\ncontent-length: ${size}\r\n\r\n`,
      );
      const errors: string[] = [];
      h.socket.on("error", (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
      const chunk = Buffer.alloc(256 * 1024, 0x20);
      for (let sent = 0; sent < size && !h.closed; sent += chunk.length) {
        if (!h.socket.write(chunk)) await new Promise((r) => h.socket.once("drain", r));
        await sleep(2);
      }
      await until("the server closes the connection", () => h.closed, 5000);
      // Before the fix the server reset the connection after the first 64 KiB (ECONNRESET here).
      expect(errors).toEqual([]);
      expect(h.received).toMatch(/^HTTP\/1\.1 413 /);
      expect(h.received).toMatch(/connection: close/i);
      expect(h.received).toContain(
        '"message":"the request body is 8388608 bytes; the API takes at most 65536 (64 KiB)"',
      );
    });

    it("a name with an unencoded ? or # gets a 404 that says to percent-encode it", async () => {
      const { url, port } = await serve();
      const q = await fetch(`${url}/v1/pools/a?b/take`, { method: "POST", headers: bearer(alice) });
      expect(q.status).toBe(404);
      const body = (await q.json()) as { error: string; message: string };
      expect(body.error).toBe("not-found");
      expect(body.message).toMatch(/no such endpoint: POST \/v1\/pools\/a\?b\/take/);
      expect(body.message).toMatch(/percent-encode .*\? as %3F and # as %23/);
      // fetch would drop a fragment; a raw client sends it.
      const h = await held(
        port,
        `POST /v1/pools/a#b/take HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${alice.token}\r\nconnection: close\r\n\r\n`,
      );
      await until("an answer", () => h.closed, 3000);
      expect(h.received).toMatch(/^HTTP\/1\.1 404/);
      expect(h.received).toMatch(/%23/);
      // A query on a known endpoint is no name: it keeps working.
      expect((await fetch(`${url}/v1/status?x=1`, { headers: bearer(alice) })).status).toBe(200);
    });
  });

  describe("request bodies by schema", () => {
    const post = async (url: string, path: string, body: string | undefined, who = alice) => {
      const res = await fetch(url + path, {
        method: "POST",
        headers: { ...bearer(who), "content-type": "application/json" },
        body,
      });
      return { status: res.status, json: (await res.json()) as { error: string; message: string } };
    };

    it("take, return and detach take {} or nothing; other fields are refused by name", async () => {
      const { url } = await serve();
      for (const body of [undefined, "", "{}"]) {
        const took = await post(url, "/v1/pools/NoSuchPool/take", body);
        expect(took).toMatchObject({ status: 404, json: { error: "unknown-pool" } });
      }
      const take = await post(url, "/v1/pools/NoSuchPool/take", '{"count":2}');
      expect(take).toEqual({
        status: 400,
        json: { error: "invalid-body", message: "count: unknown field (take takes no fields: send {} or nothing)" },
      });
      const ret = await post(url, "/v1/pools/NoSuchPool/vms/v/return", '{"force":true,"now":1}');
      expect(ret.status).toBe(400);
      expect(ret.json.message).toBe("force, now: unknown fields (return takes no fields: send {} or nothing)");
      const detach = await post(url, "/v1/pools/NoSuchPool/vms/v/detach", '{"x":1}', root);
      expect(detach.json.message).toMatch(/^x: unknown field \(detach takes no fields/);
      expect((await post(url, "/v1/pools/NoSuchPool/take", "[1]")).json.error).toBe("bad-json");
    });

    it("console options are checked by name and type, every problem at once", async () => {
      const { url } = await serve();
      const path = "/v1/pools/NoSuchPool/vms/v/console";
      const bad = await post(
        url,
        path,
        JSON.stringify({ options: { fullScreen: true, fullscreen: "yes", title: "a\nhost=evil" }, extra: 1 }),
      );
      expect(bad.status).toBe(400);
      expect(bad.json.error).toBe("invalid-body");
      const problems = bad.json.message.split("; ");
      expect(problems).toEqual([
        "extra: unknown field (a console request takes only options)",
        `options.fullScreen: unknown field (console options are ${CONSOLE_OPTION_NAMES.join(", ")})`,
        'options.fullscreen: expected true or false, got "yes"',
        'options.title: expected text on one line, got "a\\nhost=evil"',
      ]);
      expect((await post(url, path, '{"options":"fullscreen"}')).json.message).toBe(
        'options: expected an object of console options, got "fullscreen"',
      );
      // A valid body reaches the reconciler, which knows no such pool.
      const ok = await post(url, path, JSON.stringify({ options: { fullscreen: true, releaseCursor: "shift+f12" } }));
      expect(ok).toMatchObject({ status: 404, json: { error: "unknown-pool" } });
      expect((await post(url, path, undefined)).json.error).toBe("unknown-pool");
    });

    it("the schemas are the ones the CLI can share", () => {
      expect(Object.keys(consoleOptionsSchema.shape).sort()).toEqual([...CONSOLE_OPTION_NAMES].sort());
      expect(consoleOptionsSchema.safeParse({ enableUsbRedirect: false, title: "t" }).success).toBe(true);
      expect(consoleOptionsSchema.safeParse({ enableUsbRedirect: "false" }).success).toBe(false);
      expect(consoleBodySchema.safeParse({}).success).toBe(true);
      expect(emptyBodySchema.safeParse({ a: 1 }).success).toBe(false);
    });
  });

  describe("bind before acting: the ready option", () => {
    it("until ready resolves, authenticated requests get 503 starting with Retry-After: 1", async () => {
      let resolve!: () => void;
      const { url } = await serve({ ready: new Promise<void>((r) => (resolve = r)) });
      const early = await fetch(`${url}/v1/status`, { headers: bearer(alice) });
      expect(early.status).toBe(503);
      expect(early.headers.get("retry-after")).toBe("1");
      expect(await early.json()).toEqual({
        error: "starting",
        message: "the reconciler is starting; retry in a second",
      });
      const take = await fetch(`${url}/v1/pools/NoSuchPool/take`, { method: "POST", headers: bearer(alice) });
      expect(take.status).toBe(503);
      // Authentication still comes first.
      expect((await fetch(`${url}/v1/status`)).status).toBe(401);
      resolve();
      await sleep(0);
      expect((await fetch(`${url}/v1/status`, { headers: bearer(alice) })).status).toBe(200);
    });

    it("if ready rejects, requests get 503 with a message and no details", async () => {
      const logged: unknown[][] = [];
      const spy = jest.spyOn(console, "error").mockImplementation((...a: unknown[]) => void logged.push(a));
      try {
        const { url } = await serve({ ready: Promise.reject(new Error("virsh -c qemu:///system failed: /tmp/x")) });
        const res = await fetch(`${url}/v1/status`, { headers: bearer(alice) });
        expect(res.status).toBe(503);
        expect(res.headers.get("retry-after")).toBeNull();
        expect(await res.json()).toEqual({
          error: "reconciler-failed",
          message: "the reconciler failed to start; the server's log has the details, and serve must be restarted",
        });
        expect(String(logged.flat().map((x) => (x instanceof Error ? x.message : x)))).toContain("/tmp/x");
      } finally {
        spy.mockRestore();
      }
    });

    it("without ready, the server answers at once (the two-argument call)", async () => {
      const { url } = await serve();
      expect((await fetch(`${url}/v1/status`, { headers: bearer(alice) })).status).toBe(200);
    });
  });
});
