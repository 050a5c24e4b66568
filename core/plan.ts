import { cloudInitMedia, type CloudInitMedia } from "./initrun/cloudinit";
import { computerNameFor, renderUnattend, sysprepMediaFiles, type WindowsVersion } from "./initrun/sysprep";
import { memberMetadata, renderMetadataXml, renderPolicyDocument, type MemberMetadata } from "./metadata";
import { hostnameFor, memberName, memberNamePattern } from "./naming";
import { homeHost, type PoolPlacement } from "./placement";
import type { ResolvedPool } from "./resolved";
import type { DiskFormat, HostRef, NumaTuneMode, VmPoolProps } from "./spec";
import { resolvePool } from "./validate";

export interface DiskPlan {
  readonly role: "system" | "config";
  /** Volume name inside the storage pool; unique per member. */
  readonly volumeName: string;
  readonly device: "disk" | "cdrom" | "floppy";
  readonly bus: "virtio" | "sata" | "fdc";
  readonly targetDev: string;
  readonly format: DiskFormat;
  readonly readOnly: boolean;
  readonly bootOrder?: number;
  /** System disk: virtual size. */
  readonly capacityGiB?: number;
  /** qcow2 overlay: the base image it is backed by. */
  readonly backingStore?: { readonly path: string; readonly format: DiskFormat };
  /** raw disk: full copy of this image at creation. */
  readonly copyOf?: string;
}

export interface NicPlan {
  readonly network: string;
  readonly model: string;
}

export interface NumaCellPlan {
  readonly cpus: string;
  readonly memoryMiB: number;
}

export interface NumaTunePlan {
  readonly mode: NumaTuneMode;
  /** Every pinned host node. */
  readonly nodeset: string;
  readonly memNodes: readonly { readonly cellId: number; readonly mode: NumaTuneMode; readonly nodeset: string }[];
}

export type ConfigMediaPlan =
  | { readonly kind: "cloud-init"; readonly media: CloudInitMedia }
  | {
      readonly kind: "sysprep";
      readonly computerName: string;
      readonly device: "cdrom" | "floppy";
      /** Answer file(s) for the media root. Hold secrets: written only to 0600 media files. */
      readonly files: readonly { readonly name: string; readonly content: string }[];
    };

/** Everything one member VM needs, engine-neutral. */
export interface VmPlan {
  readonly index: number;
  readonly name: string;
  readonly hostname: string;
  readonly host: HostRef;
  readonly description: string;
  readonly domainType: "kvm" | "qemu";
  readonly machine: string;
  readonly memoryMiB: number;
  readonly vcpus: number;
  readonly cpuMode?: "host-passthrough";
  /** Direct kernel boot from host files; undefined: the system disk boots. */
  readonly directKernelBoot?: { readonly kernelPath: string; readonly initrdPath?: string; readonly cmdline: string };
  readonly numaCells: readonly NumaCellPlan[];
  readonly numaTune?: NumaTunePlan;
  readonly disks: readonly DiskPlan[];
  readonly nics: readonly NicPlan[];
  readonly graphics: { readonly type: "spice"; readonly listen: string; readonly autoPort: true };
  readonly serialConsole: true;
  readonly configMedia?: ConfigMediaPlan;
  readonly metadata: MemberMetadata;
  readonly metadataXml: string;
  /**
   * SMBIOS OEM strings fixed at creation: the template this member was cloned from. Readable by
   * the guest (dmidecode -t 11) and the reconciler, and never rewritten by later edits.
   */
  readonly oemStrings: readonly string[];
  /** One of the first `prestarted` members: what the reconciler starts first on an idle pool. */
  readonly prestartCandidate: boolean;
}

/**
 * The pool's current policy, deployed as a small volume on every cluster host, named per host
 * (`policyVolumeName`).
 */
export interface PolicyPlan {
  /** The policy document; its content changes exactly when the policy does. */
  readonly xml: string;
}

export interface PoolPlan {
  readonly pool: ResolvedPool;
  /** Members the engines manage: indices 1..size, without the detached ones. */
  readonly members: readonly VmPlan[];
  /** Every detached member, whatever its index: the engines forget their resources, never destroy them. */
  readonly detached: readonly VmPlan[];
  readonly policy: PolicyPlan;
  /**
   * The placement to record for this pool: the host of every member and detached member of the
   * plan, in index order (members a shrink removed drop out). The engines write it back to the
   * placement record.
   */
  readonly placement: PoolPlacement;
  readonly warnings: readonly string[];
}

export interface PlanOptions {
  /**
   * The pool's entry of the placement record: a member in it keeps its recorded host; a member
   * not in it is placed by rendezvous hashing over the allowed hosts of this plan.
   * @default {} — every member placed by hashing
   */
  readonly placement?: PoolPlacement;
}

/** A member's system disk (every member has one). */
export const systemDiskOf = (vm: VmPlan): DiskPlan => vm.disks.find((d) => d.role === "system")!;

/** A member's initial-run media disk, if it has initial-run media. */
export const configDiskOf = (vm: VmPlan): DiskPlan | undefined =>
  vm.configMedia ? vm.disks.find((d) => d.role === "config") : undefined;

/** Splits `total` into `parts` near-equal integers, larger ones first. */
function split(total: number, parts: number): number[] {
  return Array.from({ length: parts }, (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0));
}

function numaCells(pool: ResolvedPool): NumaCellPlan[] {
  if (!pool.numa) return [];
  const cpus = split(pool.template.vcpus, pool.numa.nodeCount);
  const mem = split(pool.template.memoryMiB, pool.numa.nodeCount);
  let next = 0;
  return cpus.map((count, i) => {
    const range = count === 1 ? `${next}` : `${next}-${next + count - 1}`;
    next += count;
    return { cpus: range, memoryMiB: mem[i]! };
  });
}

/**
 * Memory tuning binds guest memory to host NUMA nodes, so it exists only with pinning (libvirt
 * rejects a tune mode without a host nodeset); unpinned pools get just the guest topology.
 */
function numaTune(pool: ResolvedPool): NumaTunePlan | undefined {
  if (!pool.numa || pool.numa.pinning.length === 0) return undefined;
  const mode = pool.numa.tuneMode;
  const memNodes = [...pool.numa.pinning]
    .sort((a, b) => a.virtualNode - b.virtualNode)
    .map((p) => ({ cellId: p.virtualNode, mode, nodeset: [...p.hostNodes].sort((a, b) => a - b).join(",") }));
  const all = [...new Set(pool.numa.pinning.flatMap((p) => p.hostNodes))].sort((a, b) => a - b);
  return { mode, nodeset: all.join(","), memNodes };
}

function systemDisk(pool: ResolvedPool, vmName: string): DiskPlan {
  const base = pool.template;
  const common = {
    role: "system" as const,
    device: "disk" as const,
    bus: "virtio" as const,
    targetDev: "vda",
    readOnly: false,
    bootOrder: 1,
    capacityGiB: base.diskSizeGiB,
  };
  return pool.storage.format === "qcow2"
    ? {
        ...common,
        volumeName: `${vmName}.qcow2`,
        format: "qcow2",
        backingStore: { path: base.baseImagePath, format: base.baseImageFormat },
      }
    : { ...common, volumeName: `${vmName}.img`, format: "raw", copyOf: base.baseImagePath };
}

function configDisk(vmName: string, media: ConfigMediaPlan): DiskPlan {
  if (media.kind === "sysprep" && media.device === "floppy") {
    return {
      role: "config",
      volumeName: `${vmName}-sysprep.img`,
      device: "floppy",
      bus: "fdc",
      targetDev: "fda",
      format: "raw",
      readOnly: false,
    };
  }
  return {
    role: "config",
    volumeName: `${vmName}-${media.kind}.iso`,
    device: "cdrom",
    bus: "sata",
    targetDev: "sda",
    format: "raw",
    readOnly: true,
  };
}

function configMedia(pool: ResolvedPool, vmName: string, index: number, hostname: string): ConfigMediaPlan | undefined {
  const run = pool.initialRun;
  if (!run) return undefined;
  if (run.kind === "cloud-init") {
    return {
      kind: "cloud-init",
      media: cloudInitMedia({
        vmName,
        hostname,
        templateName: pool.template.name,
        templateVersion: pool.template.version,
        config: run.config,
      }),
    };
  }
  const props = run.config.props;
  const computerName = computerNameFor(vmName, index, props.computerNamePattern);
  const xml = renderUnattend(props, pool.operatingSystem as WindowsVersion, computerName);
  return { kind: "sysprep", computerName, device: props.media ?? "cdrom", files: sysprepMediaFiles(xml) };
}

/**
 * Validates props and computes every member. Pure: same props and placement in, same plan out.
 * A member keeps the host the placement record gives it (a recorded host no longer in the
 * cluster is a validation error); a new member gets the rendezvous pick over the allowed hosts.
 */
export function planPool(props: VmPoolProps, subject?: string, options: PlanOptions = {}): PoolPlan {
  const recorded = options.placement ?? {};
  const { pool, warnings } = resolvePool(props, subject, recorded);
  const hostsByName = new Map(pool.clusterHosts.map((h) => [h.name, h]));
  const cells = numaCells(pool);
  const tune = numaTune(pool);
  const description = [pool.description, pool.comment].filter((s) => s.length > 0).join("\n\n");
  const members: VmPlan[] = [];
  const detached: VmPlan[] = [];
  const detachedNames = new Set(pool.detached);
  const pattern = memberNamePattern(pool.mask);
  // A detached member above the size (detached, then size lowered in the same deploy) still has
  // resources in the state: they must be forgotten, not destroyed.
  const detachedAbove = pool.detached
    .map((vm) => Number(pattern.exec(vm)![1]))
    .filter((index) => index > pool.size)
    .sort((a, b) => a - b);
  for (const index of [...Array.from({ length: pool.size }, (_, i) => i + 1), ...detachedAbove]) {
    const name = memberName(pool.mask, index);
    const hostname = hostnameFor(name);
    const media = configMedia(pool, name, index, hostname);
    // resolvePool checked that a recorded host is a cluster host.
    const host = hostsByName.get(recorded[name] ?? "") ?? homeHost(name, pool.allowedHosts);
    const metadata = memberMetadata(pool, index, host.name);
    (detachedNames.has(name) ? detached : members).push({
      index,
      name,
      hostname,
      host,
      description,
      domainType: pool.template.domainType,
      machine: pool.template.machine,
      memoryMiB: pool.template.memoryMiB,
      vcpus: pool.template.vcpus,
      cpuMode: pool.passThroughHostCpu ? "host-passthrough" : undefined,
      directKernelBoot: pool.template.directKernelBoot,
      numaCells: cells,
      numaTune: tune,
      disks: media ? [systemDisk(pool, name), configDisk(name, media)] : [systemDisk(pool, name)],
      nics: [{ network: pool.network.network, model: pool.network.model }],
      graphics: { type: "spice", listen: "0.0.0.0", autoPort: true },
      serialConsole: true,
      configMedia: media,
      metadata,
      metadataXml: renderMetadataXml(metadata),
      oemStrings: [
        `vmpools:pool=${pool.name}`,
        `vmpools:template=${pool.template.name}`,
        `vmpools:template-version=${pool.template.version}`,
      ],
      prestartCandidate: index <= pool.prestarted,
    });
  }
  const policy = { xml: renderPolicyDocument(pool) };
  const placement = Object.fromEntries(
    [...members, ...detached].sort((a, b) => a.index - b.index).map((m) => [m.name, m.host.name]),
  );
  return { pool, members, detached, policy, placement, warnings };
}
