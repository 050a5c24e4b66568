// The Pulumi VmPool component under pulumi.runtime.setMocks: what it registers (resources,
// inputs, options) as the engine would receive it (test/support/pulumi-mocks.ts reads the SDK's
// RegisterResourceRequests), with a fake host probe and the media in a temp dir, so that neither
// libvirt nor a Pulumi CLI is needed.
import { TerraformStack, Testing } from "cdktf";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { configDiskOf, PoolSpecError, systemDiskOf, type HostRef, type VmPoolProps } from "../../../core";
import { VmPool as CdktfVmPool } from "../../../engines/cdktf";
import { guardChecks, probeQuery, type ProbeResult } from "../../../engines/libvirt-provider/probe";
import { VmPool } from "../../../engines/pulumi";
import { LIBVIRT_TYPES } from "../../../engines/pulumi/package";
import { windowsServerPoolProps } from "../../../examples/windows-server-pool.props";
import { validProps, withWindowsSecrets } from "../../support/fixtures";
import { runMocked, SecretValue, type MockRun, type Registration } from "../../support/pulumi-mocks";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const COMPONENT = "vmpools:index:VmPool";
const PROVIDER = "pulumi:providers:libvirt";
const { volume: VOLUME, domain: DOMAIN } = LIBVIRT_TYPES;

const hosts = (...names: string[]): HostRef[] => names.map((name) => ({ name, uri: `qemu+ssh://root@${name}/system` }));

/** A probe answer for a host where nothing blocks the plan; its pick is the first candidate. */
function answer(query: Readonly<Record<string, string>>, overrides: Partial<ProbeResult> = {}): ProbeResult {
  return {
    storage_pool: query.candidates!.split(",")[0]!,
    available_bytes: String(100 << 30),
    max_member_index: "",
    held_above: "",
    undetached: "",
    member_count: "0",
    ...overrides,
  };
}

/** A hostProbe answering `overrides(query)` per host; it records the queries. */
function fakeProbe(overrides: (query: Readonly<Record<string, string>>) => Partial<ProbeResult> = () => ({})) {
  const queries: Record<string, string>[] = [];
  const probe = async (query: Readonly<Record<string, string>>) => {
    queries.push({ ...query });
    return answer(query, overrides(query));
  };
  return Object.assign(probe, { queries });
}

let assetRoot: string;
let runs = 0;
beforeAll(() => {
  assetRoot = mkdtempSync(join(tmpdir(), "vmpools-pulumi-assets-"));
});
afterAll(() => rmSync(assetRoot, { recursive: true, force: true }));

interface Deployed extends MockRun<VmPool> {
  readonly pool: VmPool;
  readonly assetDir: string;
  /** The component's children of a type. */
  children(type: string): Registration[];
  /** The URN of the provider of a host (by URI). */
  providerOf(host: HostRef): string;
}

/** Runs a program of one VmPool named MyPool under mocks. */
async function deploy(
  props: VmPoolProps,
  opts: { probe?: ReturnType<typeof fakeProbe>; assetDir?: string } = {},
): Promise<Deployed> {
  const assetDir = opts.assetDir ?? join(assetRoot, `run-${++runs}`);
  const hostProbe = opts.probe ?? fakeProbe();
  const run = await runMocked(() => new VmPool("MyPool", props, { hostProbe, assetDir }));
  return {
    ...run,
    pool: run.result,
    assetDir,
    children: (type) => run.ofType(type),
    providerOf: (host) => {
      const p = run.ofType(PROVIDER).filter((r) => r.inputs.uri === host.uri);
      expect(p).toHaveLength(1);
      return p[0]!.urn;
    },
  };
}

/** The member's registrations by role. */
function memberResources(d: Deployed, member: string) {
  return {
    system: d.get(VOLUME, `MyPool-${member}-system`),
    media: d.resources.find((r) => r.name === `MyPool-${member}-media`),
    domain: d.get(DOMAIN, `MyPool-${member}`),
  };
}

/** Every SecretValue in a value, with its path. */
function secretsIn(value: unknown, path = ""): { path: string; value: unknown }[] {
  if (value instanceof SecretValue) return [{ path, value: value.secret }];
  if (Array.isArray(value)) return value.flatMap((v, i) => secretsIn(v, `${path}[${i}]`));
  if (value && typeof value === "object") {
    return Object.entries(value).flatMap(([k, v]) => secretsIn(v, path ? `${path}.${k}` : k));
  }
  return [];
}

/** The inputs with the console password (random per run) as a placeholder. */
function withoutPassword(inputs: Json): Json {
  const graphics = inputs.devices?.graphics;
  if (!graphics) return inputs;
  expect(graphics[0].spice.passwd).toBeInstanceOf(SecretValue);
  const spice = { ...graphics[0].spice, passwd: "<console password>" };
  return { ...inputs, devices: { ...inputs.devices, graphics: [{ ...graphics[0], spice }, ...graphics.slice(1)] } };
}

describe("resources", () => {
  it("a provider per cluster host, per member a system volume, a media volume and a domain, a policy volume per host, all children of the component", async () => {
    const cluster = hosts("h1", "h2", "h3");
    const d = await deploy(validProps({ size: 5, cluster: { hosts: cluster } }));
    expect(d.errors).toEqual([]);

    const [component, ...rest] = d.resources.filter((r) => r.type === COMPONENT);
    expect(rest).toEqual([]);
    expect(component).toMatchObject({ name: "MyPool", custom: false, inputs: {}, parent: undefined });
    expect(component!.outputs).toEqual({ memberNames: d.pool.plan.members.map((m) => m.name), hostsProbed: 3 });

    // One explicit provider per host, of the parameterized package (dmacvicar/libvirt 0.9.7).
    const providers = d.ofType(PROVIDER);
    expect(providers.map((p) => [p.name, p.inputs])).toEqual(cluster.map((h) => [`MyPool-${h.name}`, { uri: h.uri }]));
    expect(d.packages).toEqual([
      {
        name: "terraform-provider",
        version: "3.120.0",
        downloadUrl: "",
        parameterization: {
          name: "libvirt",
          version: "0.9.7",
          value: JSON.stringify({ remote: { url: "registry.opentofu.org/dmacvicar/libvirt", version: "0.9.7" } }),
        },
      },
    ]);
    for (const r of d.resources.filter((x) => x.custom)) expect(r.packageRef).toBe("mock-uuid");

    // Per member: system volume, media volume (every member has initial-run media), domain, on
    // the provider of its home host; the domain's disks are those volumes.
    expect(d.pool.plan.members).toHaveLength(5);
    expect(new Set(d.pool.plan.members.map((m) => m.host.name)).size).toBeGreaterThan(1);
    for (const m of d.pool.plan.members) {
      const { system, media, domain } = memberResources(d, m.name);
      expect(system.inputs).toMatchObject({ name: systemDiskOf(m).volumeName, pool: "default" });
      expect(configDiskOf(m)).toBeDefined();
      expect(media?.type).toBe(VOLUME);
      expect(media!.inputs).toMatchObject({ name: configDiskOf(m)!.volumeName, pool: "default" });
      expect(domain.inputs).toMatchObject({ name: m.name, running: false });
      for (const r of [system, media!, domain]) expect(r.provider).toBe(d.providerOf(m.host));
      expect(domain.inputs.devices.disks.map((k: Json) => k.source.volume)).toEqual([
        { pool: "default", volume: system.inputs.name },
        { pool: "default", volume: media!.inputs.name },
      ]);
    }

    // The policy document on every cluster host, in its first storage pool.
    for (const h of cluster) {
      const policy = d.get(VOLUME, `MyPool-policy-${h.name}`);
      expect(policy.provider).toBe(d.providerOf(h));
      expect(policy.inputs).toMatchObject({ name: `MyPool-###@${h.name}.vmpools-policy.xml`, pool: "default" });
      expect(readFileSync(policy.inputs.create.content.url, "utf8")).toBe(d.pool.plan.policy.xml);
    }

    // Nothing else, and everything under the component.
    expect(d.resources).toHaveLength(1 + 3 + 5 * 3 + 3);
    for (const r of d.resources.filter((x) => x !== component)) expect(r.parent).toBe(component!.urn);
  });
});

describe("options", () => {
  const memberRegistrations = (d: Deployed) =>
    d.resources.filter((r) => (r.type === VOLUME || r.type === DOMAIN) && !r.name.startsWith("MyPool-policy-"));

  it("members are creation-time, deleted before they are replaced, and protected as deleteProtection says", async () => {
    for (const deleteProtection of [false, true]) {
      const d = await deploy(validProps({ size: 3, deleteProtection }));
      const members = memberRegistrations(d);
      expect(members).toHaveLength(9);
      for (const r of members) {
        expect({ name: r.name, ...r.options }).toEqual({
          name: r.name,
          protect: deleteProtection,
          ignoreChanges: ["*"],
          deleteBeforeReplace: true,
          retainOnDelete: undefined,
          replaceOnChanges: [],
        });
      }
      // The policy volume is no member: replaced whenever its document changes (and only then, as
      // cdktf's replace_triggered_by: other changes are ignored), never protected.
      expect(d.get(VOLUME, "MyPool-policy-localhost").options).toEqual({
        protect: undefined,
        ignoreChanges: ["name", "pool", "target"],
        deleteBeforeReplace: true,
        retainOnDelete: undefined,
        replaceOnChanges: ["create"],
      });
      // Providers: only the `version` input the engine itself sets is ignored.
      expect(d.get(PROVIDER, "MyPool-localhost").options.ignoreChanges).toEqual(["version"]);
    }
  });

  it("detached members stay registered, unchanged, and are retained on delete", async () => {
    const assetDir = join(assetRoot, "detached");
    const before = await deploy(validProps({ size: 4 }), { assetDir });
    const after = await deploy(validProps({ size: 4, detached: ["MyPool-002"] }), { assetDir });
    expect(after.errors).toEqual([]);
    expect(after.pool.plan.members.map((m) => m.name)).toEqual(["MyPool-001", "MyPool-003", "MyPool-004"]);
    expect(after.get(COMPONENT, "MyPool").outputs!.memberNames).toEqual(["MyPool-001", "MyPool-003", "MyPool-004"]);
    for (const r of memberRegistrations(after)) {
      expect({ name: r.name, retainOnDelete: r.options.retainOnDelete }).toEqual({
        name: r.name,
        retainOnDelete: r.name.startsWith("MyPool-MyPool-002") ? true : undefined,
      });
    }
    const retained = memberRegistrations(after).filter((r) => r.options.retainOnDelete);
    expect(retained.map((r) => r.name).sort()).toEqual([
      "MyPool-MyPool-002",
      "MyPool-MyPool-002-media",
      "MyPool-MyPool-002-system",
    ]);
    // Its inputs are those it was created with (the console password aside, random per run and
    // kept by ignoreChanges), and its other options too.
    for (const r of retained) {
      const was = before.get(r.type, r.name);
      expect(withoutPassword(r.inputs)).toEqual(withoutPassword(was.inputs));
      expect({ ...r.options, retainOnDelete: undefined }).toEqual(was.options);
    }
    // Detached above a lowered size: still registered and retained, never destroyed.
    const shrunk = await deploy(validProps({ size: 2, allowShrink: true, detached: ["MyPool-004"] }));
    expect(shrunk.get(DOMAIN, "MyPool-MyPool-004").options.retainOnDelete).toBe(true);
    expect(shrunk.resources.some((r) => r.name.startsWith("MyPool-MyPool-003"))).toBe(false);
  });

  it("the policy volume's upload path changes when, and only when, the policy changes", async () => {
    const assetDir = join(assetRoot, "policy");
    // The upload path, and what it holds right after the run.
    const policyOf = async (props: VmPoolProps) => {
      const d = await deploy(props, { assetDir });
      const url = d.get(VOLUME, "MyPool-policy-localhost").inputs.create.content.url as string;
      return { d, url, xml: readFileSync(url, "utf8") };
    };
    const two = await policyOf(validProps({ size: 4, prestarted: 2 }));
    const three = await policyOf(validProps({ size: 4, prestarted: 3 }));
    const twoAgain = await policyOf(validProps({ size: 4, prestarted: 2 }));
    // size is no policy: more members, the same document.
    const larger = await policyOf(validProps({ size: 5, prestarted: 2 }));
    expect(three.url).not.toBe(two.url);
    expect(twoAgain.url).toBe(two.url);
    expect(larger.url).toBe(two.url);
    expect(two.xml).toBe(two.d.pool.plan.policy.xml);
    expect(two.xml).toContain('prestarted="2"');
    expect(three.xml).toContain('prestarted="3"');
    expect(dirname(two.url)).toBe(assetDir);
    // Replaced on that change (replaceOnChanges ["create"]: the upload's url is under create).
    expect(three.d.get(VOLUME, "MyPool-policy-localhost").options.replaceOnChanges).toEqual(["create"]);

    // The members' volumes are byte-identical. Their domains differ in what they could not keep:
    // the console password (random on every run) and the policy in their metadata, which is the
    // policy at creation (the reconciler's fallback while no policy volume is readable); members
    // ignore all changes, so the engine keeps what they were created with and shows no diff.
    for (const m of two.d.pool.plan.members) {
      const a = memberResources(two.d, m.name);
      const b = memberResources(three.d, m.name);
      expect(JSON.stringify(b.system.inputs)).toBe(JSON.stringify(a.system.inputs));
      expect(JSON.stringify(b.media!.inputs)).toBe(JSON.stringify(a.media!.inputs));
      const strip = (inputs: Json) => ({ ...withoutPassword(inputs), metadata: undefined });
      expect(JSON.stringify(strip(b.domain.inputs))).toBe(JSON.stringify(strip(a.domain.inputs)));
      expect(b.domain.inputs.metadata.xml).toBe(
        a.domain.inputs.metadata.xml.replace('prestarted="2"', 'prestarted="3"'),
      );
      expect(b.domain.options.ignoreChanges).toEqual(["*"]);
    }
  });
});

describe("secrets", () => {
  const DOMAIN_PASSWORD = `Dom-${process.pid}-pässwörd`;
  const ADMIN_PASSWORD = `Adm1n-${process.pid}-ünïcode`;
  const PRODUCT_KEY = "VMPLS-TESTK-EY123-45678-ABCDE";
  // openssl passwd -6 -salt vmpoolsTestSalt 'cloud-Init-pw'
  const CLOUD_INIT_HASH =
    "$6$vmpoolsTestSalt$qORmnAyBJY.B73gss1OpuzO6HuInnpGSl7jVfg8hc9Tv/KMEi9s481AJFIv9yB.Qi/VBqfYuWvuKoMaaniO.Q0";
  const SECRETS = [DOMAIN_PASSWORD, ADMIN_PASSWORD, PRODUCT_KEY, CLOUD_INIT_HASH];

  /** The example's props, its secrets from the environment as a real stack's would be. */
  function windowsProps(): VmPoolProps {
    const secrets = { domainPassword: DOMAIN_PASSWORD, adminPassword: ADMIN_PASSWORD, productKey: PRODUCT_KEY };
    return withWindowsSecrets(secrets, () => ({ ...windowsServerPoolProps(), size: 3 }));
  }
  const linuxProps = () =>
    validProps({
      size: 2,
      initialRun: { cloudInit: { users: [{ name: "support", passwordHash: CLOUD_INIT_HASH }] } },
    });

  const iso = (file: string, path: string) => execFileSync("isoinfo", ["-J", "-i", file, "-x", path]).toString("utf8");

  it("no sysprep or cloud-init secret is in any input or output; the console password is a Pulumi secret", async () => {
    for (const props of [windowsProps(), linuxProps()]) {
      const d = await deploy(props);
      expect(d.errors).toEqual([]);
      // The component registers no inputs: its props hold the secrets.
      expect(d.get(COMPONENT, "MyPool").inputs).toEqual({});
      const everything = JSON.stringify(d.resources.map((r) => [r.inputs, r.outputs]));
      for (const s of SECRETS)
        expect({ secret: s, leaked: everything.includes(s) }).toEqual({ secret: s, leaked: false });

      // The only secret: each domain's console password, where the provider takes it.
      const domains = d.ofType(DOMAIN);
      expect(domains).toHaveLength(props.size);
      const passwords = new Set<unknown>();
      for (const r of d.resources) {
        const found = secretsIn(r.inputs);
        if (r.type !== DOMAIN) expect({ name: r.name, secrets: found }).toEqual({ name: r.name, secrets: [] });
        else {
          expect(found.map((s) => s.path)).toEqual(["devices.graphics[0].spice.passwd"]);
          expect(found[0]!.value).toMatch(/^[A-Za-z0-9_-]{24}$/);
          passwords.add(found[0]!.value);
        }
      }
      expect(passwords.size).toBe(props.size);
    }
  });

  it("the media hold them, in files of mode 0600 in a folder of mode 0700; the images are real ISO 9660", async () => {
    const win = await deploy(windowsProps());
    const linux = await deploy(linuxProps());
    for (const d of [win, linux]) {
      expect(statSync(d.assetDir).mode & 0o777).toBe(0o700);
      const media = d.resources.filter((r) => r.name.endsWith("-media"));
      expect(media).toHaveLength(d.pool.plan.members.length);
      for (const r of media) {
        const file: string = r.inputs.create.content.url;
        expect(dirname(file)).toBe(d.assetDir);
        expect({ file, mode: statSync(file).mode & 0o777 }).toEqual({ file, mode: 0o600 });
      }
    }
    for (const m of win.pool.plan.members) {
      const file = memberResources(win, m.name).media!.inputs.create.content.url;
      const unattend = iso(file, "/Unattend.xml");
      expect(unattend).toContain(`<ComputerName>${m.name.toUpperCase()}</ComputerName>`);
      for (const s of [DOMAIN_PASSWORD, ADMIN_PASSWORD, PRODUCT_KEY]) expect(unattend).toContain(s);
    }
    for (const m of linux.pool.plan.members) {
      const file = memberResources(linux, m.name).media!.inputs.create.content.url;
      expect(execFileSync("isoinfo", ["-d", "-i", file]).toString()).toMatch(/^Volume id: cidata$/m);
      expect(iso(file, "/user-data")).toContain(`hashed_passwd: "${CLOUD_INIT_HASH}"`);
    }
    // The policy document is no secret (0644), and holds none.
    const policy = win.get(VOLUME, "MyPool-policy-localhost").inputs.create.content.url;
    expect(statSync(policy).mode & 0o777).toBe(0o644);
    for (const s of SECRETS) expect(readFileSync(policy, "utf8")).not.toContain(s);
  });
});

describe("assets", () => {
  // Found by this test: files an earlier run wrote into assetDir stayed there for good, the media
  // of members a shrink removed (sysprep passwords, product key, cloud-init hashes in them) and
  // every earlier policy document. Like cdktf's synth (engines/cdktf/pool-files.ts), the
  // component now removes what it did not write this time.
  it("after a shrink and a policy change, assetDir holds only what the registered volumes upload", async () => {
    const assetDir = join(assetRoot, "stale");
    const props = { ...windowsServerPoolProps(), deleteProtection: false };
    await deploy({ ...props, size: 4, maxVmsPerUser: 1 }, { assetDir });
    const after = await deploy({ ...props, size: 2, maxVmsPerUser: 2, allowShrink: true }, { assetDir });
    expect(after.errors).toEqual([]);
    const uploaded = after
      .ofType(VOLUME)
      .flatMap((r) => (r.inputs.create ? [r.inputs.create.content.url as string] : []));
    expect(uploaded).toHaveLength(2 + 1); // two members' media, the policy document
    expect(
      readdirSync(assetDir)
        .map((f) => join(assetDir, f))
        .sort(),
    ).toEqual([...new Set(uploaded)].sort());
  });
});

describe("validation", () => {
  /** The error a construction throws. */
  function errorOf(make: () => unknown): PoolSpecError {
    try {
      make();
    } catch (e) {
      expect(e).toBeInstanceOf(PoolSpecError);
      return e as PoolSpecError;
    }
    throw new Error("no error thrown");
  }
  const cdktfError = (props: VmPoolProps) =>
    errorOf(() => new CdktfVmPool(new TerraformStack(Testing.app(), "test"), "MyPool", props));

  it.each<[string, VmPoolProps]>([
    ["prestarted in a manual pool", validProps({ prestarted: 3, type: "manual" })],
    ["a detached VM that is no member", validProps({ detached: ["Other-001"] })],
    ["a Windows pool without sysprep", validProps({ operatingSystem: "windows-11" })],
    [
      "several problems at once, a secret among them",
      validProps({
        size: 0,
        maxVmsPerUser: 0,
        initialRun: { cloudInit: { users: [{ name: "x", passwordHash: "clear-text-secret" }] } },
      }),
    ],
  ])("%s: the core's error, at construction, with the cdktf construct's message", async (_, props) => {
    const cdktf = cdktfError(props);
    const run = await runMocked(() =>
      errorOf(() => new VmPool("MyPool", props, { hostProbe: fakeProbe(), assetDir: assetRoot })),
    );
    const pulumi = run.result;
    expect(pulumi.issues).toEqual(cdktf.issues);
    expect(cdktf.message.startsWith("VmPool test/MyPool: ")).toBe(true);
    expect(pulumi.message.startsWith("VmPool MyPool: ")).toBe(true);
    expect(pulumi.message.slice("VmPool MyPool: ".length)).toBe(cdktf.message.slice("VmPool test/MyPool: ".length));
    expect(pulumi.message).not.toContain("clear-text-secret");
    // Nothing reaches the engine but the component itself (registered before its constructor validates).
    expect(run.resources.filter((r) => r.type !== COMPONENT)).toEqual([]);
    expect(run.errors).toEqual([]);
  });

  it("the core's warnings are the program's, as the cdktf construct's annotations", async () => {
    const props = validProps({ optimizedFor: "high-performance" });
    const construct = new CdktfVmPool(new TerraformStack(Testing.app(), "test"), "MyPool", props);
    const annotations = construct.node.metadata.filter((m) => /warn/i.test(m.type)).map((m) => String(m.data));
    expect(annotations.join()).toMatch(/not recommended for pools/);
    const d = await deploy(props);
    expect(d.logs).toEqual(annotations.map((message) => ({ severity: "warning", message })));
  });

  it("the program fails with it", async () => {
    const run = runMocked(() => new VmPool("MyPool", validProps({ size: 0 }), { hostProbe: fakeProbe() }));
    await expect(run).rejects.toThrow(/^VmPool MyPool: invalid pool definition\n {2}- size = 0: /);
  });
});

describe("host probe and shrink guard", () => {
  /** The messages guardChecks gives for an answer on a host, as one program error. */
  const guardMessage = (d: Deployed, host: HostRef, result: ProbeResult) =>
    guardChecks(d.pool.plan, host)
      .filter((c) => c.failed(result))
      .map((c) => c.message(result[c.field] ?? ""))
      .join("\n");
  const localhost: HostRef = { name: "localhost", uri: "qemu:///system" };

  it("a probe that fails fails the program with its error", async () => {
    const probe = async () => {
      throw new Error("probing qemu:///system failed: virsh: cannot connect");
    };
    const run = await runMocked(
      () => new VmPool("MyPool", validProps({ size: 2 }), { hostProbe: probe, assetDir: assetRoot }),
    );
    expect(run.errors).toEqual(["probing qemu:///system failed: virsh: cannot connect"]);
    expect(run.ofType(VOLUME)).toEqual([]);
  });

  it("asks every cluster host the probe's query, also hosts without a member", async () => {
    const probe = fakeProbe();
    const cluster = hosts("h1", "h2", "h3", "h4");
    const d = await deploy(validProps({ size: 1, cluster: { hosts: cluster } }), { probe });
    expect(new Set(d.pool.plan.members.map((m) => m.host.name)).size).toBe(1);
    expect(probe.queries).toEqual(cluster.map((h) => probeQuery(d.pool.plan, h)));
  });

  it.each<[string, Partial<ProbeResult>, RegExp[]]>([
    ["members above the new size", { max_member_index: "9" }, [/lowering size would destroy them.*allowShrink: true/]],
    ["held members above it", { held_above: "MyPool-009" }, [/that users hold \(MyPool-009\).*vmpools return/]],
    [
      "detached VMs that are still members",
      { undetached: "MyPool-003" },
      [/still members \(MyPool-003\).*vmpools detach/],
    ],
    [
      "all three",
      { max_member_index: "9", held_above: "MyPool-008,MyPool-009", undetached: "MyPool-003" },
      [/allowShrink: true/, /that users hold \(MyPool-008,MyPool-009\)/, /still members \(MyPool-003\)/],
    ],
  ])("%s fail the program with guardChecks' messages", async (_, overrides, patterns) => {
    const d = await deploy(validProps({ size: 7, detached: ["MyPool-003"] }), { probe: fakeProbe(() => overrides) });
    const expected = guardMessage(d, localhost, answer(probeQuery(d.pool.plan, localhost), overrides));
    expect(expected.split("\n").map((line, i) => patterns[i]!.test(line))).toEqual(patterns.map(() => true));
    expect(d.errors).toEqual([expected]);
    // Nothing of the host is registered: every volume waits for the probe, every domain for its volumes.
    expect(d.ofType(VOLUME)).toEqual([]);
    expect(d.ofType(DOMAIN)).toEqual([]);
  });

  it("with allowShrink only the held and undetached checks apply", async () => {
    const shrink = fakeProbe(() => ({ max_member_index: "9" }));
    const allowed = await deploy(validProps({ size: 7, allowShrink: true }), { probe: shrink });
    expect(allowed.errors).toEqual([]);
    expect(allowed.ofType(DOMAIN)).toHaveLength(7);
    for (const [overrides, pattern] of [
      [
        { max_member_index: "9", held_above: "MyPool-009" },
        /^Pool MyPool-\?\?\?: .*that users hold \(MyPool-009\)[^\n]*$/,
      ],
      [{ undetached: "MyPool-003" }, /^Pool MyPool-\?\?\?: .*still members \(MyPool-003\)[^\n]*$/],
    ] as const) {
      const d = await deploy(validProps({ size: 7, allowShrink: true, detached: ["MyPool-003"] }), {
        probe: fakeProbe(() => overrides),
      });
      expect(d.errors).toEqual([guardMessage(d, localhost, answer(probeQuery(d.pool.plan, localhost), overrides))]);
      expect(d.errors[0]).toMatch(pattern);
    }
  });

  it("a failing host without members still fails the program; the other hosts' members register", async () => {
    const cluster = hosts("h1", "h2", "h3", "h4");
    const props = validProps({ size: 1, cluster: { hosts: cluster } });
    const home = (await deploy(props)).pool.plan.members[0]!.host;
    const other = cluster.find((h) => h.name !== home.name)!;
    const d = await deploy(props, {
      probe: fakeProbe((q) => (q.uri === other.uri ? { held_above: "MyPool-002" } : {})),
    });
    expect(d.errors).toEqual([
      guardMessage(d, other, answer(probeQuery(d.pool.plan, other), { held_above: "MyPool-002" })),
    ]);
    expect(d.errors[0]).toContain(`host ${other.name} has members above the new size 1`);
    expect(d.resources.some((r) => r.name === `MyPool-policy-${other.name}`)).toBe(false);
    expect(d.ofType(DOMAIN).map((r) => r.provider)).toEqual([d.providerOf(home)]);
  });

  it("auto-select: every member volume of a host is in the storage pool the host's probe picked", async () => {
    const cluster = hosts("h1", "h2");
    const pick: Record<string, string> = { [cluster[0]!.uri]: "fast", [cluster[1]!.uri]: "slow" };
    const probe = fakeProbe((q) => ({ storage_pool: pick[q.uri!] }));
    const storagePools = [{ name: "default" }, { name: "fast" }, { name: "slow" }];
    const d = await deploy(
      validProps({
        size: 6,
        cluster: { hosts: cluster },
        resourceAllocation: { disk: { storagePools, autoSelectTarget: true } },
      }),
      { probe },
    );
    expect(probe.queries.map((q) => q.candidates)).toEqual(["default,fast,slow", "default,fast,slow"]);
    expect(new Set(d.pool.plan.members.map((m) => m.host.name))).toEqual(new Set(["h1", "h2"]));
    for (const m of d.pool.plan.members) {
      const { system, media, domain } = memberResources(d, m.name);
      const expected = pick[m.host.uri];
      expect([system.inputs.pool, media!.inputs.pool]).toEqual([expected, expected]);
      expect(domain.inputs.devices.disks.map((k: Json) => k.source.volume.pool)).toEqual([expected, expected]);
    }
    // The policy volume stays in the first candidate: it must not move with free space.
    for (const h of cluster) expect(d.get(VOLUME, `MyPool-policy-${h.name}`).inputs.pool).toBe("default");

    // Without autoSelectTarget the first candidate, whatever the probe says.
    const fixed = await deploy(
      validProps({ size: 6, cluster: { hosts: cluster }, resourceAllocation: { disk: { storagePools } } }),
      {
        probe,
      },
    );
    for (const r of fixed.ofType(VOLUME)) expect(r.inputs.pool).toBe("default");
  });
});
