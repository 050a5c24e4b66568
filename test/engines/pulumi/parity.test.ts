// For the same props, the Pulumi component and the cdktf construct deploy the same libvirt
// resources with the same content: the cdktf stack synthesized for real (pool files and media
// in its folder) against the Pulumi program under mocks (test/support/pulumi-mocks.ts), for both
// example pools and generated ones. Resources are matched by host (provider URI) and libvirt
// name; cdktf's attributes are put in Pulumi's names (engines/pulumi/names.ts) and its Terraform
// expressions resolved: a volume reference to that volume's attribute, the probe's storage pool
// to the probe's pick, the console password on both sides to one placeholder, and each upload
// path to the bytes of the file it points to. Everything else must be deeply equal.
import { App, TerraformStack } from "cdktf";
import fc from "fast-check";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import type { VmPoolProps } from "../../../core";
import { VmPool as CdktfVmPool, readStackDir } from "../../../engines/cdktf";
import type { ProbeResult } from "../../../engines/libvirt-provider/probe";
import { VmPool } from "../../../engines/pulumi";
import { pulumiName } from "../../../engines/pulumi/names";
import { LIBVIRT_TYPES } from "../../../engines/pulumi/package";
import { linuxDesktopPoolProps } from "../../../examples/linux-desktop-pool.props";
import { windowsServerPoolProps } from "../../../examples/windows-server-pool.props";
import { poolPropsArb } from "../../core/pool-props";
import { runMocked, SecretValue } from "../../support/pulumi-mocks";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const CONSOLE_PASSWORD = "<console password>";
const PROVIDER = "pulumi:providers:libvirt";
const KIND = { [LIBVIRT_TYPES.volume]: "volume", [LIBVIRT_TYPES.domain]: "domain" } as Record<string, string>;

/**
 * The probe's answer for a host, on both sides: its pick is the last candidate, so that a pick
 * that was not used shows (the fixed choice is the first).
 */
const probeAnswer = (query: Readonly<Record<string, string>>): ProbeResult => ({
  storage_pool: query.candidates!.split(",").at(-1)!,
  available_bytes: String(100 << 30),
  max_member_index: "",
  held_above: "",
  undetached: "",
  member_count: "0",
});

/** What a file holds, for comparing two upload paths. */
function fileBytes(path: string): string {
  const bytes = readFileSync(path);
  return `file of ${bytes.length} bytes, sha256 ${createHash("sha256").update(bytes).digest("hex")}`;
}

/** One engine's deployment, engine-neutral. */
interface Side {
  /** `<host uri> <volume|domain> <libvirt name>` → the resource's attributes in Pulumi's names. */
  readonly resources: Record<string, unknown>;
  /** The URIs of the libvirt providers. */
  readonly providers: string[];
  /** `<member> <domain|system|media>` of the detached members' resources. */
  readonly detached: string[];
}

const put = (into: Record<string, unknown>, key: string, value: unknown) => {
  if (key in into) throw new Error(`two resources are ${key}`);
  into[key] = value;
};

/** The cdktf stack, synthesized into a temp dir as `cdktf synth` does. */
function cdktfSide(props: VmPoolProps): Side {
  const outdir = mkdtempSync(join(tmpdir(), "vmpools-parity-cdktf-"));
  try {
    const app = new App({ outdir });
    new CdktfVmPool(new TerraformStack(app, "parity"), "MyPool", props);
    app.synth();
    const stackDir = join(outdir, "stacks/parity");
    const json = readStackDir(stackDir) as Json;
    const uriOf = new Map<string, string>(json.provider.libvirt.map((p: Json) => [`libvirt.${p.alias}`, p.uri]));
    const probes: Json = json.data?.external ?? {};
    const volumes: Json = json.resource.libvirt_volume ?? {};
    const domains: Json = json.resource.libvirt_domain ?? {};
    const resolve = (value: unknown): unknown => {
      if (typeof value === "string") {
        if (value === "${sensitive(uuid())}") return CONSOLE_PASSWORD;
        const volume = /^\$\{libvirt_volume\.([^.]+)\.(name|pool)\}$/.exec(value);
        if (volume) {
          if (!volumes[volume[1]!]) throw new Error(`${value}: no such volume`);
          return resolve(volumes[volume[1]!][volume[2]!]);
        }
        const pick = /^\$\{data\.external\.([^.]+)\.result\.storage_pool\}$/.exec(value);
        if (pick) return probeAnswer(probes[pick[1]!].query).storage_pool;
        const asset = "${abspath(path.module)}/";
        if (value.startsWith(asset)) return fileBytes(join(stackDir, value.slice(asset.length)));
        if (value.includes("${")) throw new Error(`unresolved Terraform expression ${value}`);
        return value;
      }
      if (Array.isArray(value)) return value.map(resolve);
      if (value && typeof value === "object") {
        return Object.fromEntries(Object.entries(value).map(([k, v]) => [pulumiName(k), resolve(v)]));
      }
      return value;
    };
    const resources: Record<string, unknown> = {};
    for (const [kind, group] of [
      ["volume", volumes],
      ["domain", domains],
    ] as const) {
      for (const r of Object.values<Json>(group)) {
        // Terraform's meta-arguments are Pulumi's options (test/engines/pulumi/vm-pool.test.ts).
        const attributes = Object.fromEntries(Object.entries(r).filter(([k]) => k !== "provider" && k !== "lifecycle"));
        put(resources, `${uriOf.get(r.provider)} ${kind} ${r.name}`, resolve(attributes));
      }
    }
    const detached = (json.removed ?? []).map((r: Json) => {
      const m = /^libvirt_(?:domain|volume)\.MyPool_(.+)_(domain|system|media)$/.exec(r.from);
      if (!m) throw new Error(`unexpected removed block ${JSON.stringify(r)}`);
      expect(r.lifecycle).toEqual({ destroy: false });
      return `${m[1]} ${m[2]}`;
    });
    return { resources, providers: [...uriOf.values()].sort(), detached: detached.sort() };
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}

/** The Pulumi program under mocks, its assets in a temp dir. */
async function pulumiSide(props: VmPoolProps): Promise<Side> {
  const assetDir = mkdtempSync(join(tmpdir(), "vmpools-parity-pulumi-"));
  try {
    const run = await runMocked(
      () => new VmPool("MyPool", props, { hostProbe: async (q) => probeAnswer(q), assetDir }),
    );
    expect(run.errors).toEqual([]);
    const uriOf = new Map(run.ofType(PROVIDER).map((p) => [p.urn, p.inputs.uri as string]));
    const normalize = (value: unknown): unknown => {
      if (value instanceof SecretValue) {
        expect(value.secret).toEqual(expect.stringMatching(/^.{16,}$/));
        return CONSOLE_PASSWORD;
      }
      if (typeof value === "string" && value.startsWith(`${assetDir}/`)) return fileBytes(value);
      if (Array.isArray(value)) return value.map(normalize);
      if (value && typeof value === "object") {
        return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v)]));
      }
      return value;
    };
    const resources: Record<string, unknown> = {};
    const detached: string[] = [];
    for (const r of run.resources.filter((x) => x.custom && x.type !== PROVIDER)) {
      const kind = KIND[r.type];
      if (!kind) throw new Error(`unexpected resource type ${r.type} (${r.name})`);
      if (r.options.retainOnDelete) {
        const [, member, role] = /^MyPool-(.+?)(?:-(system|media))?$/.exec(r.name)!;
        detached.push(`${member} ${role ?? "domain"}`);
      } else {
        put(resources, `${uriOf.get(r.provider!)} ${kind} ${r.inputs.name}`, normalize(r.inputs));
      }
    }
    return { resources, providers: [...uriOf.values()].sort(), detached: detached.sort() };
  } finally {
    rmSync(assetDir, { recursive: true, force: true });
  }
}

async function expectParity(props: VmPoolProps): Promise<Side> {
  const cdktf = cdktfSide(props);
  const pulumi = await pulumiSide(props);
  // The same set of resources, then each with the same content.
  expect(Object.keys(pulumi.resources).sort()).toEqual(Object.keys(cdktf.resources).sort());
  for (const key of Object.keys(cdktf.resources)) {
    expect({ key, attributes: pulumi.resources[key] }).toEqual({ key, attributes: cdktf.resources[key] });
  }
  expect(pulumi.providers).toEqual(cdktf.providers);
  // Detached members: cdktf's `removed` blocks are Pulumi's retained registrations.
  expect(pulumi.detached).toEqual(cdktf.detached);
  return cdktf;
}

/** The example's props, with secrets from the environment as a real stack would have them. */
function windowsExample(): VmPoolProps {
  const saved = { ...process.env };
  Object.assign(process.env, {
    VMPOOLS_DOMAIN_PASSWORD: "parity-Dom4in!",
    VMPOOLS_PRODUCT_KEY: "PARIT-YTEST-KEY12-34567-ABCDE",
  });
  try {
    return windowsServerPoolProps();
  } finally {
    process.env = saved;
  }
}

describe("the Pulumi component and the cdktf construct deploy the same libvirt resources", () => {
  it("the Linux desktop example (auto-selected storage pool, cloud-init media)", async () => {
    const side = await expectParity(linuxDesktopPoolProps);
    // 10 members of three resources each, and the policy volume.
    expect(Object.keys(side.resources)).toHaveLength(31);
    expect(side.resources["qemu:///system volume MyPool-001.qcow2"]).toMatchObject({ pool: "fast-ssd" });
  });

  it("the Windows Server example (sysprep media, delete protection), also with members detached", async () => {
    expect(Object.keys((await expectParity(windowsExample())).resources)).toHaveLength(61);
    const detached = await expectParity({ ...windowsExample(), size: 6, detached: ["WinSrv-02", "WinSrv-05"] });
    expect(Object.keys(detached.resources)).toHaveLength(13);
    expect(detached.detached).toEqual([
      "WinSrv-02 domain",
      "WinSrv-02 media",
      "WinSrv-02 system",
      "WinSrv-05 domain",
      "WinSrv-05 media",
      "WinSrv-05 system",
    ]);
  });

  it("generated pools, also on several hosts with an auto-selected storage pool", async () => {
    // poolPropsArb has one candidate storage pool; half of the runs get three, auto-selected.
    const arb = fc.tuple(poolPropsArb, fc.boolean()).map(([props, autoSelect]): VmPoolProps =>
      autoSelect && !props.resourceAllocation
        ? {
            ...props,
            resourceAllocation: {
              disk: { storagePools: [{ name: "default" }, { name: "fast" }, { name: "slow" }], autoSelectTarget: true },
            },
          }
        : props,
    );
    const seen = { hosts: 0, autoSelect: 0, detached: 0 };
    await fc.assert(
      fc.asyncProperty(arb, async (props) => {
        const side = await expectParity(props);
        seen.hosts += side.providers.length > 1 ? 1 : 0;
        seen.autoSelect += props.resourceAllocation?.disk?.autoSelectTarget ? 1 : 0;
        seen.detached += side.detached.length > 0 ? 1 : 0;
      }),
      { numRuns: 25 },
    );
    // The runs covered what the examples do not.
    expect(Math.min(seen.hosts, seen.autoSelect, seen.detached)).toBeGreaterThan(0);
  });

  it("the comparison sees a difference", async () => {
    const cdktf = cdktfSide(linuxDesktopPoolProps);
    const pulumi = await pulumiSide({
      ...linuxDesktopPoolProps,
      template: { ...linuxDesktopPoolProps.template, memoryMiB: 2048 },
    });
    expect(Object.keys(pulumi.resources).sort()).toEqual(Object.keys(cdktf.resources).sort());
    const differing = Object.keys(cdktf.resources).filter(
      (k) => !isDeepStrictEqual(pulumi.resources[k], cdktf.resources[k]),
    );
    // Every domain (memory) and no volume.
    expect(differing.length).toBe(10);
    for (const k of differing) expect(k).toMatch(/ domain MyPool-\d{3}$/);
  });
});
