import type { VmPoolProps } from "../../core";
import type { MemberMetadata } from "../../core/metadata";

/** A small valid pool; tests override one prop at a time. */
export function validProps(overrides: Partial<VmPoolProps> = {}): VmPoolProps {
  return {
    name: "MyPool-???",
    template: {
      name: "debian-12",
      version: 1,
      baseImagePath: "/var/lib/libvirt/images/debian-12.qcow2",
      diskSizeGiB: 10,
      memoryMiB: 1024,
      vcpus: 2,
    },
    size: 10,
    ...overrides,
  };
}

/** Member metadata as the constructs write it, for driver tests; tests override what they check. */
export function memberMetadataFixture(overrides: Partial<MemberMetadata> = {}): MemberMetadata {
  return {
    pool: "FixturePool",
    cluster: "local",
    index: 1,
    templateName: "tiny",
    templateVersion: 2,
    baseImagePath: "/var/lib/libvirt/images/tiny.qcow2",
    baseImageFormat: "qcow2",
    diskFormat: "qcow2",
    type: "automatic",
    stateful: false,
    prestarted: 1,
    maxVmsPerUser: 1,
    deleteProtection: false,
    spiceProxy: "http://proxy:3128",
    allowedHosts: ["h1"],
    migrationMode: "migratable",
    migrationPolicy: "legacy",
    autoConverge: "inherit",
    compression: "inherit",
    ...overrides,
  };
}

/** The Windows example's secrets, as its environment variables name them (examples/windows-server-pool.props.ts). */
export interface WindowsSecrets {
  readonly domainPassword: string;
  readonly adminPassword: string;
  readonly productKey: string;
}

/** Runs `fn` with the Windows example's secrets in the environment, as a real stack's would be, then restores it. */
export function withWindowsSecrets<T>(secrets: WindowsSecrets, fn: () => T): T {
  const saved = { ...process.env };
  Object.assign(process.env, {
    VMPOOLS_DOMAIN_PASSWORD: secrets.domainPassword,
    VMPOOLS_ADMIN_PASSWORD: secrets.adminPassword,
    VMPOOLS_PRODUCT_KEY: secrets.productKey,
  });
  try {
    return fn();
  } finally {
    process.env = saved;
  }
}

/** A valid pool that uses every setting which shapes a member's resources (schema conformance tests). */
export function everySettingProps(): VmPoolProps {
  return validProps({
    description: "d",
    comment: "c",
    deleteProtection: true,
    cluster: { hosts: [{ name: "h1", uri: "qemu+ssh://h1/system" }] },
    template: {
      ...validProps().template,
      machine: "q35",
      directKernelBoot: { kernelPath: "/boot/vmlinuz", initrdPath: "/boot/initrd.img", cmdline: "console=ttyS0" },
    },
    host: {
      startRunningOn: { hosts: ["h1"] },
      migration: { mode: "none" },
      passThroughHostCpu: true,
      numa: { nodeCount: 2, tuneMode: "strict", pinning: [{ virtualNode: 0, hostNodes: [0] }] },
    },
    resourceAllocation: { disk: { storagePools: [{ name: "a" }, { name: "b" }], autoSelectTarget: true } },
    console: { spiceProxy: "http://proxy:3128" },
    initialRun: { cloudInit: { packages: ["htop"], networkConfig: "version: 2" } },
  });
}
