// A pool on FakeDriver (test/support/fake-driver.ts) with a Reconciler on it: for tests of what
// the reconciler does when libvirt fails or is slow on cue, and of which calls an answer waits for.
import { planPool, systemDiskOf, type PoolPlan, type VmPlan } from "../../core/plan";
import type { VmPoolProps } from "../../core/spec";
import { renderDomainXml } from "../../reconciler/local/domain-xml";
import { Reconciler, type Failure, type MemberStatus } from "../../reconciler/reconciler";
import { StateStore } from "../../reconciler/store/store";
import { FakeDriver } from "./fake-driver";
import { validProps } from "./fixtures";

export const STORAGE_POOL = "default-pool";
export const BASE_DELAY_MS = 40;
export const MAX_ATTEMPTS = 3;
/** The reconciler's clock, frozen: the retry times it writes into the store are then exact. */
export const T0 = 1_700_000_000_000;

export interface Setup {
  readonly fake: FakeDriver;
  readonly store: StateStore;
  readonly plan: PoolPlan;
  readonly pool: string;
  readonly names: readonly string[];
  readonly failures: Failure[];
  reconciler: Reconciler;
  /** The first reconciler's start(), not awaited by setup. */
  started: Promise<void>;
  /** A fresh reconciler on the same driver and store, as after a restart of `serve`. */
  restart(): Promise<void>;
  member(vm: string): MemberStatus;
}

const open: Setup[] = [];

/** Stops and closes every setup made since the last call: `afterEach(closeFakePools)`. */
export async function closeFakePools(): Promise<void> {
  for (const s of open.splice(0)) {
    await s.reconciler.stop();
    s.store.close();
    await s.fake.close();
  }
}

/**
 * Defines the pool's members with their overlays, as deployPool does on libvirt, and their media
 * volumes, which the fake (as qemu) needs to start them.
 */
export async function deployOnFake(fake: FakeDriver, props: VmPoolProps): Promise<PoolPlan> {
  const plan = planPool(props);
  for (const vm of plan.members) await deployMemberOnFake(fake, vm);
  return plan;
}

/** One member on `fake`: its overlay, its media volumes and its domain. */
export async function deployMemberOnFake(fake: FakeDriver, vm: VmPlan): Promise<void> {
  const disk = systemDiskOf(vm);
  for (const media of vm.disks.filter((d) => d !== disk)) fake.uploadVolume(STORAGE_POOL, media.volumeName, "media");
  await fake.createOverlayVolume(STORAGE_POOL, disk.volumeName, {
    backingPath: disk.backingStore!.path,
    backingFormat: disk.backingStore!.format,
    capacityBytes: disk.capacityGiB! * 2 ** 30,
  });
  await fake.defineDomain(renderDomainXml(vm, { storagePool: STORAGE_POOL, domainType: "test" }));
}

/**
 * A pool on a fresh fake; `before` runs before the reconciler starts (to inject failures or
 * set gates for its first prestarts). The reconciler is started but not waited for.
 */
export async function setupFakePool(
  props: Partial<VmPoolProps>,
  before: (fake: FakeDriver, names: readonly string[]) => void = () => undefined,
): Promise<Setup> {
  const fake = new FakeDriver();
  const plan = await deployOnFake(fake, validProps({ name: "Fake-???", ...props }));
  const names = plan.members.map((m) => m.name);
  const store = StateStore.open(":memory:");
  const failures: Failure[] = [];
  const make = () => {
    const r = new Reconciler({
      driver: fake,
      store,
      events: fake.events,
      clock: () => T0,
      retry: { maxAttempts: MAX_ATTEMPTS, baseDelayMs: BASE_DELAY_MS },
      shutdownTimeoutMs: 1000,
    });
    r.on("failure", (f) => failures.push(f));
    return r;
  };
  const s: Setup = {
    fake,
    store,
    plan,
    pool: plan.pool.name,
    names,
    failures,
    reconciler: make(),
    started: Promise.resolve(),
    async restart() {
      await s.reconciler.stop();
      s.reconciler = make();
      await s.reconciler.start();
      await s.reconciler.idle();
    },
    member: (vm) => s.reconciler.status().pools[0]!.members.find((m) => m.name === vm)!,
  };
  open.push(s);
  before(fake, names);
  s.started = s.reconciler.start();
  return s;
}
