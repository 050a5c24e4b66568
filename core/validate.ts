import { IssueCollector } from "./errors";
import { cloudConfigProblems } from "./initrun/cloud-config";
import { computerNameFor } from "./initrun/sysprep";
import { SysprepConfig } from "./initrun/sysprep-config";
import {
  MAX_VM_NAME_LENGTH,
  maskCapacity,
  memberName,
  memberNamePattern,
  parseNameMask,
  type NameMask,
} from "./naming";
import type { PoolPlacement } from "./placement";
import type { ResolvedPool } from "./resolved";
import {
  OPERATING_SYSTEMS,
  type ClusterSpec,
  type DiskFormat,
  type HostRef,
  type StoragePoolRef,
  type VmPoolProps,
} from "./spec";
import { isTrustedClusterLike } from "./trust";

export const DEFAULT_MAX_VMS_IN_POOL = 1000;
export const MAX_VMS_PER_USER_LIMIT = 32767;
export const DEFAULT_HOST: HostRef = { name: "localhost", uri: "qemu:///system" };

/** Storage pool types that hold only raw volumes (no qcow2 backing chains). */
const BLOCK_POOL_TYPES = new Set([
  "logical",
  "disk",
  "iscsi",
  "iscsi-direct",
  "rbd",
  "zfs",
  "mpath",
  "scsi",
  "vstorage",
]);
const FILE_POOL_TYPES = new Set(["dir", "fs", "netfs", "gluster"]);
const NIC_MODELS = ["virtio", "e1000", "e1000e", "rtl8139"];
const SIMPLE_NAME = /^[A-Za-z0-9._-]+$/;
/** `protocol://host:port`, host a DNS name, IPv4 or bracketed IPv6. */
const SPICE_PROXY =
  /^([a-z][a-z0-9+.-]*):\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):([0-9]{1,5})$/;

const isInt = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v);
const oneOf = <T extends string>(v: unknown, allowed: readonly T[]): v is T =>
  typeof v === "string" && (allowed as readonly string[]).includes(v);
const list = (values: readonly string[]) => values.map((v) => `"${v}"`).join(", ");

/**
 * Checks every prop, applies defaults and returns the resolved pool, or throws `PoolSpecError`.
 * `placement` is the pool's entry of the placement record: every host it names for a member of
 * this plan must still be a cluster host (and, for managed members, one they may run on).
 */
export function resolvePool(
  props: VmPoolProps,
  subject = "VmPool",
  placement: PoolPlacement = {},
): { pool: ResolvedPool; warnings: string[] } {
  const errors = new IssueCollector();
  const warnings: string[] = [];
  const int = (prop: string, v: unknown, min: number, max: number, fix = ""): boolean => {
    if (isInt(v) && v >= min && v <= max) return true;
    const range = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`;
    errors.add(prop, v, `must be ${range}${fix ? `; ${fix}` : ""}`);
    return false;
  };
  const enumOf = <T extends string>(prop: string, v: unknown, allowed: readonly T[], fallback: T): T => {
    if (v === undefined) return fallback;
    if (oneOf(v, allowed)) return v;
    errors.add(prop, v, `must be one of ${list(allowed)}`);
    return fallback;
  };
  const bool = (prop: string, v: unknown, fallback: boolean): boolean => {
    if (v === undefined) return fallback;
    if (typeof v === "boolean") return v;
    errors.add(prop, v, "must be true or false");
    return fallback;
  };
  const text = (prop: string, v: unknown): string => {
    if (v === undefined) return "";
    if (typeof v === "string") return v;
    errors.add(prop, v, "must be a string");
    return "";
  };

  // --- name and size ---------------------------------------------------------------------------
  const parsed = parseNameMask(typeof props.name === "string" ? props.name : "");
  let mask: NameMask = { pattern: "invalid", prefix: "invalid-", suffix: "", width: 0 };
  if (typeof parsed === "string") errors.add("name", props.name, parsed);
  else mask = parsed;

  const maxVmsInPool = props.maxVmsInPool ?? DEFAULT_MAX_VMS_IN_POOL;
  int("maxVmsInPool", maxVmsInPool, 1, Number.MAX_SAFE_INTEGER);
  const sizeOk = int(
    "size",
    props.size,
    1,
    isInt(maxVmsInPool) && maxVmsInPool >= 1 ? maxVmsInPool : DEFAULT_MAX_VMS_IN_POOL,
    "raise maxVmsInPool for a bigger pool",
  );
  if (sizeOk && typeof parsed !== "string") {
    const capacity = maskCapacity(mask);
    if (props.size > capacity) {
      errors.add(
        "size",
        props.size,
        `does not fit the name mask "${mask.pattern}" (at most ${capacity} members); ` +
          `use ${"?".repeat(String(props.size).length)} in the name or lower size`,
      );
    } else {
      const longest = memberName(mask, props.size);
      if (longest.length > MAX_VM_NAME_LENGTH) {
        errors.add(
          "name",
          props.name,
          `member name "${longest}" is ${longest.length} characters; VM names are at most ` +
            `${MAX_VM_NAME_LENGTH}, so shorten the pool name by ${longest.length - MAX_VM_NAME_LENGTH}`,
        );
      }
    }
  }

  // --- template ----------------------------------------------------------------------------------
  const t = props.template ?? ({} as VmPoolProps["template"]);
  if (props.template === undefined)
    errors.add("template", undefined, "is required: give the base image, disk size, memory and vCPUs");
  if (typeof t.name !== "string" || !SIMPLE_NAME.test(t.name)) {
    errors.add("template.name", t.name, "must be letters, digits, '.', '_' or '-'");
  }
  int("template.version", t.version, 1, Number.MAX_SAFE_INTEGER, "template versions start at 1");
  if (typeof t.baseImagePath !== "string" || !t.baseImagePath.startsWith("/")) {
    errors.add(
      "template.baseImagePath",
      t.baseImagePath,
      'must be an absolute path such as "/var/lib/libvirt/images/base.qcow2"',
    );
  }
  const baseImageFormat = enumOf<DiskFormat>("template.baseImageFormat", t.baseImageFormat, ["qcow2", "raw"], "qcow2");
  int("template.diskSizeGiB", t.diskSizeGiB, 1, 65536);
  int("template.memoryMiB", t.memoryMiB, 64, 16 * 1024 * 1024, "give the memory in MiB, e.g. 2048");
  int("template.vcpus", t.vcpus, 1, 1024);
  const templateOs = enumOf("template.operatingSystem", t.operatingSystem, OPERATING_SYSTEMS, "linux");
  const domainType = enumOf("template.domainType", t.domainType, ["kvm", "qemu"] as const, "kvm");
  const machine = t.machine ?? "q35";
  if (typeof machine !== "string" || !/^[A-Za-z0-9._-]+$/.test(machine)) {
    errors.add("template.machine", t.machine, 'must be a libvirt machine type such as "q35" or "pc"');
  }

  const boot = t.directKernelBoot;
  let directKernelBoot: ResolvedPool["template"]["directKernelBoot"];
  if (boot !== undefined && (typeof boot !== "object" || boot === null)) {
    errors.add(
      "template.directKernelBoot",
      boot,
      'must be { kernelPath, initrdPath?, cmdline? }, e.g. { kernelPath: "/var/lib/libvirt/boot/vmlinuz" }',
    );
  } else if (boot !== undefined) {
    const absolute = (prop: string, v: unknown) => {
      if (typeof v === "string" && v.startsWith("/")) return true;
      errors.add(prop, v, 'must be an absolute path on the hosts, such as "/var/lib/libvirt/boot/vmlinuz"');
      return false;
    };
    absolute("template.directKernelBoot.kernelPath", boot.kernelPath);
    if (boot.initrdPath !== undefined) absolute("template.directKernelBoot.initrdPath", boot.initrdPath);
    const cmdline = text("template.directKernelBoot.cmdline", boot.cmdline);
    directKernelBoot = { kernelPath: boot.kernelPath, initrdPath: boot.initrdPath, cmdline };
  }

  // --- general -----------------------------------------------------------------------------------
  const operatingSystem = enumOf("operatingSystem", props.operatingSystem, OPERATING_SYSTEMS, templateOs);
  const optimizedFor = enumOf(
    "optimizedFor",
    props.optimizedFor,
    ["desktop", "server", "high-performance"] as const,
    "desktop",
  );
  if (optimizedFor === "high-performance") {
    warnings.push(
      `optimizedFor "high-performance" is not recommended for pools: such a VM is pinned to one host ` +
        `and concrete resources, so a pool of them would not run well; use "server" or "desktop"`,
    );
  }
  const type = enumOf("type", props.type, ["automatic", "manual"] as const, "automatic");
  const prestarted = props.prestarted ?? 0;
  if (int("prestarted", prestarted, 0, sizeOk ? props.size : Number.MAX_SAFE_INTEGER, "it cannot exceed size")) {
    if (prestarted > 0 && type !== "automatic") {
      errors.add(
        "prestarted",
        prestarted,
        'only automatic pools can have prestarted VMs; set type to "automatic" or prestarted to 0',
      );
    }
  }
  const maxVmsPerUser = props.maxVmsPerUser ?? 1;
  int("maxVmsPerUser", maxVmsPerUser, 1, MAX_VMS_PER_USER_LIMIT);

  // --- initial run -------------------------------------------------------------------------------
  const ci = props.initialRun?.cloudInit;
  const sysprep = props.initialRun?.sysprep;
  let initialRun: ResolvedPool["initialRun"];
  if (operatingSystem === "linux") {
    if (sysprep !== undefined)
      errors.add(
        "initialRun.sysprep",
        "SysprepConfig",
        "sysprep is for Windows; Linux members are set up by cloud-init (initialRun.cloudInit)",
      );
    for (const issue of cloudConfigProblems(ci ?? {}))
      errors.add(`initialRun.cloudInit.${issue.prop}`, issue.value, issue.message);
    if (ci?.networkConfig !== undefined && typeof ci.networkConfig !== "string") {
      errors.add("initialRun.cloudInit.networkConfig", ci.networkConfig, "must be network-config v2 YAML text");
    }
    initialRun = { kind: "cloud-init", config: ci ?? {} };
  } else {
    if (ci !== undefined)
      errors.add(
        "initialRun.cloudInit",
        "{...}",
        `cloud-init is for Linux; ${operatingSystem} members are set up by sysprep (initialRun.sysprep)`,
      );
    if (sysprep === undefined) {
      errors.add(
        "initialRun.sysprep",
        undefined,
        `${operatingSystem} pools need a SysprepConfig so every member gets its own ComputerName and an administrator: initialRun: { sysprep: new SysprepConfig({ localAdministrator: { password } }) }`,
      );
    } else if (!(sysprep instanceof SysprepConfig)) {
      errors.add("initialRun.sysprep", "{...}", "must be a SysprepConfig: new SysprepConfig({ ... })");
    } else {
      initialRun = { kind: "sysprep", config: sysprep };
      if (sysprep.props.media === "floppy" && machine !== "pc") {
        errors.add(
          "initialRun.sysprep.media",
          "floppy",
          `the "${String(machine)}" machine has no floppy controller; use media "cdrom" or template.machine "pc"`,
        );
      }
      if (sizeOk && typeof parsed !== "string") {
        const pattern = sysprep.props.computerNamePattern;
        for (let index = 1; index <= props.size; index++) {
          try {
            computerNameFor(memberName(mask, index), index, pattern);
          } catch (e) {
            errors.add(
              pattern === undefined ? "name" : "initialRun.sysprep.computerNamePattern",
              pattern ?? props.name,
              (e as Error).message,
            );
            break;
          }
        }
      }
    }
  }

  // --- console -----------------------------------------------------------------------------------
  const spiceProxy = props.console?.spiceProxy;
  if (spiceProxy !== undefined) {
    const m = typeof spiceProxy === "string" ? SPICE_PROXY.exec(spiceProxy) : null;
    if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535) {
      errors.add(
        "console.spiceProxy",
        spiceProxy,
        'must be protocol://host:port with a port from 1 to 65535, e.g. "http://proxy.example.com:3128"',
      );
    }
  }

  // --- cluster and host --------------------------------------------------------------------------
  // A trusted cluster was validated when constructed; its hosts are the pool's cluster.
  const trusted = isTrustedClusterLike(props.cluster) ? props.cluster.trustedCluster : undefined;
  const plainCluster = trusted ? undefined : (props.cluster as ClusterSpec | undefined);
  const clusterHosts = trusted?.hosts ?? plainCluster?.hosts ?? [DEFAULT_HOST];
  if (clusterHosts.length === 0) errors.add("cluster.hosts", [], "needs at least one host");
  const hostNames = new Set<string>();
  clusterHosts.forEach((h, i) => {
    if (typeof h?.name !== "string" || !SIMPLE_NAME.test(h.name))
      errors.add(`cluster.hosts[${i}].name`, h?.name, "must be letters, digits, '.', '_' or '-'");
    else if (hostNames.has(h.name))
      errors.add(`cluster.hosts[${i}].name`, h.name, "is listed twice; host names must be unique");
    hostNames.add(h?.name);
    if (typeof h?.uri !== "string" || !/^[a-z][a-z0-9+]*:\/\//.test(h.uri)) {
      errors.add(`cluster.hosts[${i}].uri`, h?.uri, 'must be a libvirt URI such as "qemu+ssh://root@host1/system"');
    }
  });
  const runOn = props.host?.startRunningOn ?? "any";
  let allowedHosts: readonly HostRef[] = clusterHosts;
  if (runOn !== "any") {
    const wanted = typeof runOn === "object" && Array.isArray(runOn.hosts) ? runOn.hosts : undefined;
    if (!wanted || wanted.length === 0) {
      errors.add("host.startRunningOn", runOn, 'must be "any" or { hosts: [...] } with at least one cluster host');
    } else {
      for (const w of wanted) {
        if (!hostNames.has(w))
          errors.add("host.startRunningOn.hosts", w, `is not a cluster host; known hosts: ${list([...hostNames])}`);
      }
      if (new Set(wanted).size !== wanted.length) errors.add("host.startRunningOn.hosts", wanted, "lists a host twice");
      allowedHosts = clusterHosts.filter((h) => wanted.includes(h.name));
    }
  }

  const mig = props.host?.migration ?? {};
  const migrationMode = enumOf(
    "host.migration.mode",
    mig.mode,
    ["manual-and-automatic", "manual-only", "none"] as const,
    "manual-and-automatic",
  );
  const policy =
    mig.policy === undefined
      ? undefined
      : enumOf(
          "host.migration.policy",
          mig.policy,
          ["legacy", "minimal-downtime", "suspend-workload-if-needed"] as const,
          "legacy",
        );
  const autoConverge = enumOf(
    "host.migration.autoConverge",
    mig.autoConverge,
    ["inherit", "on", "off"] as const,
    "inherit",
  );
  const compression = enumOf(
    "host.migration.compression",
    mig.compression,
    ["inherit", "on", "off"] as const,
    "inherit",
  );
  if (mig.customDowntimeMs !== undefined)
    int("host.migration.customDowntimeMs", mig.customDowntimeMs, 0, 3_600_000, "0 uses the hypervisor default");
  if (policy !== "legacy") {
    if (autoConverge !== "inherit")
      errors.add(
        "host.migration.autoConverge",
        autoConverge,
        'only applies with the legacy migration policy; set policy to "legacy" or autoConverge to "inherit"',
      );
    if (compression !== "inherit")
      errors.add(
        "host.migration.compression",
        compression,
        'only applies with the legacy migration policy; set policy to "legacy" or compression to "inherit"',
      );
  }
  if (migrationMode === "none" && (policy !== undefined || mig.customDowntimeMs !== undefined)) {
    errors.add(
      "host.migration",
      mig,
      'policy and downtime have no effect when migration mode is "none"; remove them or allow migration',
    );
  }
  const passThroughHostCpu = bool("host.passThroughHostCpu", props.host?.passThroughHostCpu, false);
  if (passThroughHostCpu && migrationMode !== "none") {
    errors.add(
      "host.passThroughHostCpu",
      true,
      'needs host.migration.mode "none": a VM with the host CPU passed through cannot migrate',
    );
  }

  let numa: ResolvedPool["numa"];
  const n = props.host?.numa;
  if (n !== undefined) {
    const vcpuCap = isInt(t.vcpus) && t.vcpus >= 1 ? t.vcpus : 1;
    const countOk = int(
      "host.numa.nodeCount",
      n.nodeCount,
      1,
      vcpuCap,
      "each virtual NUMA node needs at least one vCPU",
    );
    const tuneMode = enumOf(
      "host.numa.tuneMode",
      n.tuneMode,
      ["strict", "preferred", "interleave"] as const,
      "interleave",
    );
    if (tuneMode === "preferred" && n.nodeCount !== 1) {
      errors.add("host.numa.nodeCount", n.nodeCount, 'must be 1 when tuneMode is "preferred"');
    }
    const pinning = n.pinning ?? [];
    const seen = new Set<number>();
    pinning.forEach((p, i) => {
      if (!isInt(p.virtualNode) || p.virtualNode < 0 || (countOk && p.virtualNode >= n.nodeCount)) {
        errors.add(
          `host.numa.pinning[${i}].virtualNode`,
          p.virtualNode,
          `must be a node index from 0 to ${countOk ? n.nodeCount - 1 : "nodeCount-1"}`,
        );
      } else if (seen.has(p.virtualNode)) {
        errors.add(`host.numa.pinning[${i}].virtualNode`, p.virtualNode, "is pinned twice; pin each virtual node once");
      }
      seen.add(p.virtualNode);
      if (!Array.isArray(p.hostNodes) || p.hostNodes.length === 0 || !p.hostNodes.every((h) => isInt(h) && h >= 0)) {
        errors.add(`host.numa.pinning[${i}].hostNodes`, p.hostNodes, "must list host NUMA node numbers, e.g. [0]");
      }
    });
    if (pinning.length > 0 && runOn === "any") {
      errors.add(
        "host.numa.pinning",
        pinning,
        "pins to host NUMA nodes, so set host.startRunningOn to the specific hosts that have them",
      );
    }
    numa = { nodeCount: n.nodeCount, tuneMode, pinning };
  }

  // --- disk allocation ---------------------------------------------------------------------------
  const disk = props.resourceAllocation?.disk ?? {};
  const candidates: Required<StoragePoolRef>[] = (disk.storagePools ?? [{ name: "default" }]).map((p) => ({
    name: p.name,
    type: p.type ?? "dir",
  }));
  if (candidates.length === 0)
    errors.add("resourceAllocation.disk.storagePools", [], "needs at least one storage pool");
  const poolNames = new Set<string>();
  candidates.forEach((c, i) => {
    if (typeof c.name !== "string" || !SIMPLE_NAME.test(c.name))
      errors.add(`resourceAllocation.disk.storagePools[${i}].name`, c.name, "must be a libvirt storage pool name");
    else if (poolNames.has(c.name))
      errors.add(`resourceAllocation.disk.storagePools[${i}].name`, c.name, "is listed twice");
    poolNames.add(c.name);
    if (!BLOCK_POOL_TYPES.has(c.type) && !FILE_POOL_TYPES.has(c.type)) {
      errors.add(
        `resourceAllocation.disk.storagePools[${i}].type`,
        c.type,
        `must be a libvirt pool type: ${list([...FILE_POOL_TYPES, ...BLOCK_POOL_TYPES])}`,
      );
    }
  });
  const needsRaw = candidates.map((c) => BLOCK_POOL_TYPES.has(c.type));
  let format: DiskFormat = needsRaw[0] ? "raw" : "qcow2";
  if (disk.format !== undefined) {
    format = enumOf("resourceAllocation.disk.format", disk.format, ["qcow2", "raw"] as const, format);
    if (format === "qcow2" && needsRaw.some(Boolean)) {
      errors.add(
        "resourceAllocation.disk.format",
        "qcow2",
        'block-backed storage pools (e.g. logical, rbd) hold raw volumes only; use "raw" or file-backed pools',
      );
    }
  } else if (needsRaw.some((r) => r !== needsRaw[0])) {
    errors.add(
      "resourceAllocation.disk.storagePools",
      candidates.map((c) => `${c.name}:${c.type}`),
      "mixes file- and block-backed pools, so the disk format would depend on the pick; set format or use pools of one kind",
    );
  }
  if (format === "raw" && props.stateful !== true) {
    errors.add(
      "resourceAllocation.disk.format",
      "raw",
      "raw disks have no copy-on-write overlay to revert, so a stateless pool cannot use them; use file-backed storage pools (qcow2) or set stateful: true",
    );
  }
  if (format === "raw") {
    warnings.push(
      "raw member disks are full copies of the base image: creating and reverting them costs time proportional to the image size",
    );
  }
  const autoSelectTarget = bool("resourceAllocation.disk.autoSelectTarget", disk.autoSelectTarget, false);

  // --- network -----------------------------------------------------------------------------------
  const network = props.network?.network ?? "default";
  if (typeof network !== "string" || !SIMPLE_NAME.test(network))
    errors.add("network.network", network, "must be a libvirt network name");
  const model = enumOf("network.model", props.network?.model, NIC_MODELS, "virtio");

  const deleteProtection = bool("deleteProtection", props.deleteProtection, false);
  const stateful = bool("stateful", props.stateful, false);
  const allowShrink = bool("allowShrink", props.allowShrink, false);
  if (allowShrink && deleteProtection) {
    errors.add(
      "allowShrink",
      true,
      "cannot remove members of a delete-protected pool; turn deleteProtection off first",
    );
  }
  const detached: string[] = [];
  if (props.detached !== undefined && !Array.isArray(props.detached)) {
    errors.add("detached", props.detached, 'must be a list of member names, e.g. ["MyPool-003"]');
  } else {
    const pattern = typeof parsed === "string" ? undefined : memberNamePattern(mask);
    for (const [i, vm] of (props.detached ?? []).entries()) {
      const index = typeof vm === "string" && pattern ? Number(pattern.exec(vm)?.[1] ?? 0) : 0;
      if (typeof vm !== "string" || (pattern && index < 1)) {
        errors.add(`detached[${i}]`, vm, `must be the name of a member of this pool, such as "${memberName(mask, 1)}"`);
      } else if (detached.includes(vm)) {
        errors.add(`detached[${i}]`, vm, "is listed twice; list each detached member once");
      } else detached.push(vm);
    }
  }
  const description = text("description", props.description);
  const comment = text("comment", props.comment);

  if (sizeOk && typeof parsed !== "string") {
    checkPlacement(errors, placement, {
      members: Array.from({ length: props.size }, (_, i) => memberName(mask, i + 1)).filter(
        (vm) => !detached.includes(vm),
      ),
      detached,
      clusterHosts: hostNames,
      allowedHosts: new Set(allowedHosts.map((h) => h.name)),
    });
  }

  errors.throwIfAny(subject);

  return {
    warnings,
    pool: {
      name: props.name,
      mask,
      description,
      comment,
      template: {
        name: t.name,
        version: t.version,
        baseImagePath: t.baseImagePath,
        baseImageFormat,
        diskSizeGiB: t.diskSizeGiB,
        memoryMiB: t.memoryMiB,
        vcpus: t.vcpus,
        operatingSystem: templateOs,
        domainType,
        machine,
        directKernelBoot,
      },
      operatingSystem,
      optimizedFor,
      size: props.size,
      maxVmsInPool,
      prestarted,
      maxVmsPerUser,
      deleteProtection,
      type,
      stateful,
      allowShrink,
      detached,
      initialRun,
      spiceProxy,
      clusterName: trusted?.name ?? plainCluster?.name ?? "default",
      trust: trusted?.settings,
      clusterHosts,
      allowedHosts,
      startRunningOn: runOn === "any" ? "any" : "specific",
      migration: { mode: migrationMode, policy, customDowntimeMs: mig.customDowntimeMs, autoConverge, compression },
      passThroughHostCpu,
      numa,
      storage: { candidates, autoSelectTarget, format },
      network: { network, model },
    },
  };
}

/**
 * A recorded host a member of the plan can no longer have: gone from `cluster.hosts` (Terraform
 * or Pulumi would lose the provider its domain lives on) or, for a managed member, not in
 * `host.startRunningOn` any more. One issue per host, naming its members.
 */
function checkPlacement(
  errors: IssueCollector,
  placement: PoolPlacement,
  plan: {
    readonly members: readonly string[];
    readonly detached: readonly string[];
    readonly clusterHosts: ReadonlySet<string>;
    readonly allowedHosts: ReadonlySet<string>;
  },
): void {
  const gone = new Map<string, string[]>();
  const notAllowed = new Map<string, string[]>();
  const add = (to: Map<string, string[]>, host: string, vm: string) => to.set(host, [...(to.get(host) ?? []), vm]);
  for (const vm of [...plan.members, ...plan.detached]) {
    const host = placement[vm];
    if (host === undefined) continue;
    if (!plan.clusterHosts.has(host)) add(gone, host, vm);
    else if (!plan.detached.includes(vm) && !plan.allowedHosts.has(host)) add(notAllowed, host, vm);
  }
  const names = (vms: readonly string[]) =>
    vms.length <= 6 ? vms.join(", ") : `${vms.slice(0, 5).join(", ")} and ${vms.length - 5} more`;
  for (const [host, vms] of gone) {
    errors.add(
      "cluster.hosts",
      host,
      `is missing, but the placement record (vmpools.placement.json) has members on it: ${names(vms)}; ` +
        `keep host ${host} in cluster.hosts until its members are moved: detach them (vmpools detach, then ` +
        `detached), or lower size with allowShrink`,
    );
  }
  for (const [host, vms] of notAllowed) {
    errors.add(
      "host.startRunningOn.hosts",
      host,
      `is not allowed, but the placement record (vmpools.placement.json) has members on it: ${names(vms)}; ` +
        `keep ${host} in host.startRunningOn while they live there, or detach them, or lower size with allowShrink`,
    );
  }
}
