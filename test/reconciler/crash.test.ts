// A reconciler killed with SIGKILL at chosen steps (and at random moments), then restarted,
// converges: no double assignment, no member lost, stuck or left dirty.
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PoolPlan } from "../../core/plan";
import { VirshDriver } from "../../reconciler/driver/libvirt-driver";
import { otherVolumeName } from "../../reconciler/revert";
import { StateStore } from "../../reconciler/store/store";
import { validProps } from "../support/fixtures";
import { ReconcilerChild } from "./fixtures/child";
import { holdTestDriver, releaseTestDriver, requireLibvirtd, TEST_URI } from "../support/libvirt";
import {
  deployPool,
  FRESH_ALLOCATION,
  currentOverlay,
  overlayAllocation,
  removePool,
  systemDisk,
  TEST_STORAGE_POOL,
  uniquePoolName,
  WRITTEN_ALLOCATION,
  writeToOverlay,
} from "./support";

let holder: ChildProcess;
let driver: VirshDriver;
let dir: string;
const plans: PoolPlan[] = [];
const children: ReconcilerChild[] = [];
const stores: StateStore[] = [];

beforeAll(() => {
  requireLibvirtd();
  holder = holdTestDriver();
  driver = new VirshDriver({ uri: TEST_URI });
  dir = mkdtempSync(join(tmpdir(), "vmpools-crash-"));
});

afterEach(async () => {
  for (const c of children.splice(0)) await c.kill();
  for (const s of stores.splice(0)) s.close();
});

afterAll(async () => {
  for (const plan of plans) await removePool(driver, plan);
  await driver?.close();
  if (holder) await releaseTestDriver(holder);
  rmSync(dir, { recursive: true, force: true });
});

async function deploy(prefix: string, size: number, prestarted = 0, maxVmsPerUser = 1) {
  const plan = await deployPool(driver, validProps({ name: uniquePoolName(prefix), size, prestarted, maxVmsPerUser }));
  plans.push(plan);
  const db = join(dir, `${plan.pool.name.replace(/\W/g, "")}.db`);
  const store = StateStore.open(db);
  stores.push(store);
  const start = async (crashAt?: string) => {
    const child = await ReconcilerChild.start(db, plan.pool.name, crashAt ? { crashAt } : {});
    children.push(child);
    return child;
  };
  return { plan, pool: plan.pool.name, store, start, member: (vm: string) => plan.members.find((m) => m.name === vm)! };
}

const states = (plan: PoolPlan) => Promise.all(plan.members.map((m) => driver.domainState(m.name)));

describe("killed inside a take", () => {
  test.each([
    ["before the VM is started", "before:start"],
    ["after the VM started, before the take completed", "after:start"],
  ])("%s: the claim is rolled back and the user can take again", async (_, point) => {
    const p = await deploy("CrashTake", 3);
    const first = await p.start(point);
    first.send("take alice");
    const paused = await first.next((l) => l.paused === point);
    const vm = (paused.args as string[])[0]!;
    await first.kill();
    // What the kill left behind: the claim and its pending intent.
    expect(p.store.holder(p.pool, vm)?.user).toBe("alice");
    expect(p.store.pendingIntents().map((i) => i.kind)).toEqual(["take"]);

    const second = await p.start();
    expect(p.store.assignments(p.pool)).toEqual([]);
    expect(p.store.pendingIntents()).toEqual([]);
    // No prestarted VMs are asked for, so a member the take had started was shut down again.
    expect(new Set(await states(p.plan))).toEqual(new Set(["shut off"]));

    const again = await second.ask("take alice");
    expect(again.take).toMatchObject({ pool: p.pool, started: true });
    expect(p.store.assignments(p.pool).map((a) => a.user)).toEqual(["alice"]);
    expect(second.failures).toEqual([]);
  });
});

describe("killed inside a revert", () => {
  // A revert switches the member to a fresh alternate overlay, then remakes the one the guest
  // wrote to (reconciler/revert.ts); the member's disk exists at every step.
  test.each([
    ["after the alternate overlay was made, before the switch", "after:createOverlayVolume", "to"],
    ["after the switch, before the written overlay was remade", "after:defineDomain", "to"],
    ["after the written overlay was deleted, before it was remade", "after:deleteVolume", "from"],
  ] as const)("%s: the revert is finished and the VM returned", async (_, point, volumeIn) => {
    const p = await deploy("CrashRevert", 2);
    const first = await p.start(point);
    const vm = ((await first.ask("take alice")).take as { vm: string }).vm;
    const disk = systemDisk(p.member(vm));
    const alternate = otherVolumeName(disk.volumeName);
    await writeToOverlay(driver, p.member(vm));
    await driver.destroy(vm); // the guest shuts down: the child returns and reverts it
    const paused = await first.next((l) => l.paused === point);
    if (point !== "after:defineDomain") {
      expect((paused.args as unknown[]).slice(0, 2)).toEqual([
        TEST_STORAGE_POOL,
        volumeIn === "to" ? alternate : disk.volumeName,
      ]);
    }
    await first.kill();
    expect(p.store.pendingIntents().map((i) => i.kind)).toContain("revert");

    const second = await p.start();
    await second.ask("idle");
    expect(p.store.pendingIntents()).toEqual([]);
    expect(p.store.holder(p.pool, vm)).toBeUndefined();
    // The member boots from the alternate, fresh; its written overlay was remade fresh as the next spare.
    expect(await currentOverlay(driver, p.member(vm))).toBe(alternate);
    for (const name of [alternate, disk.volumeName]) {
      const volume = await driver.volumeXml(TEST_STORAGE_POOL, name);
      expect(volume).toContain(`<allocation unit='bytes'>${FRESH_ALLOCATION}</allocation>`);
      expect(volume).toContain(`<path>${disk.backingStore!.path}</path>`);
      expect(volume).toContain(`<capacity unit='bytes'>${disk.capacityGiB! * 2 ** 30}</capacity>`);
    }
    expect(second.failures).toEqual([]);
  });
});

test("killed at random moments under load, a restarted reconciler always converges", async () => {
  const p = await deploy("CrashRandom", 8, 2, 2);
  let seed = 20_240_611;
  const random = (n: number) => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed % n;
  };
  const pause = () => new Promise((r) => setTimeout(r, random(25)));
  for (let round = 0; round < 8; round++) {
    const child = await p.start();
    for (let u = 0; u < 5; u++) child.send(`take user-${u}`);
    await pause();
    // Some users write to their VM and shut it down while the takes are under way (only VMs
    // really handed out: a take still pending is rolled back, its user never got the VM).
    const taking = new Set(p.store.pendingIntents().map((i) => i.kind === "take" && i.vm));
    const handedOut = p.store.assignments(p.pool).filter((a) => !taking.has(a.vm));
    for (const a of handedOut.slice(0, random(handedOut.length + 1))) {
      if ((await driver.domainState(a.vm)) !== "running") continue;
      await writeToOverlay(driver, p.member(a.vm));
      await driver.destroy(a.vm);
    }
    await pause();
    await child.kill();
  }

  const final = await p.start();
  await final.ask("idle");
  expect(p.store.pendingIntents()).toEqual([]);
  const assignments = p.store.assignments(p.pool);
  const perUser = new Map<string, number>();
  for (const a of assignments) perUser.set(a.user, (perUser.get(a.user) ?? 0) + 1);
  expect(Math.max(0, ...perUser.values())).toBeLessThanOrEqual(2);
  const held = new Set(assignments.map((a) => a.vm));
  const memberStates = await states(p.plan);
  let freeUp = 0;
  for (const [i, m] of p.plan.members.entries()) {
    // A held VM of an automatic pool is up (one found down is returned); every overlay exists.
    if (held.has(m.name)) expect(memberStates[i]).toBe("running");
    else if (memberStates[i] === "running") freeUp++;
    const allocation = await overlayAllocation(driver, m);
    // A free member is clean; only a VM still held may carry what its user wrote.
    if (!held.has(m.name)) expect(allocation).toBe(FRESH_ALLOCATION);
    else expect([FRESH_ALLOCATION, WRITTEN_ALLOCATION]).toContain(allocation);
  }
  expect(freeUp).toBe(Math.min(2, p.plan.members.length - held.size));
  expect(final.failures).toEqual([]);
}, 120_000);
