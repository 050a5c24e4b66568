import {
  configDiskOf,
  describeDomain,
  LIBVIRT_DEFAULT_LIFECYCLE,
  systemDiskOf,
  type DomainDescription,
  type DomainDisk,
  type VmPlan,
} from "../../core";

/** A Terraform JSON value as written to a `.tf.json` file. */
export type Json = string | number | boolean | null | readonly Json[] | { readonly [key: string]: Json | undefined };
export type JsonObject = { readonly [key: string]: Json | undefined };

/** Where a member's resources point: decided by the construct, not by the plan. */
export interface MemberContext {
  /** `libvirt.<alias>` of the member's host. */
  readonly provider: string;
  /** Storage pool name, or an expression (the probe's pick at plan time). */
  readonly storagePool: string;
  /** Absolute upload path of the member's initial-run image, when it has one. */
  readonly mediaUrl?: string;
  readonly preventDestroy: boolean;
}

/** Terraform resource names of one member. */
export interface MemberIds {
  readonly system: string;
  readonly media: string;
  readonly domain: string;
}

/** The member's resources, grouped by Terraform resource type. */
export interface MemberJson {
  readonly libvirt_volume: Record<string, JsonObject>;
  readonly libvirt_domain: Record<string, JsonObject>;
}

// Parts every member has alike, shared rather than rebuilt per member (JSON.stringify writes a
// shared object each time it appears; nothing mutates these).
const LIFECYCLE = {
  protected: { ignore_changes: "all", prevent_destroy: true },
  unprotected: { ignore_changes: "all", prevent_destroy: false },
} as const;
const SM_BIOS = { mode: "sysinfo" } as const;
const FEATURES = { acpi: true } as const;
const VIDEOS = [{ model: { type: "qxl", primary: "yes" } }] as const;
const SERIALS = [{ target: { port: 0 } }] as const;
const CONSOLES = [{ target: { type: "serial", port: 0 } }] as const;
const RAW_TARGET = { format: { type: "raw" } } as const;

/**
 * One member as dmacvicar/libvirt 0.9.7 resources, in Terraform's JSON syntax (attribute names
 * as in the provider schema; `test/engines/cdktf` checks them against it). Written straight as
 * JSON instead of through cdktf resource objects: cdktf resolves every value of its tree three
 * times (~4 µs per value each), which made 1000 members cost ~4 s to synthesize; this costs ~40 ms.
 *
 * Every member resource is creation-time (`ignore_changes = all`): the provider's in-place
 * update of a domain shuts the guest down, and a volume update always fails.
 */
export function memberJson(m: VmPlan, ids: MemberIds, ctx: MemberContext): MemberJson {
  const lifecycle = ctx.preventDestroy ? LIFECYCLE.protected : LIFECYCLE.unprotected;
  const system = systemDiskOf(m);
  const config = configDiskOf(m);
  const volumes: Record<string, JsonObject> = {
    [ids.system]: {
      provider: ctx.provider,
      lifecycle,
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
  };
  const withMedia = config !== undefined && ctx.mediaUrl !== undefined;
  if (withMedia) {
    volumes[ids.media] = {
      provider: ctx.provider,
      lifecycle,
      name: config.volumeName,
      pool: ctx.storagePool,
      target: RAW_TARGET,
      create: { content: { url: ctx.mediaUrl } },
    };
  }

  const domain = domainJson(describeDomain(m, { withConfigMedia: withMedia }), ids, {
    provider: ctx.provider,
    lifecycle,
  });
  return { libvirt_volume: volumes, libvirt_domain: { [ids.domain]: domain } };
}

/**
 * A domain description as the provider's `libvirt_domain` attributes. Values equal to libvirt's
 * defaults that the provider leaves out are left out here too (lifecycle actions, cell ids),
 * which keeps the JSON of deployed stacks byte for byte what it was (test/engines/cdktf,
 * pool-file-golden). `head` (provider, lifecycle) comes first, as in the files written so far.
 */
function domainJson(d: DomainDescription, ids: MemberIds, head: JsonObject): JsonObject {
  const dev = d.devices;
  const disk = (k: DomainDisk): JsonObject => {
    const id = k.role === "system" ? ids.system : ids.media;
    return {
      device: k.device,
      read_only: k.readOnly || undefined,
      source: { volume: { pool: `\${libvirt_volume.${id}.pool}`, volume: `\${libvirt_volume.${id}.name}` } },
      driver: { name: k.driver.name, type: k.driver.type },
      target: { dev: k.target.dev, bus: k.target.bus },
      boot: k.bootOrder === undefined ? undefined : { order: k.bootOrder },
    };
  };
  const lifecycle = d.lifecycle;
  const only = <T>(value: T, libvirtDefault: T) => (value === libvirtDefault ? undefined : value);
  return {
    ...head,
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
            // The console lock (see CONSOLE_LOCKED_UNTIL): a random value set once at creation,
            // already expired. The provider does not mark passwd sensitive; Terraform's
            // sensitive() keeps it out of plan output.
            passwd: "${sensitive(uuid())}",
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
