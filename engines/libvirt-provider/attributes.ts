// A member's resources as the dmacvicar/libvirt 0.9.7 provider takes them, attribute names as in
// its schema (snake_case). Both engines drive that one provider: cdktf writes these attributes
// into Terraform JSON, Pulumi (through the parameterized terraform-provider plugin) sends them
// with its own names (see engines/pulumi/names.ts). What differs by engine is passed in: where a
// domain's disk points (a Terraform reference or a Pulumi output) and the console lock's password.
import {
  configDiskOf,
  describeDomain,
  LIBVIRT_DEFAULT_LIFECYCLE,
  policyVolumeName,
  systemDiskOf,
  type DomainDescription,
  type DomainDisk,
  type HostRef,
  type PoolPlan,
  type VmPlan,
} from "../../core";

/**
 * An attribute value. `T` is what an engine puts where a value is known only at apply time (a
 * Terraform expression string, a Pulumi Output).
 */
export type Attr<T = never> =
  string | number | boolean | null | undefined | T | readonly Attr<T>[] | { readonly [key: string]: Attr<T> };
export type Attrs<T = never> = { readonly [key: string]: Attr<T> };

/** What the volumes of a member need from the engine. */
export interface VolumeContext<T> {
  /** Storage pool name, or the engine's pick at plan time. */
  readonly storagePool: Attr<T>;
  /** Where the provider uploads the member's initial-run image from; undefined: no media volume. */
  readonly mediaUrl?: string;
}

/** What the domain of a member needs from the engine. */
export interface DomainContext<T> {
  /** The `pool` or `name` attribute of the member's system or initial-run volume resource. */
  readonly volume: (role: DomainDisk["role"], attribute: "pool" | "name") => Attr<T>;
  /**
   * The console lock's password: random, set once at creation, never in a plan or in clear text
   * in the state (see CONSOLE_LOCKED_UNTIL).
   */
  readonly consolePassword: Attr<T>;
}

/** The member's volumes: its system overlay and, when it has one and a url is given, its initial-run image. */
export function memberVolumes<T>(
  m: VmPlan,
  ctx: VolumeContext<T>,
): { readonly system: Attrs<T>; readonly media?: Attrs<T> } {
  const system = systemDiskOf(m);
  const config = configDiskOf(m);
  return {
    system: {
      name: system.volumeName,
      pool: ctx.storagePool,
      capacity: system.capacityGiB,
      capacity_unit: "GiB",
      target: { format: { type: system.format } },
      backing_store: system.backingStore && {
        path: system.backingStore.path,
        format: { type: system.backingStore.format },
      },
      create: system.copyOf ? { content: { url: system.copyOf } } : undefined,
    },
    ...(config !== undefined && ctx.mediaUrl !== undefined
      ? {
          media: {
            name: config.volumeName,
            pool: ctx.storagePool,
            target: RAW_TARGET,
            create: { content: { url: ctx.mediaUrl } },
          },
        }
      : {}),
  };
}

/**
 * The pool's first storage pool candidate: where its policy volumes go (and the reconciler
 * looks), and its members' volumes unless the probe picks (probePicksStoragePool).
 */
export const firstStoragePool = (plan: PoolPlan): string => plan.pool.storage.candidates[0]!.name;

/**
 * The pool's policy document as a volume on `host` (one per cluster host, each named for its
 * host; the reconciler reads them all), uploaded from `url`, in `storagePool`: firstStoragePool,
 * or a value of it that waits for the host's probe.
 */
export function policyVolume<T>(
  plan: PoolPlan,
  host: HostRef,
  ctx: { readonly storagePool: Attr<T>; readonly url: string },
): Attrs<T> {
  return {
    name: policyVolumeName(plan.pool.name, host.name),
    pool: ctx.storagePool,
    target: RAW_TARGET,
    create: { content: { url: ctx.url } },
  };
}

/** Whether memberVolumes gives the member a media volume (the domain then has its CD-ROM). */
export function hasMediaVolume(m: VmPlan, mediaUrl: string | undefined): boolean {
  return configDiskOf(m) !== undefined && mediaUrl !== undefined;
}

// Parts every member has alike, shared rather than rebuilt per member (JSON.stringify writes a
// shared object each time it appears; nothing mutates these).
const SM_BIOS = { mode: "sysinfo" } as const;
const FEATURES = { acpi: true } as const;
const VIDEOS = [{ model: { type: "qxl", primary: "yes" } }] as const;
const SERIALS = [{ target: { port: 0 } }] as const;
const CONSOLES = [{ target: { type: "serial", port: 0 } }] as const;
const RAW_TARGET = { format: { type: "raw" } } as const;

/**
 * The member's `libvirt_domain`. Values equal to libvirt's defaults that the provider leaves out
 * are left out here too (lifecycle actions, cell ids), which keeps the JSON of deployed stacks
 * byte for byte what it was (test/engines/cdktf, pool-file-golden).
 */
export function memberDomain<T>(m: VmPlan, withMedia: boolean, ctx: DomainContext<T>): Attrs<T> {
  return domainAttributes(describeDomain(m, { withConfigMedia: withMedia }), ctx);
}

function domainAttributes<T>(d: DomainDescription, ctx: DomainContext<T>): Attrs<T> {
  const dev = d.devices;
  const disk = (k: DomainDisk): Attrs<T> => ({
    device: k.device,
    read_only: k.readOnly || undefined,
    source: { volume: { pool: ctx.volume(k.role, "pool"), volume: ctx.volume(k.role, "name") } },
    driver: { name: k.driver.name, type: k.driver.type },
    target: { dev: k.target.dev, bus: k.target.bus },
    boot: k.bootOrder === undefined ? undefined : { order: k.bootOrder },
  });
  const lifecycle = d.lifecycle;
  const only = <V>(value: V, libvirtDefault: V) => (value === libvirtDefault ? undefined : value);
  return {
    name: d.name,
    type: d.type,
    description: d.description,
    memory: d.memoryMiB,
    memory_unit: "MiB",
    vcpu: d.vcpus,
    cpu: d.cpu && {
      mode: d.cpu.mode,
      numa:
        d.cpu.numaCells.length > 0
          ? { cell: d.cpu.numaCells.map((c) => ({ cpus: c.cpus, memory: c.memoryMiB, unit: "MiB" })) }
          : undefined,
    },
    numa_tune: d.numaTune && {
      memory: { mode: d.numaTune.memory.mode, nodeset: d.numaTune.memory.nodeset },
      mem_nodes:
        d.numaTune.memNodes.length > 0
          ? d.numaTune.memNodes.map((n) => ({ cell_id: n.cellId, mode: n.mode, nodeset: n.nodeset }))
          : undefined,
    },
    on_poweroff: only(lifecycle.onPoweroff, LIBVIRT_DEFAULT_LIFECYCLE.onPoweroff),
    on_reboot: only(lifecycle.onReboot, LIBVIRT_DEFAULT_LIFECYCLE.onReboot),
    on_crash: only(lifecycle.onCrash, LIBVIRT_DEFAULT_LIFECYCLE.onCrash),
    os: {
      type: d.os.type,
      type_machine: d.os.machine,
      sm_bios: SM_BIOS,
      kernel: d.os.kernel?.path,
      initrd: d.os.kernel?.initrd,
      cmdline: d.os.kernel?.cmdline,
    },
    features: FEATURES,
    sys_info: [{ smbios: { oem_strings: { entry: d.sysinfo.oemStrings } } }],
    devices: {
      disks: dev.disks.map(disk),
      interfaces: dev.interfaces.map((n) => ({
        source: { network: { network: n.network } },
        model: { type: n.model },
      })),
      graphics: [
        {
          spice: {
            auto_port: dev.graphics.autoPort,
            listen: dev.graphics.listen,
            passwd: ctx.consolePassword,
            passwd_valid_to: dev.graphics.lock.passwdValidTo,
          },
        },
      ],
      videos: VIDEOS,
      channels: dev.channels.map((c) => ({ source: { spice_vmc: true }, target: { virt_io: { name: c.name } } })),
      serials: SERIALS,
      consoles: CONSOLES,
    },
    // The policy at creation: the reconciler's fallback while no policy volume is readable.
    metadata: { xml: d.metadataXml },
    // Power state belongs to the reconciler.
    running: false,
  };
}
