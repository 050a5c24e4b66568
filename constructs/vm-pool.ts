import { Annotations, DataResource, Fn, TerraformOutput, TerraformStack, type TerraformResource } from "cdktf";
import { Construct } from "constructs";
import { createHash } from "node:crypto";
import {
  HOLDER_NAMESPACE,
  METADATA_NAMESPACE,
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
import { configMediaUrl, policyDocumentUrl } from "./media";
import { externalProviderFor, hostProbeAsset, libvirtProviderFor, providerAlias } from "./providers";
import { domainResource, volumeResource, type RenderedResource } from "./rendered-resource";
import { claimLogicalId, forgetResources, terraformName } from "./addresses";

export type { VmPoolProps } from "../core";

export interface PoolMemberResources {
  readonly plan: VmPlan;
  readonly systemVolume: RenderedResource;
  readonly configVolume?: RenderedResource;
  readonly domain: RenderedResource;
}

/**
 * An oVirt-style VM pool rendered for the dmacvicar/libvirt provider: per member a qcow2 overlay
 * on the template's base image, its initial-run media as a CD-ROM, and a domain; per cluster host
 * one policy volume holding the pool's current policy for the reconciler.
 *
 * Member resources are fully creation-time (`ignore_changes = all`): the provider's in-place
 * update of a domain shuts the guest down and redefines it, and a volume update always fails, so
 * no edit may ever reach an existing member. As in oVirt, an edit affects only members created
 * afterwards; the policy (type, prestarted, max per user, console, migration, description) lives
 * in the policy volume, which Terraform replaces when the policy changes (`replace_triggered_by`
 * a `terraform_data` holding its hash) and the reconciler reads.
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
    this.renderPolicy();
    // Detached members leave Terraform's management without being destroyed (seed: the VM stays
    // as an independent VM).
    forgetResources(
      this,
      this.plan.detached.flatMap((m) => [
        `libvirt_domain.${this.logicalId(m.name, "domain")}`,
        `libvirt_volume.${this.logicalId(m.name, "system")}`,
        ...(m.configMedia ? [`libvirt_volume.${this.logicalId(m.name, "media")}`] : []),
      ]),
    );

    new TerraformOutput(this, "member-names", {
      description: `Members of pool ${this.plan.pool.name}`,
      value: this.plan.members.map((m) => m.name),
    });
  }

  /**
   * Terraform resource names: readable in a plan and independent of construct-tree hashes, so a
   * reviewer sees `libvirt_domain.MyPool_MyPool-001` and detached members can be named in
   * `removed` blocks.
   */
  private logicalId(memberName: string, part: string): string {
    return terraformName(`${this.poolPath()}_${memberName}_${part}`);
  }

  /** The pool's construct path inside its stack, e.g. `MyPool`. */
  private poolPath(): string {
    const scopes = this.node.scopes;
    return scopes
      .slice(scopes.indexOf(TerraformStack.of(this)) + 1)
      .map((c) => c.node.id)
      .join("_");
  }

  /**
   * The policy document as a volume on every cluster host. Volumes cannot be updated (the
   * provider refuses), so any change replaces it, triggered by a `terraform_data` that holds the
   * document's hash; nothing else depends on it, so the replacement touches no member.
   */
  private renderPolicy(): void {
    const { pool, policy } = this.plan;
    const revision = new DataResource(this, "policy-revision", {
      input: { policy_sha256: createHash("sha256").update(policy.xml).digest("hex") },
    });
    claimLogicalId(revision, terraformName(`${this.poolPath()}_policy_revision`));
    const url = policyDocumentUrl(this, policy.xml);
    for (const host of pool.clusterHosts) {
      const volume = volumeResource(
        this,
        `policy-${host.name}`,
        {
          provider: libvirtProviderFor(this, host),
          // A plain address: Terraform's JSON syntax takes references here, not `${…}` templates
          // (which cdktf writes for a resource object).
          lifecycle: { ignoreChanges: "all", replaceTriggeredBy: [`terraform_data.${revision.friendlyUniqueId}`] },
        },
        {
          name: policy.volumeName,
          pool: pool.storage.candidates[0]!.name,
          target: { format: { type: "raw" } },
          create: { content: { url } },
        },
      );
      claimLogicalId(volume, terraformName(`${this.poolPath()}_policy_${providerAlias(host)}`));
    }
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
    // A held VM is never destroyed by a shrink, allowShrink or not (seed: never while held).
    const held = {
      condition: '${self.result.held_above == ""}',
      errorMessage:
        `Pool ${pool.name}: host ${host.name} has members above the new size ${pool.size} that users hold ` +
        `(\${self.result.held_above}); lowering size would destroy them. Have them returned first ` +
        `(vmpools return), or raise size again.`,
    };
    const undetached = {
      condition: '${self.result.undetached == ""}',
      errorMessage:
        `Pool ${pool.name}: host ${host.name} has members listed in detached that are still members ` +
        `(\${self.result.undetached}); run vmpools detach POOL VM for each first (Down members only).`,
    };
    const guard = pool.allowShrink
      ? [held, undetached]
      : [
          {
            condition: `\${tonumber(self.result.max_member_index) <= ${pool.size}}`,
            errorMessage:
              `Pool ${pool.name}: host ${host.name} has members above the new size ${pool.size}; lowering size ` +
              `would destroy them. Raise size again, detach those members, or set allowShrink: true.`,
          },
          held,
          undetached,
        ];
    return new DataExternal(this, `probe-${host.name}`, {
      provider: externalProviderFor(this),
      program: ["node", `\${path.module}/${asset.path}`],
      query: {
        uri: host.uri,
        candidates: pool.storage.candidates.map((c) => c.name).join(","),
        member_pattern: memberNamePattern(pool.mask).source,
        // Detached members keep their names but are independent VMs now, not members.
        detached: pool.detached.join(","),
        size: String(pool.size),
        holder_uri: HOLDER_NAMESPACE,
        member_uri: METADATA_NAMESPACE,
      },
      lifecycle: { postcondition: guard },
    });
  }

  private renderMember(m: VmPlan, probe: DataExternal): PoolMemberResources {
    const { pool } = this.plan;
    const scope = new Construct(this, m.name);
    const provider = libvirtProviderFor(this, m.host);
    const storagePool = this.storagePool(probe);
    const meta = { provider, lifecycle: { ignoreChanges: "all" as const, preventDestroy: pool.deleteProtection } };
    const named = <T extends TerraformResource>(resource: T, part: string): T => {
      claimLogicalId(resource, this.logicalId(m.name, part));
      return resource;
    };

    const [system, config] = [m.disks.find((d) => d.role === "system")!, m.disks.find((d) => d.role === "config")];
    const systemVolume = named(
      volumeResource(scope, "system-disk", meta, {
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
      }),
      "system",
    );

    const configVolume =
      config && m.configMedia
        ? named(
            volumeResource(scope, "config-media", meta, {
              name: config.volumeName,
              pool: storagePool,
              target: { format: { type: "raw" } },
              create: { content: { url: configMediaUrl(scope, m.name, m.configMedia) } },
            }),
            "media",
          )
        : undefined;

    const disk = (d: DiskPlan, volume: RenderedResource): DomainDevicesDisks => ({
      device: d.device,
      readOnly: d.readOnly || undefined,
      source: { volume: { pool: volume.getStringAttribute("pool"), volume: volume.getStringAttribute("name") } },
      driver: { name: "qemu", type: d.format },
      target: { dev: d.targetDev, bus: d.bus },
      boot: d.bootOrder === undefined ? undefined : { order: d.bootOrder },
    });

    const boot = m.directKernelBoot;
    const domain = named(
      domainResource(scope, "domain", meta, {
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
        os: {
          type: "hvm",
          typeMachine: m.machine,
          smBios: { mode: "sysinfo" },
          kernel: boot?.kernelPath,
          initrd: boot?.initrdPath,
          cmdline: boot?.cmdline || undefined,
        },
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
                // Locks the console until the reconciler issues a user a short-lived ticket: a random
                // value set once at creation, already expired. The provider does not mark passwd
                // sensitive; Terraform's sensitive() keeps it out of plan output.
                passwd: Fn.sensitive(Fn.uuid()),
                passwdValidTo: "1970-01-01T00:00:00",
              },
            },
          ],
          videos: [{ model: { type: "qxl", primary: "yes" } }],
          channels: [{ source: { spiceVmc: true }, target: { virtIo: { name: "com.redhat.spice.0" } } }],
          serials: [{ target: { port: 0 } }],
          consoles: [{ target: { type: "serial", port: 0 } }],
        },
        // The policy at creation: the reconciler's fallback while no policy volume is readable.
        metadata: { xml: m.metadataXml },
        // Power state belongs to the reconciler.
        running: false,
      }),
      "domain",
    );
    return { plan: m, systemVolume, configVolume, domain };
  }
}
