// Pure planning: what the pools look like and what should happen next. No libvirt, no store,
// no clocks; reconciler.ts acts on the answers.
import { parseMetadataXml, parsePolicyDocument, type MemberMetadata } from "../core/metadata";
import type { LifecycleEventName } from "./driver/events";
import type { DomainInfo, DomainState } from "./driver/libvirt-driver";
import type { Assignment } from "./store/store";

/** A libvirt domain that carries our pool metadata. */
export interface MemberRecord {
  readonly name: string;
  readonly uuid: string;
  /** The cluster host the domain is defined on now (a migration moves it). */
  readonly host: string;
  readonly state: DomainState;
  readonly metadata: MemberMetadata;
  /** false once the domain was undefined while running: it leaves the pool when it stops. @default true */
  readonly persistent?: boolean;
}

/**
 * The policy the reconciler enforces for a pool, as the constructs wrote it into each member
 * (taken from the newest member, so `templateVersion` is the newest member's).
 */
export type PoolPolicy = Pick<
  MemberMetadata,
  | "type"
  | "stateful"
  | "prestarted"
  | "maxVmsPerUser"
  | "deleteProtection"
  | "spiceProxy"
  | "templateName"
  | "templateVersion"
  | "allowedHosts"
  | "migrationMode"
  | "migrationPolicy"
  | "migrationDowntimeMs"
  | "autoConverge"
  | "compression"
  | "cluster"
  | "trusted"
>;

export interface PoolMember {
  readonly name: string;
  readonly uuid: string;
  /** The cluster host it is defined on now. */
  readonly host: string;
  readonly index: number;
  readonly state: DomainState;
  /** false once undefined while running: never handed out or prestarted again (it vanishes when it stops). */
  readonly persistent: boolean;
  /** Template version this member was created from (edits affect only new members). */
  readonly templateVersion: number;
  /** Base image the member's writable overlay reads through to. */
  readonly baseImagePath: string;
  readonly baseImageFormat: string;
  /** Format of the member's own system disk (qcow2 overlay, or raw copy). */
  readonly diskFormat: string;
}

export interface Pool {
  readonly name: string;
  readonly policy: PoolPolicy;
  /** Sorted by index. */
  readonly members: readonly PoolMember[];
}

/** What occupies a member right now; at most one runs, others wait their turn. */
export type MemberActivity =
  "take" | "prestart" | "stop" | "settle" | "refresh" | "mark" | "return" | "revert" | "detach" | "migrate";

/**
 * Activities that change neither the power state nor the holder: "refresh" re-reads the domain,
 * "mark" writes the holder mark. Planners treat a member doing only these as idle.
 */
export const PASSIVE_ACTIVITIES: ReadonlySet<MemberActivity> = new Set(["refresh", "mark"]);

const idle = (busy: ReadonlyMap<string, MemberActivity>, m: PoolMember) => {
  const activity = busy.get(m.name);
  return activity === undefined || PASSIVE_ACTIVITIES.has(activity);
};

/** Just what the planners need to know about holders. */
export type Holding = Pick<Assignment, "vm" | "adminAccess">;

/** Domains with valid pool metadata; every other domain is none of our business. */
export function parseMembers(domains: readonly DomainInfo[], host: string): MemberRecord[] {
  const out: MemberRecord[] = [];
  for (const d of domains) {
    const metadata = d.metadataXml === undefined ? undefined : parseMetadataXml(d.metadataXml);
    if (metadata) out.push({ name: d.name, uuid: d.uuid, host, state: d.state, metadata });
  }
  return out;
}

function policyOf(m: MemberMetadata): PoolPolicy {
  return {
    type: m.type,
    stateful: m.stateful,
    prestarted: m.prestarted,
    maxVmsPerUser: m.maxVmsPerUser,
    deleteProtection: m.deleteProtection,
    ...(m.spiceProxy === undefined ? {} : { spiceProxy: m.spiceProxy }),
    templateName: m.templateName,
    templateVersion: m.templateVersion,
    allowedHosts: m.allowedHosts,
    migrationMode: m.migrationMode,
    ...(m.migrationPolicy === undefined ? {} : { migrationPolicy: m.migrationPolicy }),
    ...(m.migrationDowntimeMs === undefined ? {} : { migrationDowntimeMs: m.migrationDowntimeMs }),
    autoConverge: m.autoConverge,
    compression: m.compression,
    cluster: m.cluster,
    ...(m.trusted ? { trusted: true } : {}),
  };
}

const byIndex = (a: PoolMember, b: PoolMember) => a.index - b.index || a.name.localeCompare(b.name);

/**
 * Groups members by pool name. A pool's policy is its policy document (deployed by the engines,
 * edited without touching members) when one was read; otherwise the policy its newest member was
 * created with (members keep their creation-time policy, the highest index is the newest).
 */
export function groupPools(
  records: Iterable<MemberRecord>,
  documents: ReadonlyMap<string, MemberMetadata> = new Map(),
): Map<string, Pool> {
  const grouped = new Map<string, { newest: MemberRecord; members: PoolMember[] }>();
  for (const r of records) {
    const m = r.metadata;
    const member: PoolMember = {
      name: r.name,
      uuid: r.uuid,
      host: r.host,
      index: m.index,
      state: r.state,
      persistent: r.persistent !== false,
      templateVersion: m.templateVersion,
      baseImagePath: m.baseImagePath,
      baseImageFormat: m.baseImageFormat,
      diskFormat: m.diskFormat,
    };
    const group = grouped.get(m.pool);
    if (!group) grouped.set(m.pool, { newest: r, members: [member] });
    else {
      group.members.push(member);
      if (m.index > group.newest.metadata.index) group.newest = r;
    }
  }
  const pools = new Map<string, Pool>();
  for (const [name, g] of [...grouped].sort(([a], [b]) => a.localeCompare(b))) {
    const policy = policyOf(documents.get(name) ?? g.newest.metadata);
    pools.set(name, { name, policy, members: g.members.sort(byIndex) });
  }
  return pools;
}

/**
 * The policy documents by pool, from the documents read off libvirt. A pool deployed to several
 * hosts has one per host; they are equal after a deploy, and between two deploys' replacements
 * the one listed last wins. Documents that do not parse are ignored.
 */
export function policyDocumentsByPool(xmls: readonly string[]): Map<string, MemberMetadata> {
  const out = new Map<string, MemberMetadata>();
  // Each equal document parsed once: a trusted cluster's document lists every host, and every
  // host has one (1000 hosts: 16 s per resync parsing each, 30 ms once).
  const parsed = new Map<string, ReturnType<typeof parsePolicyDocument>>();
  for (const xml of xmls) {
    if (!parsed.has(xml)) parsed.set(xml, parsePolicyDocument(xml));
    const doc = parsed.get(xml);
    if (doc) out.set(doc.policy.pool, doc.policy);
  }
  return out;
}

/** Powered on in any form: a stop from here is a guest or admin shutdown. */
export function isUp(state: DomainState): boolean {
  return state !== "shut off" && state !== "crashed";
}

/** Suspended: up, but running no guest code until resumed. */
export function isPaused(state: DomainState): boolean {
  return state === "paused" || state === "pmsuspended";
}

/** Down in the seed's sense: may be reverted, detached or started. */
export function isDown(state: DomainState): boolean {
  return state === "shut off" || state === "crashed";
}

const heldSet = (assignments: readonly Holding[]) => new Set(assignments.map((a) => a.vm));

/** What the planners know of the cluster's hosts (see cluster/hosts.ts). */
export interface HostPicture {
  /** Members on this host may be handed out and started (the host is up). */
  readonly usable: (host: string) => boolean;
  /** Members on it are seen (it answers), so free ones running there can be stopped. */
  readonly visible: (host: string) => boolean;
  /** Orders hosts by headroom, best first. */
  readonly byHeadroom: (a: string, b: string) => number;
}

/** One host, always up: what a reconciler of a single connection plans with. */
export const ONE_HOST: HostPicture = { usable: () => true, visible: () => true, byHeadroom: () => 0 };

/**
 * Free members in the order a take should get them: prestarted (running, idle) first, then
 * members being prestarted right now, then stopped ones on the hosts with the most headroom
 * first; lowest index first within each group. Members that are busy otherwise (stopping,
 * reverting, …), in an odd state, or on a host that is not up are left out.
 */
export function freeMembers(
  pool: Pool,
  assignments: readonly Holding[],
  busy: ReadonlyMap<string, MemberActivity>,
  hosts: HostPicture = ONE_HOST,
): string[] {
  const held = heldSet(assignments);
  const free = pool.members.filter((m) => !held.has(m.name) && m.persistent && hosts.usable(m.host));
  const stopped = free.filter((m) => idle(busy, m) && m.state === "shut off");
  if (hosts !== ONE_HOST) stopped.sort((a, b) => hosts.byHeadroom(a.host, b.host) || byIndex(a, b));
  return [
    ...free.filter((m) => idle(busy, m) && m.state === "running"),
    ...free.filter((m) => busy.get(m.name) === "prestart"),
    ...stopped,
  ].map((m) => m.name);
}

export interface PrestartPlan {
  /** Stopped free members to start. */
  readonly start: readonly string[];
  /** Running free members to stop: beyond the prestarted count, or on a host that is not up. */
  readonly stop: readonly string[];
}

/**
 * Keeps exactly `prestarted` free members up in automatic pools (seed: only automatic pools
 * prestart), spread over the usable hosts: each start goes to the host with the fewest of the
 * pool's prestarted members (then the most headroom), each surplus stop comes from the host with
 * the most. Members being prestarted count as up; `blocked` members (their starts keep failing)
 * are not picked. Never plans more than asked, and trims any surplus. Free members running on a
 * host that is seen but not up (maintenance, non-operational) are stopped whatever the count:
 * nothing new may run there; ones on an unreachable host count for nothing (they may not be
 * handed out) and cannot be acted on.
 */
export function planPrestart(
  pool: Pool,
  assignments: readonly Holding[],
  busy: ReadonlyMap<string, MemberActivity>,
  blocked: ReadonlySet<string> = new Set(),
  hosts: HostPicture = ONE_HOST,
): PrestartPlan {
  const held = heldSet(assignments);
  const free = pool.members.filter((m) => !held.has(m.name) && m.persistent);
  const evict = free
    .filter((m) => m.state === "running" && idle(busy, m) && !hosts.usable(m.host) && hosts.visible(m.host))
    .map((m) => m.name);
  if (pool.policy.type !== "automatic") return { start: [], stop: evict };
  const usableFree = free.filter((m) => hosts.usable(m.host));
  const running = usableFree.filter((m) => m.state === "running" && idle(busy, m));
  const starting = usableFree.filter((m) => busy.get(m.name) === "prestart");
  const up = running.length + starting.length;
  const target = pool.policy.prestarted;
  const perHost = new Map<string, number>();
  for (const m of [...running, ...starting]) perHost.set(m.host, (perHost.get(m.host) ?? 0) + 1);
  const fewest = (a: string, b: string) => (perHost.get(a) ?? 0) - (perHost.get(b) ?? 0) || hosts.byHeadroom(a, b);
  if (up < target) {
    const startable = usableFree.filter((m) => m.state === "shut off" && idle(busy, m) && !blocked.has(m.name));
    const start: string[] = [];
    const byHost = new Map<string, PoolMember[]>();
    for (const m of startable) byHost.set(m.host, [...(byHost.get(m.host) ?? []), m]);
    while (start.length < target - up && byHost.size > 0) {
      const host = [...byHost.keys()].sort(fewest)[0]!;
      const queue = byHost.get(host)!;
      start.push(queue.shift()!.name);
      perHost.set(host, (perHost.get(host) ?? 0) + 1);
      if (queue.length === 0) byHost.delete(host);
    }
    return { start, stop: evict };
  }
  // A surplus while members are still being prestarted is planned once they are done: stopping
  // a running member for one whose start may yet fail is a flip-flop.
  if (up > running.length) return { start: [], stop: evict };
  const stop: string[] = [];
  const byHost = new Map<string, PoolMember[]>();
  for (const m of running) byHost.set(m.host, [m, ...(byHost.get(m.host) ?? [])]); // highest index first
  for (let surplus = up - target; surplus > 0; surplus--) {
    const host = [...byHost.keys()].sort((a, b) => fewest(b, a))[0]!;
    const queue = byHost.get(host)!;
    stop.push(queue.shift()!.name);
    perHost.set(host, (perHost.get(host) ?? 0) - 1);
    if (queue.length === 0) byHost.delete(host);
  }
  return { start: [], stop: [...stop, ...evict] };
}

/** Whether returning a member recreates its overlay: not in stateful pools, nor after admin access (seed). */
export function revertsOnReturn(policy: PoolPolicy, holder: Pick<Assignment, "adminAccess">): boolean {
  return !policy.stateful && !holder.adminAccess;
}

/** What to do with a member that is down. */
export type DownAction = "none" | "release" | "revert" | "revert-and-release";

/**
 * A member is down (its guest shut down, or it was found down). Automatic pools take a held
 * member back, reverting it unless stateful; manual pools keep it assigned until an admin
 * returns it. A free member that was up (a prestarted VM) is restored to its original state
 * (seed) and stays free; a free member that was down all along needs nothing.
 */
export function planMemberDown(
  policy: PoolPolicy,
  holder: Pick<Assignment, "adminAccess"> | undefined,
  wasUp: boolean,
): DownAction {
  if (holder) {
    if (policy.type === "manual") return "none";
    return revertsOnReturn(policy, holder) ? "revert-and-release" : "release";
  }
  return wasUp && !policy.stateful && policy.type === "automatic" ? "revert" : "none";
}

/** Each user's VMs, users sorted by name. */
export function holdingsByUser(
  assignments: readonly Pick<Assignment, "pool" | "vm" | "user">[],
): Map<string, { pool: string; vm: string }[]> {
  const out = new Map<string, { pool: string; vm: string }[]>();
  for (const a of [...assignments].sort((x, y) => x.user.localeCompare(y.user))) {
    const list = out.get(a.user) ?? [];
    list.push({ pool: a.pool, vm: a.vm });
    out.set(a.user, list);
  }
  return out;
}

/**
 * What a listing means for a member: take it as listed, keep the state that work in progress on
 * it sets itself, or settle it (it went down and no event said so: handle it as the event would
 * have been).
 */
export type ListedAction = "adopt" | "keep-state" | "settle";

export function planListed(
  previous: Pick<MemberRecord, "state"> | undefined,
  listed: Pick<MemberRecord, "state">,
  facts: {
    readonly busy: boolean;
    readonly acting: boolean;
    /** The reconciler changed the member's state after the listing began (it may predate that). */
    readonly changedMeanwhile?: boolean;
  },
): ListedAction {
  if (previous && (facts.busy || facts.changedMeanwhile)) return "keep-state";
  if (facts.acting && previous && isUp(previous.state) && isDown(listed.state)) return "settle";
  return "adopt";
}

export interface LevelFacts {
  readonly pools: Iterable<Pool>;
  readonly assignments: readonly Pick<Assignment, "pool" | "vm">[];
  /** Members with queued work. */
  readonly busy: (vm: string) => boolean;
  /** Members whose revert must happen before anyone may have them. */
  readonly revertNeeded: ReadonlySet<string>;
  /** The pool each known member is in. */
  readonly poolOf: (vm: string) => string | undefined;
  readonly manages: (pool: string) => boolean;
}

export interface LevelActions {
  /** Holders of members whose domain is gone or left the pool: nobody can use them any more. */
  readonly forget: readonly { readonly pool: string; readonly vm: string }[];
  /** Down members to act on: held ones of automatic pools (a return no event reported), ones needing a revert. */
  readonly settle: readonly string[];
  /** Free members that are paused. */
  readonly stopPaused: readonly { readonly pool: string; readonly vm: string }[];
  /** Pools whose prestart counts to plan. */
  readonly plan: readonly string[];
}

/** What events cannot be trusted to have said, from the whole picture (the periodic resync). */
export function planLevelRules(f: LevelFacts): LevelActions {
  const key = (pool: string, vm: string) => `${pool}\u0000${vm}`;
  const held = new Set(f.assignments.map((a) => key(a.pool, a.vm)));
  const forget = f.assignments
    .filter((a) => f.manages(a.pool) && f.poolOf(a.vm) !== a.pool)
    .map((a) => ({ pool: a.pool, vm: a.vm }));
  const settle: string[] = [];
  const stopPaused: { pool: string; vm: string }[] = [];
  const plan: string[] = [];
  for (const pool of f.pools) {
    for (const m of pool.members) {
      if (f.busy(m.name)) continue;
      const isHeld = held.has(key(pool.name, m.name));
      if (isPaused(m.state) && !isHeld) stopPaused.push({ pool: pool.name, vm: m.name });
      else if (isDown(m.state) && ((isHeld && pool.policy.type === "automatic") || f.revertNeeded.has(m.name))) {
        settle.push(m.name);
      }
    }
    plan.push(pool.name);
  }
  return { forget, settle, stopPaused, plan };
}

export type EventAction =
  /** (Re)read the domain: it may be new, changed, or no longer ours. */
  | { readonly kind: "read" }
  /** List again: an undefined member may live on, transient, until it stops. */
  | { readonly kind: "list" }
  /** It may have gone down: find out and act as its pool says. */
  | { readonly kind: "settle" }
  /** Take the new state; a free member found paused is stopped. */
  | { readonly kind: "state"; readonly state: DomainState; readonly stopPaused: boolean }
  | { readonly kind: "none" };

/** What a lifecycle event asks for. */
export function planEvent(
  event: LifecycleEventName,
  facts: { readonly known: boolean; readonly busy: boolean; readonly held: boolean },
): EventAction {
  switch (event) {
    case "Defined":
      return { kind: "read" };
    case "Undefined":
      return facts.known ? { kind: "list" } : { kind: "none" };
    case "Stopped":
    case "Shutdown":
    case "Crashed":
      return facts.known ? { kind: "settle" } : { kind: "none" };
    case "Started":
    case "Resumed":
    case "Suspended":
    case "PMSuspended": {
      // Work in progress on the member sets its state itself.
      if (!facts.known || facts.busy) return { kind: "none" };
      const state: DomainState = event === "Suspended" ? "paused" : event === "PMSuspended" ? "pmsuspended" : "running";
      return { kind: "state", state, stopPaused: isPaused(state) && !facts.held };
    }
  }
}
