// The reconciler when libvirt keeps failing, on FakeDriver (test/support/fake-driver.ts): bounded
// retries with exponential backoff, the prestart give-up path, and members whose revert keeps
// failing kept out of service. No test on libvirt could make a start or a volume create fail on cue.
import { performance } from "node:perf_hooks";
import { VirshError } from "../../reconciler/driver/virsh-session";
import { NoFreeVmError, UserLimitError } from "../../reconciler/errors";
import { systemVolumeOf } from "../../reconciler/libvirt-xml";
import { otherVolumeName } from "../../reconciler/revert";
import { StateStore, type Intent } from "../../reconciler/store/store";
import { FakeDriver } from "../support/fake-driver";
import { BASE_DELAY_MS, MAX_ATTEMPTS, T0, closeFakePools, setupFakePool, type Setup } from "../support/fake-pool";

afterEach(closeFakePools);

const injected = (what: string) => () => new VirshError([what], `injected: ${what} refused`);

/** The member's current system volume (it may switch volumes on a revert). */
async function systemVolume(fake: FakeDriver, vm: string) {
  return systemVolumeOf(await fake.domainXml(vm, { inactive: true }))!;
}

const pendingOf = (store: StateStore, kind: Intent["kind"], vm: string) =>
  store.pendingIntents().find((i) => i.kind === kind && i.vm === vm);

/**
 * Holds each of the next `attempts` calls at a gate and, at each, reads the pending intent of
 * `kind` on `vm`: what the store says between two attempts.
 */
async function observeAttempts(
  s: Setup,
  method: "start" | "createOverlayVolume",
  target: string | undefined,
  kind: Intent["kind"],
  vm: string,
  attempts: number,
  trigger: () => Promise<unknown>,
): Promise<{ seen: (Intent | undefined)[]; at: number[]; result: Promise<unknown> }> {
  const seen: (Intent | undefined)[] = [];
  const at: number[] = [];
  let gate = s.fake.pauseNext(method, target);
  const result = trigger();
  result.catch(() => undefined);
  for (let i = 0; i < attempts; i++) {
    await gate.reached;
    at.push(performance.now());
    seen.push(pendingOf(s.store, kind, vm));
    const current = gate;
    if (i < attempts - 1) gate = s.fake.pauseNext(method, target);
    current.release();
  }
  return { seen, at, result };
}

describe("bounded retries with exponential backoff", () => {
  it("a revert that fails twice succeeds on its third attempt; each failure is on the intent, delays double", async () => {
    const s = await setupFakePool({ size: 1, prestarted: 0 });
    await s.started;
    const [m1] = s.names;
    const taken = await s.reconciler.take(s.pool, "alice");
    expect(taken.vm).toBe(m1);
    const dirty = await systemVolume(s.fake, m1!);
    s.fake.writeToVolume(dirty.storagePool, dirty.volume, 1 << 20);

    s.fake.failNext("createOverlayVolume", { times: 2, error: injected("vol-create") });
    let createsWhenReverted = -1;
    s.reconciler.on("activity", (a) => {
      if (a.kind === "reverted") createsWhenReverted = s.fake.calls("createOverlayVolume");
    });
    const createsBefore = s.fake.calls("createOverlayVolume");
    const { seen, at, result } = await observeAttempts(s, "createOverlayVolume", undefined, "revert", m1!, 3, () =>
      s.reconciler.return(s.pool, m1!, { user: "alice" }),
    );
    expect(await result).toEqual({ pool: s.pool, vm: m1, reverted: true });

    // Before attempt 1 nothing failed yet; before attempts 2 and 3 the store holds the failures.
    expect(
      seen.map((i) => i && { attempts: i.attempts, nextAttemptAt: i.nextAttemptAt, lastError: i.lastError }),
    ).toEqual([
      { attempts: 0, nextAttemptAt: null, lastError: null },
      { attempts: 1, nextAttemptAt: T0 + BASE_DELAY_MS, lastError: "virsh vol-create: injected: vol-create refused" },
      {
        attempts: 2,
        nextAttemptAt: T0 + 2 * BASE_DELAY_MS,
        lastError: "virsh vol-create: injected: vol-create refused",
      },
    ]);
    // The reconciler really waited: at least the base delay, then twice it (timers never fire early).
    expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(BASE_DELAY_MS - 1);
    expect(at[2]! - at[1]!).toBeGreaterThanOrEqual(2 * BASE_DELAY_MS - 1);
    expect(createsWhenReverted - createsBefore).toBe(3);

    await s.reconciler.idle();
    const id = seen[0]!.id;
    expect(s.store.intent(id)).toMatchObject({ state: "done", attempts: 2 });
    const fresh = await systemVolume(s.fake, m1!);
    expect(s.fake.volume(fresh.storagePool, fresh.volume)?.allocationBytes).toBe(0);
    expect(s.member(m1!)).toMatchObject({ role: "free" });
    expect(s.member(m1!).problem).toBeUndefined();
    expect(s.failures).toEqual([]);
  });

  it("a prestart whose start fails twice is retried with doubling delays and prestarts on the third attempt", async () => {
    const s = await setupFakePool({ size: 3, prestarted: 1 }, (fake, names) => {
      fake.failNext("start", { target: names[0]!, times: 2, error: injected("start") });
    });
    const [m1] = s.names;
    const { seen, at } = await observeAttempts(s, "start", m1, "prestart", m1!, 3, () => s.started);
    await s.started;
    await s.reconciler.idle();

    expect(seen.map((i) => i && { attempts: i.attempts, nextAttemptAt: i.nextAttemptAt })).toEqual([
      { attempts: 0, nextAttemptAt: null },
      { attempts: 1, nextAttemptAt: T0 + BASE_DELAY_MS },
      { attempts: 2, nextAttemptAt: T0 + 2 * BASE_DELAY_MS },
    ]);
    expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(BASE_DELAY_MS - 1);
    expect(at[2]! - at[1]!).toBeGreaterThanOrEqual(2 * BASE_DELAY_MS - 1);
    expect(s.fake.calls("start", m1)).toBe(3);
    expect(s.store.intent(seen[0]!.id)).toMatchObject({
      state: "done",
      attempts: 2,
      lastError: "virsh start: injected: start refused",
    });
    expect(s.member(m1!)).toMatchObject({ role: "prestarted", state: "running" });
    // One member prestarted, as asked: the retries did not make the planner start another meanwhile.
    expect(s.reconciler.status().pools[0]!.counts).toMatchObject({ prestarted: 1 });
    expect(s.fake.calls("start")).toBe(3);
    expect(s.failures).toEqual([]);
  });
});

describe("the prestart give-up path", () => {
  it("marks the member with a problem, prestarts another instead, and skips it until a start of it succeeds", async () => {
    const s = await setupFakePool({ size: 3, prestarted: 1 }, (fake, names) => {
      fake.failNext("start", { target: names[0]!, times: MAX_ATTEMPTS, error: injected("start") });
    });
    const [m1, m2, m3] = s.names as [string, string, string];
    const gate = s.fake.pauseNext("start", m1);
    await gate.reached;
    const prestartIntent = pendingOf(s.store, "prestart", m1);
    gate.release();
    await s.started;
    await s.reconciler.idle();

    expect(s.fake.calls("start", m1)).toBe(MAX_ATTEMPTS);
    expect(s.store.intent(prestartIntent!.id)).toMatchObject({
      state: "failed",
      attempts: MAX_ATTEMPTS,
      lastError: "virsh start: injected: start refused",
    });
    expect(s.failures).toHaveLength(1);
    expect(s.failures[0]).toMatchObject({ context: "prestart", vm: m1 });
    expect(s.member(m1)).toMatchObject({ role: "free", state: "shut off" });
    expect(s.member(m1).problem).toMatch(/prestart failed 3 times: virsh start: injected: start refused/);
    expect(s.member(m2)).toMatchObject({ role: "prestarted", state: "running" });

    // Resyncs do not try it again.
    await s.reconciler.resync();
    await s.reconciler.resync();
    await s.reconciler.idle();
    expect(s.fake.calls("start", m1)).toBe(MAX_ATTEMPTS);

    // alice gets m2; its replacement is m3, not the given-up m1.
    expect((await s.reconciler.take(s.pool, "alice")).vm).toBe(m2);
    await s.reconciler.idle();
    expect(s.member(m3)).toMatchObject({ role: "prestarted" });
    expect((await s.reconciler.take(s.pool, "bob")).vm).toBe(m3);
    await s.reconciler.idle();
    // Only m1 is left free: still not prestarted.
    expect(s.fake.calls("start", m1)).toBe(MAX_ATTEMPTS);
    expect(s.member(m1)).toMatchObject({ role: "free", state: "shut off" });

    // A take starts it (the failures are over): that start clears the problem.
    expect(await s.reconciler.take(s.pool, "carol")).toEqual({ pool: s.pool, vm: m1, started: true });
    expect(s.member(m1).problem).toBeUndefined();
    await s.reconciler.return(s.pool, m1, { user: "carol" });
    await s.reconciler.idle();
    // Prestarted again like any member.
    expect(s.member(m1)).toMatchObject({ role: "prestarted", state: "running" });
    expect(s.fake.calls("start", m1)).toBe(MAX_ATTEMPTS + 2);
    expect(s.failures).toHaveLength(1);
  });

  it("a given-up member stays given up across a restart (the condition is persisted)", async () => {
    const s = await setupFakePool({ size: 2, prestarted: 1 }, (fake, names) => {
      fake.failNext("start", { target: names[0]!, times: MAX_ATTEMPTS, error: injected("start") });
    });
    await s.started;
    await s.reconciler.idle();
    const [m1, m2] = s.names as [string, string];
    expect(s.member(m1).problem).toMatch(/prestart failed/);
    // Stop the prestarted m2 so that, after the restart, the planner has to choose again.
    await s.reconciler.stop();
    await s.fake.destroy(m2);
    await s.restart();
    expect(s.member(m1).problem).toMatch(/prestart failed/);
    expect(s.fake.calls("start", m1)).toBe(MAX_ATTEMPTS);
    expect(s.member(m2)).toMatchObject({ role: "prestarted", state: "running" });
  });
});

describe("a revert that keeps failing", () => {
  it("keeps the member out of service (never handed out, never prestarted), across resyncs and a restart", async () => {
    const s = await setupFakePool({ size: 2, prestarted: 1 });
    await s.started;
    await s.reconciler.idle();
    const [m1, m2] = s.names as [string, string];
    expect(s.member(m1)).toMatchObject({ role: "prestarted" });
    const dirty = await systemVolume(s.fake, m1);
    s.fake.writeToVolume(dirty.storagePool, dirty.volume, 1 << 20);

    // The prestarted guest powers itself off: it must be reverted before anyone gets it.
    s.fake.failNext("createOverlayVolume", { times: Infinity, error: injected("vol-create") });
    s.fake.guestPowersOff(m1);
    await new Promise((r) => setImmediate(r));
    await s.reconciler.idle();
    expect(s.failures.some((f) => f.vm === m1)).toBe(true);
    expect(s.member(m1).problem).toMatch(/revert failed: virsh vol-create: injected: vol-create refused/);
    expect(s.member(m1).state).toBe("shut off");
    expect(s.member(m2)).toMatchObject({ role: "prestarted" });

    let round = 0;
    // Each round as new users, so that only "nothing free" can refuse them.
    const takes = async () => {
      const got: string[] = [];
      round++;
      for (const user of [`r${round}-u1`, `r${round}-u2`, `r${round}-u3`]) {
        try {
          got.push((await s.reconciler.take(s.pool, user)).vm);
        } catch (e) {
          if (!(e instanceof NoFreeVmError)) throw e;
        }
      }
      return got;
    };
    expect(await takes()).toEqual([m2]);
    for (let i = 0; i < 3; i++) await s.reconciler.resync();
    await s.reconciler.idle();
    expect(await takes()).toEqual([]);
    expect(s.fake.domain(m1)!.state).toBe("shut off");

    // After a restart the reconciler still knows m1 was never reverted.
    await s.restart();
    expect(await takes()).toEqual([]);
    expect(s.fake.domain(m1)!.state).toBe("shut off");
    expect(s.member(m1).problem).toMatch(/revert/);

    // The storage recovers: the next resync reverts m1, and it is handed out fresh.
    s.fake.heal("createOverlayVolume");
    await s.reconciler.resync();
    await s.reconciler.idle();
    expect(s.member(m1).problem).toBeUndefined();
    expect((await s.reconciler.take(s.pool, "u9")).vm).toBe(m1);
    const now = await systemVolume(s.fake, m1);
    expect(s.fake.volume(now.storagePool, now.volume)?.allocationBytes).toBe(0);
  });

  it("a return whose revert fails keeps the VM from others; once storage recovers a resync reverts and frees it", async () => {
    const s = await setupFakePool({ size: 1, prestarted: 0 });
    await s.started;
    const [m1] = s.names as [string];
    await s.reconciler.take(s.pool, "alice");
    const dirty = await systemVolume(s.fake, m1);
    s.fake.writeToVolume(dirty.storagePool, dirty.volume, 1 << 20);

    s.fake.failNext("createOverlayVolume", { times: Infinity, error: injected("vol-create") });
    await expect(s.reconciler.return(s.pool, m1, { user: "alice" })).rejects.toThrow(/injected: vol-create refused/);
    await s.reconciler.idle();
    await expect(s.reconciler.take(s.pool, "bob")).rejects.toThrow(NoFreeVmError);
    await s.reconciler.resync();
    await s.reconciler.idle();
    await expect(s.reconciler.take(s.pool, "bob")).rejects.toThrow(NoFreeVmError);
    expect(s.fake.domain(m1)!.state).toBe("shut off");

    s.fake.heal("createOverlayVolume");
    await s.reconciler.resync();
    await s.reconciler.idle();
    expect(s.member(m1).problem).toBeUndefined();
    expect(s.reconciler.status().pools[0]!.counts).toMatchObject({ held: 0 });
    expect(await s.reconciler.take(s.pool, "bob")).toMatchObject({ vm: m1, started: true });
    const now = await systemVolume(s.fake, m1);
    expect(s.fake.volume(now.storagePool, now.volume)?.allocationBytes).toBe(0);
  });
});

describe("refusals", () => {
  it("a take refused for the user's limit or for no free VM makes no libvirt call", async () => {
    const s = await setupFakePool({ size: 1, prestarted: 0, maxVmsPerUser: 1 });
    await s.started;
    await s.reconciler.take(s.pool, "alice");
    await s.reconciler.idle();
    const before = s.fake.calls();
    await expect(s.reconciler.take(s.pool, "alice")).rejects.toThrow(UserLimitError);
    await expect(s.reconciler.take(s.pool, "bob")).rejects.toThrow(NoFreeVmError);
    expect(s.fake.callLog().slice(before)).toEqual([]);
  });
});

describe("a start that went through although it answered with an error", () => {
  it("hands out the member, which is running (a libvirtd restart cut off the answer, not the start)", async () => {
    const s = await setupFakePool({ size: 1, prestarted: 0 });
    await s.started;
    await s.reconciler.idle();
    s.fake.failNext("start", {
      afterEffect: true,
      error: new VirshError(["start"], "Requested operation is not valid: domain is already active"),
    });
    // It was down when asked for: the user is told it is starting.
    expect(await s.reconciler.take(s.pool, "alice")).toMatchObject({ vm: s.names[0], started: true });
    expect(await s.fake.domainState(s.names[0]!)).toBe("running");
    expect(s.store.holder(s.pool, s.names[0]!)?.user).toBe("alice");
  });
});

describe("the spare overlay a revert switches to", () => {
  it("is used as made in advance, and made again when something wrote to it meanwhile", async () => {
    const s = await setupFakePool({ size: 1, prestarted: 0 });
    await s.started;
    const [m1] = s.names;
    const roundTrip = async () => {
      await s.reconciler.take(s.pool, "alice");
      const current = await systemVolume(s.fake, m1!);
      s.fake.writeToVolume(current.storagePool, current.volume, 1 << 20);
      await s.reconciler.return(s.pool, m1!, { user: "alice" });
      await s.reconciler.idle();
      return systemVolume(s.fake, m1!);
    };
    await roundTrip(); // switches to the alternate; the engine's overlay becomes the spare
    const creates = s.fake.calls("createOverlayVolume");
    const back = await roundTrip(); // switches back to the spare, made in advance: nothing to create now
    expect(s.fake.calls("createOverlayVolume") - creates).toBe(1); // only the next spare, in the background
    expect(s.fake.volume(back.storagePool, back.volume)?.allocationBytes).toBe(0);

    // Someone writes to the spare (it is only a volume): the next revert does not trust it.
    const spare = await systemVolume(s.fake, m1!).then((v) => ({ ...v, volume: otherVolumeName(v.volume) }));
    s.fake.writeToVolume(spare.storagePool, spare.volume, 1 << 20);
    const after = await roundTrip();
    expect(after.volume).toBe(spare.volume);
    expect(s.fake.volume(after.storagePool, after.volume)?.allocationBytes).toBe(0);
    expect(s.failures).toEqual([]);
  });
});

describe("a member an engine destroys while it is being reverted", () => {
  it("is forgotten without a failure, and nothing is left pending", async () => {
    const s = await setupFakePool({ size: 2, prestarted: 0 });
    await s.started;
    const [m1] = s.names;
    await s.reconciler.take(s.pool, "alice");
    const gate = s.fake.pauseNext("createOverlayVolume");
    s.fake.guestPowersOff(m1!); // the return, with its revert, begins
    await gate.reached;
    await s.fake.undefineDomain(m1!); // Terraform destroys the member (it is shut off)
    gate.release();
    await s.reconciler.idle();
    expect(s.failures).toEqual([]);
    expect(s.store.pendingIntents()).toEqual([]);
    expect(s.store.holder(s.pool, m1!)).toBeUndefined();
    expect(s.reconciler.status().pools[0]!.members.map((m) => m.name)).toEqual([s.names[1]]);
  });
});
