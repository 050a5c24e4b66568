import { Annotations, TerraformOutput, TerraformStack } from "cdktf";
import { Construct } from "constructs";
import { createHash } from "node:crypto";
import {
  planPool,
  configDiskOf,
  PoolSpecError,
  uncheckedTrustedCluster,
  type PoolPlan,
  type VmPlan,
  type HostRef,
  type VmPoolProps,
} from "../../core";
import { buildConfigMedia } from "../../core/media";
import { DataExternal } from "../../providers/gen/providers/external/data-external";
import { firstStoragePool, policyVolume } from "../libvirt-provider/attributes";
import { guardChecks, probePicksStoragePool, probeQuery, type GuardCheck } from "../libvirt-provider/probe";
import { externalProviderFor, hostProbeAsset, libvirtProviderFor, providerAlias } from "./providers";
import { claimLogicalId, reserveName, terraformName } from "./addresses";
import { POOL_ASSET_DIR, POOL_FILE_SUFFIX, StackPoolFiles, type PoolAsset } from "./pool-files";
import { memberJson, type JsonObject, type MemberIds } from "./terraform-json";
import { claimRecordedPlacement, notePlacement, placementRecordPath } from "./placement";
import { TrustedCluster } from "./trusted-cluster";

export type { VmPoolProps } from "../../core";

/** Where the cdktf construct keeps its placement record (not part of the pool's definition). */
export interface VmPoolRecordProps {
  /**
   * The placement record: which host each member was placed on, so that a member keeps its host
   * when hosts are added. Read before planning and written at synth; keep it in version control.
   * @default `vmpools.placement.json` in the working directory when the app synthesizes into it
   * (`cdktf.out`, as `cdktf synth` does); otherwise no record (members placed by hashing alone)
   */
  readonly placementRecordPath?: string;
}

/**
 * Terraform addresses of one member's resources, e.g. `libvirt_domain.MyPool_MyPool-001_domain`;
 * refer to an attribute as `${libvirt_domain.MyPool_MyPool-001_domain.id}`.
 */
export interface PoolMemberResources {
  readonly plan: VmPlan;
  readonly systemVolume: string;
  readonly configVolume?: string;
  readonly domain: string;
}

const ABSOLUTE_STACK_DIR = "${abspath(path.module)}";

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
 *
 * The providers, the plan-time probes and the policy revision are cdktf constructs in
 * `cdk.tf.json`; the member and policy resources go to the pool's own `<path>.vmpools.tf.json`
 * beside it (see pool-files.ts), with the same addresses. `synthStack` shows both, for tests.
 */
export class VmPool extends Construct {
  /** The engine-neutral plan this construct rendered. */
  readonly plan: PoolPlan;
  readonly members: readonly PoolMemberResources[];
  /** The pool's construct path inside its stack as a Terraform name, e.g. `MyPool`. */
  private readonly poolPath: string;

  constructor(scope: Construct, id: string, props: VmPoolProps & VmPoolRecordProps) {
    super(scope, id);
    const unchecked = uncheckedTrustedCluster(
      props.cluster,
      props.cluster instanceof TrustedCluster,
      'new TrustedCluster(stack, "Secure", props) from vmpools/cdktf',
    );
    if (unchecked) throw new PoolSpecError(`VmPool ${this.node.path}`, [unchecked]);
    const recordFile = placementRecordPath(this, props.placementRecordPath);
    const placement = recordFile === undefined ? {} : claimRecordedPlacement(this, recordFile, props.name);
    this.plan = planPool(props, `VmPool ${this.node.path}`, { placement });
    if (recordFile !== undefined) notePlacement(this, recordFile, props.name, this.plan.placement);
    for (const warning of this.plan.warnings) Annotations.of(this).addWarning(warning);
    const scopes = this.node.scopes;
    this.poolPath = terraformName(
      scopes
        .slice(scopes.indexOf(TerraformStack.of(this)) + 1)
        .map((c) => c.node.id)
        .join("_"),
    );

    // Every cluster host gets its provider and probe, also those without a member under the
    // current size: members created earlier may live there, and Terraform needs their provider
    // (and the shrink guard must look there too).
    const probes = new Map<string, DataExternal>();
    for (const host of this.plan.pool.clusterHosts) {
      libvirtProviderFor(this, host);
      probes.set(host.name, this.hostProbe(host));
    }
    const revisionId = terraformName(`${this.poolPath}_policy_revision`);
    this.claim(revisionId);

    const ids = new Map(this.plan.members.map((m) => [m.name, this.memberIds(m)]));
    for (const m of this.plan.members) {
      for (const part of ["system", "media", "domain"] as const) this.claim(ids.get(m.name)![part]);
    }
    for (const host of this.plan.pool.clusterHosts) this.claim(this.policyVolumeId(host));
    this.members = this.plan.members.map((m) => {
      const id = ids.get(m.name)!;
      return {
        plan: m,
        systemVolume: `libvirt_volume.${id.system}`,
        configVolume: m.configMedia ? `libvirt_volume.${id.media}` : undefined,
        domain: `libvirt_domain.${id.domain}`,
      };
    });

    StackPoolFiles.of(this).add({
      fileName: `${this.poolPath}${POOL_FILE_SUFFIX}`,
      terraform: () => this.terraform(ids, probes, revisionId),
      assets: () => this.assets(),
    });

    new TerraformOutput(this, "member-names", {
      description: `Members of pool ${this.plan.pool.name}`,
      value: this.plan.members.map((m) => m.name),
    });
  }

  /**
   * Terraform resource names: readable in a plan and independent of construct-tree hashes, so a
   * reviewer sees `libvirt_domain.MyPool_MyPool-001_domain` and detached members can be named in
   * `removed` blocks.
   */
  private memberIds(m: VmPlan): MemberIds {
    const id = (part: string) => terraformName(`${this.poolPath}_${m.name}_${part}`);
    return { system: id("system"), media: id("media"), domain: id("domain") };
  }

  private policyVolumeId(host: HostRef): string {
    return terraformName(`${this.poolPath}_policy_${providerAlias(host)}`);
  }

  /** Reserves a name of the pool's file in the stack, as claimLogicalId does for constructs. */
  private claim(logicalId: string): void {
    reserveName(this, logicalId, `${this.node.path} (${logicalId})`);
  }

  /** The absolute path the provider uploads one of this pool's files from (see assets()). */
  private uploadUrl(file: string): string {
    return `${ABSOLUTE_STACK_DIR}/${POOL_ASSET_DIR}/${this.poolPath}/${file}`;
  }

  /** The pool's Terraform JSON: member resources, policy volumes, `removed` blocks. */
  private terraform(ids: Map<string, MemberIds>, probes: Map<string, DataExternal>, revisionId: string): JsonObject {
    const { pool, policy } = this.plan;
    const volumes: Record<string, JsonObject> = {};
    const domains: Record<string, JsonObject> = {};
    for (const m of this.plan.members) {
      const config = configDiskOf(m);
      const json = memberJson(m, ids.get(m.name)!, {
        provider: `libvirt.${providerAlias(m.host)}`,
        storagePool: this.storagePool(probes.get(m.host.name)!),
        mediaUrl: config && this.uploadUrl(config.volumeName),
        preventDestroy: pool.deleteProtection,
      });
      Object.assign(volumes, json.libvirt_volume);
      Object.assign(domains, json.libvirt_domain);
    }
    // The policy document as a volume on every cluster host. Volumes cannot be updated (the
    // provider refuses), so any change replaces it, triggered by the `terraform_data` that holds
    // the document's hash; nothing else depends on it, so the replacement touches no member.
    for (const host of pool.clusterHosts) {
      volumes[this.policyVolumeId(host)] = {
        provider: `libvirt.${providerAlias(host)}`,
        lifecycle: { ignore_changes: "all", replace_triggered_by: [`terraform_data.${revisionId}`] },
        ...policyVolume(this.plan, host, {
          storagePool: firstStoragePool(this.plan),
          url: this.uploadUrl("policy.xml"),
        }),
      };
    }
    // Detached members leave Terraform's management without being destroyed (seed: the VM stays
    // as an independent VM): `removed { lifecycle { destroy = false } }`, Terraform >= 1.7.
    const removed = this.plan.detached.flatMap((m) => {
      const id = this.memberIds(m);
      return [
        `libvirt_domain.${id.domain}`,
        `libvirt_volume.${id.system}`,
        ...(m.configMedia ? [`libvirt_volume.${id.media}`] : []),
      ].map((from) => ({ from, lifecycle: { destroy: false } }));
    });
    return {
      resource: {
        // Built in to Terraform >= 1.4; holds the document's hash so that a change replaces the volumes.
        terraform_data: {
          [revisionId]: { input: { policy_sha256: createHash("sha256").update(policy.xml).digest("hex") } },
        },
        libvirt_volume: volumes,
        ...(this.plan.members.length > 0 ? { libvirt_domain: domains } : {}),
      },
      ...(removed.length > 0 ? { removed } : {}),
    };
  }

  /**
   * Initial-run images, built at synth (deterministic for the same plan) straight into the
   * stack's assets with mode 0600, and the policy document (no secrets in it). Named by the
   * member, not by a content hash: for an image whose only unknowns are passwords, a hash in the
   * plan would let anyone who reads it guess them offline.
   */
  private *assets(): Iterable<PoolAsset> {
    yield { path: `${this.poolPath}/policy.xml`, content: () => this.plan.policy.xml, mode: 0o644 };
    for (const m of this.plan.members) {
      const config = configDiskOf(m);
      const media = m.configMedia;
      if (!config || !media) continue;
      yield {
        path: `${this.poolPath}/${config.volumeName}`,
        content: () => buildConfigMedia(media).image,
        mode: 0o600,
        inputs: JSON.stringify(media),
      };
    }
  }

  /** Storage pool expression for a host: fixed, or the probe's pick at plan time. */
  private storagePool(probe: DataExternal): string {
    return probePicksStoragePool(this.plan)
      ? `\${data.external.${probe.friendlyUniqueId}.result.storage_pool}`
      : firstStoragePool(this.plan);
  }

  /**
   * Plan-time probe of one host (hashicorp/external): picks the storage pool with the most free
   * space and refuses a plan that would silently destroy members after `size` was lowered.
   */
  private hostProbe(host: HostRef): DataExternal {
    const asset = hostProbeAsset(this);
    // Terraform conditions: the same checks as the Pulumi component's, on the data source's result.
    const conditions: Record<GuardCheck["field"], string> = {
      held_above: '${self.result.held_above == ""}',
      undetached: '${self.result.undetached == ""}',
      max_member_index: `\${tonumber(self.result.max_member_index) <= ${this.plan.pool.size}}`,
      storage_pool: "true",
      available_bytes: "true",
      member_count: "true",
      misplaced: '${self.result.misplaced == ""}',
    };
    const probe = new DataExternal(this, `probe-${host.name}`, {
      provider: externalProviderFor(this),
      program: ["node", `\${path.module}/${asset.path}`],
      query: probeQuery(this.plan, host),
      lifecycle: {
        postcondition: guardChecks(this.plan, host).map((c) => ({
          condition: conditions[c.field],
          errorMessage: c.message(`\${self.result.${c.field}}`),
        })),
      },
    });
    // A readable name, which the member resources in the pool's file refer to.
    claimLogicalId(probe, terraformName(`${this.poolPath}_probe_${providerAlias(host)}`));
    return probe;
  }
}
