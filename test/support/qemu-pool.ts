// Pools of tiny real guests (test/guest/) on qemu:///system, for tests that need what only qemu
// has: real qcow2 overlays, real shutdowns, SPICE and update-device. Each user of this gets a
// private directory storage pool under /var/lib/libvirt/images (qemu must be able to read it).
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { policyVolumeName } from "../../core/metadata";
import { planPool, type PoolPlan, type VmPlan } from "../../core/plan";
import type { VmPoolProps } from "../../core/spec";
import { DEFAULT_HOST } from "../../core/validate";
import { VirshDriver } from "../../reconciler/driver/libvirt-driver";
import { LEASE_DOMAIN } from "../../reconciler/lease";
import { systemVolumeOf } from "../../reconciler/libvirt-xml";
import { renderDomainXml, type RenderDomainOptions } from "../../reconciler/local/domain-xml";
import { otherVolumeName } from "../../reconciler/revert";
import {
  ensureGuest,
  ensureLibvirt,
  guestCmdline,
  LIBVIRT_URI,
  parseGuestLog,
  readImageMarker,
  type GuestAction,
  type GuestLog,
} from "../guest/guest";

const IMAGES = "/var/lib/libvirt/images";
/** What sector 0 of every base image says: a guest that reads it booted a clean disk. */
export const BASE_MARKER = "BASE-CLEAN";

export type MemberRender = (vm: VmPlan) => Omit<RenderDomainOptions, "storagePool">;

export interface QemuPools {
  readonly driver: VirshDriver;
  readonly dir: string;
  readonly storagePool: string;
  /** A short tag unique to this user of the helper, for pool names. */
  readonly tag: string;
  /** Props of a pool of 1-GiB overlays over the marker base, for the tiny guest. */
  props(name: string, overrides?: Partial<VmPoolProps>): VmPoolProps;
  /** Defines the members and their overlays as an engine would; cleaned up by `close`. */
  deploy(props: VmPoolProps, render: MemberRender): Promise<PoolPlan>;
  /** Uploads the plan's policy document as the engines deploy it (the volume of host `host`). */
  publishPolicy(plan: PoolPlan, host?: string): Promise<void>;
  /** Members that boot the tiny guest doing `action` (and staying up with `stay`), logging to `logPath`. */
  guest(action: GuestAction, opts?: { readonly stay?: boolean }): MemberRender;
  logPath(vm: VmPlan | string): string;
  /** The guest's serial log so far (empty before its first boot). */
  guestLog(vm: VmPlan | string): GuestLog;
  /** Forgets the log, so the next boot's output is all there is. */
  clearLog(vm: VmPlan | string): void;
  /** The overlay the member boots from now, and its other one (a revert switches between them). */
  overlays(vm: VmPlan | string): Promise<{ current: string; other: string }>;
  volumePath(volume: string): string;
  /** Sector 0 of an overlay of this storage pool, as text. */
  marker(volume: string, opts?: { readonly whileRunning?: boolean }): string;
  close(): Promise<void>;
}

const nameOf = (vm: VmPlan | string) => (typeof vm === "string" ? vm : vm.name);

/** Opens qemu:///system (failing, never skipping, when it does not answer) and a private storage pool. */
/** A one-member pool of the tiny test guest (test/guest) on the raw `base` image. */
export function tinyPoolProps(base: string, name: string, overrides: Partial<VmPoolProps> = {}): VmPoolProps {
  return {
    name,
    template: {
      name: "tiny",
      version: 1,
      baseImagePath: base,
      baseImageFormat: "raw",
      diskSizeGiB: 1,
      memoryMiB: 192,
      vcpus: 1,
      domainType: "qemu",
      machine: "pc",
    },
    size: 1,
    ...overrides,
  };
}

/**
 * Defines a pool's members and their volumes in `storagePool`, as an engine would: system disks
 * are overlays of the raw `base` image, config media empty 1 MiB disks.
 */
export async function deployQemuPool(
  driver: VirshDriver,
  storagePool: string,
  base: string,
  props: VmPoolProps,
  render: MemberRender,
): Promise<PoolPlan> {
  const plan = planPool(props);
  for (const vm of plan.members) await deployQemuMember(driver, storagePool, base, vm, render);
  return plan;
}

/** One member of {@link deployQemuPool}: its overlay of `base`, empty media disks, its domain. */
export async function deployQemuMember(
  driver: VirshDriver,
  storagePool: string,
  base: string,
  vm: VmPlan,
  render: MemberRender,
): Promise<void> {
  for (const disk of vm.disks) {
    if (disk.role === "system") {
      await driver.createOverlayVolume(storagePool, disk.volumeName, {
        backingPath: base,
        backingFormat: "raw",
        capacityBytes: disk.capacityGiB! * 2 ** 30,
      });
    } else {
      const args = ["--name", disk.volumeName, "--capacity", "1M", "--format", "raw"];
      await driver.session.run(["vol-create-as", "--pool", storagePool, ...args]);
    }
  }
  await driver.defineDomain(renderDomainXml(vm, { storagePool, withoutNetwork: true, ...render(vm) }));
}

/**
 * Uploads a plan's policy document as the volume the engines deploy on `host` (replacing one
 * there), through `virsh` (`run` takes its arguments); `scratchDir` holds the upload file.
 */
export async function publishPolicyVolume(
  run: (args: string[]) => unknown,
  storagePool: string,
  plan: PoolPlan,
  host: string,
  scratchDir: string,
): Promise<void> {
  const { xml } = plan.policy;
  const volume = policyVolumeName(plan.pool.name, host);
  const file = path.join(scratchDir, `${volume.replace(/[^\w.-]/g, "_")}.upload`);
  fs.writeFileSync(file, xml);
  try {
    // None there yet is the usual case (run may throw or reject).
    await (async () => run(["vol-delete", "--pool", storagePool, "--vol", volume]))().catch(() => undefined);
    const size = String(Buffer.byteLength(xml));
    await run(["vol-create-as", "--pool", storagePool, "--name", volume, "--capacity", size, "--format", "raw"]);
    await run(["vol-upload", "--pool", storagePool, "--vol", volume, "--file", file]);
  } finally {
    fs.rmSync(file, { force: true });
  }
}

export async function openQemuPools(): Promise<QemuPools> {
  ensureLibvirt();
  const g = ensureGuest();
  const tag = randomBytes(3).toString("hex");
  const id = `${process.pid}-${tag}`;
  const dir = path.join(IMAGES, `vmpools-test-${id}`);
  const storagePool = `vmpools-test-${id}`;
  const base = path.join(dir, "base.raw");
  fs.mkdirSync(dir, { mode: 0o755 });
  fs.chmodSync(dir, 0o755); // mkdir's mode is filtered by the umask
  const sector = Buffer.alloc(1024 * 1024);
  sector.write(BASE_MARKER, "latin1");
  fs.writeFileSync(base, sector);
  const driver = new VirshDriver({ uri: LIBVIRT_URI });
  await driver.session.run(["pool-create-as", "--name", storagePool, "--type", "dir", "--target", dir]);
  const plans: PoolPlan[] = [];
  const logPath = (vm: VmPlan | string) => path.join(dir, `${nameOf(vm)}.log`);
  const volumePath = (volume: string) => path.join(dir, volume);

  return {
    driver,
    dir,
    storagePool,
    tag,
    props: (name, overrides = {}) => tinyPoolProps(base, name, overrides),
    async deploy(props, render) {
      const plan = await deployQemuPool(driver, storagePool, base, props, render);
      plans.push(plan);
      return plan;
    },
    publishPolicy: (plan, host = DEFAULT_HOST.name) =>
      publishPolicyVolume((args) => driver.session.run(args), storagePool, plan, host, dir),
    guest:
      (action, opts = {}) =>
      (vm) => ({
        directKernelBoot: { kernelPath: g.kernelPath, initrdPath: g.initrdPath, cmdline: guestCmdline(action, opts) },
        serialLogPath: logPath(vm),
      }),
    logPath,
    guestLog: (vm) => {
      const file = logPath(vm);
      return parseGuestLog(fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "");
    },
    clearLog: (vm) => fs.rmSync(logPath(vm), { force: true }),
    async overlays(vm) {
      const current = systemVolumeOf(await driver.domainXml(nameOf(vm), { inactive: true }))!.volume;
      return { current, other: otherVolumeName(current) };
    },
    volumePath,
    marker: (volume, opts = {}) => readImageMarker(volumePath(volume), "qcow2", opts),
    async close() {
      for (const vm of plans.flatMap((p) => p.members)) {
        await driver.destroy(vm.name).catch(() => undefined);
        await driver.undefineDomain(vm.name).catch(() => undefined);
      }
      // A reconciler killed with SIGKILL leaves its lease placeholder (see reconciler/lease.ts).
      for (const plan of plans) await driver.undefineDomain(`${LEASE_DOMAIN}.${plan.pool.name}`).catch(() => undefined);
      await driver.session.run(["pool-destroy", "--pool", storagePool]).catch(() => undefined);
      await driver.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls `probe` every 100 ms until it returns something truthy; names `what` on timeout. */
export async function until<T>(what: string, probe: () => T | Promise<T>, timeoutMs = 30_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
