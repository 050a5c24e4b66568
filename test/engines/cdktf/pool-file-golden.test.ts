// The Terraform JSON of deployed stacks must not change when the renderer does (a changed
// attribute is a diff on every member, and a domain diff would shut guests down). This pins the
// exact `<Pool>.vmpools.tf.json` text of the example pools, the benchmark pools and generated
// pools, as sha256 per pool, recorded from the renderer before the domain description existed
// and again when members got their home host (the second test shows that was the only change).
// Re-record only for an intended change: VMPOOLS_RECORD_GOLDEN=1 npx jest <this file>.
import { App, TerraformStack } from "cdktf";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SysprepConfig, type VmPoolProps } from "../../../core";
import { VmPool } from "../../../engines/cdktf";
import { StackPoolFiles } from "../../../engines/cdktf/pool-files";
import { LinuxDesktopPoolStack } from "../../../examples/linux-desktop-pool";
import { WindowsServerPoolStack } from "../../../examples/windows-server-pool";
import { samplePoolProps } from "../../core/pool-props";

const GOLDEN = join(__dirname, "fixtures/pool-files.sha256.json");
/** The recording before members' metadata named their home host (`<vmpools:placement home="…"/>`). */
const BEFORE_HOME_HOST = join(__dirname, "fixtures/pool-files-before-home-host.sha256.json");

/** The pool files a stack writes, exactly as StackPoolFiles writes them. */
function poolFileTexts(stack: TerraformStack): string[] {
  return StackPoolFiles.of(stack)
    .terraform()
    .map((t) => JSON.stringify(t, null, 2));
}
const sha = (s: string) => createHash("sha256").update(s).digest("hex");

const bench = (overrides: Partial<VmPoolProps> = {}): VmPoolProps => ({
  name: "Bench-????",
  size: 1000,
  maxVmsInPool: 1000,
  template: {
    name: "debian-12",
    version: 1,
    baseImagePath: "/var/lib/libvirt/images/debian-12.qcow2",
    diskSizeGiB: 10,
    memoryMiB: 1024,
    vcpus: 2,
  },
  ...overrides,
});

function onePool(props: VmPoolProps): TerraformStack {
  const stack = new TerraformStack(new App({ outdir: "/nonexistent" }), "s");
  new VmPool(stack, "P", props);
  return stack;
}

function cases(): [string, () => TerraformStack][] {
  const out: [string, () => TerraformStack][] = [
    ["example linux-desktop-pool", () => new LinuxDesktopPoolStack(new App({ outdir: "/nonexistent" }), "l")],
    ["example windows-server-pool", () => new WindowsServerPoolStack(new App({ outdir: "/nonexistent" }), "w")],
    ["bench vmpool (1000 members)", () => onePool(bench())],
    [
      "bench windows (1000 members)",
      () =>
        onePool(
          bench({
            template: {
              ...bench().template,
              name: "ws2022",
              diskSizeGiB: 40,
              memoryMiB: 4096,
              operatingSystem: "windows-server-2022",
            },
            initialRun: {
              sysprep: new SysprepConfig({
                domain: { name: "addomain.local", user: "Sarah_Smith", password: "bench-only" },
                localAdministrator: { password: "bench-only" },
              }),
            },
          }),
        ),
    ],
  ];
  samplePoolProps(80).forEach((props, i) => out.push([`generated #${i} ${props.name}`, () => onePool(props)]));
  return out;
}

test("every pool file is byte-identical to the recorded one", () => {
  // The example stacks read secrets from these; the recording used their demo values.
  for (const v of ["VMPOOLS_PRODUCT_KEY", "VMPOOLS_DOMAIN_PASSWORD", "VMPOOLS_ADMIN_PASSWORD"]) delete process.env[v];
  const actual: Record<string, string[]> = {};
  for (const [name, make] of cases()) actual[name] = poolFileTexts(make()).map(sha);
  if (process.env.VMPOOLS_RECORD_GOLDEN === "1") writeFileSync(GOLDEN, `${JSON.stringify(actual, null, 2)}\n`);
  const recorded = JSON.parse(readFileSync(GOLDEN, "utf8")) as Record<string, string[]>;
  expect(Object.keys(actual)).toHaveLength(84);
  expect(actual).toEqual(recorded);
});

test("the only changes since members carry their home host are that attribute and the per-host policy volume names (members deployed before keep theirs)", () => {
  for (const v of ["VMPOOLS_PRODUCT_KEY", "VMPOOLS_DOMAIN_PASSWORD", "VMPOOLS_ADMIN_PASSWORD"]) delete process.env[v];
  const asBefore: Record<string, string[]> = {};
  let homes = 0;
  let policyNames = 0;
  for (const [name, make] of cases()) {
    asBefore[name] = poolFileTexts(make()).map((text) => {
      // In the JSON text the metadata's quotes are escaped: home=\"h1\".
      homes += (text.match(/ home=\\"[^"\\]*\\"/g) ?? []).length;
      policyNames += (text.match(/@[A-Za-z0-9._-]+\.vmpools-policy\.xml"/g) ?? []).length;
      return sha(text.replace(/ home=\\"[^"\\]*\\"/g, "").replace(/@[A-Za-z0-9._-]+(\.vmpools-policy\.xml")/g, "$1"));
    });
  }
  expect(homes).toBeGreaterThan(2000); // the two 1000-member pools alone
  expect(policyNames).toBeGreaterThanOrEqual(84); // a policy volume per pool and host
  expect(asBefore).toEqual(JSON.parse(readFileSync(BEFORE_HOME_HOST, "utf8")));
});
