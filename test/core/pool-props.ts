// Generated pool props for property tests: every setting that shapes a member domain (disk
// format, media kind and device, NUMA, CPU, hosts, boot, network, description, protection).
import fc from "fast-check";
import { planPool, SysprepConfig, type VmPoolProps } from "../../core";

const word = fc.stringMatching(/^[A-Za-z][A-Za-z0-9]{0,7}$/);
/** Free text with the characters XML and JSON must escape. */
const text = fc.string({
  unit: fc.constantFrom("a", "Z", " ", "<", ">", "&", '"', "'", "\n", "é", "\\"),
  maxLength: 12,
});

const hostsArb = fc
  .integer({ min: 1, max: 3 })
  .map((n) => Array.from({ length: n }, (_, i) => ({ name: `h${i + 1}`, uri: `qemu+ssh://root@h${i + 1}/system` })));

export const poolPropsArb: fc.Arbitrary<VmPoolProps> = fc
  .record({
    name: word.map((w) => `${w}-??`),
    size: fc.integer({ min: 1, max: 4 }),
    description: text,
    comment: text,
    vcpus: fc.integer({ min: 1, max: 4 }),
    memoryMiB: fc.integer({ min: 256, max: 8192 }),
    version: fc.integer({ min: 1, max: 9 }),
    domainType: fc.constantFrom(undefined, "kvm" as const, "qemu" as const),
    machine: fc.constantFrom(undefined, "q35", "pc"),
    baseImageFormat: fc.constantFrom(undefined, "qcow2" as const, "raw" as const),
    raw: fc.boolean(),
    stateful: fc.boolean(),
    deleteProtection: fc.boolean(),
    hosts: fc.option(hostsArb, { nil: undefined }),
    pinHosts: fc.boolean(),
    passThrough: fc.boolean(),
    numa: fc.option(
      fc.record({
        nodeCount: fc.integer({ min: 1, max: 4 }),
        tuneMode: fc.constantFrom("strict" as const, "preferred" as const, "interleave" as const),
        pinned: fc.boolean(),
      }),
      { nil: undefined },
    ),
    kernel: fc.option(fc.record({ initrd: fc.boolean(), cmdline: text }), { nil: undefined }),
    media: fc.constantFrom("cloud-init", "cloud-init-config", "sysprep-cdrom", "sysprep-floppy"),
    network: fc.option(fc.record({ network: word, model: fc.constantFrom("virtio", "e1000") }), { nil: undefined }),
    spiceProxy: fc.option(fc.constantFrom("http://proxy:3128", "https://p.example.com:443"), { nil: undefined }),
    detachFirst: fc.boolean(),
  })
  .map((g): VmPoolProps => {
    const windows = g.media.startsWith("sysprep");
    const hostNames = (g.hosts ?? [{ name: "localhost" }]).map((h) => h.name);
    const specific = g.pinHosts || (g.numa?.pinned ?? false);
    const nodeCount = Math.min(g.numa?.nodeCount ?? 1, g.vcpus);
    return {
      name: g.name,
      size: g.size,
      description: g.description,
      comment: g.comment,
      stateful: g.stateful || g.raw,
      deleteProtection: g.deleteProtection,
      detached: g.detachFirst && g.size > 1 ? [`${g.name.slice(0, -2)}01`] : undefined,
      template: {
        name: "tpl",
        version: g.version,
        baseImagePath: "/var/lib/libvirt/images/base.img",
        baseImageFormat: g.baseImageFormat,
        diskSizeGiB: 20,
        memoryMiB: g.memoryMiB,
        vcpus: g.vcpus,
        domainType: g.domainType,
        machine: g.media === "sysprep-floppy" ? "pc" : g.machine,
        operatingSystem: windows ? "windows-server-2022" : "linux",
        directKernelBoot: g.kernel && {
          kernelPath: "/boot/vmlinuz",
          initrdPath: g.kernel.initrd ? "/boot/initrd.img" : undefined,
          cmdline: g.kernel.cmdline,
        },
      },
      cluster: g.hosts && { hosts: g.hosts },
      host: {
        startRunningOn: specific ? { hosts: hostNames.slice(0, 1) } : "any",
        migration: g.passThrough ? { mode: "none" } : undefined,
        passThroughHostCpu: g.passThrough,
        numa: g.numa && {
          nodeCount: g.numa.tuneMode === "preferred" ? 1 : nodeCount,
          tuneMode: g.numa.tuneMode,
          pinning: g.numa.pinned ? [{ virtualNode: 0, hostNodes: [1, 0] }] : undefined,
        },
      },
      resourceAllocation: g.raw ? { disk: { storagePools: [{ name: "lvm", type: "logical" }] } } : undefined,
      network: g.network,
      console: { spiceProxy: g.spiceProxy },
      initialRun: windows
        ? {
            sysprep: new SysprepConfig({
              media: g.media === "sysprep-floppy" ? "floppy" : "cdrom",
              localAdministrator: { password: "test-only-Adm1n!" },
            }),
          }
        : g.media === "cloud-init-config"
          ? { cloudInit: { packages: ["htop"], networkConfig: "version: 2" } }
          : undefined,
    };
  })
  .filter((props) => {
    try {
      planPool(props);
      return true;
    } catch {
      return false;
    }
  });

/** The same `count` props on every run (a fixed seed), for byte-for-byte snapshots. */
export const samplePoolProps = (count: number): VmPoolProps[] => fc.sample(poolPropsArb, { numRuns: count, seed: 9 });
