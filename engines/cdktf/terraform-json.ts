import { configDiskOf, systemDiskOf, type DiskPlan, type VmPlan } from "../../core";

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
const OS_TYPE = "hvm";
const SM_BIOS = { mode: "sysinfo" } as const;
const FEATURES = { acpi: true } as const;
const VIDEOS = [{ model: { type: "qxl", primary: "yes" } }] as const;
const CHANNELS = [{ source: { spice_vmc: true }, target: { virt_io: { name: "com.redhat.spice.0" } } }] as const;
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

  const disk = (d: DiskPlan, id: string): JsonObject => ({
    device: d.device,
    read_only: d.readOnly || undefined,
    source: { volume: { pool: `\${libvirt_volume.${id}.pool}`, volume: `\${libvirt_volume.${id}.name}` } },
    driver: { name: "qemu", type: d.format },
    target: { dev: d.targetDev, bus: d.bus },
    boot: d.bootOrder === undefined ? undefined : { order: d.bootOrder },
  });
  const boot = m.directKernelBoot;
  const domain: JsonObject = {
    provider: ctx.provider,
    lifecycle,
    name: m.name,
    type: m.domainType,
    description: m.description || undefined,
    memory: m.memoryMiB,
    memory_unit: "MiB",
    vcpu: m.vcpus,
    cpu:
      m.cpuMode || m.numaCells.length > 0
        ? {
            mode: m.cpuMode,
            numa:
              m.numaCells.length > 0
                ? { cell: m.numaCells.map((c) => ({ cpus: c.cpus, memory: c.memoryMiB, unit: "MiB" })) }
                : undefined,
          }
        : undefined,
    numa_tune: m.numaTune && {
      memory: { mode: m.numaTune.mode, nodeset: m.numaTune.nodeset },
      mem_nodes:
        m.numaTune.memNodes.length > 0
          ? m.numaTune.memNodes.map((n) => ({ cell_id: n.cellId, mode: n.mode, nodeset: n.nodeset }))
          : undefined,
    },
    os: {
      type: OS_TYPE,
      type_machine: m.machine,
      sm_bios: SM_BIOS,
      kernel: boot?.kernelPath,
      initrd: boot?.initrdPath,
      cmdline: boot?.cmdline || undefined,
    },
    features: FEATURES,
    sys_info: [{ smbios: { oem_strings: { entry: m.oemStrings } } }],
    devices: {
      disks: [disk(system, ids.system), ...(withMedia ? [disk(config, ids.media)] : [])],
      interfaces: m.nics.map((n) => ({ source: { network: { network: n.network } }, model: { type: n.model } })),
      graphics: [
        {
          spice: {
            auto_port: true,
            listen: m.graphics.listen,
            // Locks the console until the reconciler issues a user a short-lived ticket: a random
            // value set once at creation, already expired. The provider does not mark passwd
            // sensitive; Terraform's sensitive() keeps it out of plan output.
            passwd: "${sensitive(uuid())}",
            passwd_valid_to: "1970-01-01T00:00:00",
          },
        },
      ],
      videos: VIDEOS,
      channels: CHANNELS,
      serials: SERIALS,
      consoles: CONSOLES,
    },
    // The policy at creation: the reconciler's fallback while no policy volume is readable.
    metadata: { xml: m.metadataXml },
    // Power state belongs to the reconciler.
    running: false,
  };
  return { libvirt_volume: volumes, libvirt_domain: { [ids.domain]: domain } };
}
