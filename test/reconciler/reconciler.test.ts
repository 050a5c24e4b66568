// The reconciler against libvirtd's test hypervisor: real RPCs, real lifecycle events, no guests.
// A guest "shutting down" is simulated with `destroy`; a guest "writing to its disk" with an
// overlay volume whose allocation is WRITTEN_ALLOCATION (a fresh overlay's equals its capacity).
import { performance } from "node:perf_hooks";
import { planPool, type PoolPlan } from "../../core/plan";
import type { VmPoolProps } from "../../core/spec";
import { HOLDER_NAMESPACE, HOLDER_PREFIX, parseHolderXml, renderHolderXml } from "../../core/metadata";
import { VirshDriver } from "../../reconciler/driver/libvirt-driver";
import {
  AdminRequiredError,
  NoFreeVmError,
  NotDownError,
  NotHeldError,
  NotHolderError,
  UnknownPoolError,
  UnknownVmError,
  UserLimitError,
} from "../../reconciler/errors";
import { Reconciler, type Failure } from "../../reconciler/reconciler";
import { StateStore } from "../../reconciler/store/store";
import { validProps } from "../support/fixtures";
import { useTestHypervisor, type Setup } from "./harness";
import {
  eventually,
  FRESH_ALLOCATION,
  overlayAllocation,
  systemDisk,
  uniquePoolName,
  WRITTEN_ALLOCATION,
  activity,
  writeToOverlay,
} from "./support";

const h = useTestHypervisor();
const setup = (prefix: string, props: Partial<VmPoolProps>, withEvents = true) =>
  h.setup(prefix, props, { withEvents });
const nameOf = (plan: PoolPlan, index: number) => plan.members[index - 1]!.name;
const roles = (s: Setup) => s.roles();
const guestPowersOff = (s: Setup, vm: string) => h.guestPowersOff(s, vm);

describe("take", () => {
  it("hands out a prestarted VM first and starts its replacement within a second", async () => {
    const s = await setup("Pre", { size: 6, prestarted: 2 });
    const [m1, m2, m3] = [1, 2, 3].map((i) => nameOf(s.plan, i));
    expect(s.reconciler.status().pools[0]!.counts).toEqual({ members: 6, held: 0, prestarted: 2, free: 4 });
    expect(roles(s)[m1!]).toBe("prestarted/running");

    const replacement = activity(s.reconciler, "prestarted", m3!);
    const t0 = performance.now();
    const taken = await s.reconciler.take(s.pool, "alice");
    expect(taken).toEqual({ pool: s.pool, vm: m1, started: false });
    await replacement;
    const replenishMs = performance.now() - t0;
    expect(replenishMs).toBeLessThan(1000);

    await s.reconciler.idle();
    expect(roles(s)).toMatchObject({ [m1!]: "held/running", [m2!]: "prestarted/running", [m3!]: "prestarted/running" });
    expect(s.reconciler.status().pools[0]!.counts).toEqual({ members: 6, held: 1, prestarted: 2, free: 3 });
  });

  it("mirrors each holder into the member's metadata for plan-time tools, and converges after a restart", async () => {
    const s = await setup("Mark", { size: 2 });
    const holderOf = async (vm: string) => parseHolderXml(await h.driver.getMetadata(vm, HOLDER_NAMESPACE));
    const { vm } = await s.reconciler.take(s.pool, "alice");
    // Written right after the answer, on the member's queue.
    await s.reconciler.idle();
    expect(await holderOf(vm)).toBe("alice");
    await s.reconciler.return(s.pool, vm, { user: "alice" });
    // Removed right after the answer too.
    await s.reconciler.idle();
    expect(await holderOf(vm)).toBeUndefined();

    // A stale mark (written while no reconciler ran) and a missing one are put right at start-up.
    const other = nameOf(s.plan, 1) === vm ? nameOf(s.plan, 2) : nameOf(s.plan, 1);
    await s.reconciler.take(s.pool, "bob");
    await s.reconciler.stop();
    await h.driver.setMetadata(vm, HOLDER_NAMESPACE, renderHolderXml("mallory"), HOLDER_PREFIX);
    await h.driver.removeMetadata(other, HOLDER_NAMESPACE);
    const held = s.store.heldBy("bob", s.pool).map((a) => a.vm);
    const again = new Reconciler({
      driver: h.driver,
      store: s.store,
      retry: { maxAttempts: 3, baseDelayMs: 10 },
      onlyPools: [s.pool],
    });
    await again.start();
    await again.idle();
    for (const m of [vm, other]) expect(await holderOf(m)).toBe(held.includes(m) ? "bob" : undefined);
    await again.stop();
  });

  it("follows the policy document, keeps it while the engines replace it, and after a restart", async () => {
    const props = validProps({ name: uniquePoolName("Doc"), size: 3, prestarted: 1 });
    const plan = await h.deploy(props);
    let documents = [planPool({ ...props, prestarted: 2, maxVmsPerUser: 3 }).policy.xml];
    // The test hypervisor cannot download volumes: the documents come from the test instead.
    const withDocuments = Object.create(h.driver, {
      readPolicyDocuments: { value: async () => documents },
    }) as VirshDriver;
    const store = StateStore.open(":memory:");
    const failures: Failure[] = [];
    const surplus: string[] = [];
    const make = () => {
      const r = new Reconciler({
        driver: withDocuments,
        store,
        retry: { maxAttempts: 3, baseDelayMs: 10 },
        onlyPools: [plan.pool.name],
      });
      r.on("failure", (f) => failures.push(f));
      r.on("activity", (a) => a.kind === "surplus-stopped" && surplus.push(a.vm));
      return r;
    };
    const first = make();
    await first.start();
    await first.idle();
    expect(first.status().pools[0]!.policy).toMatchObject({ prestarted: 2, maxVmsPerUser: 3 });
    expect(first.status().pools[0]!.counts.prestarted).toBe(2);

    // Mid-replacement the document is gone: the pool keeps it, never falls back to prestarted 1.
    documents = [];
    await first.resync();
    await first.idle();
    expect(first.status().pools[0]!.policy.prestarted).toBe(2);
    await first.stop();
    // A restart in that window too: the store remembers the document.
    const second = make();
    await second.start();
    await second.idle();
    expect(second.status().pools[0]!.policy).toMatchObject({ prestarted: 2, maxVmsPerUser: 3 });
    expect(second.status().pools[0]!.counts.prestarted).toBe(2);
    expect(surplus).toEqual([]);
    await second.stop();
    store.close();
    expect(failures).toEqual([]);
  });

  it("starts a stopped member when none is prestarted", async () => {
    const s = await setup("Cold", { size: 2 });
    const taken = await s.reconciler.take(s.pool, "alice");
    expect(taken).toEqual({ pool: s.pool, vm: nameOf(s.plan, 1), started: true });
    expect(await h.driver.domainState(taken.vm)).toBe("running");
  });

  it("refuses beyond maxVmsPerUser, when nothing is free, and for unknown pools, with clear messages", async () => {
    const s = await setup("Lim", { size: 3, maxVmsPerUser: 2 });
    const a = await s.reconciler.take(s.pool, "alice");
    const b = await s.reconciler.take(s.pool, "alice");
    expect(a.vm).not.toBe(b.vm);
    const limit = s.reconciler.take(s.pool, "alice");
    await expect(limit).rejects.toBeInstanceOf(UserLimitError);
    await expect(limit).rejects.toThrow(
      `alice already holds 2 VM(s) from pool ${s.pool} (${a.vm}, ${b.vm}), the most it allows per user is 2; return one first`,
    );
    await s.reconciler.take(s.pool, "bob");
    const none = s.reconciler.take(s.pool, "carol");
    await expect(none).rejects.toBeInstanceOf(NoFreeVmError);
    await expect(none).rejects.toThrow(`every VM of pool ${s.pool} (3) is taken or being returned; try again later`);
    const unknown = s.reconciler.take("NoSuchPool", "alice");
    await expect(unknown).rejects.toBeInstanceOf(UnknownPoolError);
    await expect(unknown).rejects.toThrow(`no pool named "NoSuchPool" on this hypervisor; pools: ${s.pool}`);
    expect(s.store.pendingIntents()).toEqual([]);
  });
});

describe("prestart", () => {
  it("keeps exactly the prestarted count up: never more, and restores a prestarted VM that shuts down", async () => {
    const s = await setup("Keep", { size: 5, prestarted: 2 });
    const [m1, , , , m5] = [1, 2, 3, 4, 5].map((i) => nameOf(s.plan, i));

    // Someone starts a free member by hand: one too many are up, the surplus is stopped.
    const stopped = activity(s.reconciler, "surplus-stopped", m5!);
    await h.driver.start(m5!);
    await stopped;
    await s.reconciler.idle();
    expect(s.reconciler.status().pools[0]!.counts.prestarted).toBe(2);
    expect(await h.driver.domainState(m5!)).toBe("shut off");

    // A prestarted VM shuts down: it is reverted, stays free, and prestart brings the count back.
    await writeToOverlay(h.driver, s.member(m1!));
    const reverted = activity(s.reconciler, "reverted", m1!);
    await guestPowersOff(s, m1!);
    await reverted;
    await s.reconciler.idle();
    expect(await overlayAllocation(h.driver, s.member(m1!))).toBe(FRESH_ALLOCATION);
    expect(s.store.holder(s.pool, m1!)).toBeUndefined();
    expect(s.reconciler.status().pools[0]!.counts).toEqual({ members: 5, held: 0, prestarted: 2, free: 3 });
  });

  it("does nothing in manual pools", async () => {
    const s = await setup("ManPre", { size: 2, type: "manual" });
    expect(Object.values(roles(s))).toEqual(["free/shut off", "free/shut off"]);
  });
});

describe("automatic pools", () => {
  it("free and revert a VM whose guest shut down", async () => {
    const s = await setup("Auto", { size: 2 });
    const { vm } = await s.reconciler.take(s.pool, "alice");
    await writeToOverlay(h.driver, s.member(vm));
    const returned = activity(s.reconciler, "returned", vm);
    await guestPowersOff(s, vm);
    expect(await returned).toMatchObject({ user: "alice", by: "shutdown" });
    expect(s.store.holder(s.pool, vm)).toBeUndefined();
    expect(await overlayAllocation(h.driver, s.member(vm))).toBe(FRESH_ALLOCATION);
    const volume = await h.driver.volumeXml("default-pool", systemDisk(s.member(vm)).volumeName);
    expect(volume).toContain(`<path>${s.plan.pool.template.baseImagePath}</path>`);
    expect(roles(s)[vm]).toBe("free/shut off");
    expect(s.store.pendingIntents()).toEqual([]);
  });

  it("free a stateful pool's VM without reverting it", async () => {
    const s = await setup("Stateful", { size: 2, stateful: true });
    const { vm } = await s.reconciler.take(s.pool, "alice");
    await writeToOverlay(h.driver, s.member(vm));
    await guestPowersOff(s, vm);
    expect(s.store.holder(s.pool, vm)).toBeUndefined();
    expect(await overlayAllocation(h.driver, s.member(vm))).toBe(WRITTEN_ALLOCATION);
  });

  it("keep what an admin wrote: admin access makes the VM stateful for this return", async () => {
    const s = await setup("AdminAccess", { size: 1 });
    const { vm } = await s.reconciler.take(s.pool, "alice");
    s.store.markAdminAccess(s.pool, vm);
    await writeToOverlay(h.driver, s.member(vm));
    await guestPowersOff(s, vm);
    expect(s.store.holder(s.pool, vm)).toBeUndefined();
    expect(await overlayAllocation(h.driver, s.member(vm))).toBe(WRITTEN_ALLOCATION);
  });

  it("let a user return only their own VM: shut down, reverted once, freed", async () => {
    const s = await setup("Ret", { size: 2 });
    const { vm } = await s.reconciler.take(s.pool, "alice");
    await expect(s.reconciler.return(s.pool, vm, { user: "bob" })).rejects.toBeInstanceOf(NotHolderError);
    await writeToOverlay(h.driver, s.member(vm));
    const reverts: string[] = [];
    s.reconciler.on("activity", (a) => a.kind === "reverted" && reverts.push(a.vm));
    expect(await s.reconciler.return(s.pool, vm, { user: "alice" })).toEqual({ pool: s.pool, vm, reverted: true });
    await s.reconciler.idle();
    // The shutdown's own Stopped event must not revert a second time.
    expect(reverts).toEqual([vm]);
    expect(await h.driver.domainState(vm)).toBe("shut off");
    expect(await overlayAllocation(h.driver, s.member(vm))).toBe(FRESH_ALLOCATION);
    await expect(s.reconciler.return(s.pool, vm, { user: "alice" })).rejects.toBeInstanceOf(NotHeldError);
    await expect(s.reconciler.return(s.pool, "Nope-1", { admin: true })).rejects.toBeInstanceOf(UnknownVmError);
  });

  it("are returned by the periodic resync when the shutdown event was missed", async () => {
    const s = await setup("Missed", { size: 1 }, false);
    const { vm } = await s.reconciler.take(s.pool, "alice");
    await writeToOverlay(h.driver, s.member(vm));
    await h.driver.destroy(vm);
    await s.reconciler.idle();
    expect(s.store.holder(s.pool, vm)?.user).toBe("alice");
    await s.reconciler.resync();
    await s.reconciler.idle();
    expect(s.store.holder(s.pool, vm)).toBeUndefined();
    expect(await overlayAllocation(h.driver, s.member(vm))).toBe(FRESH_ALLOCATION);
  });
});

describe("manual pools", () => {
  it("keep a VM assigned after its guest shuts down until an admin returns it", async () => {
    const s = await setup("Manual", { size: 2, type: "manual" });
    const { vm } = await s.reconciler.take(s.pool, "alice");
    await writeToOverlay(h.driver, s.member(vm));
    await guestPowersOff(s, vm);
    expect(s.store.holder(s.pool, vm)?.user).toBe("alice");
    expect(await overlayAllocation(h.driver, s.member(vm))).toBe(WRITTEN_ALLOCATION);

    const byUser = s.reconciler.return(s.pool, vm, { user: "alice" });
    await expect(byUser).rejects.toBeInstanceOf(AdminRequiredError);
    await expect(byUser).rejects.toThrow(`${s.pool} is a manual pool: only an administrator can return ${vm}`);
    expect(await s.reconciler.return(s.pool, vm, { admin: true })).toEqual({ pool: s.pool, vm, reverted: true });
    expect(s.store.holder(s.pool, vm)).toBeUndefined();
    expect(await overlayAllocation(h.driver, s.member(vm))).toBe(FRESH_ALLOCATION);
  });
});

describe("detach", () => {
  it("refuses a running VM and turns a Down one into an independent VM", async () => {
    const s = await setup("Detach", { size: 2, type: "manual" });
    const { vm } = await s.reconciler.take(s.pool, "alice");
    const refused = s.reconciler.detach(s.pool, vm);
    await expect(refused).rejects.toBeInstanceOf(NotDownError);
    await expect(refused).rejects.toThrow(`${vm} is running; only a VM that is Down can be detached`);

    await guestPowersOff(s, vm);
    await s.reconciler.detach(s.pool, vm);
    expect(await h.driver.getMetadata(vm, "https://vmpools.dev/xmlns/pool/1")).toBeUndefined();
    expect(await h.driver.domainState(vm)).toBe("shut off");
    expect(s.store.holder(s.pool, vm)).toBeUndefined();
    expect(s.reconciler.status().pools[0]!.members.map((m) => m.name)).toEqual([nameOf(s.plan, 2)]);
    // It is no longer handed out: the other member is, then nothing is left.
    expect((await s.reconciler.take(s.pool, "bob")).vm).toBe(nameOf(s.plan, 2));
    await expect(s.reconciler.take(s.pool, "carol")).rejects.toBeInstanceOf(NoFreeVmError);
  });
});

test("status shows pools, members, holders and each user's VMs", async () => {
  const s = await setup("Status", { size: 3, prestarted: 1, maxVmsPerUser: 2 });
  const a = await s.reconciler.take(s.pool, "alice");
  const b = await s.reconciler.take(s.pool, "bob");
  await s.reconciler.idle();
  const status = s.reconciler.status();
  expect(status.users).toEqual({ alice: [{ pool: s.pool, vm: a.vm }], bob: [{ pool: s.pool, vm: b.vm }] });
  expect(status.pendingIntents).toBe(0);
  const pool = status.pools[0]!;
  expect(pool.policy).toMatchObject({ type: "automatic", prestarted: 1, maxVmsPerUser: 2, templateVersion: 1 });
  expect(pool.members.find((m) => m.name === a.vm)).toMatchObject({
    role: "held",
    state: "running",
    templateVersion: 1,
    holder: { user: "alice", how: "user", adminAccess: false },
  });
  expect(pool.counts).toEqual({ members: 3, held: 2, prestarted: 1, free: 0 });
});

describe("under concurrency", () => {
  it("200 takes by 50 users on 100 VMs: no VM twice, limits held, every take served or clearly refused", async () => {
    const s = await setup("Busy", { size: 100, prestarted: 10, maxVmsPerUser: 3 });
    const users = Array.from({ length: 50 }, (_, i) => `user-${i}`);
    const outcomes = await Promise.allSettled(
      Array.from({ length: 200 }, (_, i) => s.reconciler.take(s.pool, users[i % users.length]!)),
    );
    const taken = outcomes.flatMap((o, i) => (o.status === "fulfilled" ? [{ ...o.value, user: users[i % 50]! }] : []));
    const refusals = outcomes.flatMap((o) => (o.status === "rejected" ? [o.reason as Error] : []));
    expect(taken).toHaveLength(100);
    expect(new Set(taken.map((t) => t.vm)).size).toBe(100);
    for (const e of refusals) expect(e instanceof UserLimitError || e instanceof NoFreeVmError).toBe(true);
    const perUser = new Map<string, number>();
    for (const t of taken) perUser.set(t.user, (perUser.get(t.user) ?? 0) + 1);
    expect(Math.max(...perUser.values())).toBeLessThanOrEqual(3);
    expect(
      s.store
        .assignments(s.pool)
        .map((a) => `${a.user}:${a.vm}`)
        .sort(),
    ).toEqual(taken.map((t) => `${t.user}:${t.vm}`).sort());
    await s.reconciler.idle();
    const states = await Promise.all(taken.map((t) => h.driver.domainState(t.vm)));
    expect(new Set(states)).toEqual(new Set(["running"]));
    expect(s.store.pendingIntents()).toEqual([]);
    await eventually(() => expect(s.reconciler.status().pools[0]!.counts.held).toBe(100));
  });
});
