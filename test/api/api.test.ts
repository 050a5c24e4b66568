import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import type { Server } from "node:http";
import { promisify } from "node:util";
import type { PoolPlan } from "../../core";
import { TokenAuth, newToken } from "../../reconciler/api/auth";
import { consoleHostOf } from "../../reconciler/cli";
import { parseConsoleOption } from "../../reconciler/console";
import { createApiServer } from "../../reconciler/api/server";
import { DomainEvents } from "../../reconciler/driver/events";
import { VirshDriver } from "../../reconciler/driver/libvirt-driver";
import { deployPool, removePool } from "../../reconciler/local/deploy";
import { Reconciler } from "../../reconciler/reconciler";
import { StateStore } from "../../reconciler/store/store";
import { validProps } from "../support/fixtures";
import { TEST_URI, requireLibvirtd } from "../support/libvirt";

const run = promisify(execFile);
const tag = randomBytes(3).toString("hex");
const AUTO = `ApiAuto${tag}-??`;
const MANUAL = `ApiManual${tag}-??`;

describe("HTTP API and CLI against a reconciler on libvirt's test hypervisor", () => {
  const dir = mkdtempSync(join(tmpdir(), "vmpools-api-"));
  const driver = new VirshDriver({ uri: TEST_URI });
  const store = StateStore.open(join(dir, "state.db"));
  const events = new DomainEvents({ uri: TEST_URI });
  const tokens = { alice: newToken("alice", "user"), bob: newToken("bob", "user"), root: newToken("root", "admin") };
  let reconciler: Reconciler;
  let server: Server;
  let url: string;
  const plans: PoolPlan[] = [];

  beforeAll(async () => {
    requireLibvirtd();
    plans.push(await deployPool(driver, validProps({ name: AUTO, size: 3, prestarted: 1, maxVmsPerUser: 1 })));
    plans.push(await deployPool(driver, validProps({ name: MANUAL, size: 2, type: "manual" })));
    reconciler = new Reconciler({
      driver,
      events,
      store,
      retry: { maxAttempts: 2, baseDelayMs: 50 },
      onlyPools: [AUTO, MANUAL],
    });
    await reconciler.start();
    await reconciler.idle();
    const tokensFile = join(dir, "tokens.json");
    writeFileSync(tokensFile, JSON.stringify({ tokens: Object.values(tokens).map((t) => t.entry) }));
    server = createApiServer(reconciler, TokenAuth.fromFile(tokensFile));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server?.closeAllConnections();
    server?.close();
    await reconciler?.stop();
    await events.close();
    for (const plan of plans) await removePool(driver, plan);
    await driver.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const api = async (who: keyof typeof tokens | "nobody", method: string, path: string, body?: unknown) => {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (who !== "nobody") headers.authorization = `Bearer ${tokens[who].token}`;
    const res = await fetch(url + path, {
      method,
      headers,
      body: typeof body === "string" ? body : body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return {
      status: res.status,
      text,
      json: res.headers.get("content-type")?.includes("json") ? JSON.parse(text) : undefined,
    };
  };
  const p = encodeURIComponent;

  it("refuses requests without a valid token", async () => {
    expect((await api("nobody", "GET", "/v1/status")).status).toBe(401);
    const forged = await fetch(`${url}/v1/status`, { headers: { authorization: `Bearer ${"x".repeat(32)}` } });
    expect(forged.status).toBe(401);
    expect(await forged.json()).toMatchObject({ error: "unauthenticated", message: expect.stringMatching(/Bearer/) });
  });

  it("take, per-user limit, and a user sees only their own VMs", async () => {
    const took = await api("alice", "POST", `/v1/pools/${p(AUTO)}/take`);
    expect(took.status).toBe(201);
    expect(took.json).toMatchObject({ pool: AUTO, started: false });
    const again = await api("alice", "POST", `/v1/pools/${p(AUTO)}/take`);
    expect(again.status).toBe(409);
    expect(again.json).toMatchObject({
      error: "user-limit",
      message: expect.stringMatching(/alice already holds 1 VM.*return one first/),
    });

    const bobView = (await api("bob", "GET", "/v1/status")).json;
    const bobPool = bobView.pools.find((x: { name: string }) => x.name === AUTO);
    expect(bobPool.counts.held).toBe(1);
    expect(bobPool.members).toEqual([]);
    expect(Object.keys(bobView.users)).toEqual(["bob"]);
    const rootView = (await api("root", "GET", "/v1/status")).json;
    const held = rootView.pools
      .find((x: { name: string }) => x.name === AUTO)
      .members.find((m: { holder?: { user: string } }) => m.holder?.user === "alice");
    expect(held.name).toBe(took.json.vm);
  });

  it("only the holder returns a VM of an automatic pool", async () => {
    const vm = (await api("root", "GET", "/v1/status")).json.users.alice[0].vm as string;
    const byBob = await api("bob", "POST", `/v1/pools/${p(AUTO)}/vms/${p(vm)}/return`);
    expect(byBob.status).toBe(403);
    expect(byBob.json.error).toBe("not-holder");
    expect(byBob.text).not.toContain("alice");
    const byAlice = await api("alice", "POST", `/v1/pools/${p(AUTO)}/vms/${p(vm)}/return`);
    expect(byAlice.status).toBe(200);
    expect(byAlice.json).toEqual({ pool: AUTO, vm, reverted: true });
  });

  it("in manual pools only an admin returns", async () => {
    const took = await api("bob", "POST", `/v1/pools/${p(MANUAL)}/take`);
    expect(took.status).toBe(201);
    const vm = took.json.vm as string;
    const byBob = await api("bob", "POST", `/v1/pools/${p(MANUAL)}/vms/${p(vm)}/return`);
    expect(byBob.status).toBe(403);
    expect(byBob.json.error).toBe("admin-required");
    const byRoot = await api("root", "POST", `/v1/pools/${p(MANUAL)}/vms/${p(vm)}/return`);
    expect(byRoot.status).toBe(200);
  });

  it("detach is for admins and only for a Down VM", async () => {
    const status = (await api("root", "GET", "/v1/status")).json;
    const running = status.pools
      .find((x: { name: string }) => x.name === AUTO)
      .members.find((m: { state: string }) => m.state === "running").name;
    expect((await api("alice", "POST", `/v1/pools/${p(AUTO)}/vms/${p(running)}/detach`)).status).toBe(403);
    const notDown = await api("root", "POST", `/v1/pools/${p(AUTO)}/vms/${p(running)}/detach`);
    expect(notDown.status).toBe(409);
    expect(notDown.json.error).toBe("not-down");
  });

  it("clear 4xx errors for unknown pools, endpoints, methods and bodies", async () => {
    const unknown = await api("alice", "POST", "/v1/pools/NoSuchPool/take");
    expect(unknown.status).toBe(404);
    expect(unknown.json).toMatchObject({
      error: "unknown-pool",
      message: expect.stringContaining('no pool named "NoSuchPool"'),
    });
    expect((await api("alice", "GET", "/v1/nothing")).status).toBe(404);
    expect((await api("alice", "POST", "/v1/pools/%E0%A4%A/take")).json).toMatchObject({ error: "bad-path" });
    expect((await api("alice", "GET", `/v1/pools/${p(AUTO)}/take`)).status).toBe(405);
    const bad = await api("alice", "POST", `/v1/pools/${p(AUTO)}/vms/x/return`, "{not json");
    expect(bad.status).toBe(400);
    expect(bad.json.error).toBe("bad-json");
  });

  it("the vmpools CLI takes, shows status and reports refusals", async () => {
    const cli = (args: string[], token = tokens.bob.token) =>
      run("node", [join(__dirname, "../../bin/vmpools"), ...args], {
        env: { ...process.env, VMPOOLS_URL: url, VMPOOLS_TOKEN: token },
      }).then(
        (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
        (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout, err: e.stderr }),
      );
    const took = await cli(["take", AUTO]);
    expect(took).toMatchObject({
      code: 0,
      out: expect.stringMatching(new RegExp(`you have ApiAuto${tag}-0\\d from pool`)),
    });
    const status = await cli(["status"]);
    expect(status.out).toMatch(new RegExp(`pool ${AUTO.replace(/\?/g, "\\?")}: 3 members, 1 held`));
    expect(status.out).toMatch(/user bob: ApiAuto/);
    const refused = await cli(["take", AUTO]);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/bob already holds 1 VM.*\(HTTP 409, user-limit\)/);
    const usage = await cli(["take"]);
    expect(usage.code).toBe(2);
    expect(usage.err).toMatch(/expected POOL\nusage:/);
    const noToken = await cli(["status"], "");
    expect(noToken.err).toMatch(/set VMPOOLS_TOKEN/);
    // Refused before serve does anything (no store opened, no libvirt connection).
    const resync = await cli(["serve", "--resync-seconds", "0", "--db", join(dir, "never.db")]);
    expect(resync.code).toBe(2);
    expect(resync.err).toMatch(/--resync-seconds 0: give whole seconds from 1 to 99999/);
    expect(existsSync(join(dir, "never.db"))).toBe(false);
  });

  it("`vmpools token` prints a token whose entry authenticates it", async () => {
    const { stdout } = await run("node", [join(__dirname, "../../bin/vmpools"), "token", "carol", "--admin"]);
    const token = /shown once\): (\S+)/.exec(stdout)![1]!;
    const entry = JSON.parse(/tokens-file entry: (.*)/.exec(stdout)![1]!);
    expect(entry).toMatchObject({ user: "carol", role: "admin" });
    expect(stdout).not.toContain(entry.tokenSha256.slice(0, 8) === token.slice(0, 8) ? "impossible" : "\u0000");
    const file = join(dir, "carol.json");
    writeFileSync(file, JSON.stringify({ tokens: [entry] }));
    expect(readFileSync(file, "utf8")).not.toContain(token);
    expect(TokenAuth.fromFile(file).authenticate(`Bearer ${token}`)).toEqual({ user: "carol", role: "admin" });
    expect(TokenAuth.fromFile(file).authenticate(`Bearer ${token}x`)).toBeUndefined();
  });
});

describe("CLI helpers", () => {
  it("console options typed from text; console host from the libvirt URI", () => {
    expect(parseConsoleOption("fullscreen", "1")).toBe(true);
    expect(parseConsoleOption("fullscreen", "off")).toBe(false);
    expect(parseConsoleOption("fullscreen", "maybe")).toBe("maybe");
    expect(parseConsoleOption("title", "1")).toBe("1");
    expect(consoleHostOf("qemu+ssh://root@h1.example.com/system")).toBe("h1.example.com");
    expect(consoleHostOf("qemu+tcp://[fd00::1]:16509/system")).toBe("[fd00::1]");
    expect(consoleHostOf("qemu:///system")).toBe(hostname());
  });
});
