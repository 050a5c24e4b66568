// One reconciler per test on libvirtd's test hypervisor, with its own pool and in-memory store.
// Registers the jest hooks that open the shared connections and clean up after each test.
import type { ChildProcess } from "node:child_process";
import type { PoolPlan, VmPlan } from "../../core/plan";
import type { VmPoolProps } from "../../core/spec";
import { DomainEvents } from "../../reconciler/driver/events";
import { VirshDriver, type LibvirtDriver } from "../../reconciler/driver/libvirt-driver";
import { Reconciler, type Failure, type ReconcilerOptions } from "../../reconciler/reconciler";
import { StateStore } from "../../reconciler/store/store";
import { validProps } from "../support/fixtures";
import { holdTestDriver, releaseTestDriver, requireLibvirtd, TEST_URI } from "../support/libvirt";
import { deployPool, removePool, uniquePoolName } from "./support";

export interface Setup {
  readonly plan: PoolPlan;
  readonly pool: string;
  readonly store: StateStore;
  readonly reconciler: Reconciler;
  readonly failures: Failure[];
  member(name: string): VmPlan;
  /** The member's name by its 1-based index. */
  nameOf(index: number): string;
  /** `role/state` of every member, by name. */
  roles(): Record<string, string>;
}

export interface SetupOptions extends Partial<Omit<ReconcilerOptions, "driver" | "store" | "events">> {
  readonly withEvents?: boolean;
  /** Wraps the shared driver (e.g. to inject failures or count calls). */
  readonly driver?: (driver: VirshDriver) => LibvirtDriver;
  /** Failures the test expects; any other background failure fails the test. */
  readonly expectFailures?: boolean;
  /** A store file instead of an in-memory store (for restarts on a reopened store). */
  readonly storePath?: string;
}

export interface Harness {
  readonly driver: VirshDriver;
  readonly events: DomainEvents;
  setup(prefix: string, props: Partial<VmPoolProps>, options?: SetupOptions): Promise<Setup>;
  /** Deploys a pool (removed after the file's tests) without a reconciler, for tests that make their own. */
  deploy(props: VmPoolProps): Promise<PoolPlan>;
  /**
   * A new reconciler for the same pool, on the same store (or the store file reopened), as after
   * a restart of `serve`; the old one must be stopped.
   */
  restart(s: Setup, storePath?: string, options?: SetupOptions): Promise<Setup>;
  /** Simulates the guest powering itself off (destroy), and waits until the reconciler dealt with it. */
  guestPowersOff(s: Setup, vm: string): Promise<void>;
}

export function useTestHypervisor(): Harness {
  let holder: ChildProcess | undefined;
  const plans: PoolPlan[] = [];
  const running: { reconciler: Reconciler; store: StateStore; failures: Failure[]; expectFailures: boolean }[] = [];
  const h = {} as { driver: VirshDriver; events: DomainEvents };

  beforeAll(async () => {
    requireLibvirtd();
    holder = holdTestDriver();
    h.driver = new VirshDriver({ uri: TEST_URI });
    h.events = new DomainEvents({ uri: TEST_URI });
    await h.events.ready();
  });

  afterEach(async () => {
    for (const r of running.splice(0)) {
      await r.reconciler.stop();
      r.store.close();
      // Background work must not have failed silently in any test.
      if (!r.expectFailures) expect(r.failures).toEqual([]);
    }
  });

  afterAll(async () => {
    for (const plan of plans) await removePool(h.driver, plan);
    await h.events?.close();
    await h.driver?.close();
    if (holder) await releaseTestDriver(holder);
  });

  return {
    get driver() {
      return h.driver;
    },
    get events() {
      return h.events;
    },
    async setup(prefix, props, options = {}) {
      const plan = await deployPool(h.driver, validProps({ name: uniquePoolName(prefix), ...props }));
      plans.push(plan);
      return start(plan, options.storePath ? StateStore.open(options.storePath) : StateStore.open(":memory:"), options);
    },
    async deploy(props) {
      const plan = await deployPool(h.driver, props);
      plans.push(plan);
      return plan;
    },
    restart(s, storePath, options = {}) {
      return start(s.plan, storePath ? StateStore.open(storePath) : s.store, options);
    },
    async guestPowersOff(s, vm) {
      const stopped = h.events.waitFor((e) => e.domain === vm && e.event === "Stopped", 5000);
      await h.driver.destroy(vm);
      await stopped;
      await s.reconciler.idle();
    },
  };

  async function start(plan: PoolPlan, store: StateStore, options: SetupOptions): Promise<Setup> {
    {
      const { withEvents = true, driver: wrap, expectFailures = false, ...rest } = options;
      delete (rest as { storePath?: string }).storePath;
      const reconciler = new Reconciler({
        driver: wrap ? wrap(h.driver) : h.driver,
        store,
        ...(withEvents ? { events: h.events } : {}),
        retry: { maxAttempts: 3, baseDelayMs: 10 },
        shutdownTimeoutMs: 2000,
        // Other test files' pools live on the same test hypervisor.
        onlyPools: [plan.pool.name],
        ...rest,
      });
      const failures: Failure[] = [];
      reconciler.on("failure", (f) => failures.push(f));
      running.push({ reconciler, store, failures, expectFailures });
      await reconciler.start();
      await reconciler.idle();
      return {
        plan,
        pool: plan.pool.name,
        store,
        reconciler,
        failures,
        member: (name) => plan.members.find((m) => m.name === name)!,
        nameOf: (index) => plan.members[index - 1]!.name,
        roles: () =>
          Object.fromEntries(reconciler.status().pools[0]!.members.map((m) => [m.name, `${m.role}/${m.state}`])),
      };
    }
  }
}
