import { TerraformResource, type TerraformMetaArguments } from "cdktf";
import type { Construct } from "constructs";
import {
  domainCpuToTerraform,
  domainDevicesToTerraform,
  domainFeaturesToTerraform,
  domainMetadataToTerraform,
  domainNumaTuneToTerraform,
  domainOsToTerraform,
  domainSysInfoToTerraform,
  type DomainConfig,
} from "../providers/gen/providers/libvirt/domain";
import {
  volumeBackingStoreToTerraform,
  volumeCreateToTerraform,
  volumeTargetToTerraform,
  type VolumeConfig,
} from "../providers/gen/providers/libvirt/volume";

type Attributes = Record<string, unknown>;
type Body<C> = Omit<C, keyof TerraformMetaArguments>;

/**
 * A libvirt resource rendered from the plan. Its config is typed by the generated bindings'
 * interfaces and converted by their generated `…ToTerraform` functions, so the JSON is exactly
 * what the generated classes write. It skips what those classes do on construction: one
 * output-reference object per nested attribute, each capturing a stack trace, which made a
 * 1000-member pool take ~19 s instead of ~4 s to synthesize.
 */
export class RenderedResource extends TerraformResource {
  constructor(
    scope: Construct,
    id: string,
    resourceType: string,
    meta: TerraformMetaArguments,
    private readonly attributes: Attributes,
  ) {
    super(scope, id, {
      terraformResourceType: resourceType,
      terraformGeneratorMetadata: { providerName: "libvirt", providerVersion: "0.9.7" },
      ...meta,
    });
  }

  protected override synthesizeAttributes(): Attributes {
    return this.attributes;
  }
}

export function volumeResource(
  scope: Construct,
  id: string,
  meta: TerraformMetaArguments,
  c: Body<VolumeConfig>,
): RenderedResource {
  return new RenderedResource(scope, id, "libvirt_volume", meta, {
    name: c.name,
    pool: c.pool,
    type: c.type,
    capacity: c.capacity,
    capacity_unit: c.capacityUnit,
    allocation_unit: c.allocationUnit,
    physical_unit: c.physicalUnit,
    target: volumeTargetToTerraform(c.target),
    backing_store: volumeBackingStoreToTerraform(c.backingStore),
    create: volumeCreateToTerraform(c.create),
  });
}

/** The domain attributes VmPool uses; anything else would need adding here and to the test. */
type DomainBody = Pick<
  Body<DomainConfig>,
  | "name"
  | "type"
  | "description"
  | "memory"
  | "memoryUnit"
  | "vcpu"
  | "cpu"
  | "numaTune"
  | "os"
  | "features"
  | "sysInfo"
  | "devices"
  | "metadata"
  | "running"
>;

export function domainResource(
  scope: Construct,
  id: string,
  meta: TerraformMetaArguments,
  c: DomainBody,
): RenderedResource {
  return new RenderedResource(scope, id, "libvirt_domain", meta, {
    name: c.name,
    type: c.type,
    description: c.description,
    memory: c.memory,
    memory_unit: c.memoryUnit,
    vcpu: c.vcpu,
    cpu: domainCpuToTerraform(c.cpu),
    numa_tune: domainNumaTuneToTerraform(c.numaTune),
    os: domainOsToTerraform(c.os),
    features: domainFeaturesToTerraform(c.features),
    sys_info: Array.isArray(c.sysInfo) ? c.sysInfo.map((s) => domainSysInfoToTerraform(s)) : undefined,
    devices: domainDevicesToTerraform(c.devices),
    metadata: domainMetadataToTerraform(c.metadata),
    running: c.running,
  });
}
