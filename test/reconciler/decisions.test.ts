// The reconciler's pure decisions, without libvirt: what a listing, the periodic level rules, a
// lifecycle event and a pending intent after a restart each ask the actuator to do.
import { planEvent, planLevelRules, planListed, type Pool } from "../../reconciler/pools";
import { decideRecovery, factsNeeded, revertPlanOf, type RecoveryFacts } from "../../reconciler/recovery";
import type { Intent, IntentKind } from "../../reconciler/store/store";
import { POLICY, pool } from "./fixtures/pools";

describe("planListed", () => {
  it("adopts what libvirt lists, keeps the state work in progress sets, and settles a stop no event reported", () => {
    const up = { state: "running" as const };
    const down = { state: "shut off" as const };
    expect(planListed(undefined, down, { busy: false, acting: true })).toBe("adopt");
    expect(planListed(up, down, { busy: true, acting: true })).toBe("keep-state");
    expect(planListed(up, down, { busy: false, acting: true })).toBe("settle");
    // Before start-up recovery is done nothing is acted on.
    expect(planListed(up, down, { busy: false, acting: false })).toBe("adopt");
    expect(planListed(down, up, { busy: false, acting: true })).toBe("adopt");
    // A listing that began before the reconciler's own change (a start) says nothing about it.
    expect(planListed(up, down, { busy: false, acting: true, changedMeanwhile: true })).toBe("keep-state");
  });
});

describe("planLevelRules", () => {
  const facts = (p: Pool, over: Partial<Parameters<typeof planLevelRules>[0]> = {}) => ({
    pools: [p],
    assignments: [] as { pool: string; vm: string }[],
    busy: () => false,
    revertNeeded: new Set<string>(),
    poolOf: (vm: string) => (p.members.some((m) => m.name === vm) ? p.name : undefined),
    manages: () => true,
    ...over,
  });

  it("settles held members found down in automatic pools, not in manual ones", () => {
    const p = pool(["shut off", "running"]);
    const assignments = [{ pool: "p", vm: "vm-1" }];
    expect(planLevelRules(facts(p, { assignments })).settle).toEqual(["vm-1"]);
    expect(planLevelRules(facts(pool(["shut off"], { type: "manual" }), { assignments })).settle).toEqual([]);
  });

  it("settles a down member whose revert must finish, skips busy ones, stops free paused ones", () => {
    const p = pool(["shut off", "paused", "paused", "shut off"]);
    const actions = planLevelRules(
      facts(p, {
        assignments: [{ pool: "p", vm: "vm-3" }],
        revertNeeded: new Set(["vm-1", "vm-4"]),
        busy: (vm) => vm === "vm-4",
      }),
    );
    expect(actions.settle).toEqual(["vm-1"]);
    expect(actions.stopPaused).toEqual([{ pool: "p", vm: "vm-2" }]);
    expect(actions.plan).toEqual(["p"]);
  });

  it("forgets holders of members that are gone, only in managed pools", () => {
    const p = pool(["running"]);
    const assignments = [
      { pool: "p", vm: "vm-9" },
      { pool: "other", vm: "x" },
    ];
    expect(planLevelRules(facts(p, { assignments, manages: (n) => n === "p" })).forget).toEqual([
      { pool: "p", vm: "vm-9" },
    ]);
  });
});

describe("planEvent", () => {
  const known = { known: true, busy: false, held: false };
  it("maps libvirt's lifecycle events to what to do", () => {
    expect(planEvent("Defined", { ...known, known: false })).toEqual({ kind: "read" });
    expect(planEvent("Undefined", known)).toEqual({ kind: "list" });
    expect(planEvent("Undefined", { ...known, known: false })).toEqual({ kind: "none" });
    for (const e of ["Stopped", "Shutdown", "Crashed"] as const)
      expect(planEvent(e, known)).toEqual({ kind: "settle" });
    expect(planEvent("Started", known)).toEqual({ kind: "state", state: "running", stopPaused: false });
    expect(planEvent("Suspended", known)).toEqual({ kind: "state", state: "paused", stopPaused: true });
    expect(planEvent("Suspended", { ...known, held: true })).toEqual({
      kind: "state",
      state: "paused",
      stopPaused: false,
    });
    expect(planEvent("PMSuspended", known)).toEqual({ kind: "state", state: "pmsuspended", stopPaused: true });
    // Work in progress on the member sets its state itself.
    expect(planEvent("Started", { ...known, busy: true })).toEqual({ kind: "none" });
  });
});

describe("decideRecovery", () => {
  const plan = {
    storagePool: "sp",
    from: "vm-1.qcow2",
    to: "vm-1.vmpools-alt.qcow2",
    capacityBytes: 1,
    format: "qcow2",
    backingPath: "/b",
    backingFormat: "qcow2",
  };
  const intent = (kind: IntentKind, payload: unknown = null): Intent => ({
    id: "i",
    kind,
    pool: "p",
    vm: "vm-1",
    user: "alice",
    state: "pending",
    attempts: 0,
    nextAttemptAt: null,
    lastError: null,
    payload: payload === null ? null : JSON.stringify(payload),
    createdAt: 0,
    updatedAt: 0,
  });
  const f = (over: Partial<RecoveryFacts> = {}): RecoveryFacts => ({
    policy: POLICY,
    memberExists: true,
    holder: { user: "alice", adminAccess: false },
    revertedNow: false,
    ...over,
  });

  it("rolls back a take the caller never heard back about", () => {
    expect(decideRecovery(intent("take"), f())).toEqual({ kind: "roll-back-take" });
  });

  it("finishes a revert: only the spare when the switch happened, never under a running guest", () => {
    const v = (volume: string) => ({ storagePool: "sp", volume });
    expect(decideRecovery(intent("revert", plan), f({ systemVolume: v(plan.to), state: "running" }))).toEqual({
      kind: "finish-switched-revert",
      plan,
    });
    expect(decideRecovery(intent("revert", plan), f({ systemVolume: v(plan.from), state: "shut off" }))).toEqual({
      kind: "redo-revert",
      plan,
    });
    expect(decideRecovery(intent("revert", plan), f({ systemVolume: v(plan.from), state: "running" }))).toMatchObject({
      kind: "give-up",
    });
  });

  it("reads an intent written before reverts switched overlays as a switch to the alternate", () => {
    const legacy = {
      storagePool: "sp",
      volume: "vm-1.qcow2",
      capacityBytes: 1,
      format: "qcow2",
      backingPath: "/b",
      backingFormat: "qcow2",
    };
    expect(revertPlanOf(JSON.stringify(legacy))).toEqual(plan);
  });

  it("finishes a return, reverting unless stateful, admin-accessed, or just reverted by recovery", () => {
    expect(decideRecovery(intent("return"), f())).toEqual({ kind: "finish-return", revert: true });
    expect(decideRecovery(intent("return"), f({ revertedNow: true }))).toEqual({
      kind: "finish-return",
      revert: false,
    });
    expect(decideRecovery(intent("return"), f({ policy: { ...POLICY, stateful: true } }))).toEqual({
      kind: "finish-return",
      revert: false,
    });
    expect(decideRecovery(intent("return"), f({ holder: undefined }))).toEqual({ kind: "forget", release: true });
    expect(decideRecovery(intent("return"), f({ memberExists: false }))).toEqual({ kind: "forget", release: true });
  });

  it("plans prestarts afresh, and redoes a detach only of a member that is down", () => {
    expect(decideRecovery(intent("prestart"), f())).toMatchObject({ kind: "give-up" });
    expect(decideRecovery(intent("detach"), f({ state: "shut off" }))).toEqual({ kind: "finish-detach" });
    expect(decideRecovery(intent("detach"), f({ state: "running" }))).toMatchObject({ kind: "give-up" });
    expect(decideRecovery(intent("detach"), f({ memberExists: false }))).toEqual({ kind: "forget", release: false });
  });

  it("reads only the facts a kind needs (each read is a libvirt call)", () => {
    expect(factsNeeded("take")).toEqual({ state: false, systemVolume: false });
    expect(factsNeeded("revert")).toEqual({ state: true, systemVolume: true });
    expect(factsNeeded("detach")).toEqual({ state: true, systemVolume: false });
  });
});
