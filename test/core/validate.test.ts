import { PoolSpecError, planPool, type VmPoolProps } from "../../core";
import { validProps } from "../support/fixtures";

/** Expects planPool to reject props with an issue on `prop` whose message matches. */
function rejects(props: VmPoolProps, prop: string, message: RegExp): PoolSpecError {
  let caught: unknown;
  try {
    planPool(props, "VmPool stack/MyPool");
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(PoolSpecError);
  const err = caught as PoolSpecError;
  const issue = err.issues.find((i) => i.prop === prop);
  expect(issue).toBeDefined();
  expect(issue!.message).toMatch(message);
  // The whole message names the construct, the prop and the value.
  expect(err.message).toContain("VmPool stack/MyPool");
  expect(err.message).toContain(`${prop} = `);
  return err;
}

const t = validProps().template;

describe("pool validation", () => {
  it("accepts the valid fixture and applies documented defaults", () => {
    const { pool } = planPool(validProps());
    expect(pool).toMatchObject({
      maxVmsInPool: 1000,
      prestarted: 0,
      maxVmsPerUser: 1,
      type: "automatic",
      stateful: false,
      deleteProtection: false,
      optimizedFor: "desktop",
      operatingSystem: "linux",
      startRunningOn: "any",
      migration: { mode: "manual-and-automatic", autoConverge: "inherit", compression: "inherit" },
      storage: { format: "qcow2", autoSelectTarget: false, candidates: [{ name: "default", type: "dir" }] },
      network: { network: "default", model: "virtio" },
    });
    expect(pool.clusterHosts).toEqual([{ name: "localhost", uri: "qemu:///system" }]);
  });

  describe("name and size", () => {
    it("a count that does not fit the mask is an error, never widened", () => {
      const err = rejects(
        validProps({ name: "Pool-??", size: 100 }),
        "size",
        /does not fit the name mask "Pool-\?\?" \(at most 99 members\); use \?\?\? /,
      );
      expect(err.message).toContain("size = 100");
    });
    it("every VM name is at most 64 characters", () => {
      rejects(
        validProps({ name: `${"a".repeat(61)}-???`, size: 5 }),
        "name",
        /is 65 characters; VM names are at most 64/,
      );
      expect(planPool(validProps({ name: `${"a".repeat(60)}-???`, size: 5 })).members[4]!.name).toHaveLength(64);
      rejects(
        validProps({ name: "a".repeat(62), size: 10 }),
        "name",
        /"a{62}-10" is 65 characters.*shorten the pool name by 1/,
      );
      expect(() => planPool(validProps({ name: "a".repeat(61), size: 10 }))).not.toThrow();
    });
    it.each([0, -1, 1.5, 1001])("size %p outside 1..maxVmsInPool", (size) => {
      rejects(validProps({ size }), "size", /integer from 1 to 1000; raise maxVmsInPool/);
    });
    it("maxVmsInPool is configurable like MaxVmsInPool", () => {
      expect(planPool(validProps({ name: "P-????", size: 1500, maxVmsInPool: 2000 })).members).toHaveLength(1500);
      rejects(validProps({ size: 20, maxVmsInPool: 10 }), "size", /from 1 to 10/);
      rejects(validProps({ maxVmsInPool: 0 }), "maxVmsInPool", /integer >= 1/);
    });
    it("bad pool names", () => {
      rejects(validProps({ name: "My Pool" }), "name", /letters, digits/);
      rejects(validProps({ name: "a??-??" }), "name", /single run/);
    });
  });

  describe("pool settings", () => {
    it("prestarted is 0..size and only for automatic pools", () => {
      rejects(validProps({ prestarted: 11 }), "prestarted", /from 0 to 10; it cannot exceed size/);
      rejects(validProps({ prestarted: -1 }), "prestarted", /from 0 to 10/);
      rejects(
        validProps({ prestarted: 2, type: "manual" }),
        "prestarted",
        /only automatic pools can have prestarted VMs/,
      );
      expect(planPool(validProps({ prestarted: 10 })).pool.prestarted).toBe(10);
    });
    it("maxVmsPerUser is 1..32767", () => {
      rejects(validProps({ maxVmsPerUser: 0 }), "maxVmsPerUser", /from 1 to 32767/);
      rejects(validProps({ maxVmsPerUser: 32768 }), "maxVmsPerUser", /from 1 to 32767/);
      expect(planPool(validProps({ maxVmsPerUser: 32767 })).pool.maxVmsPerUser).toBe(32767);
    });
    it("enums name the allowed values", () => {
      rejects(validProps({ type: "semi" as never }), "type", /"automatic", "manual"/);
      rejects(
        validProps({ optimizedFor: "gaming" as never }),
        "optimizedFor",
        /"desktop", "server", "high-performance"/,
      );
      rejects(validProps({ operatingSystem: "windows-xp" as never }), "operatingSystem", /"linux", "windows-10"/);
      rejects(validProps({ network: { model: "ne2k" } }), "network.model", /"virtio"/);
    });
    it("booleans must be booleans", () => {
      rejects(validProps({ stateful: "yes" as never }), "stateful", /true or false/);
      rejects(validProps({ deleteProtection: 1 as never }), "deleteProtection", /true or false/);
    });
    it("high-performance gives a warning, not an error", () => {
      const plan = planPool(validProps({ optimizedFor: "high-performance" }));
      expect(plan.warnings.join()).toMatch(/not recommended for pools.*pinned to one host/);
    });
    it("allowShrink cannot be combined with delete protection", () => {
      rejects(validProps({ allowShrink: true, deleteProtection: true }), "allowShrink", /turn deleteProtection off/);
    });
    it("SPICE proxy must be protocol://host:port", () => {
      for (const ok of ["http://proxy.example.com:3128", "https://10.0.0.1:443", "http://[fd00::1]:8080"]) {
        expect(planPool(validProps({ console: { spiceProxy: ok } })).pool.spiceProxy).toBe(ok);
      }
      for (const bad of ["proxy:3128", "http://proxy", "http://proxy:0", "http://proxy:70000", "http://pro xy:80"]) {
        rejects(validProps({ console: { spiceProxy: bad } }), "console.spiceProxy", /protocol:\/\/host:port/);
      }
    });
  });

  describe("template", () => {
    it.each([
      ["version", { version: 0 }, "template.version", /integer >= 1/],
      ["relative base image", { baseImagePath: "base.qcow2" }, "template.baseImagePath", /absolute path/],
      ["disk size", { diskSizeGiB: 0 }, "template.diskSizeGiB", /from 1 to 65536/],
      ["memory", { memoryMiB: 32 }, "template.memoryMiB", /from 64 .*MiB/],
      ["vcpus", { vcpus: 0 }, "template.vcpus", /from 1 to 1024/],
      ["name", { name: "deb 12" }, "template.name", /letters, digits/],
      ["base format", { baseImageFormat: "vmdk" as never }, "template.baseImageFormat", /"qcow2", "raw"/],
      ["domain type", { domainType: "xen" as never }, "template.domainType", /"kvm", "qemu"/],
    ])("%s", (_, change, prop, message) => {
      rejects(validProps({ template: { ...t, ...change } }), prop, message);
    });
    it("all problems are reported together", () => {
      let err: PoolSpecError | undefined;
      try {
        planPool(validProps({ size: 0, template: { ...t, vcpus: 0, memoryMiB: 1 } }));
      } catch (e) {
        err = e as PoolSpecError;
      }
      expect(err?.issues.map((i) => i.prop).sort()).toEqual(["size", "template.memoryMiB", "template.vcpus"]);
    });
  });

  describe("host settings", () => {
    const cluster = {
      hosts: [
        { name: "h1", uri: "qemu+ssh://root@h1/system" },
        { name: "h2", uri: "qemu+ssh://root@h2/system" },
      ],
    };
    it("startRunningOn names cluster hosts", () => {
      rejects(
        validProps({ cluster, host: { startRunningOn: { hosts: ["h3"] } } }),
        "host.startRunningOn.hosts",
        /not a cluster host; known hosts: "h1", "h2"/,
      );
      rejects(
        validProps({ cluster, host: { startRunningOn: { hosts: [] } } }),
        "host.startRunningOn",
        /at least one cluster host/,
      );
      const plan = planPool(validProps({ cluster, host: { startRunningOn: { hosts: ["h2"] } } }));
      expect(new Set(plan.members.map((m) => m.host.name))).toEqual(new Set(["h2"]));
    });
    it("cluster hosts are unique with libvirt URIs", () => {
      rejects(
        validProps({ cluster: { hosts: [cluster.hosts[0]!, cluster.hosts[0]!] } }),
        "cluster.hosts[1].name",
        /listed twice/,
      );
      rejects(validProps({ cluster: { hosts: [{ name: "h1", uri: "h1" }] } }), "cluster.hosts[0].uri", /libvirt URI/);
      rejects(validProps({ cluster: { hosts: [] } }), "cluster.hosts", /at least one host/);
    });
    it("auto-converge and compression only with the legacy policy", () => {
      rejects(
        validProps({ host: { migration: { autoConverge: "on" } } }),
        "host.migration.autoConverge",
        /only applies with the legacy migration policy/,
      );
      rejects(
        validProps({ host: { migration: { policy: "minimal-downtime", compression: "off" } } }),
        "host.migration.compression",
        /legacy/,
      );
      const ok = planPool(
        validProps({
          host: { migration: { policy: "legacy", autoConverge: "on", compression: "off", customDowntimeMs: 500 } },
        }),
      );
      expect(ok.pool.migration).toMatchObject({
        policy: "legacy",
        autoConverge: "on",
        compression: "off",
        customDowntimeMs: 500,
      });
    });
    it("migration values are checked", () => {
      rejects(
        validProps({ host: { migration: { mode: "sometimes" as never } } }),
        "host.migration.mode",
        /"manual-and-automatic", "manual-only", "none"/,
      );
      rejects(
        validProps({ host: { migration: { customDowntimeMs: -5 } } }),
        "host.migration.customDowntimeMs",
        /0 uses the hypervisor default/,
      );
      rejects(
        validProps({ host: { migration: { mode: "none", policy: "legacy" } } }),
        "host.migration",
        /no effect when migration mode is "none"/,
      );
    });
    it("pass-through host CPU only when migration is not allowed", () => {
      rejects(
        validProps({ host: { passThroughHostCpu: true } }),
        "host.passThroughHostCpu",
        /needs host.migration.mode "none"/,
      );
      const plan = planPool(validProps({ host: { passThroughHostCpu: true, migration: { mode: "none" } } }));
      expect(plan.members[0]!.cpuMode).toBe("host-passthrough");
    });
    it("NUMA: preferred ⇒ one node, counts and pinning checked", () => {
      rejects(
        validProps({ host: { numa: { nodeCount: 2, tuneMode: "preferred" } } }),
        "host.numa.nodeCount",
        /must be 1 when tuneMode is "preferred"/,
      );
      rejects(
        validProps({ host: { numa: { nodeCount: 3 } } }),
        "host.numa.nodeCount",
        /from 1 to 2; each virtual NUMA node needs at least one vCPU/,
      );
      rejects(
        validProps({ host: { numa: { nodeCount: 1, tuneMode: "loose" as never } } }),
        "host.numa.tuneMode",
        /"strict", "preferred", "interleave"/,
      );
      const pinned = (pinning: { virtualNode: number; hostNodes: number[] }[]) =>
        validProps({
          cluster,
          host: { startRunningOn: { hosts: ["h1"] }, numa: { nodeCount: 2, tuneMode: "strict", pinning } },
        });
      rejects(pinned([{ virtualNode: 2, hostNodes: [0] }]), "host.numa.pinning[0].virtualNode", /from 0 to 1/);
      rejects(pinned([{ virtualNode: 0, hostNodes: [] }]), "host.numa.pinning[0].hostNodes", /host NUMA node numbers/);
      rejects(
        pinned([
          { virtualNode: 0, hostNodes: [0] },
          { virtualNode: 0, hostNodes: [1] },
        ]),
        "host.numa.pinning[1].virtualNode",
        /pinned twice/,
      );
      rejects(
        validProps({ host: { numa: { nodeCount: 1, pinning: [{ virtualNode: 0, hostNodes: [0] }] } } }),
        "host.numa.pinning",
        /set host.startRunningOn to the specific hosts/,
      );
    });
  });

  describe("disk allocation", () => {
    it("block-backed pools need raw; mixing kinds needs an explicit format", () => {
      rejects(
        validProps({
          resourceAllocation: { disk: { storagePools: [{ name: "vg", type: "logical" }], format: "qcow2" } },
        }),
        "resourceAllocation.disk.format",
        /raw volumes only/,
      );
      rejects(
        validProps({
          resourceAllocation: { disk: { storagePools: [{ name: "a" }, { name: "vg", type: "logical" }] } },
        }),
        "resourceAllocation.disk.storagePools",
        /mixes file- and block-backed pools/,
      );
      const ceph = { resourceAllocation: { disk: { storagePools: [{ name: "ceph", type: "rbd" }] } } };
      rejects(validProps(ceph), "resourceAllocation.disk.format", /no copy-on-write overlay to revert.*stateful: true/);
      const raw = planPool(validProps({ ...ceph, stateful: true }));
      expect(raw.pool.storage.format).toBe("raw");
      expect(raw.warnings.join()).toMatch(/full copies/);
    });
    it("storage pools are known types with unique names", () => {
      rejects(
        validProps({ resourceAllocation: { disk: { storagePools: [{ name: "a", type: "ftp" }] } } }),
        "resourceAllocation.disk.storagePools[0].type",
        /libvirt pool type/,
      );
      rejects(
        validProps({ resourceAllocation: { disk: { storagePools: [{ name: "a" }, { name: "a" }] } } }),
        "resourceAllocation.disk.storagePools[1].name",
        /listed twice/,
      );
      rejects(
        validProps({ resourceAllocation: { disk: { storagePools: [] } } }),
        "resourceAllocation.disk.storagePools",
        /at least one/,
      );
    });
  });

  it("direct kernel boot needs absolute host paths; detached names must be distinct members", () => {
    rejects(
      validProps({ template: { ...t, directKernelBoot: { kernelPath: "vmlinuz" } } }),
      "template.directKernelBoot.kernelPath",
      /absolute path on the hosts/,
    );
    rejects(
      validProps({ template: { ...t, directKernelBoot: { kernelPath: "/k", initrdPath: "initrd" } } }),
      "template.directKernelBoot.initrdPath",
      /absolute path/,
    );
    const boot = planPool(
      validProps({ template: { ...t, directKernelBoot: { kernelPath: "/k", initrdPath: "/i", cmdline: "quiet" } } }),
    );
    expect(boot.members[0]!.directKernelBoot).toEqual({ kernelPath: "/k", initrdPath: "/i", cmdline: "quiet" });
    expect(planPool(validProps()).members[0]!.directKernelBoot).toBeUndefined();

    rejects(validProps({ detached: ["MyPool-1"] }), "detached[0]", /member of this pool, such as "MyPool-001"/);
    rejects(validProps({ detached: ["MyPool-002", "MyPool-002"] }), "detached[1]", /listed twice/);
    const plan = planPool(validProps({ size: 3, detached: ["MyPool-002", "MyPool-009"] }));
    expect(plan.members.map((m) => m.name)).toEqual(["MyPool-001", "MyPool-003"]);
    // Every detached member has resources to forget, also one above the size (shrunk since).
    expect(plan.detached.map((m) => m.name)).toEqual(["MyPool-002", "MyPool-009"]);
    rejects(
      validProps({ template: { ...t, directKernelBoot: null as never } }),
      "template.directKernelBoot",
      /must be \{ kernelPath, initrdPath\?, cmdline\? \}/,
    );
  });

  it("cloud-init is for Linux pools only", () => {
    rejects(
      validProps({ operatingSystem: "windows-11", initialRun: { cloudInit: {} } }),
      "initialRun.cloudInit",
      /sysprep/,
    );
  });
});
