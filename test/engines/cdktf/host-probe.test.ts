import { execFileSync } from "node:child_process";
import { writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import { HOLDER_NAMESPACE, METADATA_NAMESPACE } from "../../../core";
import { TEST_URI, holdTestDriver, releaseTestDriver, requireLibvirtd, virsh } from "../../support/libvirt";

const PROBE = join(__dirname, "../../../engines/libvirt-provider/host-probe.cjs");
const suffix = `${process.pid}`;

function probe(query: Record<string, string>): Record<string, string> {
  return JSON.parse(execFileSync("node", [PROBE], { input: JSON.stringify(query), encoding: "utf8", stdio: "pipe" }));
}

/** Sets (or, without xml, removes) a metadata element of a test-driver domain's config. */
function metadata(domain: string, ns: string, xml?: string): void {
  const change = xml === undefined ? ["--remove"] : ["--key", "k", "--set", xml];
  virsh(TEST_URI, "metadata", "--domain", domain, "--uri", ns, ...change, "--config");
}

describe("plan-time host probe against a real libvirtd", () => {
  let holder: ChildProcess;
  const dir = mkdtempSync(join(tmpdir(), "vmpools-probe-"));
  const pools = [`probe-a-${suffix}`, `probe-b-${suffix}`, `probe-c-${suffix}`];
  const domains = [`ProbePool-003`, `ProbePool-012`, `ProbePool-x`, `Other-020`];

  beforeAll(() => {
    requireLibvirtd();
    holder = holdTestDriver();
    // Wait until the holder's connection is open, so state is shared from here on.
    for (let i = 0; i < 50 && !virsh(TEST_URI, "list", "--all", "--name").includes("test"); i++);
    pools.forEach((name, i) => {
      const xml = join(dir, `${name}.xml`);
      writeFileSync(xml, `<pool type='dir'><name>${name}</name><target><path>/${name}</path></target></pool>`);
      virsh(TEST_URI, "pool-define", xml);
      if (i < 2) virsh(TEST_URI, "pool-start", name);
    });
    // The test driver reports 100 GiB per pool; allocations make b the freest, a the fullest.
    virsh(TEST_URI, "vol-create-as", pools[0]!, "fill", "60G", "--allocation", "60G");
    virsh(TEST_URI, "vol-create-as", pools[1]!, "fill", "10G", "--allocation", "10G");
    const base = virsh(TEST_URI, "dumpxml", "test").replace(/<uuid>.*<\/uuid>/, "");
    for (const d of domains) {
      const xml = join(dir, `${d}.xml`);
      writeFileSync(xml, base.replace("<name>test</name>", `<name>${d}</name>`));
      virsh(TEST_URI, "define", xml);
    }
  });

  afterAll(async () => {
    for (const d of domains) virsh(TEST_URI, "undefine", d);
    for (const p of pools) {
      try {
        virsh(TEST_URI, "pool-destroy", p);
      } catch {
        /* the inactive pool */
      }
      virsh(TEST_URI, "pool-undefine", p);
    }
    await releaseTestDriver(holder);
    rmSync(dir, { recursive: true, force: true });
  });

  it("picks the candidate with the most free space and finds existing members", () => {
    const result = probe({
      uri: TEST_URI,
      candidates: pools.slice(0, 2).join(","),
      member_pattern: "^ProbePool-([0-9]{3})$",
    });
    expect(result).toEqual({
      storage_pool: pools[1],
      available_bytes: String(90 * 1024 ** 3),
      max_member_index: "12",
      member_count: "2",
      held_above: "",
      undetached: "",
      misplaced: "",
    });
  });

  it("reports held members above the size (the reconciler's holder mark) and skips detached ones", () => {
    metadata("ProbePool-012", HOLDER_NAMESPACE, '<holder user="alice"/>');
    try {
      const query = {
        uri: TEST_URI,
        candidates: pools[0]!,
        member_pattern: "^ProbePool-([0-9]{3})$",
        holder_uri: HOLDER_NAMESPACE,
      };
      expect(probe({ ...query, size: "5" })).toMatchObject({
        max_member_index: "12",
        held_above: "ProbePool-012 (alice)",
      });
      expect(probe({ ...query, size: "12" })).toMatchObject({ held_above: "" });
      expect(probe({ ...query, size: "5", detached: "ProbePool-012" })).toMatchObject({
        max_member_index: "3",
        member_count: "1",
        held_above: "",
        undetached: "",
      });
      // Listed as detached while it still carries the pool's metadata: named, so the plan fails.
      metadata("ProbePool-012", METADATA_NAMESPACE, '<member pool="ProbePool-???"/>');
      expect(probe({ ...query, size: "5", detached: "ProbePool-012", member_uri: METADATA_NAMESPACE })).toMatchObject({
        undetached: "ProbePool-012",
      });
      metadata("ProbePool-012", METADATA_NAMESPACE);
      expect(probe({ ...query, size: "5", detached: "ProbePool-012", member_uri: METADATA_NAMESPACE })).toMatchObject({
        undetached: "",
      });
    } finally {
      metadata("ProbePool-012", HOLDER_NAMESPACE);
    }
  });

  it("names members defined here that the plan puts on another host, never detached ones or those above the size", () => {
    const query = { uri: TEST_URI, candidates: pools[0]!, member_pattern: "^ProbePool-([0-9]{3})$", host: "here" };
    // 003 is planned elsewhere; 012 here.
    expect(probe({ ...query, size: "12", placement: "here=1-2,12;there=3-5,6;far=7-11" }).misplaced).toBe(
      "ProbePool-003 (planned on there)",
    );
    expect(probe({ ...query, size: "12", placement: "far=1-12" }).misplaced).toBe(
      "ProbePool-003 (planned on far), ProbePool-012 (planned on far)",
    );
    // Above the size the shrink guard speaks; a detached VM is no member.
    expect(probe({ ...query, size: "5", placement: "far=1-5" }).misplaced).toBe("ProbePool-003 (planned on far)");
    expect(probe({ ...query, size: "12", placement: "far=1-12", detached: "ProbePool-003" }).misplaced).toBe(
      "ProbePool-012 (planned on far)",
    );
    expect(probe({ ...query, size: "12", placement: "here=1-12" }).misplaced).toBe("");
    // A query without a placement (an older plan) checks nothing.
    expect(probe({ ...query, size: "12" }).misplaced).toBe("");
  });

  it("skips inactive or unknown pools and reports zero members for a new pool", () => {
    const result = probe({
      uri: TEST_URI,
      candidates: `nope-${suffix},${pools[2]},${pools[0]}`,
      member_pattern: "^NewPool-([0-9]+)$",
    });
    expect(result.storage_pool).toBe(pools[0]);
    expect(result.max_member_index).toBe("0");
  });

  it("fails with a clear message when no candidate is usable", () => {
    let stderr = "";
    try {
      probe({ uri: TEST_URI, candidates: `${pools[2]},nope-${suffix}` });
    } catch (e) {
      stderr = String((e as { stderr: Buffer }).stderr);
    }
    expect(stderr).toMatch(
      new RegExp(
        `vmpools host probe: no usable storage pool on ${TEST_URI.replace(/\+/g, "\\+")}: ${pools[2]}: not running; nope-${suffix}: .*`,
      ),
    );
  });
});
