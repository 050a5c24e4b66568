import fc from "fast-check";
import { homeHost, parseMetadataXml, planPool, METADATA_NAMESPACE, describePlan, type VmPlan } from "../../core";
import { validProps } from "../support/fixtures";

const media = (m: VmPlan) => {
  if (m.configMedia?.kind !== "cloud-init") throw new Error("expected cloud-init media");
  return m.configMedia.media;
};
const hosts = (n: number) =>
  Array.from({ length: n }, (_, i) => ({ name: `h${i + 1}`, uri: `qemu+ssh://h${i + 1}/system` }));

describe("planPool", () => {
  it("is deterministic", () => {
    expect(JSON.stringify(planPool(validProps()))).toBe(JSON.stringify(planPool(validProps())));
  });

  it("raising size only appends members; existing ones are unchanged", () => {
    const small = planPool(validProps({ size: 10, cluster: { hosts: hosts(3) } }));
    const big = planPool(validProps({ size: 25, cluster: { hosts: hosts(3) } }));
    // Byte-identical, metadata included: raising size plans no update of an existing member.
    expect(big.members.slice(0, 10)).toEqual(small.members);
    expect(big.members.map((m) => m.index)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
  });

  it("each member has a qcow2 overlay on the template's base image and its own cloud-init media", () => {
    const plan = planPool(validProps());
    const [first, second] = plan.members;
    expect(first!.disks[0]).toEqual({
      role: "system",
      volumeName: "MyPool-001.qcow2",
      device: "disk",
      bus: "virtio",
      targetDev: "vda",
      format: "qcow2",
      readOnly: false,
      bootOrder: 1,
      capacityGiB: 10,
      backingStore: { path: "/var/lib/libvirt/images/debian-12.qcow2", format: "qcow2" },
    });
    expect(first!.disks[1]).toMatchObject({
      role: "config",
      device: "cdrom",
      readOnly: true,
      volumeName: "MyPool-001-cloud-init.iso",
    });
    expect(media(first!).metaData).toBe("instance-id: MyPool-001.debian-12-v1\nlocal-hostname: mypool-001\n");
    expect(media(second!).metaData).toContain("local-hostname: mypool-002");
    expect(media(first!).userData).toMatch(/^#cloud-config\nhostname: mypool-001\n/);
    const ids = plan.members.map((m) => media(m).metaData);
    expect(new Set(ids).size).toBe(plan.members.length);
  });

  it("raw storage makes full copies instead of overlays", () => {
    const plan = planPool(
      validProps({
        stateful: true,
        resourceAllocation: { disk: { storagePools: [{ name: "vg0", type: "logical" }] } },
      }),
    );
    expect(plan.members[0]!.disks[0]).toMatchObject({
      format: "raw",
      volumeName: "MyPool-001.img",
      copyOf: "/var/lib/libvirt/images/debian-12.qcow2",
    });
    expect(plan.members[0]!.disks[0]!.backingStore).toBeUndefined();
  });

  it("metadata carries the pool policy and parses back", () => {
    const plan = planPool(
      validProps({
        type: "automatic",
        prestarted: 2,
        maxVmsPerUser: 3,
        stateful: true,
        console: { spiceProxy: "http://proxy:3128" },
        host: { migration: { policy: "legacy", autoConverge: "on", customDowntimeMs: 300 } },
        description: 'quotes " & <tags>',
      }),
    );
    const m = plan.members[4]!;
    expect(m.metadataXml).toContain(`xmlns:vmpools="${METADATA_NAMESPACE}"`);
    expect(parseMetadataXml(m.metadataXml)).toEqual(m.metadata);
    expect(m.metadata).toMatchObject({
      pool: "MyPool-???",
      index: 5,
      templateName: "debian-12",
      templateVersion: 1,
      type: "automatic",
      stateful: true,
      prestarted: 2,
      maxVmsPerUser: 3,
      spiceProxy: "http://proxy:3128",
      migrationPolicy: "legacy",
      migrationDowntimeMs: 300,
      autoConverge: "on",
      compression: "inherit",
    });
    expect(m.oemStrings).toEqual([
      "vmpools:pool=MyPool-???",
      "vmpools:template=debian-12",
      "vmpools:template-version=1",
    ]);
  });

  it("first `prestarted` members are the prestart candidates", () => {
    const plan = planPool(validProps({ prestarted: 3 }));
    expect(plan.members.filter((m) => m.prestartCandidate).map((m) => m.name)).toEqual([
      "MyPool-001",
      "MyPool-002",
      "MyPool-003",
    ]);
  });

  it("NUMA: vCPUs and memory split over the nodes, pinning becomes memnodes", () => {
    const plan = planPool(
      validProps({
        template: { ...validProps().template, vcpus: 5, memoryMiB: 3001 },
        cluster: { hosts: hosts(2) },
        host: {
          startRunningOn: { hosts: ["h1"] },
          numa: { nodeCount: 2, tuneMode: "strict", pinning: [{ virtualNode: 1, hostNodes: [1, 0] }] },
        },
      }),
    );
    const m = plan.members[0]!;
    expect(m.numaCells).toEqual([
      { cpus: "0-2", memoryMiB: 1501 },
      { cpus: "3-4", memoryMiB: 1500 },
    ]);
    expect(m.numaTune).toEqual({
      mode: "strict",
      nodeset: "0,1",
      memNodes: [{ cellId: 1, mode: "strict", nodeset: "0,1" }],
    });
  });

  it("summary names members, disks and prestart picks", () => {
    const text = describePlan(planPool(validProps({ prestarted: 2 })));
    expect(text).toContain("Pool MyPool-???: 10 members (MyPool-001 … MyPool-010)");
    expect(text).toMatch(/MyPool-002 .*vda=MyPool-002.qcow2 sda=MyPool-002-cloud-init.iso {2}\[prestart\]/);
    expect(text).toContain("prestarted: 2 kept up and idle");
  });
});

describe("placement (rendezvous hashing)", () => {
  it("spreads members over the allowed hosts", () => {
    const plan = planPool(validProps({ name: "P-???", size: 300, cluster: { hosts: hosts(3) } }));
    const counts = new Map<string, number>();
    for (const m of plan.members) counts.set(m.host.name, (counts.get(m.host.name) ?? 0) + 1);
    expect([...counts.keys()].sort()).toEqual(["h1", "h2", "h3"]);
    for (const n of counts.values()) expect(n).toBeGreaterThan(60);
  });

  it("does not depend on host order, and adding a host only moves members to the new host", () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[A-Za-z0-9-]{1,20}$/), fc.integer({ min: 1, max: 6 }), (name, n) => {
        const before = hosts(n);
        const after = hosts(n + 1);
        const a = homeHost(name, before);
        expect(homeHost(name, [...before].reverse())).toEqual(a);
        const b = homeHost(name, after);
        expect(b.name === a.name || b.name === `h${n + 1}`).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});
