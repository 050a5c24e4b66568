// One description of a member's libvirt domain, every device included, computed once from the
// plan. The engines' renderers (cdktf's Terraform JSON, libvirt XML, next Pulumi) only serialize
// it; none adds a device or picks a default of its own.
import type { DiskFormat } from "./spec";
import type { VmPlan } from "./plan";

/**
 * The console lock: a SPICE password that expired before the member was created, so nobody can
 * connect until the reconciler sets a ticket (a fresh password valid for seconds). The password
 * itself is the serializer's to supply (a random value, or Terraform's `uuid()` kept sensitive):
 * it must never be in a plan, a state file in the clear, or a log.
 */
export const CONSOLE_LOCKED_UNTIL = "1970-01-01T00:00:00";

/** libvirt's own defaults for these actions: serializers may leave them out when equal. */
export const LIBVIRT_DEFAULT_LIFECYCLE = { onPoweroff: "destroy", onReboot: "restart", onCrash: "destroy" } as const;

export interface DomainDisk {
  readonly role: "system" | "config";
  readonly device: "disk" | "cdrom" | "floppy";
  /** Volume in the member's storage pool (the pool is the engine's choice). */
  readonly volume: string;
  readonly driver: { readonly name: "qemu"; readonly type: DiskFormat };
  readonly target: { readonly dev: string; readonly bus: "virtio" | "sata" | "fdc" };
  readonly readOnly: boolean;
  readonly bootOrder?: number;
}

export interface DomainDescription {
  readonly name: string;
  readonly type: "kvm" | "qemu";
  /** undefined when empty: libvirt stores no empty description. */
  readonly description?: string;
  readonly memoryMiB: number;
  readonly vcpus: number;
  /** undefined: libvirt's default CPU and no guest NUMA topology. */
  readonly cpu?: {
    readonly mode?: "host-passthrough";
    /** Guest NUMA cells; ids are their positions (libvirt numbers cells without ids so). */
    readonly numaCells: readonly { readonly id: number; readonly cpus: string; readonly memoryMiB: number }[];
  };
  readonly numaTune?: {
    readonly memory: { readonly mode: string; readonly nodeset: string };
    readonly memNodes: readonly { readonly cellId: number; readonly mode: string; readonly nodeset: string }[];
  };
  readonly os: {
    readonly type: "hvm";
    readonly machine: string;
    /** SMBIOS from `sysinfo` below. */
    readonly smbios: "sysinfo";
    readonly kernel?: { readonly path: string; readonly initrd?: string; readonly cmdline?: string };
  };
  readonly features: { readonly acpi: true };
  readonly sysinfo: { readonly type: "smbios"; readonly oemStrings: readonly string[] };
  readonly lifecycle: { readonly onPoweroff: string; readonly onReboot: string; readonly onCrash: string };
  readonly devices: {
    readonly disks: readonly DomainDisk[];
    readonly interfaces: readonly { readonly type: "network"; readonly network: string; readonly model: string }[];
    readonly graphics: {
      readonly type: "spice";
      readonly autoPort: true;
      readonly listen: string;
      /** Always locked: see CONSOLE_LOCKED_UNTIL. */
      readonly lock: { readonly passwdValidTo: typeof CONSOLE_LOCKED_UNTIL };
    };
    readonly videos: readonly { readonly model: "qxl"; readonly primary: true }[];
    readonly channels: readonly { readonly type: "spicevmc"; readonly target: "virtio"; readonly name: string }[];
    /** A pty serial port and the console on it. */
    readonly serial: { readonly port: 0; readonly console: "serial" };
  };
  /** Our `<metadata>` element (exact bytes: deployed members carry them). */
  readonly metadataXml: string;
}

const VIDEOS = [{ model: "qxl", primary: true }] as const;
const CHANNELS = [{ type: "spicevmc", target: "virtio", name: "com.redhat.spice.0" }] as const;
const SERIAL = { port: 0, console: "serial" } as const;

/**
 * The member's domain. `withConfigMedia: false` leaves the initial-run disk out (an engine that
 * uploads no media for it). Pure and cheap (~1 µs): the renderers call it per member.
 */
export function describeDomain(vm: VmPlan, options: { readonly withConfigMedia?: boolean } = {}): DomainDescription {
  const withMedia = options.withConfigMedia ?? true;
  const disks = vm.disks
    .filter((d) => d.role === "system" || (withMedia && vm.configMedia !== undefined))
    .map((d): DomainDisk => ({
      role: d.role,
      device: d.device,
      volume: d.volumeName,
      driver: { name: "qemu", type: d.format },
      target: { dev: d.targetDev, bus: d.bus },
      readOnly: d.readOnly,
      bootOrder: d.bootOrder,
    }));
  const boot = vm.directKernelBoot;
  return {
    name: vm.name,
    type: vm.domainType,
    description: vm.description || undefined,
    memoryMiB: vm.memoryMiB,
    vcpus: vm.vcpus,
    cpu:
      vm.cpuMode || vm.numaCells.length > 0
        ? { mode: vm.cpuMode, numaCells: vm.numaCells.map((c, id) => ({ id, cpus: c.cpus, memoryMiB: c.memoryMiB })) }
        : undefined,
    numaTune: vm.numaTune && {
      memory: { mode: vm.numaTune.mode, nodeset: vm.numaTune.nodeset },
      memNodes: vm.numaTune.memNodes,
    },
    os: {
      type: "hvm",
      machine: vm.machine,
      smbios: "sysinfo",
      kernel: boot && { path: boot.kernelPath, initrd: boot.initrdPath, cmdline: boot.cmdline || undefined },
    },
    features: { acpi: true },
    sysinfo: { type: "smbios", oemStrings: vm.oemStrings },
    lifecycle: LIBVIRT_DEFAULT_LIFECYCLE,
    devices: {
      disks,
      interfaces: vm.nics.map((n) => ({ type: "network", network: n.network, model: n.model })),
      graphics: {
        type: "spice",
        autoPort: true,
        listen: vm.graphics.listen,
        lock: { passwdValidTo: CONSOLE_LOCKED_UNTIL },
      },
      videos: VIDEOS,
      channels: CHANNELS,
      serial: SERIAL,
    },
    metadataXml: vm.metadataXml,
  };
}
