// The reconciler's latencies. Run: npx ts-node --transpile-only bench/reconciler.ts
// - On libvirt's test hypervisor (test+unix:///default), a 1000-member pool with 50 prestarted:
//   take latency from the prestarted set, takes/s under a burst, take → replacement prestarted.
// - On qemu:///system with real qemu-img overlays: revert (overlay recreated from the base) for a
//   1 GiB and a 100 GiB base image, and the admin return of a Down VM that includes it.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { planPool } from "../core/plan";
import { DomainEvents } from "../reconciler/driver/events";
import { VirshDriver, type LibvirtDriver } from "../reconciler/driver/libvirt-driver";
import { renderDomainXml } from "../reconciler/local/domain-xml";
import { Reconciler, type Activity } from "../reconciler/reconciler";
import { StateStore } from "../reconciler/store/store";
import { holdTestDriver, releaseTestDriver, requireLibvirtd, TEST_URI } from "../test/support/libvirt";
import { deployPool, removePool, uniquePoolName } from "../test/reconciler/support";

const SIZE = 1000;
const PRESTARTED = 50;
const SEQUENTIAL_TAKES = 200;
const BURST_TAKES = 300;
const REVERTS_PER_IMAGE = 20;

const quantile = (values: readonly number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
};
const ms = (v: number) => `${v.toFixed(1)} ms`;
const rows: [string, string, string][] = [];

function nextActivity(reconciler: Reconciler, kind: Activity["kind"]): Promise<number> {
  return new Promise((resolve) => {
    const on = (a: Activity) => {
      if (a.kind !== kind) return;
      reconciler.off("activity", on);
      resolve(performance.now());
    };
    reconciler.on("activity", on);
  });
}

async function onTestHypervisor(): Promise<void> {
  requireLibvirtd();
  const holder = holdTestDriver();
  const driver = new VirshDriver({ uri: TEST_URI });
  const events = new DomainEvents({ uri: TEST_URI });
  await events.ready();
  const name = `${uniquePoolName("Bench")}?`;
  const t0 = performance.now();
  const plan = await deployPool(driver, {
    name,
    template: { name: "t", version: 1, baseImagePath: "/images/base.qcow2", diskSizeGiB: 10, memoryMiB: 512, vcpus: 1 },
    size: SIZE,
    prestarted: PRESTARTED,
    maxVmsPerUser: 32767,
  });
  console.error(`deployed ${SIZE} members in ${ms(performance.now() - t0)}`);
  // A file as in production: every claim and intent is fsynced (WAL, synchronous=FULL).
  const storeDir = mkdtempSync(join(tmpdir(), "vmpools-bench-"));
  const store = StateStore.open(join(storeDir, "state.db"));
  const reconciler = new Reconciler({
    driver,
    store,
    events,
    retry: { maxAttempts: 3, baseDelayMs: 50 },
    onlyPools: [name],
  });
  try {
    const t1 = performance.now();
    await reconciler.start();
    await reconciler.idle();
    console.error(`started (listing, recovery, ${PRESTARTED} prestarts) in ${ms(performance.now() - t1)}`);

    const takeMs: number[] = [];
    const replenishMs: number[] = [];
    for (let i = 0; i < SEQUENTIAL_TAKES; i++) {
      const replaced = nextActivity(reconciler, "prestarted");
      const start = performance.now();
      const taken = await reconciler.take(name, `seq-${i}`);
      takeMs.push(performance.now() - start);
      if (taken.started) throw new Error(`take ${i} did not get a prestarted VM`);
      replenishMs.push((await replaced) - start);
      await reconciler.idle();
    }
    rows.push(
      ["take from the prestarted set, p50", ms(quantile(takeMs, 0.5)), "—"],
      ["take from the prestarted set, p99", ms(quantile(takeMs, 0.99)), "≤ 50 ms"],
      ["take → replacement prestarted (running), p50", ms(quantile(replenishMs, 0.5)), "—"],
      ["take → replacement prestarted (running), max", ms(Math.max(...replenishMs)), "≤ 1000 ms"],
    );

    const burstStart = performance.now();
    const burst = await Promise.allSettled(
      Array.from({ length: BURST_TAKES }, (_, i) => reconciler.take(name, `burst-${i}`)),
    );
    const burstSeconds = (performance.now() - burstStart) / 1000;
    const served = burst.filter((r) => r.status === "fulfilled").length;
    if (served !== BURST_TAKES) throw new Error(`burst: only ${served} of ${BURST_TAKES} takes served`);
    rows.push([
      `takes/s, ${BURST_TAKES} concurrent takes (mostly cold starts)`,
      `${Math.round(served / burstSeconds)}/s`,
      "—",
    ]);
    await reconciler.idle();
  } finally {
    await reconciler.stop();
    store.close();
    rmSync(storeDir, { recursive: true, force: true });
    await removePool(driver, plan);
    await events.close();
    await driver.close();
    await releaseTestDriver(holder);
  }
}

/** Times the revert's own libvirt calls: from reading the old overlay to the new one existing. */
function timingReverts(driver: LibvirtDriver, revertMs: number[]): LibvirtDriver {
  let began = 0;
  return new Proxy(driver, {
    get(target, prop) {
      const value = (target as unknown as Record<string | symbol, unknown>)[prop];
      if (typeof value !== "function") return value;
      return async (...args: unknown[]) => {
        if (prop === "volumeXml") began = performance.now();
        const result: unknown = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        if (prop === "createOverlayVolume") revertMs.push(performance.now() - began);
        return result;
      };
    },
  });
}

async function onQemu(): Promise<void> {
  const id = randomBytes(3).toString("hex");
  const dir = `/var/lib/libvirt/images/vmpools-bench-${id}`;
  const storagePool = `vmpools-bench-${id}`;
  mkdirSync(dir, { mode: 0o755 });
  const driver = new VirshDriver({ uri: "qemu:///system" });
  const events = new DomainEvents({ uri: "qemu:///system" });
  const store = StateStore.open(":memory:");
  const revertMs: number[] = [];
  const names: string[] = [];
  try {
    await events.ready();
    await driver.session.run(["pool-create-as", "--name", storagePool, "--type", "dir", "--target", dir]);
    const pools: { name: string; vm: string; overlay: string; gib: number }[] = [];
    for (const gib of [1, 100]) {
      const base = join(dir, `base-${gib}g.qcow2`);
      execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", base, `${gib}G`]);
      const plan = planPool({
        name: `Bench${gib}g${id}-?`,
        template: {
          name: "t",
          version: 1,
          baseImagePath: base,
          diskSizeGiB: gib,
          memoryMiB: 128,
          vcpus: 1,
          domainType: "qemu",
          machine: "pc",
        },
        size: 1,
        type: "manual",
      });
      const vm = plan.members[0]!;
      const system = vm.disks.find((d) => d.role === "system")!;
      const overlay = await driver.createOverlayVolume(storagePool, system.volumeName, {
        backingPath: base,
        backingFormat: "qcow2",
        capacityBytes: gib * 2 ** 30,
      });
      for (const d of vm.disks.filter((x) => x.role !== "system")) {
        await driver.session.run(["vol-create-as", "--pool", storagePool, "--name", d.volumeName, "--capacity", "1M"]);
      }
      // No kernel, no bootable disk: the firmware idles, which is all a start needs here.
      await driver.defineDomain(renderDomainXml(vm, { storagePool, withoutNetwork: true, lockedSpicePassword: id }));
      names.push(vm.name);
      pools.push({ name: plan.pool.name, vm: vm.name, overlay, gib });
    }
    const reconciler = new Reconciler({
      driver: timingReverts(driver, revertMs),
      store,
      events,
      retry: { maxAttempts: 3, baseDelayMs: 50 },
      onlyPools: pools.map((p) => p.name),
    });
    await reconciler.start();
    try {
      for (const p of pools) {
        revertMs.length = 0;
        const returnMs: number[] = [];
        for (let i = 0; i < REVERTS_PER_IMAGE; i++) {
          await reconciler.take(p.name, "bench");
          await driver.destroy(p.vm); // the guest is down; a manual pool keeps it assigned
          await reconciler.idle();
          // What the user wrote: 16 MiB in the overlay.
          execFileSync("qemu-io", ["-f", "qcow2", "-c", "write -P 0xab 0 16M", p.overlay], { stdio: "ignore" });
          const start = performance.now();
          await reconciler.return(p.name, p.vm, { admin: true });
          returnMs.push(performance.now() - start);
        }
        rows.push(
          [`revert (overlay recreated), ${p.gib} GiB base, p50`, ms(quantile(revertMs, 0.5)), "—"],
          [`revert (overlay recreated), ${p.gib} GiB base, max`, ms(Math.max(...revertMs)), "≤ 100 ms"],
          [`admin return of a Down VM incl. revert, ${p.gib} GiB base, p50`, ms(quantile(returnMs, 0.5)), "—"],
        );
      }
    } finally {
      await reconciler.stop();
    }
  } finally {
    for (const name of names) {
      await driver.destroy(name).catch(() => undefined);
      await driver.undefineDomain(name).catch(() => undefined);
    }
    await driver.session.run(["pool-destroy", "--pool", storagePool]).catch(() => undefined);
    store.close();
    await events.close();
    await driver.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  await onTestHypervisor();
  await onQemu();
  console.log(`reconciler on ${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, node ${process.version}\n`);
  console.log("| measurement | result | target |\n|---|---|---|");
  for (const [what, result, target] of rows) console.log(`| ${what} | ${result} | ${target} |`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
