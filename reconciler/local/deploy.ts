import { planPool, systemDiskOf, type PoolPlan } from "../../core/plan";
import type { VmPoolProps } from "../../core/spec";
import type { VirshDriver } from "../driver/libvirt-driver";
import { renderDomainXml } from "./domain-xml";

/** The storage pool libvirt's test hypervisor comes with. */
export const TEST_STORAGE_POOL = "default-pool";

export { systemDiskOf as systemDisk } from "../../core/plan";

/**
 * Defines every member of a pool and its overlay volume straight through libvirt, from the same
 * model the constructs render: for libvirt's test hypervisor (the README's main command, the
 * tests). Production deploys with cdktf or Pulumi.
 */
export async function deployPool(
  driver: VirshDriver,
  props: VmPoolProps,
  opts: { readonly storagePool?: string; readonly domainType?: "test" | "qemu" | "kvm" } = {},
): Promise<PoolPlan> {
  const storagePool = opts.storagePool ?? TEST_STORAGE_POOL;
  const plan = planPool(props);
  await Promise.all(
    plan.members.map(async (vm) => {
      const disk = systemDiskOf(vm);
      await driver.createOverlayVolume(storagePool, disk.volumeName, {
        backingPath: disk.backingStore!.path,
        backingFormat: disk.backingStore!.format,
        capacityBytes: disk.capacityGiB! * 2 ** 30,
      });
      await driver.defineDomain(renderDomainXml(vm, { storagePool, domainType: opts.domainType ?? "test" }));
    }),
  );
  return plan;
}

/** Removes what `deployPool` defined (domains and overlays); missing pieces are fine. */
export async function removePool(driver: VirshDriver, plan: PoolPlan, storagePool = TEST_STORAGE_POOL): Promise<void> {
  await Promise.all(
    plan.members.map(async (vm) => {
      await driver.destroy(vm.name).catch(() => undefined);
      await driver.undefineDomain(vm.name).catch(() => undefined);
      await driver.deleteVolume(storagePool, systemDiskOf(vm).volumeName).catch(() => undefined);
    }),
  );
}
