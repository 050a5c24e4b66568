import { planPool } from "../../core/plan";
import type { DomainInfo, DomainState } from "../../reconciler/driver/libvirt-driver";
import {
  freeMembers,
  groupPools,
  holdingsByUser,
  parseMembers,
  planMemberDown,
  planPrestart,
  type MemberActivity,
} from "../../reconciler/pools";
import { validProps } from "../support/fixtures";
import { pool } from "./fixtures/pools";

const held = (...vms: string[]) => vms.map((vm) => ({ vm, adminAccess: false }));
const busy = (entries: Record<string, MemberActivity> = {}) => new Map(Object.entries(entries));

describe("groupPools", () => {
  const domain = (name: string, uuid: string, state: DomainState, metadataXml?: string): DomainInfo =>
    metadataXml === undefined ? { name, uuid, state } : { name, uuid, state, metadataXml };

  it("groups members by pool, sorted by index, with the newest member's policy", () => {
    const old = planPool(validProps({ name: "A", size: 3, prestarted: 1 }));
    const edited = planPool(
      validProps({ name: "A", size: 4, prestarted: 2, template: { ...old.pool.template, version: 2 } }),
    );
    const other = planPool(validProps({ name: "B", size: 1, type: "manual" }));
    const domains = [
      domain("A-4", "u4", "running", edited.members[3]!.metadataXml),
      domain("A-2", "u2", "shut off", old.members[1]!.metadataXml),
      domain("A-1", "u1", "running", old.members[0]!.metadataXml),
      domain("B-1", "u5", "shut off", other.members[0]!.metadataXml),
      domain("stranger", "u6", "running"),
      domain("broken", "u7", "running", `<member xmlns="https://vmpools.dev/xmlns/pool/1"/>`),
    ];
    const pools = groupPools(parseMembers(domains, "localhost"));
    expect([...pools.keys()]).toEqual(["A", "B"]);
    const a = pools.get("A")!;
    expect(a.members.map((m) => [m.name, m.index, m.state, m.templateVersion])).toEqual([
      ["A-1", 1, "running", 1],
      ["A-2", 2, "shut off", 1],
      ["A-4", 4, "running", 2],
    ]);
    expect(a.policy).toMatchObject({ prestarted: 2, templateVersion: 2, type: "automatic" });
    expect(a.members[0]).toMatchObject({ baseImagePath: old.pool.template.baseImagePath, diskFormat: "qcow2" });
    expect(pools.get("B")!.policy.type).toBe("manual");
  });
});

describe("freeMembers", () => {
  it("prefers running free members, then members being prestarted, then stopped ones, lowest index first", () => {
    const p = pool(["shut off", "running", "shut off", "running", "shut off", "paused", "running"]);
    const order = freeMembers(p, held("vm-4"), busy({ "vm-3": "prestart", "vm-7": "revert" }));
    expect(order).toEqual(["vm-2", "vm-3", "vm-1", "vm-5"]);
  });

  it("is empty when everything is held or busy", () => {
    const p = pool(["running", "shut off"]);
    expect(freeMembers(p, held("vm-1"), busy({ "vm-2": "settle" }))).toEqual([]);
  });
});

describe("planPrestart", () => {
  it("starts the lowest-index stopped free members up to the prestarted count", () => {
    const p = pool(["shut off", "shut off", "running", "shut off", "shut off"], { prestarted: 3 });
    // vm-3 is held, so nothing is up yet.
    expect(planPrestart(p, held("vm-3"), busy())).toEqual({ start: ["vm-1", "vm-2", "vm-4"], stop: [] });
  });

  it("counts members being prestarted as up and skips busy and blocked ones", () => {
    const p = pool(["shut off", "shut off", "shut off", "shut off", "running"], { prestarted: 3 });
    const plan = planPrestart(p, [], busy({ "vm-1": "prestart", "vm-2": "revert" }), new Set(["vm-3"]));
    expect(plan).toEqual({ start: ["vm-4"], stop: [] });
  });

  it("never plans more than asked and stops the surplus, highest index first", () => {
    const p = pool(["running", "running", "running", "running", "shut off"], { prestarted: 1 });
    expect(planPrestart(p, held("vm-1"), busy())).toEqual({ start: [], stop: ["vm-4", "vm-3"] });
    expect(planPrestart(p, held("vm-1", "vm-2", "vm-3"), busy())).toEqual({ start: [], stop: [] });
  });

  it("asks nothing of manual pools", () => {
    const p = pool(["shut off", "running"], { type: "manual", prestarted: 1 });
    expect(planPrestart(p, [], busy())).toEqual({ start: [], stop: [] });
  });

  it("plans nothing when there is nothing left to start", () => {
    const p = pool(["shut off", "shut off"], { prestarted: 2 });
    expect(planPrestart(p, held("vm-1", "vm-2"), busy())).toEqual({ start: [], stop: [] });
  });

  it("plans no surplus stop while members are still being prestarted (they are re-planned when done)", () => {
    const p = pool(["running", "shut off", "running"], { prestarted: 1 });
    expect(planPrestart(p, [], busy({ "vm-2": "prestart" }))).toEqual({ start: [], stop: [] });
    expect(planPrestart(p, [], busy())).toEqual({ start: [], stop: ["vm-3"] });
  });
});

describe("planMemberDown", () => {
  const automatic = pool([]).policy;
  const manual = { ...automatic, type: "manual" as const };
  const stateful = { ...automatic, stateful: true };
  const user = { adminAccess: false };
  const admin = { adminAccess: true };

  it("returns held members of automatic pools, reverting unless stateful or admin-accessed", () => {
    expect(planMemberDown(automatic, user, true)).toBe("revert-and-release");
    expect(planMemberDown(automatic, user, false)).toBe("revert-and-release");
    expect(planMemberDown(stateful, user, true)).toBe("release");
    expect(planMemberDown(automatic, admin, true)).toBe("release");
  });

  it("keeps held members of manual pools assigned", () => {
    expect(planMemberDown(manual, user, true)).toBe("none");
  });

  it("restores a free member that was up (a prestarted VM) and leaves a free stopped one alone", () => {
    expect(planMemberDown(automatic, undefined, true)).toBe("revert");
    expect(planMemberDown(automatic, undefined, false)).toBe("none");
    expect(planMemberDown(stateful, undefined, true)).toBe("none");
    expect(planMemberDown(manual, undefined, true)).toBe("none");
  });
});

test("holdingsByUser lists each user's VMs across pools", () => {
  const byUser = holdingsByUser([
    { pool: "b", vm: "b-1", user: "zoe" },
    { pool: "a", vm: "a-2", user: "ann" },
    { pool: "b", vm: "b-3", user: "ann" },
  ]);
  expect([...byUser]).toEqual([
    [
      "ann",
      [
        { pool: "a", vm: "a-2" },
        { pool: "b", vm: "b-3" },
      ],
    ],
    ["zoe", [{ pool: "b", vm: "b-1" }]],
  ]);
});
