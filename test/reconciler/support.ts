// Pools on libvirt's test hypervisor for the reconciler's tests (and the crash-test child).
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { VmPlan } from "../../core/plan";
import type { VirshDriver } from "../../reconciler/driver/libvirt-driver";
import type { Activity, Reconciler } from "../../reconciler/reconciler";
import { TEST_STORAGE_POOL, systemDisk } from "../../reconciler/local/deploy";
import { systemVolumeOf } from "../../reconciler/libvirt-xml";

export { TEST_STORAGE_POOL, deployPool, removePool, systemDisk } from "../../reconciler/local/deploy";

/** A pool name no other test (or test file running alongside) uses. */
export const uniquePoolName = (prefix: string) => `${prefix}${randomBytes(3).toString("hex")}-???`;

/**
 * The test hypervisor stores no data, so "the guest wrote to its disk" is an overlay with this
 * allocation, while a fresh one (as the driver creates it) allocates nothing.
 */
export const WRITTEN_ALLOCATION = 4096;
export const FRESH_ALLOCATION = 0;

/**
 * The overlay the member boots from now: a revert switches a member between its engine-made
 * overlay and an alternate one (reconciler/revert.ts).
 */
export async function currentOverlay(driver: VirshDriver, vm: VmPlan): Promise<string> {
  return systemVolumeOf(await driver.domainXml(vm.name, { inactive: true }))!.volume;
}

/** Replaces the member's overlay by one that looks written to (same backing and capacity). */
export async function writeToOverlay(driver: VirshDriver, vm: VmPlan): Promise<void> {
  const disk = { ...systemDisk(vm), volumeName: await currentOverlay(driver, vm) };
  const dir = mkdtempSync(join(tmpdir(), "vmpools-vol-"));
  try {
    const file = join(dir, "vol.xml");
    writeFileSync(
      file,
      `<volume><name>${disk.volumeName}</name><capacity unit="bytes">${disk.capacityGiB! * 2 ** 30}</capacity>` +
        `<allocation unit="bytes">${WRITTEN_ALLOCATION}</allocation><target><format type="qcow2"/></target>` +
        `<backingStore><path>${disk.backingStore!.path}</path><format type="${disk.backingStore!.format}"/></backingStore></volume>`,
    );
    await driver.deleteVolume(TEST_STORAGE_POOL, disk.volumeName);
    await driver.session.run(["vol-create", "--pool", TEST_STORAGE_POOL, "--file", file]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function overlayAllocation(driver: VirshDriver, vm: VmPlan): Promise<number> {
  const xml = await driver.volumeXml(TEST_STORAGE_POOL, await currentOverlay(driver, vm));
  return Number(/<allocation unit='bytes'>(\d+)<\/allocation>/.exec(xml)![1]);
}

/** Polls until `check` stops throwing; rethrows its last error after the timeout. */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** Resolves with the first activity of `kind` on `vm`; register before causing it. */
export function activity(
  reconciler: Reconciler,
  kind: Activity["kind"],
  vm: string,
  timeoutMs = 5000,
): Promise<Activity> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${kind} activity on ${vm} within ${timeoutMs} ms`)), timeoutMs);
    const on = (a: Activity) => {
      if (a.kind !== kind || a.vm !== vm) return;
      clearTimeout(timer);
      reconciler.off("activity", on);
      resolve(a);
    };
    reconciler.on("activity", on);
  });
}
