// Issue 9 D5 (bind before acting), D10 (SIGTERM drains), D11 (no virsh child outlives serve),
// D12 (a busy port) and serve --pools: `vmpools serve` as a real child process on libvirt's test
// hypervisor, talked to over loopback.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { connect, createServer, type AddressInfo, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PoolPlan } from "../../core";
import { newToken } from "../../reconciler/api/auth";
import { VirshDriver } from "../../reconciler/driver/libvirt-driver";
import { deployPool, removePool } from "../../reconciler/local/deploy";
import { validProps } from "../support/fixtures";
import { TEST_URI, requireLibvirtd, virsh } from "../support/libvirt";

const BIN = join(__dirname, "../../bin/vmpools");
const tag = randomBytes(3).toString("hex");
const A = `Life${tag}A-?`;
const B = `Life${tag}B-?`;
const tokens = { alice: newToken("alice", "user"), bob: newToken("bob", "user"), root: newToken("root", "admin") };
const dir = mkdtempSync(join(tmpdir(), "vmpools-serve-"));
const tokensFile = join(dir, "tokens.json");
const driver = new VirshDriver({ uri: TEST_URI });
const plans: PoolPlan[] = [];
const children: ChildProcess[] = [];

beforeAll(async () => {
  requireLibvirtd();
  writeFileSync(tokensFile, JSON.stringify({ tokens: Object.values(tokens).map((t) => t.entry) }), { mode: 0o600 });
  for (const name of [A, B]) plans.push(await deployPool(driver, validProps({ name, size: 2, prestarted: 1 })));
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const plan of plans) await removePool(driver, plan);
  await driver.close();
  rmSync(dir, { recursive: true, force: true });
});

const members = (pool: string) => plans.find((p) => p.pool.name === pool)!.members.map((m) => m.name);
const stateOf = (vm: string) => virsh(TEST_URI, "domstate", "--domain", vm).trim();

interface Serve {
  readonly child: ChildProcess;
  readonly out: () => string;
  readonly err: () => string;
  /** The API's URL once serve says it reconciles. */
  readonly ready: Promise<string>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function serve(...args: string[]): Serve {
  const db = join(dir, `${randomBytes(3).toString("hex")}.db`);
  const child = spawn("node", [BIN, "serve", "--uri", TEST_URI, "--db", db, "--tokens", tokensFile, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let out = "";
  let err = "";
  child.stdout!.setEncoding("utf8").on("data", (c: string) => (out += c));
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (err += c));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const ready = new Promise<string>((resolve, reject) => {
    const onData = () => {
      const m = /reconciling .*API on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    };
    child.stdout!.on("data", onData);
    void exited.then(({ code }) => reject(new Error(`serve exited (${code}) before it was ready: ${out}${err}`)));
  });
  ready.catch(() => undefined);
  return { child, out: () => out, err: () => err, ready, exited };
}

async function until<T>(what: string, probe: () => T | undefined | false, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const api = async (url: string, who: keyof typeof tokens, method: string, path: string) => {
  const res = await fetch(url + path, { method, headers: { authorization: `Bearer ${tokens[who].token}` } });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
};

/**
 * A request sent up to the last byte of its body: it is in flight (the server is reading the
 * body) until `finish()` sends that byte.
 */
function halfSent(url: string, who: keyof typeof tokens, path: string) {
  const body = "{}";
  const req = request(url + path, {
    method: "POST",
    agent: false,
    headers: {
      authorization: `Bearer ${tokens[who].token}`,
      "content-type": "application/json",
      "content-length": body.length,
    },
  });
  const answer = new Promise<{ status: number; json: Record<string, unknown> }>((resolve, reject) => {
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (c: string) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode!, json: JSON.parse(text) }));
      res.on("error", reject);
    });
    req.on("error", reject);
  });
  answer.catch(() => undefined);
  req.flushHeaders();
  req.write(body.slice(0, 1));
  return { answer, finish: () => req.end(body.slice(1)) };
}

const enc = encodeURIComponent;

/** Live processes whose parent is `pid`, and theirs (zombies count as gone: nothing may reap them here). */
function descendants(pid: number): { pid: number; comm: string }[] {
  const stats = readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .flatMap((d) => {
      try {
        const stat = readFileSync(`/proc/${d}/stat`, "utf8");
        const close = stat.lastIndexOf(")");
        const [state, ppid] = stat.slice(close + 2).split(" ");
        return state === "Z"
          ? []
          : [{ pid: Number(d), comm: stat.slice(stat.indexOf("(") + 1, close), ppid: Number(ppid) }];
      } catch {
        return [];
      }
    });
  const found: { pid: number; comm: string }[] = [];
  const walk = (parent: number) => {
    for (const s of stats.filter((x) => x.ppid === parent)) {
      found.push({ pid: s.pid, comm: s.comm });
      walk(s.pid);
    }
  };
  walk(pid);
  return found;
}

const alive = (pid: number) => {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
};

test("--pools: only the named pools are acted on; --listen [IPv6]:PORT", async () => {
  const s = serve("--pools", A, "--listen", "[::1]:0");
  const url = await s.ready;
  expect(url).toMatch(/^http:\/\/\[::1\]:\d+$/);
  await until("a prestarted member of A", () => members(A).some((vm) => stateOf(vm) === "running"));
  const status = await api(url, "root", "GET", "/v1/status");
  expect((status.json.pools as { name: string }[]).map((p) => p.name)).toEqual([A]);
  expect(members(B).map(stateOf)).toEqual(["shut off", "shut off"]);
  s.child.kill("SIGTERM");
  expect(await s.exited).toEqual({ code: 0, signal: null });
});

test("a busy port: one line naming the address and --listen, exit 1, and nothing was done", async () => {
  const busy: Server = createServer();
  await new Promise<void>((r) => busy.listen(0, "127.0.0.1", r));
  const { port } = busy.address() as AddressInfo;
  try {
    const s = serve("--pools", B, "--listen", `127.0.0.1:${port}`);
    expect(await s.exited).toEqual({ code: 1, signal: null });
    const lines = s.err().trim().split("\n");
    expect(lines).toEqual([
      expect.stringMatching(new RegExp(`^vmpools: cannot listen on 127\\.0\\.0\\.1:${port}: .*in use.*--listen`)),
    ]);
    expect(s.out()).not.toMatch(/reconciling/);
    // B wants one member prestarted: a serve that acted before binding would have started it.
    expect(members(B).map(stateOf)).toEqual(["shut off", "shut off"]);
  } finally {
    await new Promise((r) => busy.close(r));
  }
});

test("a start that fails: one line, everything it opened closed, exit 1", async () => {
  const s = serve("--uri", "test+unix:///default?socket=/nonexistent/libvirt-sock", "--listen", "127.0.0.1:0");
  await until("serve to bind", () => /API on (http:\/\/\S+); starting/.exec(s.out()));
  const url = /API on (http:\/\/[^;\s]+)/.exec(s.out())![1]!;
  // Every child seen until serve exits.
  const kids = new Map<number, string>();
  const sampler = setInterval(() => descendants(s.child.pid!).forEach((k) => kids.set(k.pid, k.comm)), 20);
  void s.exited.then(() => clearInterval(sampler));
  expect(await s.exited).toEqual({ code: 1, signal: null });
  expect(s.err().trim().split("\n")).toEqual([
    expect.stringMatching(/^vmpools: the reconciler could not start: .*Failed to connect socket/),
  ]);
  // The lease is taken first, so start fails at its first virsh call (the session's child may
  // be gone before a sample sees it); whatever was seen is gone too.
  expect([...kids.keys()].filter(alive)).toEqual([]);
  // The port was released with everything else.
  const again = createServer();
  await new Promise<void>((resolve, reject) =>
    again.once("error", reject).listen(Number(new URL(url).port), "127.0.0.1", resolve),
  );
  await new Promise((r) => again.close(r));
}, 30_000);

test("a second serve of the same pools refuses in one line, closes what it opened, exit 1", async () => {
  const first = serve("--pools", A, "--listen", "127.0.0.1:0");
  await first.ready;
  const second = serve("--pools", A, "--listen", "127.0.0.1:0");
  const kids = new Map<number, string>();
  const sampler = setInterval(() => descendants(second.child.pid!).forEach((k) => kids.set(k.pid, k.comm)), 20);
  expect(await second.exited).toEqual({ code: 1, signal: null });
  clearInterval(sampler);
  expect(second.err().trim().split("\n")).toEqual([
    expect.stringMatching(/^vmpools: another vmpools reconciler is active .*serve --pools$/),
  ]);
  expect([...kids.keys()].filter(alive)).toEqual([]);
  first.child.kill("SIGTERM");
  expect(await first.exited).toEqual({ code: 0, signal: null });
});

test("a serve that loses its lease stops, exit 1", async () => {
  const s = serve("--pools", A, "--listen", "127.0.0.1:0");
  await s.ready;
  // What a takeover looks like to the holder: its placeholder is gone at the next renewal.
  virsh(TEST_URI, "undefine", "--domain", `vmpools-reconciler.${A}`);
  expect(await s.exited).toEqual({ code: 1, signal: null });
  expect(s.err()).toMatch(/^vmpools: lost the lease on the hypervisor, another reconciler may act now/m);
  expect(s.out()).toMatch(/lease lost: taking no new requests/);
}, 30_000);

test("SIGTERM: requests in flight get their real answers, new connections are refused, exit 0", async () => {
  const s = serve("--pools", A, "--listen", "127.0.0.1:0");
  const url = await s.ready;
  const took = await api(url, "alice", "POST", `/v1/pools/${enc(A)}/take`);
  expect(took.status).toBe(201);
  const vm = took.json.vm as string;
  const inFlight = [
    halfSent(url, "alice", `/v1/pools/${enc(A)}/vms/${enc(vm)}/return`),
    halfSent(url, "bob", `/v1/pools/${enc(A)}/vms/${enc(vm)}/detach`),
    halfSent(url, "bob", `/v1/pools/NoSuchPool/vms/x/return`),
  ];
  await new Promise((r) => setTimeout(r, 500));
  s.child.kill("SIGTERM");
  await new Promise((r) => setTimeout(r, 500));
  const { port } = new URL(url);
  const refused = await new Promise<string>((resolve) => {
    const socket = connect(Number(port), "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve("connected");
    });
    socket.once("error", (e: NodeJS.ErrnoException) => resolve(e.code!));
  });
  expect(refused).toBe("ECONNREFUSED");
  for (const r of inFlight) r.finish();
  const answers = await Promise.all(inFlight.map((r) => r.answer));
  expect(answers).toEqual([
    { status: 200, json: { pool: A, vm, reverted: true } },
    { status: 403, json: expect.objectContaining({ error: "admin-required" }) },
    { status: 404, json: expect.objectContaining({ error: "unknown-pool" }) },
  ]);
  expect(await s.exited).toEqual({ code: 0, signal: null });
  expect(s.err()).toBe("");
});

test("the drain is bounded: a request that never finishes is cut off after --drain-seconds, exit 1", async () => {
  const s = serve("--pools", A, "--listen", "127.0.0.1:0", "--drain-seconds", "1");
  const url = await s.ready;
  const stuck = halfSent(url, "alice", `/v1/pools/${enc(A)}/vms/x/return`);
  await new Promise((r) => setTimeout(r, 300));
  const signalled = Date.now();
  s.child.kill("SIGTERM");
  await expect(stuck.answer).rejects.toThrow(/socket hang up|ECONNRESET/);
  expect(await s.exited).toEqual({ code: 1, signal: null });
  expect(Date.now() - signalled).toBeLessThan(6000);
  expect(s.err()).toMatch(/1 request still in flight after --drain-seconds 1; stopping anyway/);
});

test("kill -9 of serve leaves no virsh child behind", async () => {
  // A private test hypervisor (test:///default lives inside each virsh): no other test's domain
  // event can make an orphaned `virsh event` write to its closed pipe and die of SIGPIPE.
  const s = serve("--uri", "test:///default", "--pools", A, "--listen", "127.0.0.1:0");
  await s.ready;
  const kids = descendants(s.child.pid!);
  // The event stream's and the command session's.
  expect(kids.filter((k) => k.comm === "virsh").length).toBeGreaterThanOrEqual(2);
  s.child.kill("SIGKILL");
  await s.exited;
  await until("serve's children to go", () => kids.every((k) => !alive(k.pid)), 2000).catch(() => undefined);
  const left = kids.filter((k) => alive(k.pid));
  for (const k of left) process.kill(k.pid, "SIGKILL");
  expect(left).toEqual([]);
});
