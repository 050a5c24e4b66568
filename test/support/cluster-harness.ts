// Pools of the tiny heartbeat guest on a test cluster's real hosts (cluster-hosts.ts) and one
// Reconciler over all of them, as test/cluster/ uses them: members defined on their planned
// hosts as an engine would, the pools' policy documents published per host, the guests' serial
// logs readable from the shared folder.
import * as fs from "node:fs";
import * as path from "node:path";
import { planPool, type PoolPlan } from "../../core/plan";
import type { VmPoolProps } from "../../core/spec";
import { DomainEvents } from "../../reconciler/driver/events";
import { VirshDriver } from "../../reconciler/driver/libvirt-driver";
import { Reconciler, type Activity, type Failure, type ReconcilerOptions } from "../../reconciler/reconciler";
import { StateStore } from "../../reconciler/store/store";
import { ensureGuest, guestCmdline } from "../guest/guest";
import type { TestCluster } from "./cluster-hosts";
import { deployQemuMember, publishPolicyVolume, tinyPoolProps } from "./qemu-pool";

export interface ClusterHarness {
  readonly drivers: ReadonlyMap<string, VirshDriver>;
  readonly store: StateStore;
  readonly failures: Failure[];
  readonly activities: Activity[];
  /** Props of a pool of the tiny guest on the cluster's raw base image. */
  props(name: string, overrides?: Partial<VmPoolProps>): VmPoolProps;
  /** Defines the members on their planned hosts (volumes in the shared pool); `publish` also uploads the policy document to each host. */
  deploy(props: VmPoolProps, options?: { readonly publish?: boolean }): Promise<PoolPlan>;
  /** A reconciler over every host (events on), started and idle. */
  start(options?: Partial<ReconcilerOptions>): Promise<Reconciler>;
  /** The guest's heartbeat counter (vmpools.after=heartbeat): 1, 2, 3… per boot. */
  beats(vm: string): number[];
  /** How often the guest booted. */
  boots(vm: string): number;
  close(): Promise<void>;
}

export function openClusterHarness(cluster: TestCluster): ClusterHarness {
  const base = path.join(cluster.imageDir, "base.raw");
  const sector = Buffer.alloc(1024 * 1024);
  sector.write("CLUSTER-BASE", "latin1");
  fs.writeFileSync(base, sector);
  const drivers = new Map(cluster.hosts.map((h) => [h.name, new VirshDriver({ uri: h.uri })] as const));
  const dbDir = fs.mkdtempSync("/tmp/vmpools-cluster-db-");
  const store = StateStore.open(path.join(dbDir, "state.db"));
  const events: DomainEvents[] = [];
  const failures: Failure[] = [];
  const activities: Activity[] = [];
  let reconciler: Reconciler | undefined;
  const logPath = (vm: string) => path.join(cluster.imageDir, `${vm}.log`);
  const log = (vm: string) => (fs.existsSync(logPath(vm)) ? fs.readFileSync(logPath(vm), "utf8") : "");
  return {
    drivers,
    store,
    failures,
    activities,
    props: (name, overrides = {}) => tinyPoolProps(base, name, overrides),
    async deploy(props, options = {}) {
      const g = ensureGuest();
      const plan = planPool(props);
      for (const vm of plan.members) {
        const driver = drivers.get(vm.host.name)!;
        // Volumes another host made are unknown here until the shared pool is re-read.
        await driver.refreshStoragePool(cluster.storagePool);
        await deployQemuMember(driver, cluster.storagePool, base, vm, () => ({
          directKernelBoot: {
            kernelPath: g.kernelPath,
            initrdPath: g.initrdPath,
            cmdline: `${guestCmdline({ kind: "read-marker" })} vmpools.after=heartbeat`,
          },
          serialLogPath: logPath(vm.name),
        }));
      }
      if (options.publish) {
        for (const h of cluster.hosts) {
          await publishPolicyVolume((args) => h.virsh(...args), cluster.storagePool, plan, h.name, cluster.imageDir);
        }
      }
      return plan;
    },
    async start(options = {}) {
      reconciler = new Reconciler({
        hosts: cluster.hosts.map((h) => {
          const e = new DomainEvents({ uri: h.uri });
          events.push(e);
          // The shared folder is local ext4, which libvirt does not know as shared storage.
          return { name: h.name, uri: h.uri, driver: drivers.get(h.name)!, events: e, unsafeMigration: true };
        }),
        store,
        retry: { maxAttempts: 2, baseDelayMs: 200 },
        shutdownTimeoutMs: 5000,
        resyncIntervalMs: 3_600_000,
        ...options,
      });
      reconciler.on("failure", (f) => failures.push(f));
      reconciler.on("activity", (a) => activities.push(a));
      await reconciler.start();
      await reconciler.idle();
      return reconciler;
    },
    beats: (vm) => [...log(vm).matchAll(/^HEARTBEAT (\d+) /gm)].map((m) => Number(m[1])),
    boots: (vm) => (log(vm).match(/^VMPOOLS-GUEST-READY$/gm) ?? []).length,
    async close() {
      await reconciler?.stop();
      for (const e of events) await e.close();
      for (const d of drivers.values()) await d.close();
      store.close();
      fs.rmSync(dbDir, { recursive: true, force: true });
    },
  };
}
