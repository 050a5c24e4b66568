// Every property the Pulumi component sends exists in the schema the real terraform-provider
// plugin serves for dmacvicar/libvirt 0.9.7 (`pulumi package get-schema`, the CLI and plugin that
// scripts/pulumi-tools.sh builds, through test/support/pulumi.ts's pulumiEnv()), at its path:
// for the provider, Volume and Domain, at every depth, following `$ref`s and array `items`. The
// plugin derives Pulumi's names from the Terraform schema (camelCase, pluralized lists), and
// engines/pulumi/names.ts must say the same; a name it gets wrong is a property the provider
// never sees. Fails, never skips, when the tools cannot be built or the plugin cannot be run.
import fc from "fast-check";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { VmPoolProps } from "../../../core";
import { VmPool } from "../../../engines/pulumi";
import { LIBVIRT_PROVIDER_VERSION, LIBVIRT_TYPES } from "../../../engines/pulumi/package";
import { linuxDesktopPoolProps } from "../../../examples/linux-desktop-pool.props";
import { windowsServerPoolProps } from "../../../examples/windows-server-pool.props";
import { poolPropsArb } from "../../core/pool-props";
import { everySettingProps } from "../../support/fixtures";
import { pulumiEnv } from "../../support/pulumi";
import { runMocked, SecretValue, type Registration } from "../../support/pulumi-mocks";

/** The parts of a Pulumi package schema this test reads. */
interface PropertySpec {
  readonly type?: string;
  readonly $ref?: string;
  readonly items?: PropertySpec;
  readonly additionalProperties?: PropertySpec;
}
interface ObjectSpec {
  readonly properties?: Readonly<Record<string, PropertySpec>>;
  readonly inputProperties?: Readonly<Record<string, PropertySpec>>;
}
interface PackageSchema {
  readonly name: string;
  readonly version: string;
  readonly provider: ObjectSpec;
  readonly resources: Readonly<Record<string, ObjectSpec>>;
  readonly types: Readonly<Record<string, ObjectSpec>>;
}

const PROVIDER = "pulumi:providers:libvirt";

let schema: PackageSchema;
let workDir: string;

beforeAll(() => {
  const env = { ...process.env, ...pulumiEnv() };
  // Outside any project: get-schema needs none.
  workDir = mkdtempSync(join(tmpdir(), "vmpools-pulumi-schema-"));
  let out: string;
  try {
    out = execFileSync(
      "pulumi",
      [
        "package",
        "get-schema",
        "terraform-provider",
        "registry.opentofu.org/dmacvicar/libvirt",
        LIBVIRT_PROVIDER_VERSION,
      ],
      { cwd: workDir, env, encoding: "utf8", maxBuffer: 256 << 20, stdio: ["ignore", "pipe", "pipe"] },
    );
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`pulumi package get-schema failed: ${err.message}\n${err.stderr ?? ""}`);
  }
  schema = JSON.parse(out) as PackageSchema;
}, 10 * 60_000);
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

/** The object type a property spec stands for, following a `$ref` to the package's types. */
function objectOf(spec: PropertySpec, path: string): ObjectSpec | undefined {
  if (!spec.$ref) return undefined;
  const prefix = "#/types/";
  if (!spec.$ref.startsWith(prefix)) throw new Error(`${path}: unexpected $ref ${spec.$ref}`);
  const type = schema.types[decodeURIComponent(spec.$ref.slice(prefix.length))];
  if (!type) throw new Error(`${path}: $ref ${spec.$ref} is not in the schema's types`);
  return type;
}

const PRIMITIVE: Record<string, (v: unknown) => boolean> = {
  string: (v) => typeof v === "string",
  integer: (v) => Number.isInteger(v),
  number: (v) => typeof v === "number",
  boolean: (v) => typeof v === "boolean",
};

/** Problems of a value against a property spec: names missing at their path, wrong kinds of value. */
function problemsOf(value: unknown, spec: PropertySpec, path: string): string[] {
  if (value instanceof SecretValue) return problemsOf(value.secret, spec, path);
  const object = objectOf(spec, path);
  if (object) {
    if (value === null || typeof value !== "object" || Array.isArray(value)) return [`${path}: expected an object`];
    return propertiesProblems(value as Record<string, unknown>, object.properties ?? {}, path);
  }
  if (spec.type === "array") {
    if (!Array.isArray(value)) return [`${path}: expected an array`];
    return value.flatMap((v, i) => problemsOf(v, spec.items ?? {}, `${path}[${i}]`));
  }
  if (spec.type === "object") {
    if (value === null || typeof value !== "object" || Array.isArray(value)) return [`${path}: expected a map`];
    return Object.entries(value).flatMap(([k, v]) => problemsOf(v, spec.additionalProperties ?? {}, `${path}.${k}`));
  }
  const check = spec.type === undefined ? undefined : PRIMITIVE[spec.type];
  if (check && !check(value)) return [`${path}: expected ${spec.type}, got ${JSON.stringify(value)}`];
  return [];
}

/** Every property path the checks found in the schema (list indexes as `[]`). */
const checkedPaths = new Set<string>();

function propertiesProblems(
  value: Record<string, unknown>,
  properties: Readonly<Record<string, PropertySpec>>,
  path: string,
): string[] {
  return Object.entries(value).flatMap(([name, v]) => {
    const spec = properties[name];
    if (!spec) return [`${path}.${name}: not in the schema`];
    checkedPaths.add(`${path}.${name}`.replace(/\[\d+\]/g, "[]"));
    return problemsOf(v, spec, `${path}.${name}`);
  });
}

/** Problems of one registration's inputs against the schema of its type. */
function registrationProblems(r: Pick<Registration, "type" | "name" | "inputs">): string[] {
  const spec = r.type === PROVIDER ? schema.provider : schema.resources[r.type];
  if (!spec) return [`${r.type}: no such resource in the schema`];
  return propertiesProblems(r.inputs, spec.inputProperties ?? {}, r.type);
}

/** What a VmPool of these props registers, checked against the schema; how many properties were checked. */
async function checkPool(props: VmPoolProps): Promise<{ problems: string[]; registrations: number }> {
  const assetDir = mkdtempSync(join(tmpdir(), "vmpools-pulumi-names-"));
  try {
    const run = await runMocked(
      () =>
        new VmPool("MyPool", props, {
          hostProbe: async (q) => ({
            storage_pool: q.candidates!.split(",")[0]!,
            available_bytes: "1",
            max_member_index: "",
            held_above: "",
            undetached: "",
            member_count: "0",
          }),
          assetDir,
        }),
    );
    expect(run.errors).toEqual([]);
    const checked = run.resources.filter((r) => r.custom);
    expect(new Set(checked.map((r) => r.type))).toEqual(
      new Set([PROVIDER, LIBVIRT_TYPES.volume, LIBVIRT_TYPES.domain]),
    );
    // One list per resource, so a wrong name shows once per pool, not once per member.
    const problems = new Set(checked.flatMap(registrationProblems).map((p) => p.replace(/\[\d+\]/g, "[]")));
    return { problems: [...problems].sort(), registrations: checked.length };
  } finally {
    rmSync(assetDir, { recursive: true, force: true });
  }
}

test("the schema is the plugin's, for dmacvicar/libvirt 0.9.7", () => {
  expect(schema.name).toBe("libvirt");
  expect(schema.version).toBe(LIBVIRT_PROVIDER_VERSION);
  for (const type of Object.values(LIBVIRT_TYPES)) expect(schema.resources[type]).toBeDefined();
  expect(Object.keys(schema.provider.inputProperties ?? {})).toContain("uri");
});

test.each<[string, () => VmPoolProps]>([
  ["the Linux desktop example", () => linuxDesktopPoolProps],
  ["the Windows Server example", () => ({ ...windowsServerPoolProps(), size: 4, detached: ["WinSrv-02"] })],
  ["a pool using every setting", everySettingProps],
])("%s sends only properties the schema has, at their paths", async (_, props) => {
  const { problems, registrations } = await checkPool(props());
  expect(problems).toEqual([]);
  expect(registrations).toBeGreaterThan(10);
});

test("generated pools send only properties the schema has, at their paths", async () => {
  await fc.assert(
    fc.asyncProperty(poolPropsArb, async (props) => expect((await checkPool(props)).problems).toEqual([])),
    { numRuns: 25 },
  );
});

test("the checks went to every depth", () => {
  const D = LIBVIRT_TYPES.domain;
  expect([...checkedPaths]).toEqual(
    expect.arrayContaining([
      `${PROVIDER}.uri`,
      `${LIBVIRT_TYPES.volume}.backingStore.format.type`,
      `${LIBVIRT_TYPES.volume}.create.content.url`,
      `${D}.sysInfos[].smbios.oemStrings.entries`,
      `${D}.cpu.numa.cells[].memory`,
      `${D}.numaTune.memNodes[].cellId`,
      `${D}.devices.disks[].source.volume.pool`,
      `${D}.devices.graphics[].spice.passwd`,
      `${D}.devices.channels[].target.virtIo.name`,
      `${D}.os.smBios.mode`,
    ]),
  );
  expect(checkedPaths.size).toBeGreaterThan(60);
});

test("the check fails a name missing, with its path, at any depth, and a wrong kind of value", () => {
  const problems = [
    { type: LIBVIRT_TYPES.volume, name: "v", inputs: { name: "x", capacityUnits: "GiB", target: { formats: {} } } },
    {
      type: LIBVIRT_TYPES.domain,
      name: "d",
      inputs: {
        name: "d",
        vcpu: "2",
        // The Terraform name of a list the plugin pluralizes (names.ts maps it to sysInfos).
        sysInfo: [],
        devices: { graphics: [{ spice: { passwd: new SecretValue("p"), bogus: 1 } }], disks: [{ readonly: true }] },
      },
    },
    { type: PROVIDER, name: "p", inputs: { uri: "qemu:///system", url: "x" } },
  ].flatMap(registrationProblems);
  expect(problems).toEqual([
    "libvirt:index/volume:Volume.capacityUnits: not in the schema",
    "libvirt:index/volume:Volume.target.formats: not in the schema",
    'libvirt:index/domain:Domain.vcpu: expected number, got "2"',
    "libvirt:index/domain:Domain.sysInfo: not in the schema",
    "libvirt:index/domain:Domain.devices.graphics[0].spice.bogus: not in the schema",
    "libvirt:index/domain:Domain.devices.disks[0].readonly: not in the schema",
    "pulumi:providers:libvirt.url: not in the schema",
  ]);
});
