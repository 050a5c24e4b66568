import { Annotations, Fn, TerraformOutput } from "cdktf";
import { Construct } from "constructs";
import {
  planPool,
  memberNamePattern,
  type PoolPlan,
  type VmPlan,
  type DiskPlan,
  type HostRef,
  type VmPoolProps,
} from "../core";
import type { DomainDevicesDisks } from "../providers/gen/providers/libvirt/domain";
import { DataExternal } from "../providers/gen/providers/external/data-external";
import { sysprepMediaUrl } from "./media";
import { externalProviderFor, hostProbeAsset, libvirtProviderFor } from "./providers";
import { cloudinitDiskResource, domainResource, volumeResource, type RenderedResource } from "./rendered-resource";

export type { VmPoolProps } from "../core";

/**
 * Domain attributes fixed when a member is created. As in oVirt, editing the pool (template,
 * hardware, disks) affects only members created afterwards, and power state belongs to the
 * reconciler, so Terraform never updates these on existing members. Metadata (the pool policy)
 * and description stay managed: policy edits reach every member.
 */
const CREATION_TIME_DOMAIN_ATTRIBUTES = [
  "running",
  "type",
  "memory",
  "memory_unit",
  "vcpu",
  "cpu",
  "numa_tune",
  "os",
  "features",
  "devices",
  "sys_info",
];

export interface PoolMemberResources {
  readonly plan: VmPlan;
  readonly systemVolume: RenderedResource;
  readonly configVolume?: RenderedResource;
  readonly domain: RenderedResource;
}

/**
 * An oVirt-style VM pool rendered for the dmacvicar/libvirt provider: per member a qcow2 overlay
 * on the template's base image, its initial-run media as a CD-ROM, and a domain carrying the pool
 * policy in `<metadata>` for the reconciler.
 */
export class VmPool extends Construct {
  /** The engine-neutral plan this construct rendered. */
  readonly plan: PoolPlan;
  readonly members: readonly PoolMemberResources[];

  constructor(scope: Construct, id: string, props: VmPoolProps) {
    super(scope, id);
    this.plan = planPool(props, `VmPool ${this.node.path}`);
    for (const warning of this.plan.warnings) Annotations.of(this).addWarning(warning);

    // Every cluster host gets its provider and probe, also those without a member under the
    // current size: members created earlier may live there, and Terraform needs their provider
    // (and the shrink guard must look there too).
    const probes = new Map<string, DataExternal>();
    for (const host of this.plan.pool.clusterHosts) {
      libvirtProviderFor(this, host);
      probes.set(host.name, this.hostProbe(host));
    }
    this.members = this.plan.members.map((m) => this.renderMember(m, probes.get(m.host.name)!));

    new TerraformOutput(this, "member-names", {
      description: `Members of pool ${this.plan.pool.name}`,
      value: this.plan.members.map((m) => m.name),
    });
  }

  /** Storage pool expression for a host: fixed, or the probe's pick at plan time. */
  private storagePool(probe: DataExternal): string {
    const { candidates, autoSelectTarget } = this.plan.pool.storage;
    return autoSelectTarget && candidates.length > 1 ? probe.result.lookup("storage_pool") : candidates[0]!.name;
  }

  /**
   * Plan-time probe of one host (hashicorp/external): picks the storage pool with the most free
   * space and refuses a plan that would silently destroy members after `size` was lowered.
   */
  private hostProbe(host: HostRef): DataExternal {
    const { pool } = this.plan;
    const asset = hostProbeAsset(this);
    const guard = pool.allowShrink
      ? []
      : [
          {
            condition: `\${tonumber(self.result.max_member_index) <= ${pool.size}}`,
            errorMessage:
              `Pool ${pool.name}: host ${host.name} has members above the new size ${pool.size}; lowering size ` +
              `would destroy them. Raise size again, detach those members, or set allowShrink: true.`,
          },
        ];
    return new DataExternal(this, `probe-${host.name}`, {
      provider: externalProviderFor(this),
      program: ["node", `\${path.module}/${asset.path}`],
      query: {
        uri: host.uri,
        candidates: pool.storage.candidates.map((c) => c.name).join(","),
        member_pattern: memberNamePattern(pool.mask).source,
      },
      lifecycle: { postcondition: guard },
    });
  }

  private renderMember(m: VmPlan, probe: DataExternal): PoolMemberResources {
    const { pool } = this.plan;
    const scope = new Construct(this, m.name);
    const provider = libvirtProviderFor(this, m.host);
    const storagePool = this.storagePool(probe);
    const lifecycle = { ignoreChanges: "all" as const, preventDestroy: pool.deleteProtection };
    const volumeMeta = { provider, lifecycle };

    const [system, config] = [m.disks.find((d) => d.role === "system")!, m.disks.find((d) => d.role === "config")];
    const systemVolume = volumeResource(scope, "system-disk", volumeMeta, {
      name: system.volumeName,
      pool: storagePool,
      capacity: system.capacityGiB,
      capacityUnit: "GiB",
      target: { format: { type: system.format } },
      backingStore: system.backingStore && {
        path: system.backingStore.path,
        format: { type: system.backingStore.format },
      },
      create: system.copyOf ? { content: { url: system.copyOf } } : undefined,
    });

    let configVolume: RenderedResource | undefined;
    if (config && m.configMedia) {
      let url: string;
      if (m.configMedia.kind === "cloud-init") {
        const media = m.configMedia.media;
        const iso = cloudinitDiskResource(
          scope,
          "cloud-init",
          { provider, lifecycle: { ignoreChanges: "all", preventDestroy: pool.deleteProtection } },
          {
            name: `${m.name}-cloud-init`,
            metaData: media.metaData,
            userData: media.userData,
            networkConfig: media.networkConfig,
          },
        );
        url = iso.getStringAttribute("path");
      } else {
        url = sysprepMediaUrl(scope, m.name, m.configMedia);
      }
      configVolume = volumeResource(scope, `${m.configMedia.kind}-volume`, volumeMeta, {
        name: config.volumeName,
        pool: storagePool,
        target: { format: { type: "raw" } },
        create: { content: { url } },
      });
    }

    const disk = (d: DiskPlan, volume: RenderedResource): DomainDevicesDisks => ({
      device: d.device,
      readOnly: d.readOnly || undefined,
      source: { volume: { pool: volume.getStringAttribute("pool"), volume: volume.getStringAttribute("name") } },
      driver: { name: "qemu", type: d.format },
      target: { dev: d.targetDev, bus: d.bus },
      boot: d.bootOrder === undefined ? undefined : { order: d.bootOrder },
    });

    const domainMeta = {
      provider,
      lifecycle: { ignoreChanges: CREATION_TIME_DOMAIN_ATTRIBUTES, preventDestroy: pool.deleteProtection },
    };
    const domain = domainResource(scope, "domain", domainMeta, {
      name: m.name,
      type: m.domainType,
      description: m.description || undefined,
      memory: m.memoryMiB,
      memoryUnit: "MiB",
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
      numaTune: m.numaTune && {
        memory: { mode: m.numaTune.mode, nodeset: m.numaTune.nodeset },
        memNodes:
          m.numaTune.memNodes.length > 0
            ? m.numaTune.memNodes.map((n) => ({ cellId: n.cellId, mode: n.mode, nodeset: n.nodeset }))
            : undefined,
      },
      os: { type: "hvm", typeMachine: m.machine, smBios: { mode: "sysinfo" } },
      features: { acpi: true },
      sysInfo: [{ smbios: { oemStrings: { entry: m.oemStrings.slice() } } }],
      devices: {
        disks: [disk(system, systemVolume), ...(config && configVolume ? [disk(config, configVolume)] : [])],
        interfaces: m.nics.map((n) => ({ source: { network: { network: n.network } }, model: { type: n.model } })),
        graphics: [
          {
            spice: {
              autoPort: true,
              listen: m.graphics.listen,
              // Locks the console until the reconciler issues a user a short-lived ticket. A random
              // value set once at creation (devices are creation-time), never shown in plans.
              passwd: Fn.uuid(),
              passwdValidTo: "1970-01-01T00:00:00",
            },
          },
        ],
        videos: [{ model: { type: "qxl", primary: "yes" } }],
        channels: [{ source: { spiceVmc: true }, target: { virtIo: { name: "com.redhat.spice.0" } } }],
        serials: [{ target: { port: 0 } }],
        consoles: [{ target: { type: "serial", port: 0 } }],
      },
      metadata: { xml: m.metadataXml },
      running: false,
    });
    return { plan: m, systemVolume, configVolume, domain };
  }
}
