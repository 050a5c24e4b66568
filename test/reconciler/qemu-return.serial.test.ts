// Returns of real qemu guests (qemu:///system, the tiny guest of test/guest/): a running guest
// that ignores the ACPI shutdown is destroyed after the shutdown timeout, reverted and freed; and
// a reconciler killed with SIGKILL at each step of reverting a real qcow2 overlay, then
// restarted, finishes the revert so that the next boot reads the base image.
// Serial: real TCG guests are slow to boot on a busy 2-core machine.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { DomainEvents } from "../../reconciler/driver/events";
import type { LibvirtDriver } from "../../reconciler/driver/libvirt-driver";
import { Reconciler, type Failure } from "../../reconciler/reconciler";
import { StateStore } from "../../reconciler/store/store";
import { LIBVIRT_URI, virsh } from "../guest/guest";
import { BASE_MARKER, openQemuPools, until, type QemuPools } from "../support/qemu-pool";
import { ReconcilerChild } from "./fixtures/child";

let q: QemuPools;

beforeAll(async () => {
  q = await openQemuPools();
}, 120_000);

afterAll(async () => {
  await q?.close();
});

/** The driver, with every call's method name and time recorded. */
function recorded(driver: LibvirtDriver): {
  driver: LibvirtDriver;
  calls: { method: string; vm: unknown; at: number }[];
} {
  const calls: { method: string; vm: unknown; at: number }[] = [];
  const proxy = new Proxy(driver, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        calls.push({ method: String(prop), vm: args[0], at: Date.now() });
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { driver: proxy, calls };
}

/** qemu-img's view of an overlay: format, backing file and size. */
const imageInfo = (file: string) =>
  JSON.parse(execFileSync("qemu-img", ["info", "-U", "--output=json", file], { encoding: "utf8" })) as Record<
    string,
    unknown
  >;

test("a user returns a running guest that ignores ACPI: destroyed after the shutdown timeout, reverted, freed", async () => {
  // The tiny guest has no ACPI handler (no acpid, /init is a shell script): it stays up through
  // `virsh shutdown`, as a hung or unwilling guest would.
  const plan = await q.deploy(
    q.props(`QemuStay${q.tag}-?`),
    q.guest({ kind: "write-marker", text: "USER-WROTE" }, { stay: true }),
  );
  const [vm] = plan.members;
  const store = StateStore.open(path.join(q.dir, "stay.db"));
  const events = new DomainEvents({ uri: LIBVIRT_URI });
  const { driver, calls } = recorded(q.driver);
  const SHUTDOWN_TIMEOUT_MS = 3000;
  const reconciler = new Reconciler({
    driver,
    store,
    events,
    retry: { maxAttempts: 3, baseDelayMs: 100 },
    shutdownTimeoutMs: SHUTDOWN_TIMEOUT_MS,
    onlyPools: [plan.pool.name],
  });
  const failures: Failure[] = [];
  reconciler.on("failure", (f) => failures.push(f));
  try {
    await reconciler.start();
    const { current: written, other: alternate } = await q.overlays(vm!);
    expect(await reconciler.take(plan.pool.name, "alice")).toMatchObject({ vm: vm!.name, started: true });
    await until("the guest's write", () => q.guestLog(vm!).written === "USER-WROTE", 90_000);
    expect(q.marker(written, { whileRunning: true })).toBe("USER-WROTE");

    const returning = Date.now();
    expect(await reconciler.return(plan.pool.name, vm!.name, { user: "alice" })).toEqual({
      pool: plan.pool.name,
      vm: vm!.name,
      reverted: true,
    });
    const took = Date.now() - returning;
    // ACPI first, the plug only once the timeout passed; the guest never powered itself off.
    const mine = calls.filter((c) => c.vm === vm!.name && c.at >= returning);
    const shutdown = mine.find((c) => c.method === "shutdown");
    const destroy = mine.find((c) => c.method === "destroy");
    expect(shutdown).toBeDefined();
    expect(destroy).toBeDefined();
    expect(destroy!.at - shutdown!.at).toBeGreaterThanOrEqual(SHUTDOWN_TIMEOUT_MS);
    expect(took).toBeGreaterThanOrEqual(SHUTDOWN_TIMEOUT_MS);
    expect(virsh("domstate", "--reason", vm!.name)).toBe("shut off (destroyed)");
    expect(q.guestLog(vm!)).toMatchObject({ marker: BASE_MARKER, written: "USER-WROTE", poweredOff: false });

    // Reverted: the member boots the fresh alternate now; freed.
    expect((await q.overlays(vm!)).current).toBe(alternate);
    expect(q.marker(alternate)).toBe(BASE_MARKER);
    expect(store.holder(plan.pool.name, vm!.name)).toBeUndefined();
    await reconciler.idle();
    // The overlay alice wrote to is remade in the background as the next revert's spare.
    expect(q.marker(written)).toBe(BASE_MARKER);
    expect(store.pendingIntents()).toEqual([]);
    expect(reconciler.status().pools[0]!.members[0]).toMatchObject({ role: "free", state: "shut off" });
    expect(reconciler.status().pools[0]!.members[0]!.problem).toBeUndefined();
    expect(failures).toEqual([]);
  } finally {
    await reconciler.stop();
    await events.close();
    store.close();
  }
}, 180_000);

describe("kill -9 during the revert of a real qcow2 overlay", () => {
  const children: ReconcilerChild[] = [];
  afterEach(async () => {
    for (const c of children.splice(0)) await c.kill();
  });

  // The steps of reconciler/revert.ts: make the fresh alternate, switch the disk to it, delete
  // and remake the overlay the guest wrote to.
  test.each([
    ["after the alternate overlay was made, before the switch", "after:createOverlayVolume", 1],
    ["after the switch, before the written overlay was remade", "after:defineDomain", 2],
    ["after the written overlay was deleted, before it was remade", "after:deleteVolume", 3],
  ])(
    "%s: after a restart the member boots a clean disk",
    async (_, point, step) => {
      const plan = await q.deploy(
        q.props(`QemuCrash${q.tag}S${step}-?`),
        q.guest({ kind: "write-marker", text: "ALICE-WROTE" }),
      );
      const [vm] = plan.members;
      const pool = plan.pool.name;
      const db = path.join(q.dir, `${vm!.name}.db`);
      const store = StateStore.open(db);
      try {
        const { current: written, other: alternate } = await q.overlays(vm!);
        const first = await ReconcilerChild.start(db, pool, {
          crashAt: point,
          uri: LIBVIRT_URI,
          readyTimeoutMs: 60_000,
        });
        children.push(first);
        expect((await first.ask("take alice", 60_000)).take).toMatchObject({ vm: vm!.name, started: true });
        // The guest writes to its overlay and powers off; the child returns it and starts reverting.
        const paused = await first.next((l) => l.paused === point, 120_000);
        // Killed exactly at the step: what the disk looks like at that moment.
        if (step === 1) expect((paused.args as unknown[])[1]).toBe(alternate);
        if (step === 2) expect((await q.overlays(vm!)).current).toBe(alternate);
        if (step === 3) {
          expect((paused.args as unknown[])[1]).toBe(written);
          expect(fs.existsSync(q.volumePath(written))).toBe(false);
        }
        expect(q.guestLog(vm!)).toMatchObject({ marker: BASE_MARKER, written: "ALICE-WROTE", poweredOff: true });
        await first.kill();
        expect(store.pendingIntents().map((i) => i.kind)).toContain("revert");

        const second = await ReconcilerChild.start(db, pool, { uri: LIBVIRT_URI, readyTimeoutMs: 60_000 });
        children.push(second);
        await second.ask("idle", 60_000);
        expect(store.pendingIntents()).toEqual([]);
        expect(store.holder(pool, vm!.name)).toBeUndefined();
        expect(store.conditions()).toEqual([]);
        // Both overlays exist, over the base, fresh: the member boots the alternate.
        expect((await q.overlays(vm!)).current).toBe(alternate);
        for (const volume of [alternate, written]) {
          expect(imageInfo(q.volumePath(volume))).toMatchObject({
            format: "qcow2",
            "backing-filename": path.join(q.dir, "base.raw"),
            "virtual-size": 2 ** 30,
          });
          expect(q.marker(volume)).toBe(BASE_MARKER);
        }
        // The next user's guest itself reads the base image.
        q.clearLog(vm!);
        expect((await second.ask("take bob", 60_000)).take).toMatchObject({ vm: vm!.name, started: true });
        await until("bob's guest to power off", () => q.guestLog(vm!).poweredOff, 120_000);
        expect(q.guestLog(vm!)).toMatchObject({ marker: BASE_MARKER, written: "ALICE-WROTE" });
        await until("bob's return", () => store.holder(pool, vm!.name) === undefined, 30_000);
        await second.ask("idle", 60_000);
        expect(store.pendingIntents()).toEqual([]);
        expect(q.marker((await q.overlays(vm!)).current)).toBe(BASE_MARKER);
        expect(first.failures).toEqual([]);
        expect(second.failures).toEqual([]);
      } finally {
        store.close();
        fs.rmSync(db, { force: true });
      }
    },
    300_000,
  );
});
