import { execFile } from "node:child_process";
import { Testing, TerraformStack } from "cdktf";
import { Construct } from "constructs";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { VmPool, synthStack } from "../../../engines/cdktf";
import { PoolSpecError, type VmPoolProps } from "../../../core";
import { LinuxDesktopPoolStack } from "../../../examples/linux-desktop-pool";
import { schemaProblems } from "../../support/schema-check";
import { everySettingProps, validProps } from "../../support/fixtures";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function synth(props: VmPoolProps): { json: Json; pool: VmPool } {
  const app = Testing.app();
  const stack = new TerraformStack(app, "test");
  const pool = new VmPool(stack, "MyPool", props);
  return { json: JSON.parse(synthStack(stack)), pool };
}
const byName = (group: Json) => Object.fromEntries(Object.values(group).map((r: Json) => [r.name, r]));

describe("VmPool (cdktf)", () => {
  it("renders a volume, cloud-init media and a domain per member", () => {
    const { json } = synth(validProps());
    expect(Object.keys(json.resource.libvirt_domain)).toHaveLength(10);
    // 10 overlays, 10 cloud-init images and the pool's policy volume; no provider-built media.
    expect(Object.keys(json.resource.libvirt_volume)).toHaveLength(21);
    expect(json.resource.libvirt_cloudinit_disk).toBeUndefined();
    const domains = byName(json.resource.libvirt_domain);
    // Readable, stable resource names for plan review (and for `removed` blocks).
    expect(Object.keys(json.resource.libvirt_domain)).toContain("MyPool_MyPool-003_domain");
    expect(Object.keys(json.resource.libvirt_volume)).toEqual(
      expect.arrayContaining(["MyPool_MyPool-003_system", "MyPool_MyPool-003_media", "MyPool_policy_host_localhost"]),
    );
    expect(Object.keys(domains).sort()).toEqual(
      Array.from({ length: 10 }, (_, i) => `MyPool-${String(i + 1).padStart(3, "0")}`),
    );

    const volumes = byName(json.resource.libvirt_volume);
    expect(volumes["MyPool-003.qcow2"]).toMatchObject({
      pool: "default",
      capacity: 10,
      capacity_unit: "GiB",
      target: { format: { type: "qcow2" } },
      backing_store: { path: "/var/lib/libvirt/images/debian-12.qcow2", format: { type: "qcow2" } },
    });
    // Our own NoCloud image, uploaded from an absolute path (the provider resolves relative ones
    // against its own working directory).
    const isoVolume = volumes["MyPool-003-cloud-init.iso"];
    expect(isoVolume.create.content.url).toMatch(
      /^\$\{abspath\(path\.module\)\}\/assets\/vmpools\.uploads\/MyPool\/MyPool-003-cloud-init\.iso$/,
    );

    const d = domains["MyPool-003"];
    expect(d).toMatchObject({
      type: "kvm",
      memory: 1024,
      memory_unit: "MiB",
      vcpu: 2,
      running: false,
      features: { acpi: true },
    });
    expect(d.devices.disks[0]).toMatchObject({
      device: "disk",
      target: { dev: "vda", bus: "virtio" },
      boot: { order: 1 },
    });
    expect(d.devices.disks[0].source.volume.volume).toBe("${libvirt_volume.MyPool_MyPool-003_system.name}");
    expect(d.devices.disks[1]).toMatchObject({ device: "cdrom", read_only: true, target: { bus: "sata" } });
    expect(d.devices.interfaces).toEqual([{ source: { network: { network: "default" } }, model: { type: "virtio" } }]);
    expect(d.devices.graphics[0].spice).toMatchObject({
      auto_port: true,
      passwd: "${sensitive(uuid())}",
      passwd_valid_to: "1970-01-01T00:00:00",
    });
    expect(d.devices.serials).toEqual([{ target: { port: 0 } }]);
    expect(d.devices.consoles).toEqual([{ target: { type: "serial", port: 0 } }]);
    expect(d.metadata.xml).toContain(
      '<vmpools:member xmlns:vmpools="https://vmpools.dev/xmlns/pool/1" pool="MyPool-???" cluster="default" index="3">',
    );
    expect(d.sys_info[0].smbios.oem_strings.entry).toContain("vmpools:template-version=1");
    expect(d.provider).toBe("libvirt.host_localhost");
  });

  it("pins dmacvicar/libvirt to exactly 0.9.7 and configures one provider per host", () => {
    const { json } = synth(
      validProps({
        cluster: {
          hosts: [
            { name: "h1", uri: "qemu+ssh://root@h1/system" },
            { name: "h2", uri: "qemu+ssh://root@h2/system" },
          ],
        },
      }),
    );
    expect(json.terraform.required_providers.libvirt).toEqual({
      source: "registry.terraform.io/dmacvicar/libvirt",
      version: "0.9.7",
    });
    expect(json.provider.libvirt).toEqual([
      { alias: "host_h1", uri: "qemu+ssh://root@h1/system" },
      { alias: "host_h2", uri: "qemu+ssh://root@h2/system" },
    ]);
    const providers = new Set(Object.values<Json>(json.resource.libvirt_domain).map((d) => d.provider));
    expect(providers).toEqual(new Set(["libvirt.host_h1", "libvirt.host_h2"]));
    expect(Object.keys(json.data.external)).toHaveLength(2);
  });

  it("members are creation-time; the policy is a volume replaced when the policy changes", () => {
    const { json } = synth(validProps());
    // The provider's update of a domain powers it off: Terraform must never update a member.
    for (const d of Object.values<Json>(json.resource.libvirt_domain)) expect(d.lifecycle.ignore_changes).toBe("all");
    for (const v of Object.values<Json>(json.resource.libvirt_volume)) expect(v.lifecycle.ignore_changes).toBe("all");
    const policy = json.resource.libvirt_volume.MyPool_policy_host_localhost;
    expect(policy).toMatchObject({
      name: "MyPool-###@localhost.vmpools-policy.xml",
      pool: "default",
      provider: "libvirt.host_localhost",
      lifecycle: { replace_triggered_by: ["terraform_data.MyPool_policy_revision"] },
    });
    expect(policy.create.content.url).toMatch(/^\$\{abspath\(path\.module\)\}\/assets\/.*\.xml$/);
    const revision = json.resource.terraform_data.MyPool_policy_revision;
    expect(revision.input.policy_sha256).toMatch(/^[0-9a-f]{64}$/);

    // A policy edit changes only the revision; a template edit changes nothing that Terraform
    // would act on for existing members (they ignore all changes).
    const edited = synth(validProps({ prestarted: 1, maxVmsPerUser: 3, description: "new" })).json;
    expect(edited.resource.terraform_data.MyPool_policy_revision.input.policy_sha256).not.toBe(
      revision.input.policy_sha256,
    );
    const template = synth(validProps({ template: { ...validProps().template, version: 2, memoryMiB: 2048 } })).json;
    expect(template.resource.terraform_data.MyPool_policy_revision.input.policy_sha256).not.toBe(
      revision.input.policy_sha256,
    );
  });

  it("detached members leave Terraform's management without being destroyed", () => {
    const { json, pool } = synth(validProps({ detached: ["MyPool-002"] }));
    expect(pool.plan.members.map((m) => m.name)).not.toContain("MyPool-002");
    expect(Object.keys(json.resource.libvirt_domain)).not.toContain("MyPool_MyPool-002_domain");
    expect(json.removed).toEqual([
      { from: "libvirt_domain.MyPool_MyPool-002_domain", lifecycle: { destroy: false } },
      { from: "libvirt_volume.MyPool_MyPool-002_system", lifecycle: { destroy: false } },
      { from: "libvirt_volume.MyPool_MyPool-002_media", lifecycle: { destroy: false } },
    ]);
    // The probe does not count the detached VM (it keeps its name) as a member.
    expect(Object.values<Json>(json.data.external)[0]!.query.detached).toBe("MyPool-002");
    // Detached and shrunk in one deploy: still forgotten, never destroyed.
    const shrunk = synth(validProps({ size: 6, detached: ["MyPool-007"] })).json;
    expect(shrunk.removed.map((r: Json) => r.from)).toEqual([
      "libvirt_domain.MyPool_MyPool-007_domain",
      "libvirt_volume.MyPool_MyPool-007_system",
      "libvirt_volume.MyPool_MyPool-007_media",
    ]);
    expect(Object.keys(shrunk.resource.libvirt_domain)).toHaveLength(6);
    // The probe refuses names that are still members (vmpools detach not run).
    expect(Object.values<Json>(shrunk.data.external)[0]!.lifecycle.postcondition.at(-2)).toMatchObject({
      condition: '${self.result.undetached == ""}',
      error_message: expect.stringMatching(/still members .*run vmpools detach POOL VM/),
    });
    expect(() => synth(validProps({ detached: ["MyPool-000"] }))).toThrow(/detached\[0\] = "MyPool-000"/);
    expect(() => synth(validProps({ detached: ["Other-001"] }))).toThrow(
      /detached\[0\] = "Other-001": must be the name of a member of this pool, such as "MyPool-001"/,
    );
  });

  it("delete protection makes Terraform refuse to destroy members", () => {
    const on = synth(validProps({ deleteProtection: true })).json;
    const members = (json: Json) => [
      ...Object.values<Json>(json.resource.libvirt_domain),
      ...Object.values<Json>(json.resource.libvirt_volume).filter((v) => !v.name.endsWith(".vmpools-policy.xml")),
    ];
    // Domains, system volumes and media volumes alike.
    expect(members(on)).toHaveLength(30);
    for (const r of members(on)) expect(r.lifecycle.prevent_destroy).toBe(true);
    const off = synth(validProps()).json;
    for (const r of members(off)) expect(r.lifecycle.prevent_destroy).toBe(false);
  });

  it("a lower size fails the plan unless allowShrink is set", () => {
    const guarded = synth(validProps({ size: 7 })).json;
    const probe = Object.values<Json>(guarded.data.external)[0]!;
    expect(probe.query).toEqual({
      uri: "qemu:///system",
      candidates: "default",
      member_pattern: "^MyPool-([0-9]{3})$",
      detached: "",
      size: "7",
      holder_uri: "https://vmpools.dev/xmlns/holder/1",
      member_uri: "https://vmpools.dev/xmlns/pool/1",
      host: "localhost",
      placement: "localhost=1-7",
    });
    const misplacedGuard = {
      condition: '${self.result.misplaced == ""}',
      error_message: expect.stringMatching(/\(\$\{self.result.misplaced\}\).*restore vmpools.placement.json/),
    };
    const undetachedGuard = { condition: '${self.result.undetached == ""}', error_message: expect.any(String) };
    const heldGuard = {
      condition: '${self.result.held_above == ""}',
      error_message: expect.stringMatching(/that users hold \(\$\{self.result.held_above\}\).*vmpools return/),
    };
    expect(probe.lifecycle.postcondition).toEqual([
      {
        condition: "${tonumber(self.result.max_member_index) <= 7}",
        error_message: expect.stringMatching(/lowering size would destroy them.*allowShrink: true/),
      },
      heldGuard,
      undetachedGuard,
      misplacedGuard,
    ]);
    expect(probe.program[1]).toMatch(/^\$\{path\.module\}\/assets\/vmpools-host-probe\/[0-9A-F]+\/host-probe\.cjs$/);
    const allowed = synth(validProps({ size: 7, allowShrink: true })).json;
    // allowShrink lets free members go, never held ones.
    expect(Object.values<Json>(allowed.data.external)[0]!.lifecycle.postcondition).toEqual([
      heldGuard,
      undetachedGuard,
      misplacedGuard,
    ]);
  });

  it("every cluster host keeps its provider and shrink guard, also when no member under the new size lives there", () => {
    const hosts = ["h1", "h2", "h3", "h4"].map((name) => ({ name, uri: `qemu+ssh://${name}/system` }));
    const { json, pool } = synth(validProps({ size: 1, cluster: { hosts } }));
    expect(new Set(pool.plan.members.map((m) => m.host.name)).size).toBe(1);
    expect(json.provider.libvirt.map((p: Json) => p.alias).sort()).toEqual([
      "host_h1",
      "host_h2",
      "host_h3",
      "host_h4",
    ]);
    const probes = Object.values<Json>(json.data.external);
    expect(probes.map((p) => p.query.uri).sort()).toEqual(hosts.map((h) => h.uri));
    for (const p of probes)
      expect(p.lifecycle.postcondition[0].condition).toBe("${tonumber(self.result.max_member_index) <= 1}");
  });

  it("auto-select takes the storage pool from the plan-time probe", () => {
    const { json } = synth(
      validProps({
        resourceAllocation: { disk: { storagePools: [{ name: "a" }, { name: "b" }], autoSelectTarget: true } },
      }),
    );
    for (const v of Object.values<Json>(json.resource.libvirt_volume)) {
      // The policy volume stays in the first candidate: it must not move with free space.
      if (v.name.endsWith(".vmpools-policy.xml")) expect(v.pool).toBe("a");
      else expect(v.pool).toMatch(/^\$\{data\.external\..*\.result\.storage_pool\}$/);
    }
    const fixed = synth(
      validProps({ resourceAllocation: { disk: { storagePools: [{ name: "a" }, { name: "b" }] } } }),
    ).json;
    for (const v of Object.values<Json>(fixed.resource.libvirt_volume)) expect(v.pool).toBe("a");
  });

  it("renders NUMA, pass-through CPU and raw copies", () => {
    const numa = synth(validProps({ host: { numa: { nodeCount: 2, tuneMode: "interleave" } } })).json;
    const d = Object.values<Json>(numa.resource.libvirt_domain)[0]!;
    expect(d.cpu.numa.cell).toEqual([
      { cpus: "0", memory: 512, unit: "MiB" },
      { cpus: "1", memory: 512, unit: "MiB" },
    ]);
    // Without pinning there is no memory tuning: libvirt needs a host nodeset for it.
    expect(d.numa_tune).toBeUndefined();
    const pt = synth(validProps({ host: { passThroughHostCpu: true, migration: { mode: "none" } } })).json;
    expect(Object.values<Json>(pt.resource.libvirt_domain)[0]!.cpu).toEqual({ mode: "host-passthrough" });
    const raw = synth(
      validProps({ stateful: true, resourceAllocation: { disk: { storagePools: [{ name: "vg", type: "logical" }] } } }),
    ).json;
    const v = byName(raw.resource.libvirt_volume)["MyPool-001.img"];
    expect(v).toMatchObject({
      target: { format: { type: "raw" } },
      create: { content: { url: "/var/lib/libvirt/images/debian-12.qcow2" } },
    });
    expect(v.backing_store).toBeUndefined();
  });

  it("bad props fail at synth with the construct path, the value and the fix", () => {
    expect(() => synth(validProps({ prestarted: 3, type: "manual" }))).toThrow(PoolSpecError);
    expect(() => synth(validProps({ prestarted: 3, type: "manual" }))).toThrow(
      /VmPool test\/MyPool: invalid pool definition\n {2}- prestarted = 3: only automatic pools can have prestarted VMs/,
    );
  });

  it("warns about high-performance pools through cdktf annotations", () => {
    const { pool } = synth(validProps({ optimizedFor: "high-performance" }));
    const warnings = pool.node.metadata.filter((m) => /warn/i.test(m.type)).map((m) => String(m.data));
    expect(warnings.join()).toMatch(/not recommended for pools/);
  });

  it("refuses two pools whose Terraform names would collide (cdktf would merge them silently)", () => {
    const app = Testing.app();
    const stack = new TerraformStack(app, "t");
    new VmPool(new Construct(stack, "eu"), "desk", validProps({ name: "A-?", size: 1 }));
    expect(() => new VmPool(stack, "eu_desk", validProps({ name: "B-?", size: 1 }))).toThrow(
      /t\/eu_desk\/probe-localhost: its Terraform name "eu_desk_probe_host_localhost" is already used by t\/eu\/desk\/probe-localhost; give one of the pools .* another id/,
    );
  });

  it("two pools on one host share its provider; one host name with two URIs is an error", () => {
    const app = Testing.app();
    const stack = new TerraformStack(app, "test");
    new VmPool(stack, "A", validProps({ name: "A-??" }));
    new VmPool(stack, "B", validProps({ name: "B-??" }));
    expect(JSON.parse(synthStack(stack)).provider.libvirt).toHaveLength(1);
    expect(
      () =>
        new VmPool(
          stack,
          "C",
          validProps({ name: "C-??", cluster: { hosts: [{ name: "localhost", uri: "qemu+ssh://x/system" }] } }),
        ),
    ).toThrow(
      /host "localhost" is declared with uri "qemu\+ssh:\/\/x\/system" here and "qemu:\/\/\/system" by another pool/,
    );
  });
});

describe("schema conformance", () => {
  it.each([
    ["the example stack", () => new LinuxDesktopPoolStack(Testing.app(), "example")],
    [
      "a pool using every setting",
      () => {
        const stack = new TerraformStack(Testing.app(), "all");
        new VmPool(stack, "All", everySettingProps());
        return stack;
      },
    ],
  ])("%s only uses attributes of the pinned schemas, correctly typed", (_, make) => {
    const json = JSON.parse(synthStack(make()));
    const { problems, checked } = schemaProblems(json);
    expect(problems).toEqual([]);
    expect(checked).toBeGreaterThan(20);
  });

  it("the checker catches a wrong attribute, a wrong type and a missing required attribute", () => {
    const { problems } = schemaProblems({
      resource: {
        libvirt_volume: { v: { name: "x", capacity: "10", bogus: 1 } },
        libvirt_domain: { d: { name: "n", devices: { disks: [{ target: { dev: 1 } }] } } },
      },
    });
    expect(problems).toEqual(
      expect.arrayContaining([
        'resource.libvirt_volume.v.capacity: expected number, got "10"',
        "resource.libvirt_volume.v.bogus: not in the provider schema",
        "resource.libvirt_volume.v.pool: required attribute missing",
        "resource.libvirt_domain.d.devices.disks[0].target.dev: expected string, got 1",
        "resource.libvirt_domain.d.type: required attribute missing",
      ]),
    );
  });
});

describe("determinism", () => {
  /** Synthesizes both example stacks in a process of its own (the main command's synth). */
  function fullSynth(): Promise<string> {
    const outdir = mkdtempSync(join(tmpdir(), "vmpools-synth-"));
    return new Promise((resolve, reject) =>
      execFile(
        join(__dirname, "../../../node_modules/.bin/ts-node"),
        ["--transpile-only", join(__dirname, "../../../stacks/summarize.ts")],
        { env: { ...process.env, VMPOOLS_OUTDIR: outdir } },
        (error) => (error ? reject(error) : resolve(outdir)),
      ),
    );
  }
  function files(dir: string): Map<string, Buffer> {
    const out = new Map<string, Buffer>();
    const walk = (d: string) => {
      for (const e of readdirSync(d)) {
        const p = join(d, e);
        if (statSync(p).isDirectory()) walk(p);
        else out.set(relative(dir, p), readFileSync(p));
      }
    };
    walk(dir);
    return out;
  }

  it("two synths of the example stacks, in separate processes, are byte-identical (JSON, probe, media, policy)", async () => {
    const [a, b] = await Promise.all([fullSynth(), fullSynth()]);
    try {
      const fa = files(a);
      const fb = files(b);
      expect([...fb.keys()].sort()).toEqual([...fa.keys()].sort());
      expect([...fa.keys()].filter((k) => k.endsWith("cdk.tf.json"))).toHaveLength(2);
      expect([...fa.keys()].filter((k) => k.endsWith("-sysprep.iso"))).toHaveLength(20);
      expect([...fa.keys()].filter((k) => k.endsWith("-cloud-init.iso"))).toHaveLength(10);
      expect([...fa.keys()].filter((k) => k.endsWith(".vmpools.tf.json"))).toHaveLength(2);
      expect([...fa.keys()].filter((k) => k.endsWith("/policy.xml"))).toHaveLength(2);
      for (const [k, v] of fa) expect(fb.get(k)!.equals(v)).toBe(true);
    } finally {
      rmSync(a, { recursive: true, force: true });
      rmSync(b, { recursive: true, force: true });
    }
  });
});
