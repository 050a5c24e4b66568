import type { CloudConfigProps } from "./initrun/cloud-config";
import type { SysprepConfig } from "./initrun/sysprep-config";
import type { TrustedClusterLike } from "./trust";

/**
 * The public, engine-neutral description of a VM pool. The cdktf construct and the Pulumi
 * component take exactly these props; `planPool` turns them into a `PoolPlan`.
 * Every optional prop documents its default. Units are in the names.
 */

/** Operating systems a pool can run. Windows versions drive sysprep; the rest use cloud-init. */
export type OperatingSystem =
  | "linux"
  | "windows-10"
  | "windows-11"
  | "windows-server-2016"
  | "windows-server-2019"
  | "windows-server-2022"
  | "windows-server-2025";

export const OPERATING_SYSTEMS: readonly OperatingSystem[] = [
  "linux",
  "windows-10",
  "windows-11",
  "windows-server-2016",
  "windows-server-2019",
  "windows-server-2022",
  "windows-server-2025",
];

export type OptimizedFor = "desktop" | "server" | "high-performance";
export type PoolType = "automatic" | "manual";
export type DiskFormat = "qcow2" | "raw";

/** The template every member is cloned from (seed: "Template" + version). */
export interface TemplateSpec {
  /** Template name; letters, digits, `._-`. */
  readonly name: string;
  /** Template version (oVirt's sub-version); members record the version they were created from. */
  readonly version: number;
  /**
   * Absolute path of the base image on every host that runs members (the same path on each
   * host, or shared storage). Members get a copy-on-write overlay on top of it.
   */
  readonly baseImagePath: string;
  /** Format of the base image. @default "qcow2" */
  readonly baseImageFormat?: DiskFormat;
  /** Virtual size of each member's system disk. Must be at least the base image's size. */
  readonly diskSizeGiB: number;
  /** Memory per member. */
  readonly memoryMiB: number;
  /** Virtual CPUs per member. */
  readonly vcpus: number;
  /** Default operating system of the template. @default "linux" */
  readonly operatingSystem?: OperatingSystem;
  /** libvirt domain type. Use "qemu" where KVM is not usable. @default "kvm" */
  readonly domainType?: "kvm" | "qemu";
  /** Machine type. @default "q35" */
  readonly machine?: string;
  /**
   * Boot a kernel and initrd from the host instead of the system disk's own boot loader (libvirt
   * `<os><kernel/><initrd/><cmdline/>`), e.g. for appliance images shipped without a boot loader.
   * The paths must exist on every host. @default undefined — members boot from their system disk
   */
  readonly directKernelBoot?: DirectKernelBootSpec;
}

/** Direct kernel boot (libvirt `<os><kernel>`). */
export interface DirectKernelBootSpec {
  /** Absolute path of the kernel image on the host. */
  readonly kernelPath: string;
  /** Absolute path of the initrd on the host. @default undefined — no initrd */
  readonly initrdPath?: string;
  /** Kernel command line. @default "" */
  readonly cmdline?: string;
}

/** A libvirt host of the cluster the pool runs on. */
export interface HostRef {
  /** Host name as used in `startRunningOn` (letters, digits, `.-_`). */
  readonly name: string;
  /** libvirt connection URI of the host, e.g. `qemu+ssh://root@h1/system`. */
  readonly uri: string;
}

/** The hosts a pool can use (oVirt: the pool's cluster). */
export interface ClusterSpec {
  /** Cluster name; recorded in member metadata. @default "default" */
  readonly name?: string;
  /** Hosts of the cluster. @default [{ name: "localhost", uri: "qemu:///system" }] */
  readonly hosts?: readonly HostRef[];
}

export type MigrationMode = "manual-and-automatic" | "manual-only" | "none";
export type MigrationPolicy = "legacy" | "minimal-downtime" | "suspend-workload-if-needed";
/** `inherit` uses the cluster setting (seed: "Inherit from cluster setting"). */
export type TriState = "inherit" | "on" | "off";

export interface MigrationSpec {
  /** Migration mode. @default "manual-and-automatic" */
  readonly mode?: MigrationMode;
  /** Custom migration (convergence) policy. @default undefined — the host decides */
  readonly policy?: MigrationPolicy;
  /** Maximum downtime during live migration; 0 uses the hypervisor default. @default undefined */
  readonly customDowntimeMs?: number;
  /** Auto-converge; only with the legacy policy. @default "inherit" */
  readonly autoConverge?: TriState;
  /** XBZRLE compression; only with the legacy policy. @default "inherit" */
  readonly compression?: TriState;
}

export type NumaTuneMode = "strict" | "preferred" | "interleave";

export interface NumaPin {
  /** Virtual NUMA node index (0-based, < nodeCount). */
  readonly virtualNode: number;
  /** Host NUMA nodes, e.g. [0] or [0, 1]. */
  readonly hostNodes: readonly number[];
}

export interface NumaSpec {
  /** Number of virtual NUMA nodes (1..vcpus). */
  readonly nodeCount: number;
  /** Memory tune mode; `preferred` requires exactly one node. @default "interleave" */
  readonly tuneMode?: NumaTuneMode;
  /** Pin virtual nodes to host nodes. Requires `startRunningOn` specific hosts. @default [] */
  readonly pinning?: readonly NumaPin[];
}

export interface HostSettingsSpec {
  /** Where members may run: any host of the cluster, or the named hosts. @default "any" */
  readonly startRunningOn?: "any" | { readonly hosts: readonly string[] };
  /** @default { mode: "manual-and-automatic" } */
  readonly migration?: MigrationSpec;
  /** Pass the host CPU through; only when migration mode is "none". @default false */
  readonly passThroughHostCpu?: boolean;
  /** Virtual NUMA configuration. @default undefined — no NUMA topology */
  readonly numa?: NumaSpec;
}

/** A libvirt storage pool members' disks can be placed in. */
export interface StoragePoolRef {
  readonly name: string;
  /**
   * libvirt storage pool type. Block-backed types (logical, rbd, iscsi, disk, zfs) hold raw
   * volumes only, so members there get raw full copies instead of qcow2 overlays.
   * @default "dir"
   */
  readonly type?: string;
}

export interface DiskAllocationSpec {
  /**
   * Candidate storage pools. With `autoSelectTarget` the one with the most free space on each
   * host is chosen when Terraform plans; otherwise the first one is used.
   * @default [{ name: "default", type: "dir" }]
   */
  readonly storagePools?: readonly StoragePoolRef[];
  /** Pick the candidate with the most free space at plan time (seed: "Auto select target"). @default false */
  readonly autoSelectTarget?: boolean;
  /** Disk format; derived from the storage pool type when not set. @default qcow2, raw for block-backed pools */
  readonly format?: DiskFormat;
}

export interface ResourceAllocationSpec {
  /** @default { storagePools: [{ name: "default" }], autoSelectTarget: false } */
  readonly disk?: DiskAllocationSpec;
}

export interface ConsoleSpec {
  /** SPICE proxy override, `protocol://host:port`. @default undefined — the global proxy */
  readonly spiceProxy?: string;
}

export interface NetworkSpec {
  /** libvirt network to attach the member's NIC to. @default "default" */
  readonly network?: string;
  /** NIC model. @default "virtio" */
  readonly model?: string;
}

/** cloud-init for Linux members: a typed cloud-config plus NoCloud network-config. */
export interface CloudInitSpec extends CloudConfigProps {
  /** NoCloud network-config (v2 YAML). @default undefined — DHCP on the first NIC */
  readonly networkConfig?: string;
}

/** Seed "Initial Run": cloud-init for Linux pools, sysprep for Windows pools. */
export interface InitialRunSpec {
  /** @default {} for Linux pools: a per-member hostname and nothing else */
  readonly cloudInit?: CloudInitSpec;
  /** Required for Windows pools (each member needs its own ComputerName). @default undefined */
  readonly sysprep?: SysprepConfig;
}

export interface VmPoolProps {
  /** Pool name; members are `Name-1`… or, with a `?` run, `Name-001`…. */
  readonly name: string;
  /** @default "" */
  readonly description?: string;
  /** @default "" */
  readonly comment?: string;
  readonly template: TemplateSpec;
  /** @default template.operatingSystem */
  readonly operatingSystem?: OperatingSystem;
  /** @default "desktop" */
  readonly optimizedFor?: OptimizedFor;
  /** Number of VMs (1..maxVmsInPool). Raising it adds members; lowering it needs `allowShrink`. */
  readonly size: number;
  /** Upper bound for `size` (oVirt's `MaxVmsInPool`). @default 1000 */
  readonly maxVmsInPool?: number;
  /** Free members kept up and idle (0..size; automatic pools only). @default 0 */
  readonly prestarted?: number;
  /** Members one user may hold at once (1..32767). @default 1 */
  readonly maxVmsPerUser?: number;
  /** Engines refuse to destroy members. @default false */
  readonly deleteProtection?: boolean;
  /** @default "automatic" */
  readonly type?: PoolType;
  /** Keep guest changes across users (no revert). @default false */
  readonly stateful?: boolean;
  /**
   * Let a lower `size` destroy the members above it. Without it, a plan that would remove
   * existing members fails. @default false
   */
  readonly allowShrink?: boolean;
  /**
   * Members detached from the pool (seed: "Detach VMs"), by VM name. Terraform forgets their
   * resources (`removed` blocks with `destroy = false`) instead of destroying them: each stays as
   * an independent VM. Detach it with `vmpools detach` first, then list it here. @default []
   */
  readonly detached?: readonly string[];
  /** @default cloud-init with a per-member hostname for Linux; Windows pools must give sysprep */
  readonly initialRun?: InitialRunSpec;
  /** @default {} */
  readonly console?: ConsoleSpec;
  /**
   * The hosts, or a trusted cluster (`TrustedCluster` / `TrustedClusterConfig`): members then run
   * only on hosts its attestation service vouches for. @default the cluster's default host
   */
  readonly cluster?: ClusterSpec | TrustedClusterLike;
  /** @default { startRunningOn: "any", migration: { mode: "manual-and-automatic" } } */
  readonly host?: HostSettingsSpec;
  /** @default qcow2 overlays in the storage pool "default" */
  readonly resourceAllocation?: ResourceAllocationSpec;
  /** @default { network: "default", model: "virtio" } */
  readonly network?: NetworkSpec;
}
