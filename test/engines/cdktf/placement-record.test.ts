// The cdktf construct's placement record: read before planning, written once per app synth,
// stable bytes, merged across pools and stacks, and never written by unit-test synths.
import { App, TerraformStack } from "cdktf";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { HostRef, VmPoolProps } from "../../../core";
import { VmPool, synthStack } from "../../../engines/cdktf";
import { readStackDir } from "../../../engines/cdktf/pool-files";
import { validProps } from "../../support/fixtures";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const hosts = (...names: string[]): HostRef[] => names.map((name) => ({ name, uri: `qemu+ssh://root@${name}/system` }));

let dir: string;
let record: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "vmpools-record-"));
  record = join(dir, "vmpools.placement.json");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Synthesizes an app of stacks (name → pools) as `cdktf synth` does; the stack folders' JSON. */
function synthApp(stacks: Record<string, Record<string, VmPoolProps>>, recordPath: string | undefined = record) {
  const outdir = join(dir, "cdktf.out");
  const app = new App({ outdir });
  for (const [stackName, pools] of Object.entries(stacks)) {
    const stack = new TerraformStack(app, stackName);
    for (const [id, props] of Object.entries(pools))
      new VmPool(stack, id, { ...props, placementRecordPath: recordPath });
  }
  app.synth();
  return Object.fromEntries(Object.keys(stacks).map((s) => [s, readStackDir(join(outdir, "stacks", s)) as Json]));
}

/** Which host's provider each member domain of a stack's JSON uses. */
const domainHosts = (json: Json) =>
  Object.fromEntries(
    Object.values<Json>(json.resource.libvirt_domain).map((d) => [
      d.name,
      String(d.provider).replace("libvirt.host_", ""),
    ]),
  );

describe("placement record (cdktf)", () => {
  it("is written at synth as sorted, pretty JSON with a trailing newline; a second synth leaves it byte-identical", () => {
    synthApp({ s: { Pool: validProps({ size: 12, name: "MyPool", cluster: { hosts: hosts("h1", "h2", "h3") } }) } });
    const text = readFileSync(record, "utf8");
    const parsed = JSON.parse(text) as Record<string, Record<string, string>>;
    // Natural order: MyPool-2 before MyPool-10.
    expect(Object.keys(parsed.MyPool!)).toEqual(Array.from({ length: 12 }, (_, i) => `MyPool-${i + 1}`));
    expect(text).toBe(`${JSON.stringify(parsed, null, 2)}\n`);
    expect(text.split("\n")[2]).toMatch(/^ {4}"MyPool-1": "h[123]",$/);
    const before = statSync(record).mtimeMs;
    synthApp({ s: { Pool: validProps({ size: 12, name: "MyPool", cluster: { hosts: hosts("h1", "h2", "h3") } }) } });
    expect(readFileSync(record, "utf8")).toBe(text);
    expect(statSync(record).mtimeMs).toBe(before);
  });

  it("after a host is added and size raised, recorded members keep their hosts and the record only gains lines", () => {
    const first = synthApp({ s: { Pool: validProps({ size: 20, cluster: { hosts: hosts("h1") } }) } });
    expect(new Set(Object.values(domainHosts(first.s!)))).toEqual(new Set(["h1"]));
    const recorded = readFileSync(record, "utf8");
    const second = synthApp({ s: { Pool: validProps({ size: 30, cluster: { hosts: hosts("h1", "h2") } }) } });
    const placed = domainHosts(second.s!);
    for (let i = 1; i <= 20; i++) expect(placed[`MyPool-${String(i).padStart(3, "0")}`]).toBe("h1");
    // Some new members go to the new host (by hashing: 5 of the 10 here).
    expect(Object.values(placed).filter((h) => h === "h2").length).toBeGreaterThan(0);
    const oldLines = recorded.split("\n");
    const newLines = readFileSync(record, "utf8").split("\n");
    const added = newLines.filter((l) => !oldLines.includes(l));
    // The old last member line gains a comma; besides it, the ten new members' lines.
    expect(oldLines.filter((l) => !newLines.includes(l))).toEqual(['    "MyPool-020": "h1"']);
    expect(added[0]).toBe('    "MyPool-020": "h1",');
    expect(added.slice(1)).toHaveLength(10);
    for (const l of added.slice(1)) expect(l).toMatch(/^ {4}"MyPool-0(2[1-9]|30)": "h[12]",?$/);
  });

  it("a record naming a host no longer in cluster.hosts fails the synth, naming the members and the fix", () => {
    writeFileSync(record, JSON.stringify({ "MyPool-???": { "MyPool-001": "h1", "MyPool-002": "old" } }));
    expect(() => synthApp({ s: { Pool: validProps({ size: 3, cluster: { hosts: hosts("h1") } }) } })).toThrow(
      /cluster.hosts = "old": is missing, but the placement record \(vmpools.placement.json\) has members on it: MyPool-002; keep host old in cluster.hosts/,
    );
  });

  it("one file for all pools and stacks of the app; a pool gone from every stack drops out, a name used twice is refused", () => {
    const a = validProps({ name: "A-??", size: 2 });
    const b = validProps({ name: "B-??", size: 3 });
    synthApp({ one: { A: a }, two: { B: b } });
    expect(Object.keys(JSON.parse(readFileSync(record, "utf8")))).toEqual(["A-??", "B-??"]);
    synthApp({ one: { A: a }, two: {} });
    expect(JSON.parse(readFileSync(record, "utf8"))).toEqual({ "A-??": { "A-01": "localhost", "A-02": "localhost" } });
    expect(() => synthApp({ one: { A: a }, two: { Again: a } })).toThrow(
      /pool name "A-\?\?" is also used by VmPool one\/A, .*give one of them a placementRecordPath of its own/,
    );
    // With a record each, the same pool name is fine.
    const app = new App({ outdir: join(dir, "cdktf.out") });
    new VmPool(new TerraformStack(app, "dev"), "A", { ...a, placementRecordPath: join(dir, "dev.json") });
    new VmPool(new TerraformStack(app, "prod"), "A", { ...a, placementRecordPath: join(dir, "prod.json") });
    app.synth();
    expect(Object.keys(JSON.parse(readFileSync(join(dir, "prod.json"), "utf8")))).toEqual(["A-??"]);
  });

  it("a file that is not a record fails the synth, naming the file", () => {
    writeFileSync(record, "{ not json");
    expect(() => synthApp({ s: { Pool: validProps() } })).toThrow(
      new RegExp(`placement record ${record} is not JSON .*restore it from version control`),
    );
    writeFileSync(record, JSON.stringify({ "MyPool-???": { "MyPool-001": 7 } }));
    expect(() => synthApp({ s: { Pool: validProps() } })).toThrow(
      /member "MyPool-001" of pool "MyPool-\?\?\?" must have a host name/,
    );
  });

  it("by default lives in the working directory when the app synthesizes into it, and nowhere otherwise", () => {
    const project = join(dir, "project");
    mkdirSync(project);
    const before = process.cwd();
    process.chdir(project);
    try {
      const app = new App({ outdir: "cdktf.out" });
      new VmPool(new TerraformStack(app, "s"), "Pool", validProps({ size: 2 }));
      app.synth();
      expect(JSON.parse(readFileSync(join(project, "vmpools.placement.json"), "utf8"))).toEqual({
        "MyPool-???": { "MyPool-001": "localhost", "MyPool-002": "localhost" },
      });
      rmSync(join(project, "vmpools.placement.json"));
      // An app synthesizing elsewhere (a test's temporary folder) writes no record here.
      const elsewhere = new App({ outdir: join(dir, "elsewhere") });
      new VmPool(new TerraformStack(elsewhere, "s"), "Pool", validProps({ size: 2 }));
      elsewhere.synth();
      expect(existsSync(join(project, "vmpools.placement.json"))).toBe(false);
      expect(existsSync(join(dir, "vmpools.placement.json"))).toBe(false);
    } finally {
      process.chdir(before);
    }
  });

  it("unit-test synths (synthStack) read the record but never write it", () => {
    writeFileSync(record, JSON.stringify({ "MyPool-???": { "MyPool-001": "h2" } }));
    const stack = new TerraformStack(new App({ outdir: join(dir, "cdktf.out") }), "s");
    const pool = new VmPool(stack, "Pool", {
      ...validProps({ size: 3, cluster: { hosts: hosts("h1", "h2", "h3") } }),
      placementRecordPath: record,
    });
    expect(pool.plan.members[0]!.host.name).toBe("h2");
    synthStack(stack);
    expect(JSON.parse(readFileSync(record, "utf8"))).toEqual({ "MyPool-???": { "MyPool-001": "h2" } });
  });
});
