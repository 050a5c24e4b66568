// End to end on qemu:///system with the tiny real guest: members boot, write a marker into their
// qcow2 overlay and power off; the reconciler reacts to the lifecycle events. Needs root,
// libvirtd and qemu (installed/started on demand); fails, never skips, without them.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { PoolPlan, VmPlan } from "../../core/plan";
import type { VmPoolProps } from "../../core/spec";
import { DomainEvents } from "../../reconciler/driver/events";
import { VirshDriver } from "../../reconciler/driver/libvirt-driver";
import { NotHolderError } from "../../reconciler/errors";
import { spiceDisplayOf } from "../../reconciler/libvirt-xml";
import type { RenderDomainOptions } from "../../reconciler/local/domain-xml";
import { Reconciler, type Failure } from "../../reconciler/reconciler";
import { StateStore } from "../../reconciler/store/store";
import { ensureGuest, ensureLibvirt, guestCmdline, LIBVIRT_URI, parseGuestLog, readImageMarker } from "../guest/guest";
import { deployQemuPool, tinyPoolProps } from "../support/qemu-pool";
import { activity, currentOverlay } from "./support";

const IMAGES = "/var/lib/libvirt/images";
const BASE_MARKER = "BASE-CLEAN";
const id = `${process.pid}-${randomBytes(3).toString("hex")}`;
const dir = path.join(IMAGES, `vmpools-test-${id}`);
const storagePool = `vmpools-test-${id}`;
const base = path.join(dir, "base.raw");
const CONSOLE_HOST = "console.vmpools.test";

let driver: VirshDriver;
let events: DomainEvents;
let store: StateStore;
let reconciler: Reconciler;
const plans: PoolPlan[] = [];
const failures: Failure[] = [];

const props = (name: string, overrides: Partial<VmPoolProps>): VmPoolProps => tinyPoolProps(base, name, overrides);

/** Defines the members and their volumes, as an engine would; config media get an empty disk. */
async function deploy(poolProps: VmPoolProps, render: (vm: VmPlan) => Omit<RenderDomainOptions, "storagePool">) {
  const plan = await deployQemuPool(driver, storagePool, base, poolProps, render);
  plans.push(plan);
  return plan;
}

/** Members that boot the tiny guest, which writes `marker` to its disk and powers off. */
const writesMarker = (marker: string) => (vm: VmPlan) => ({
  directKernelBoot: { ...guestFiles(), cmdline: guestCmdline({ kind: "write-marker", text: marker }) },
  serialLogPath: logPath(vm),
});
const guestFiles = () => {
  const g = ensureGuest();
  return { kernelPath: g.kernelPath, initrdPath: g.initrdPath };
};
const logPath = (vm: VmPlan) => path.join(dir, `${vm.name}.log`);
/** The overlay the member boots from now (a revert switches it to its alternate, see reconciler/revert.ts). */
const overlayPath = async (vm: VmPlan) => path.join(dir, await currentOverlay(driver, vm));
const guestLog = (vm: VmPlan) => parseGuestLog(fs.readFileSync(logPath(vm), "utf8"));

beforeAll(async () => {
  ensureLibvirt();
  ensureGuest();
  fs.mkdirSync(dir, { mode: 0o755 });
  fs.chmodSync(dir, 0o755); // mkdir's mode is filtered by the umask
  const sector = Buffer.alloc(1024 * 1024);
  sector.write(BASE_MARKER, "latin1");
  fs.writeFileSync(base, sector);
  driver = new VirshDriver({ uri: LIBVIRT_URI });
  await driver.session.run(["pool-create-as", "--name", storagePool, "--type", "dir", "--target", dir]);
  events = new DomainEvents({ uri: LIBVIRT_URI });
  await events.ready();
  store = StateStore.open(path.join(dir, "state.db"));
}, 120_000);

afterAll(async () => {
  await reconciler?.stop();
  store?.close();
  for (const vm of plans.flatMap((p) => p.members)) {
    await driver.destroy(vm.name).catch(() => undefined);
    await driver.undefineDomain(vm.name).catch(() => undefined);
  }
  await driver?.session.run(["pool-destroy", "--pool", storagePool]).catch(() => undefined);
  await events?.close();
  await driver?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test("guests write, power off and are handled as their pool says; consoles get tickets", async () => {
  const stateless = await deploy(props(`E2eStateless${id.slice(-6)}-?`, {}), writesMarker("STATELESS-WROTE"));
  const stateful = await deploy(
    props(`E2eStateful${id.slice(-6)}-?`, { stateful: true }),
    writesMarker("STATEFUL-WROTE"),
  );
  const manual = await deploy(props(`E2eManual${id.slice(-6)}-?`, { type: "manual" }), writesMarker("MANUAL-WROTE"));
  // No kernel and an empty disk: the firmware finds nothing to boot and the VM stays up. Its
  // console is locked at creation, as the constructs render it (qemu only accepts tickets when
  // SPICE started with a password).
  const consolePool = await deploy(
    props(`E2eConsole${id.slice(-6)}-?`, { console: { spiceProxy: "http://proxy.vmpools.test:3128" } }),
    () => ({ lockedSpicePassword: randomBytes(12).toString("hex") }),
  );
  reconciler = new Reconciler({
    driver,
    store,
    events,
    retry: { maxAttempts: 3, baseDelayMs: 100 },
    shutdownTimeoutMs: 5000,
    consoleHost: CONSOLE_HOST,
    onlyPools: plans.map((p) => p.pool.name),
  });
  reconciler.on("failure", (f) => failures.push(f));
  await reconciler.start();

  // Stateless automatic pool: the guest's write is gone once the reconciler has returned it.
  const [s1] = stateless.members;
  let returned = activity(reconciler, "returned", s1!.name, 60_000);
  expect(await reconciler.take(stateless.pool.name, "alice")).toMatchObject({ vm: s1!.name, started: true });
  expect(await returned).toMatchObject({ user: "alice", by: "shutdown" });
  expect(guestLog(s1!)).toMatchObject({ marker: BASE_MARKER, written: "STATELESS-WROTE", poweredOff: true });
  expect(store.holder(stateless.pool.name, s1!.name)).toBeUndefined();
  expect(readImageMarker(await overlayPath(s1!), "qcow2")).toBe(BASE_MARKER);
  // The next user's guest itself sees the clean disk.
  await reconciler.idle();
  returned = activity(reconciler, "returned", s1!.name, 60_000);
  await reconciler.take(stateless.pool.name, "bob");
  await returned;
  expect(guestLog(s1!).marker).toBe(BASE_MARKER);

  // Stateful automatic pool: freed, and the write survives for the next user.
  const [f1] = stateful.members;
  returned = activity(reconciler, "returned", f1!.name, 60_000);
  await reconciler.take(stateful.pool.name, "alice");
  await returned;
  expect(store.holder(stateful.pool.name, f1!.name)).toBeUndefined();
  expect(readImageMarker(await overlayPath(f1!), "qcow2")).toBe("STATEFUL-WROTE");

  // Manual pool: still assigned after the guest powered off, until an admin returns it.
  const [m1] = manual.members;
  const stopped = events.waitFor((e) => e.domain === m1!.name && e.event === "Stopped", 60_000);
  await reconciler.take(manual.pool.name, "alice");
  await stopped;
  await reconciler.idle();
  expect(store.holder(manual.pool.name, m1!.name)?.user).toBe("alice");
  expect(readImageMarker(await overlayPath(m1!), "qcow2")).toBe("MANUAL-WROTE");
  expect(await reconciler.return(manual.pool.name, m1!.name, { admin: true })).toMatchObject({ reverted: true });
  expect(store.holder(manual.pool.name, m1!.name)).toBeUndefined();
  expect(readImageMarker(await overlayPath(m1!), "qcow2")).toBe(BASE_MARKER);

  // Console: only the holder gets a file; its ticket is the domain's SPICE password, short-lived.
  const [c1] = consolePool.members;
  await reconciler.take(consolePool.pool.name, "carol");
  await expect(reconciler.consoleFile(consolePool.pool.name, c1!.name, "dave")).rejects.toBeInstanceOf(NotHolderError);
  const before = Date.now();
  const vv = await reconciler.consoleFile(consolePool.pool.name, c1!.name, "carol", { fullscreen: true });
  const fields = Object.fromEntries(
    vv
      .trim()
      .split("\n")
      .slice(1)
      .map((l) => l.split(/=(.*)/s).slice(0, 2)),
  );
  const live = await driver.domainXml(c1!.name, { securityInfo: true });
  const graphics = spiceDisplayOf(live)!.element;
  expect(fields).toMatchObject({
    type: "spice",
    host: CONSOLE_HOST,
    port: String(spiceDisplayOf(live)!.port),
    proxy: "http://proxy.vmpools.test:3128",
    "delete-this-file": "1",
    fullscreen: "1",
  });
  expect(graphics).toContain(`passwd='${fields.password}'`);
  const validTo = Date.parse(`${/passwdValidTo='([^']+)'/.exec(graphics)![1]}Z`);
  expect(validTo).toBeGreaterThan(before + 100_000);
  expect(validTo).toBeLessThan(before + 125_000);
  // The options became carol's default for the pool; every file has a fresh ticket.
  expect(store.consoleOptions(consolePool.pool.name, "carol")).toEqual({ fullscreen: true });
  const again = await reconciler.consoleFile(consolePool.pool.name, c1!.name, "carol");
  expect(again).toContain("fullscreen=1");
  expect(again).not.toContain(`password=${fields.password}`);

  await reconciler.idle();
  expect(store.pendingIntents()).toEqual([]);
  expect(failures).toEqual([]);
}, 180_000);

/** Kills libvirtd and starts it again, as a host upgrade or crash would; persistent domains stay. */
function restartLibvirtd(): void {
  execFileSync("sh", [
    "-c",
    // By its pid file, not by name: the cluster tests' hosts run libvirtds of their own.
    "p=$(cat /run/libvirtd.pid); kill $p; for i in $(seq 100); do grep -qs '^State:[^Z]*$' /proc/$p/status || break; sleep 0.1; done",
  ]);
  execFileSync("libvirtd", ["-d"]);
  execFileSync("sh", [
    "-c",
    `for i in $(seq 100); do virsh -c ${LIBVIRT_URI} uri >/dev/null 2>&1 && exit 0; sleep 0.1; done; exit 1`,
  ]);
}

// Runs after the test above (this file runs alone, serially, after the parallel suites: a
// restart would wipe the test hypervisor the others use).
test("after a libvirtd restart the session reconnects, events resubscribe and returns are still event-driven", async () => {
  const stateless = plans[0]!;
  const [s1] = stateless.members;
  await reconciler.idle();
  restartLibvirtd();
  const returned = activity(reconciler, "returned", s1!.name, 60_000);
  expect(await reconciler.take(stateless.pool.name, "carol")).toMatchObject({ vm: s1!.name, started: true });
  expect(await returned).toMatchObject({ user: "carol", by: "shutdown" });
  expect(guestLog(s1!)).toMatchObject({ marker: BASE_MARKER, written: "STATELESS-WROTE", poweredOff: true });
  expect(readImageMarker(await overlayPath(s1!), "qcow2")).toBe(BASE_MARKER);
  await reconciler.idle();
  expect(store.pendingIntents()).toEqual([]);
}, 120_000);
