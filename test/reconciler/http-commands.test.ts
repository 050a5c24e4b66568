// The HTTP console endpoint and the CLI's take, console, return and detach commands, end to end
// against a real `vmpools serve` on qemu:///system (a console needs SPICE and update-device,
// which only qemu has); 409 "nothing free" over HTTP; and the periodic resync timer acting on a
// change that no libvirt event reports (a pool's policy document: libvirt has no volume events).
import { execFile, spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { planPool, type PoolPlan } from "../../core/plan";
import { METADATA_NAMESPACE } from "../../core/metadata";
import type { VmPoolProps } from "../../core/spec";
import { newToken } from "../../reconciler/api/auth";
import { spiceDisplayOf } from "../../reconciler/libvirt-xml";
import { LIBVIRT_URI, virsh } from "../guest/guest";
import { BASE_MARKER, openQemuPools, until, type QemuPools } from "../support/qemu-pool";

const BIN = path.join(__dirname, "../../bin/vmpools");
const CONSOLE_HOST = "console.vmpools.test";
const PROXY = "http://proxy.vmpools.test:3128";
const run = promisify(execFile);
const tokens = { alice: newToken("alice", "user"), bob: newToken("bob", "user"), root: newToken("root", "admin") };
type Who = keyof typeof tokens;

let q: QemuPools;
let consolePool: PoolPlan;
let manualPool: PoolPlan;
const serves: ChildProcess[] = [];

beforeAll(async () => {
  q = await openQemuPools();
  fs.writeFileSync(
    path.join(q.dir, "tokens.json"),
    JSON.stringify({ tokens: Object.values(tokens).map((t) => t.entry) }),
    { mode: 0o600 },
  );
  // Firmware only and an empty disk: nothing boots, the VM stays up; its console is locked.
  consolePool = await q.deploy(q.props(`HttpConsole${q.tag}-?`, { console: { spiceProxy: PROXY } }), () => ({}));
  // The tiny guest writes to its disk and powers off; a manual pool keeps it assigned.
  manualPool = await q.deploy(
    q.props(`HttpManual${q.tag}-?`, { type: "manual" }),
    q.guest({ kind: "write-marker", text: "MANUAL-WROTE" }),
  );
}, 120_000);

afterAll(async () => {
  for (const s of serves) {
    if (s.exitCode !== null || s.signalCode !== null) continue;
    const exited = new Promise((r) => s.once("exit", r));
    s.kill("SIGTERM");
    await exited;
  }
  await q?.close();
}, 60_000);

/** `vmpools serve` on qemu:///system for `pools`; resolves with its API's URL once it reconciles. */
async function serve(pools: readonly PoolPlan[], ...args: string[]): Promise<string> {
  const db = path.join(q.dir, `serve-${serves.length}.db`);
  const child = spawn(
    "node",
    [
      BIN,
      "serve",
      "--uri",
      LIBVIRT_URI,
      "--db",
      db,
      "--tokens",
      path.join(q.dir, "tokens.json"),
      "--listen",
      "127.0.0.1:0",
      "--console-host",
      CONSOLE_HOST,
      "--pools",
      pools.map((p) => p.pool.name).join(","),
      ...args,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  serves.push(child);
  let out = "";
  child.stdout!.setEncoding("utf8").on("data", (c: string) => (out += c));
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (out += c));
  return new Promise((resolve, reject) => {
    child.stdout!.on("data", () => {
      const m = /reconciling .*API on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once("exit", (code) => reject(new Error(`serve exited (${code}) before it was ready: ${out}`)));
  });
}

const cliIn =
  (url: string) =>
  async (who: Who, ...args: string[]) =>
    run("node", [BIN, ...args], {
      cwd: q.dir,
      env: { ...process.env, VMPOOLS_URL: url, VMPOOLS_TOKEN: tokens[who].token },
    }).then(
      (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout, err: e.stderr }),
    );

const apiIn = (url: string) => async (who: Who, method: string, route: string, body?: unknown) => {
  const res = await fetch(url + route, {
    method,
    headers: { authorization: `Bearer ${tokens[who].token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const json = res.headers.get("content-type")?.startsWith("application/json")
    ? (JSON.parse(text) as Record<string, unknown>)
    : undefined;
  return { status: res.status, type: res.headers.get("content-type"), text, json };
};

const enc = encodeURIComponent;
const vvFields = (vv: string) =>
  Object.fromEntries(
    vv
      .trim()
      .split("\n")
      .slice(1)
      .map((l) => l.split(/=(.*)/s).slice(0, 2)),
  ) as Record<string, string>;

/** The live domain's SPICE password and its expiry (epoch ms), as libvirt holds them. */
async function liveTicket(vm: string): Promise<{ password: string; validTo: number; port: string }> {
  const xml = await q.driver.domainXml(vm, { securityInfo: true });
  const display = spiceDisplayOf(xml)!;
  return {
    password: /passwd='([^']*)'/.exec(display.element)![1]!,
    validTo: Date.parse(`${/passwdValidTo='([^']+)'/.exec(display.element)![1]}Z`),
    port: String(display.port),
  };
}

describe("one serve on qemu:///system", () => {
  let url: string;
  let cli: ReturnType<typeof cliIn>;
  let api: ReturnType<typeof apiIn>;
  beforeAll(async () => {
    url = await serve([consolePool, manualPool]);
    cli = cliIn(url);
    api = apiIn(url);
  }, 60_000);

  test("take, then console files: the CLI's and the endpoint's, each a fresh live ticket; a non-holder gets 403", async () => {
    const pool = consolePool.pool.name;
    const vm = consolePool.members[0]!.name;
    const took = await cli("alice", "take", pool);
    expect(took).toEqual({ code: 0, out: `you have ${vm} from pool ${pool} (starting)\n`, err: "" });
    expect(virsh("domstate", vm)).toBe("running");

    const out = path.join(q.dir, "alice.vv");
    const before = Date.now();
    const written = await cli("alice", "console", pool, vm, "--out", out, "--option", "fullscreen=1");
    expect(written).toMatchObject({ code: 0, out: expect.stringContaining(`console file written to ${out}`) });
    expect(fs.statSync(out).mode & 0o777).toBe(0o600);
    const live = await liveTicket(vm);
    expect(vvFields(fs.readFileSync(out, "utf8"))).toEqual({
      type: "spice",
      host: CONSOLE_HOST,
      port: live.port,
      password: live.password,
      "delete-this-file": "1",
      proxy: PROXY,
      title: `${vm} (${pool})`,
      fullscreen: "1",
    });
    // The default ticket lifetime is 120 s.
    expect(live.validTo).toBeGreaterThan(before + 110_000);
    expect(live.validTo).toBeLessThan(Date.now() + 125_000);

    // Bob does not hold it: 403 over HTTP and from the CLI, no file, and alice's ticket stands.
    const route = `/v1/pools/${enc(pool)}/vms/${enc(vm)}/console`;
    const refused = await api("bob", "POST", route, {});
    expect(refused.status).toBe(403);
    // Who holds it is not bob's business.
    expect(refused.json).toMatchObject({ error: "not-holder", message: expect.stringContaining(vm) });
    expect(refused.json!.message).not.toContain("alice");
    const bobOut = path.join(q.dir, "bob.vv");
    const bobCli = await cli("bob", "console", pool, vm, "--out", bobOut);
    expect(bobCli.code).toBe(1);
    expect(bobCli.err).toMatch(/\(HTTP 403, not-holder\)\n$/);
    expect(fs.existsSync(bobOut)).toBe(false);
    expect((await liveTicket(vm)).password).toBe(live.password);

    // The endpoint itself: a virt-viewer file whose ticket replaced the previous one; the
    // remembered fullscreen option applies.
    const file = await api("alice", "POST", route, {});
    expect(file.status).toBe(200);
    expect(file.type).toMatch(/^application\/x-virt-viewer/);
    const fields = vvFields(file.text);
    const again = await liveTicket(vm);
    expect(fields).toMatchObject({ password: again.password, port: again.port, fullscreen: "1" });
    expect(again.password).not.toBe(live.password);

    // The refusal names what was refused: a console, not a return (NotHolderError's message
    // says "can only return their own VMs" whatever was asked).
    expect(refused.json!.message).toMatch(/console/);
    expect(refused.json!.message).not.toMatch(/return/);
  }, 120_000);

  test("409 nothing free over HTTP names the pool; the CLI shows the message", async () => {
    const pool = consolePool.pool.name;
    // Its only member is alice's (the test above).
    const refused = await api("bob", "POST", `/v1/pools/${enc(pool)}/take`, {});
    expect(refused.status).toBe(409);
    expect(refused.json).toEqual({ error: "no-free-vm", message: expect.stringContaining(`pool ${pool}`) });
    const viaCli = await cli("bob", "take", pool);
    expect(viaCli.code).toBe(1);
    expect(viaCli.err).toMatch(
      new RegExp(`every VM of pool ${pool.replace(/\?/g, "\\?")} .*\\(HTTP 409, no-free-vm\\)`),
    );
  });

  test("a manual pool: return and detach from the CLI need the admin, who reverts and detaches", async () => {
    const pool = manualPool.pool.name;
    const vm = manualPool.members[0]!;
    const { current: written } = await q.overlays(vm);
    expect(await cli("alice", "take", pool)).toMatchObject({
      code: 0,
      out: `you have ${vm.name} from pool ${pool} (starting)\n`,
    });
    await until("the guest to power off", () => q.guestLog(vm).poweredOff, 120_000);
    await until("shut off", () => virsh("domstate", vm.name) === "shut off");
    expect(q.marker(written)).toBe("MANUAL-WROTE");
    // Still alice's (a manual pool); a console needs it running.
    const console409 = await api("alice", "POST", `/v1/pools/${enc(pool)}/vms/${enc(vm.name)}/console`, {});
    expect(console409).toMatchObject({ status: 409, json: { error: "not-running" } });

    const userReturn = await cli("alice", "return", pool, vm.name);
    expect(userReturn.code).toBe(1);
    expect(userReturn.err).toMatch(/only an administrator can return .*\(HTTP 403, admin-required\)/);
    const returned = await cli("root", "return", pool, vm.name);
    expect(returned).toEqual({
      code: 0,
      out: `returned ${vm.name} to pool ${pool} (reverted to its base image)\n`,
      err: "",
    });
    expect(q.marker((await q.overlays(vm)).current)).toBe(BASE_MARKER);
    const status = (await api("root", "GET", "/v1/status")).json as {
      pools: { name: string; members: { name: string; holder?: unknown }[] }[];
    };
    expect(status.pools.find((p) => p.name === pool)!.members[0]).not.toHaveProperty("holder");

    const userDetach = await cli("alice", "detach", pool, vm.name);
    expect(userDetach.code).toBe(1);
    expect(userDetach.err).toMatch(/\(HTTP 403, admin-required\)/);
    const detached = await cli("root", "detach", pool, vm.name);
    expect(detached).toEqual({
      code: 0,
      out: `detached ${vm.name} from pool ${pool}; it is now an independent VM\n`,
      err: "",
    });
    // The domain lives on without our metadata, and the pool no longer lists it.
    expect(virsh("domstate", vm.name)).toBe("shut off");
    expect(() => virsh("metadata", vm.name, "--uri", METADATA_NAMESPACE)).toThrow(/metadata not found/i);
    const after = (await api("root", "GET", "/v1/status")).json as { pools: { name: string }[] };
    expect(after.pools.map((p) => p.name)).not.toContain(pool);
  }, 180_000);
});

test("--resync-seconds 1: a policy change (no event reports it) is acted on within ~2 s; with 30 it is not", async () => {
  const fastProps = q.props(`HttpResyncFast${q.tag}-?`, { prestarted: 0 });
  const slowProps = q.props(`HttpResyncSlow${q.tag}-?`, { prestarted: 0 });
  const fast = await q.deploy(fastProps, () => ({}));
  const slow = await q.deploy(slowProps, () => ({}));
  await serve([fast], "--resync-seconds", "1");
  await serve([slow]);
  // Both started and found nothing to prestart.
  await new Promise((r) => setTimeout(r, 1500));
  expect([fast, slow].map((p) => virsh("domstate", p.members[0]!.name))).toEqual(["shut off", "shut off"]);

  // What a deploy of `prestarted: 1` changes: the pool's policy document, a volume.
  const publish = (props: VmPoolProps) => q.publishPolicy(planPool({ ...props, prestarted: 1 }));
  await Promise.all([publish(fastProps), publish(slowProps)]);
  const published = Date.now();
  await until("the fast serve to prestart", () => virsh("domstate", fast.members[0]!.name) === "running", 5000);
  const tookMs = Date.now() - published;
  expect(tookMs).toBeLessThan(2500);
  // The same change, on a serve whose timer comes in 30 s: nothing happened (no event told it).
  await new Promise((r) => setTimeout(r, 1000));
  expect(virsh("domstate", slow.members[0]!.name)).toBe("shut off");
}, 120_000);
