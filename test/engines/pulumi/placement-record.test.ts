// The Pulumi component's placement record under mocks: read before planning, written while the
// program runs, other pools' entries kept; and the probe's misplaced check failing the program.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { HostRef, VmPoolProps } from "../../../core";
import { renderPlacementRecord } from "../../../engines/libvirt-provider/placement-record";
import { guardChecks, type ProbeResult } from "../../../engines/libvirt-provider/probe";
import { LIBVIRT_TYPES } from "../../../engines/pulumi/package";
import { VmPool } from "../../../engines/pulumi";
import { validProps } from "../../support/fixtures";
import { runMocked } from "../../support/pulumi-mocks";

const hosts = (...names: string[]): HostRef[] => names.map((name) => ({ name, uri: `qemu+ssh://root@${name}/system` }));

const answer = (query: Readonly<Record<string, string>>, misplaced = ""): ProbeResult => ({
  storage_pool: query.candidates!.split(",")[0]!,
  available_bytes: String(100 << 30),
  max_member_index: "0",
  held_above: "",
  undetached: "",
  member_count: "0",
  misplaced,
});

let dir: string;
let record: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "vmpools-pulumi-record-"));
  record = join(dir, "vmpools.placement.stack.json");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Runs one pool under mocks; the host each member domain's provider is for. */
/** `recordPath` null: the component's default. */
async function run(props: VmPoolProps, recordPath: string | null = record) {
  const result = await runMocked(
    () =>
      new VmPool("MyPool", props, {
        hostProbe: async (q) => answer(q),
        assetDir: join(dir, "assets"),
        placementRecordPath: recordPath ?? undefined,
      }),
  );
  const domainHosts = Object.fromEntries(
    result.ofType(LIBVIRT_TYPES.domain).map((d) => [d.name.replace(/^MyPool-/, ""), d.provider!.split("::MyPool-")[1]]),
  );
  return { ...result, domainHosts };
}

describe("placement record (Pulumi)", () => {
  it("recorded members keep their host when one is added; the record gains only the new members", async () => {
    const first = await run(validProps({ size: 20, cluster: { hosts: hosts("h1") } }));
    expect(new Set(Object.values(first.domainHosts))).toEqual(new Set(["h1"]));
    const text = readFileSync(record, "utf8");
    expect(text).toBe(renderPlacementRecord({ "MyPool-???": first.result.plan.placement }));
    const second = await run(validProps({ size: 30, cluster: { hosts: hosts("h1", "h2") } }));
    for (let i = 1; i <= 20; i++) expect(second.domainHosts[`MyPool-${String(i).padStart(3, "0")}`]).toBe("h1");
    expect(Object.values(second.domainHosts)).toContain("h2");
    const after = JSON.parse(readFileSync(record, "utf8")) as Record<string, Record<string, string>>;
    expect(Object.keys(after["MyPool-???"]!)).toHaveLength(30);
    // The same program again: the same bytes.
    const again = readFileSync(record, "utf8");
    await run(validProps({ size: 30, cluster: { hosts: hosts("h1", "h2") } }));
    expect(readFileSync(record, "utf8")).toBe(again);
  });

  it("keeps other pools' entries (a program run knows only its own pools)", async () => {
    writeFileSync(record, JSON.stringify({ "Other-??": { "Other-01": "far" } }));
    await run(validProps({ size: 1 }));
    expect(JSON.parse(readFileSync(record, "utf8"))).toEqual({
      "MyPool-???": { "MyPool-001": "localhost" },
      "Other-??": { "Other-01": "far" },
    });
  });

  it("a recorded host gone from cluster.hosts fails the program before anything is registered", async () => {
    writeFileSync(record, JSON.stringify({ "MyPool-???": { "MyPool-002": "gone" } }));
    const attempt = runMocked(() => {
      try {
        new VmPool("MyPool", validProps({ size: 3 }), {
          hostProbe: async (q) => answer(q),
          placementRecordPath: record,
        });
        return undefined;
      } catch (e) {
        return (e as Error).message;
      }
    });
    const { result, resources } = await attempt;
    expect(result).toMatch(/cluster.hosts = "gone": is missing, .*MyPool-002; keep host gone in cluster.hosts/);
    expect(resources).toEqual([]);
    // The record is left as it was.
    expect(JSON.parse(readFileSync(record, "utf8"))).toEqual({ "MyPool-???": { "MyPool-002": "gone" } });
  });

  it("under mocks (no project folder) there is no record unless the option names one", async () => {
    await run(validProps({ size: 1 }), null);
    expect(existsSync(record)).toBe(false);
    expect(existsSync(join(process.cwd(), "vmpools.placement.stack.json"))).toBe(false);
  });

  it("a member the probe finds on the wrong host fails the program with guardChecks' message", async () => {
    const props = validProps({ size: 3, cluster: { hosts: hosts("h1", "h2") } });
    const result = await runMocked(
      () =>
        new VmPool("MyPool", props, {
          hostProbe: async (q) => answer(q, q.host === "h2" ? "MyPool-001 (planned on h1)" : ""),
          assetDir: join(dir, "assets"),
          placementRecordPath: record,
        }),
    );
    const plan = result.result.plan;
    expect(plan.members[0]!.host.name).toBe("h1");
    const check = guardChecks(plan, hosts("h2")[0]!).find((c) => c.field === "misplaced")!;
    const message = check.message("MyPool-001 (planned on h1)");
    expect(message).toMatch(
      /host h2 already has members .*\(MyPool-001 \(planned on h1\)\).*restore vmpools.placement.json/,
    );
    expect(result.errors).toEqual([message]);
  });
});
