// A cluster of FakeDrivers (test/support/fake-driver.ts): one per host, sharing storage (as
// live migration needs) and able to migrate to each other, with a pool deployed on them as the
// engines would (each member on its planned host) and a Reconciler over all of them.
import { planPool, type PoolPlan } from "../../core/plan";
import type { VmPoolProps } from "../../core/spec";
import { policyVolumeName } from "../../core/metadata";
import {
  Reconciler,
  type Activity,
  type Failure,
  type MemberStatus,
  type ReconcilerOptions,
} from "../../reconciler/reconciler";
import { StateStore } from "../../reconciler/store/store";
import { FakeDriver } from "./fake-driver";
import { deployMemberOnFake, STORAGE_POOL } from "./fake-pool";
import { validProps } from "./fixtures";

export interface FakeCluster {
  /** Fakes by host name. */
  readonly hosts: ReadonlyMap<string, FakeDriver>;
  readonly store: StateStore;
  readonly plan: PoolPlan;
  readonly pool: string;
  readonly failures: Failure[];
  readonly activities: Activity[];
  readonly warnings: string[];
  reconciler: Reconciler;
  /** A fresh reconciler on the same fakes and store, as after a restart of `serve`. */
  restart(): Promise<void>;
  member(vm: string): MemberStatus;
  /** The host a member's domain is on, as the fakes have it (not as the reconciler thinks). */
  whereIs(vm: string): string | undefined;
  close(): Promise<void>;
}

export const fakeUri = (host: string) => `fake://${host}/system`;

/** Hosts `h1`…`hN` in props' cluster, the pool deployed on them; the reconciler is started. */
export async function startFakeCluster(
  hostCount: number,
  props: Partial<VmPoolProps>,
  options: {
    readonly freeMemoryMiB?: Record<string, number>;
    /** The hosts' lease TTL (renewed every third of it). @default the reconciler's (15 s) */
    readonly leaseTtlMs?: number;
    /** Upload the pool's policy document to every host, as the engines deploy it. @default false */
    readonly publishPolicy?: boolean;
    /** The reconciler's attestation options (trusted clusters). @default none */
    readonly attestation?: ReconcilerOptions["attestation"];
  } = {},
): Promise<FakeCluster> {
  const names = Array.from({ length: hostCount }, (_, i) => `h${i + 1}`);
  const peers = new Map<string, FakeDriver>();
  const sharedStorage = new Map<string, unknown>();
  const hosts = new Map(
    names.map((h) => {
      const fake = new FakeDriver({
        uri: fakeUri(h),
        peers,
        sharedStorage,
        ...(options.freeMemoryMiB?.[h] === undefined ? {} : { freeMemoryMiB: options.freeMemoryMiB[h] }),
      });
      peers.set(fakeUri(h), fake);
      return [h, fake] as const;
    }),
  );
  const plan = planPool(
    validProps({
      name: "Cl-???",
      cluster: { name: "fake", hosts: names.map((name) => ({ name, uri: fakeUri(name) })) },
      ...props,
    }),
  );
  for (const vm of plan.members) await deployMemberOnFake(hosts.get(vm.host.name)!, vm);
  if (options.publishPolicy) {
    for (const [h, fake] of hosts)
      fake.uploadVolume(STORAGE_POOL, policyVolumeName(plan.pool.name, h), plan.policy.xml);
  }
  const store = StateStore.open(":memory:");
  const failures: Failure[] = [];
  const activities: Activity[] = [];
  const warnings: string[] = [];
  const make = () => {
    const r = new Reconciler({
      hosts: names.map((name) => ({
        name,
        uri: fakeUri(name),
        driver: hosts.get(name)!,
        events: hosts.get(name)!.events,
      })),
      store,
      retry: { maxAttempts: 2, baseDelayMs: 10 },
      shutdownTimeoutMs: 1000,
      resyncIntervalMs: 3_600_000,
      ...(options.leaseTtlMs === undefined ? {} : { lease: { ttlMs: options.leaseTtlMs } }),
      ...(options.attestation ? { attestation: options.attestation } : {}),
    });
    r.on("failure", (f) => failures.push(f));
    r.on("activity", (a) => activities.push(a));
    r.on("warning", (w) => warnings.push(w));
    return r;
  };
  const c: FakeCluster = {
    hosts,
    store,
    plan,
    pool: plan.pool.name,
    failures,
    activities,
    warnings,
    reconciler: make(),
    async restart() {
      await c.reconciler.stop();
      c.reconciler = make();
      await c.reconciler.start();
      await c.reconciler.idle();
    },
    member: (vm) => c.reconciler.status().pools[0]!.members.find((m) => m.name === vm)!,
    whereIs: (vm) => [...hosts].find(([, f]) => f.domain(vm) !== undefined)?.[0],
    async close() {
      await c.reconciler.stop();
      store.close();
      for (const f of hosts.values()) await f.close();
    },
  };
  await c.reconciler.start();
  await c.reconciler.idle();
  return c;
}
