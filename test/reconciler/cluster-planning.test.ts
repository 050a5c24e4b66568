// The cluster's pure decisions: host states, take order and prestart spread across hosts,
// migration destinations, and how a pool's migration settings become libvirt's flags.
import fc from "fast-check";
import { Cluster } from "../../reconciler/cluster/cluster";
import { byHeadroom, hostState, type HostFacts } from "../../reconciler/cluster/hosts";
import { MIGRATION_CONVERGE_MS, planMigration } from "../../reconciler/cluster/migration";
import { pickDestination } from "../../reconciler/cluster/placement";
import { freeMembers, planPrestart, type HostPicture, type MemberActivity } from "../../reconciler/pools";
import { FakeDriver } from "../support/fake-driver";
import { POLICY, pool } from "./fixtures/pools";

const busy = (entries: Record<string, MemberActivity> = {}) => new Map(Object.entries(entries));
const held = (...vms: string[]) => vms.map((vm) => ({ vm, adminAccess: false }));

/** A picture of hosts: `up` usable, `seen` visible but not usable (maintenance), others unreachable. */
function picture(
  up: readonly string[],
  seen: readonly string[] = [],
  freeMiB: Record<string, number> = {},
): HostPicture {
  return {
    usable: (h) => up.includes(h),
    visible: (h) => up.includes(h) || seen.includes(h),
    byHeadroom: byHeadroom(new Map(Object.entries(freeMiB).map(([h, m]) => [h, { freeMemoryMiB: m, running: 0 }]))),
  };
}

describe("hostState", () => {
  const facts: HostFacts = { reachable: true, leaseHeld: true, maintenance: false };

  it("is up when it answers, its lease is ours and nobody took it out of service", () => {
    expect(hostState("h1", facts)).toEqual({ name: "h1", state: "up" });
  });

  it("says unreachable over everything else, with the connection error", () => {
    expect(
      hostState("h1", { ...facts, reachable: false, maintenance: true, unreachableReason: "connection refused" }),
    ).toEqual({ name: "h1", state: "unreachable", reason: "connection refused" });
  });

  it("is non-operational without its lease or when something found it unfit, before maintenance", () => {
    expect(hostState("h1", { ...facts, leaseHeld: false, maintenance: true, unfitReason: "held by pid 7" })).toEqual({
      name: "h1",
      state: "non-operational",
      reason: "held by pid 7",
    });
    expect(hostState("h1", { ...facts, unfitReason: "untrusted" }).state).toBe("non-operational");
  });

  it("is in maintenance when an admin put it there", () => {
    expect(hostState("h1", { ...facts, maintenance: true }).state).toBe("maintenance");
  });
});

describe("takes across hosts (freeMembers)", () => {
  it("prefers prestarted members anywhere, then stopped ones on the host with the most free memory", () => {
    const p = pool(["shut off", "shut off", "running", "shut off", "shut off"], {}, ["h1", "h2", "h3", "h2", "h3"]);
    const order = freeMembers(p, [], busy(), picture(["h1", "h2", "h3"], [], { h1: 100, h2: 900, h3: 500 }));
    expect(order).toEqual(["vm-3", "vm-2", "vm-4", "vm-5", "vm-1"]);
  });

  it("hands out nothing on a host that is not up: unreachable, in maintenance or non-operational", () => {
    const p = pool(["running", "running", "shut off", "shut off"], {}, ["h1", "h2", "h2", "h3"]);
    expect(freeMembers(p, [], busy(), picture(["h3"], ["h2"]))).toEqual(["vm-4"]);
  });
});

describe("prestarts across hosts (planPrestart)", () => {
  const hosts = ["h1", "h1", "h1", "h2", "h2", "h2", "h3", "h3", "h3"];

  it("spreads new prestarts over the usable hosts, the emptiest host first", () => {
    const p = pool(Array(9).fill("shut off"), { prestarted: 3 }, hosts);
    const plan = planPrestart(p, [], busy(), new Set(), picture(["h1", "h2", "h3"]));
    expect(plan.start.map((vm) => hosts[Number(vm.slice(3)) - 1])).toEqual(["h1", "h2", "h3"]);
  });

  it("counts what runs already: the next start goes where fewest of the pool's prestarted run", () => {
    const p = pool(
      ["running", "shut off", "shut off", "running", "shut off", "shut off", "shut off"],
      { prestarted: 3 },
      ["h1", "h1", "h1", "h2", "h2", "h3", "h3"],
    );
    expect(planPrestart(p, [], busy(), new Set(), picture(["h1", "h2", "h3"])).start).toEqual(["vm-6"]);
  });

  it("replaces prestarted members of an unreachable host elsewhere (they may not be handed out)", () => {
    const p = pool(["running", "running", "shut off", "shut off"], { prestarted: 2 }, ["h1", "h1", "h2", "h2"]);
    expect(planPrestart(p, [], busy(), new Set(), picture(["h2"]))).toEqual({ start: ["vm-3", "vm-4"], stop: [] });
  });

  it("stops free members running on a host in maintenance, whatever the count, and starts their replacements", () => {
    const p = pool(["running", "shut off", "shut off"], { prestarted: 1 }, ["h1", "h2", "h2"]);
    expect(planPrestart(p, [], busy(), new Set(), picture(["h2"], ["h1"]))).toEqual({
      start: ["vm-2"],
      stop: ["vm-1"],
    });
  });

  it("trims a surplus from the host with the most, never a held member", () => {
    const p = pool(["running", "running", "running", "running"], { prestarted: 2 }, ["h1", "h1", "h1", "h2"]);
    expect(planPrestart(p, held("vm-4"), busy(), new Set(), picture(["h1", "h2"])).stop).toEqual(["vm-3"]);
  });

  it("never plans more than asked, and never on a host that is not up (property)", () => {
    const hostNames = ["h1", "h2", "h3"];
    fc.assert(
      fc.property(
        fc.array(fc.record({ state: fc.constantFrom("running", "shut off"), host: fc.constantFrom(...hostNames) }), {
          minLength: 1,
          maxLength: 12,
        }),
        fc.integer({ min: 0, max: 12 }),
        fc.subarray(hostNames),
        (members, prestarted, up) => {
          const p = pool(
            members.map((m) => m.state as "running" | "shut off"),
            { prestarted: Math.min(prestarted, members.length) },
            members.map((m) => m.host),
          );
          const plan = planPrestart(p, [], busy(), new Set(), picture(up, hostNames));
          const hostOf = (vm: string) => members[Number(vm.slice(3)) - 1]!.host;
          const runningUp = p.members.filter((m) => m.state === "running" && up.includes(m.host)).length;
          expect(plan.start.every((vm) => up.includes(hostOf(vm)))).toBe(true);
          expect(runningUp + plan.start.length).toBeLessThanOrEqual(Math.max(p.policy.prestarted, runningUp));
          // Every free member running on a seen host that is not up is stopped.
          for (const m of p.members) {
            if (m.state === "running" && !up.includes(m.host)) expect(plan.stop).toContain(m.name);
          }
        },
      ),
    );
  });
});

describe("pickDestination", () => {
  const cluster = ["h1", "h2", "h3"];

  it("picks the up host with the most headroom among the pool's allowed hosts, never the source", () => {
    const pic = picture(["h1", "h2", "h3"], [], { h1: 9000, h2: 100, h3: 5000 });
    expect(pickDestination([], "h1", cluster, pic)).toBe("h3");
    expect(pickDestination(["h1", "h2"], "h1", cluster, pic)).toBe("h2");
  });

  it("has none when no other allowed host is up", () => {
    expect(pickDestination(["h1", "h2"], "h1", cluster, picture(["h1", "h3"]))).toBeUndefined();
  });
});

describe("planMigration (the seed's migration settings)", () => {
  const settings = {
    migrationMode: POLICY.migrationMode,
    autoConverge: "inherit",
    compression: "inherit",
  } as const;
  const manual = { trigger: "manual", hostCpuPassthrough: false } as const;
  const automatic = { trigger: "automatic", hostCpuPassthrough: false } as const;

  it("refuses every migration in mode none, automatic ones in manual-only", () => {
    expect(planMigration({ ...settings, migrationMode: "none" }, manual)).toEqual({
      allowed: false,
      reason: 'its pool\'s migration mode is "none"',
    });
    expect(planMigration({ ...settings, migrationMode: "manual-only" }, automatic).allowed).toBe(false);
    expect(planMigration({ ...settings, migrationMode: "manual-only" }, manual).allowed).toBe(true);
  });

  it("never migrates a guest with the host CPU passed through", () => {
    const d = planMigration(settings, { trigger: "manual", hostCpuPassthrough: true });
    expect(d).toEqual({ allowed: false, reason: "it runs with the host CPU passed through, which cannot migrate" });
  });

  it("legacy: live, with auto-converge, compression and the custom downtime as set", () => {
    expect(
      planMigration(
        { ...settings, migrationPolicy: "legacy", autoConverge: "on", compression: "on", migrationDowntimeMs: 250 },
        automatic,
      ),
    ).toEqual({
      allowed: true,
      options: {
        live: true,
        persistent: true,
        undefineSource: true,
        maxDowntimeMs: 250,
        autoConverge: true,
        compressed: true,
      },
    });
    const inherit = planMigration({ ...settings, migrationPolicy: "legacy" }, automatic);
    expect(inherit.allowed && inherit.options).toEqual({ live: true, persistent: true, undefineSource: true });
  });

  it("minimal downtime: no throttling, a bounded pause, aborted when it does not converge", () => {
    const d = planMigration({ ...settings, migrationPolicy: "minimal-downtime" }, manual);
    expect(d.allowed && d.options).toEqual({
      live: true,
      persistent: true,
      undefineSource: true,
      maxDowntimeMs: 300,
      onTimeout: "abort",
      timeoutMs: MIGRATION_CONVERGE_MS,
    });
  });

  it("suspend workload if needed: throttles, and pauses the guest to finish when it does not converge", () => {
    const d = planMigration(
      { ...settings, migrationPolicy: "suspend-workload-if-needed", migrationDowntimeMs: 800 },
      manual,
    );
    expect(d.allowed && d.options).toEqual({
      live: true,
      persistent: true,
      undefineSource: true,
      maxDowntimeMs: 800,
      autoConverge: true,
      onTimeout: "suspend",
      timeoutMs: MIGRATION_CONVERGE_MS,
    });
  });
});

describe("Cluster facts", () => {
  it("keeps an unfit verdict apart from the lease: taking the lease back does not make an unfit host up", () => {
    const c = new Cluster([{ name: "h1", uri: "", driver: new FakeDriver() }]);
    c.setLeaseHeld("h1", false, "held by another reconciler");
    expect(c.view("h1")).toEqual({ name: "h1", state: "non-operational", reason: "held by another reconciler" });
    c.setUnfit("h1", "attestation: untrusted");
    c.setLeaseHeld("h1", true);
    expect(c.view("h1")).toEqual({ name: "h1", state: "non-operational", reason: "attestation: untrusted" });
    expect(c.picture().usable("h1")).toBe(false);
    expect(c.picture().visible("h1")).toBe(true);
    c.setUnfit("h1", undefined);
    expect(c.view("h1").state).toBe("up");
  });
});
