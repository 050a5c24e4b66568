// Placement fixed at creation: a member keeps the host the placement record gives it, new
// members get the rendezvous pick over the current hosts, and a record naming a host the pool
// lost is a validation error.
import fc from "fast-check";
import {
  homeHost,
  indexRanges,
  parseMetadataXml,
  parsePolicyDocument,
  planPool,
  PoolSpecError,
  type HostRef,
  type PoolPlacement,
  type VmPoolProps,
} from "../../core";
import { validProps } from "../support/fixtures";

const hosts = (n: number): HostRef[] =>
  Array.from({ length: n }, (_, i) => ({ name: `h${i + 1}`, uri: `qemu+ssh://root@h${i + 1}/system` }));
const onHosts = (n: number, overrides: Partial<VmPoolProps> = {}) =>
  validProps({ cluster: { hosts: hosts(n) }, maxVmsInPool: 999, ...overrides });
const hostsOf = (props: VmPoolProps, placement?: PoolPlacement) =>
  Object.fromEntries(planPool(props, undefined, { placement }).members.map((m) => [m.name, m.host.name]));

function issuesOf(f: () => unknown): PoolSpecError["issues"] {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(PoolSpecError);
    return (e as PoolSpecError).issues;
  }
  throw new Error("expected a PoolSpecError");
}

describe("placement record in planPool", () => {
  it("with an empty record every member gets today's rendezvous pick, so existing stacks see no change", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 60 }), (n, size) => {
        const props = onHosts(n, { size });
        const plan = planPool(props, undefined, { placement: {} });
        expect(JSON.stringify(plan)).toBe(JSON.stringify(planPool(props)));
        for (const m of plan.members) expect(m.host).toEqual(homeHost(m.name, hosts(n)));
      }),
    );
  });

  it("adding a host moves no recorded member; only new members may go to it", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 0, max: 40 }),
        (n, added, size, grow) => {
          const before = planPool(onHosts(n, { size }));
          const after = hostsOf(onHosts(n + added, { size: size + grow }), before.placement);
          for (const [vm, host] of Object.entries(before.placement)) expect(after[vm]).toBe(host);
          // New members are placed by hashing over every host, the added ones included.
          for (const m of planPool(onHosts(n + added, { size: size + grow }), undefined, {
            placement: before.placement,
          }).members.slice(size))
            expect(m.host).toEqual(homeHost(m.name, hosts(n + added)));
        },
      ),
    );
  });

  it("raising size never moves a recorded member, whatever host the record names", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 4 }),
        fc.integer({ min: 1, max: 30 }),
        fc.integer({ min: 1, max: 30 }),
        fc.infiniteStream(fc.integer({ min: 1, max: 4 })),
        (n, size, grow, picks) => {
          // A record need not follow the hash (hosts were added since, or it was edited).
          const record = Object.fromEntries(
            planPool(onHosts(n, { size })).members.map((m) => [m.name, `h${Math.min(picks.next().value, n)}`]),
          );
          const after = hostsOf(onHosts(n, { size: size + grow }), record);
          for (const [vm, host] of Object.entries(record)) expect(after[vm]).toBe(host);
        },
      ),
    );
  });

  it("the plan's placement holds its members and detached members only: a shrink's removed members drop out", () => {
    const big = planPool(onHosts(3, { size: 12 }));
    const small = planPool(onHosts(3, { size: 8, allowShrink: true, detached: ["MyPool-003", "MyPool-010"] }), "P", {
      placement: big.placement,
    });
    expect(Object.keys(small.placement)).toEqual([
      "MyPool-001",
      "MyPool-002",
      "MyPool-003",
      "MyPool-004",
      "MyPool-005",
      "MyPool-006",
      "MyPool-007",
      "MyPool-008",
      "MyPool-010",
    ]);
    for (const [vm, host] of Object.entries(small.placement)) expect(host).toBe(big.placement[vm]);
    // A detached member keeps its recorded host (the Pulumi component keeps it registered there).
    expect(small.detached.map((m) => [m.name, m.host.name])).toEqual([
      ["MyPool-003", big.placement["MyPool-003"]],
      ["MyPool-010", big.placement["MyPool-010"]],
    ]);
  });

  it("a recorded host gone from cluster.hosts is an error naming its members and the fix, beside the other problems", () => {
    const record = { "MyPool-001": "h2", "MyPool-002": "h1", "MyPool-004": "h2", "MyPool-011": "h2" };
    const issues = issuesOf(() =>
      planPool(onHosts(1, { size: 5, template: { ...validProps().template, vcpus: 0 } }), "P", { placement: record }),
    );
    expect(issues.map((i) => i.prop)).toEqual(["template.vcpus", "cluster.hosts"]);
    const issue = issues[1]!;
    expect(issue.value).toBe("h2");
    // MyPool-011 is above the size: no member of this plan, so no problem.
    expect(issue.message).toMatch(/has members on it: MyPool-001, MyPool-004; keep host h2 in cluster.hosts until/);
    expect(issue.message).toMatch(/detach them .*or lower size with allowShrink/);
  });

  it("a recorded host a managed member may no longer run on (startRunningOn) is an error; a detached one's is not", () => {
    const record = { "MyPool-001": "h2", "MyPool-002": "h2" };
    const restricted = (detached: string[]) =>
      onHosts(2, { size: 2, host: { startRunningOn: { hosts: ["h1"] } }, detached });
    const issues = issuesOf(() => planPool(restricted([]), "P", { placement: record }));
    expect(issues).toEqual([
      {
        prop: "host.startRunningOn.hosts",
        value: "h2",
        message: expect.stringMatching(/has members on it: MyPool-001, MyPool-002; keep h2 in host.startRunningOn/),
      },
    ]);
    const plan = planPool(restricted(["MyPool-001", "MyPool-002"]), "P", { placement: record });
    expect(plan.detached.map((m) => m.host.name)).toEqual(["h2", "h2"]);
  });

  it("names at most five members of a host, then how many more", () => {
    const record = Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`MyPool-00${i + 1}`, "gone"]));
    const [issue] = issuesOf(() => planPool(onHosts(1, { size: 9 }), "P", { placement: record }));
    expect(issue!.message).toMatch(/MyPool-001, MyPool-002, MyPool-003, MyPool-004, MyPool-005 and 4 more;/);
  });
});

describe("home host in member metadata", () => {
  it("each member's metadata names its home host; the policy document does not", () => {
    const plan = planPool(onHosts(3, { size: 6 }), "P", { placement: { "MyPool-002": "h3" } });
    for (const m of plan.members) {
      expect(m.metadataXml).toContain(`<vmpools:placement hosts="h1,h2,h3" home="${m.host.name}"/>`);
      expect(parseMetadataXml(m.metadataXml)).toEqual({ ...m.metadata, homeHost: m.host.name });
    }
    expect(plan.members[1]!.metadata.homeHost).toBe("h3");
    expect(plan.policy.xml).toContain('<vmpools:placement hosts="h1,h2,h3"/>');
    expect(parsePolicyDocument(plan.policy.xml)!.policy).not.toHaveProperty("homeHost");
  });

  it("metadata written before home hosts existed still parses, without one", () => {
    const m = planPool(onHosts(2, { size: 1 })).members[0]!;
    const old = m.metadataXml.replace(/ home="[^"]*"/, "");
    expect(old).not.toContain("home=");
    const parsed = parseMetadataXml(old)!;
    expect(parsed).not.toHaveProperty("homeHost");
    const rest = Object.fromEntries(Object.entries(m.metadata).filter(([key]) => key !== "homeHost"));
    expect(parsed).toEqual(rest);
  });
});

describe("indexRanges", () => {
  it("writes sorted indices as compact ranges", () => {
    expect(indexRanges([])).toBe("");
    expect(indexRanges([9, 1, 2, 3, 4, 5, 12, 3])).toBe("1-5,9,12");
    expect(indexRanges([7])).toBe("7");
  });

  it("round-trips any set of indices", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: 300 })), (indices) => {
        const back = indexRanges(indices)
          .split(",")
          .filter(Boolean)
          .flatMap((r) => {
            const [a, b = a] = r.split("-").map(Number);
            return Array.from({ length: b! - a! + 1 }, (_, i) => a! + i);
          });
        expect(back).toEqual([...indices].sort((x, y) => x - y));
      }),
    );
  });
});
