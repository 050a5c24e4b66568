import { join } from "node:path";
import {
  HOLDER_NAMESPACE,
  METADATA_NAMESPACE,
  indexRanges,
  memberNamePattern,
  type HostRef,
  type PoolPlan,
} from "../../core";

/**
 * The plan-time probe of one host (host-probe.cjs: the storage pool with the most free space,
 * and what the shrink guard needs). Terraform runs it through hashicorp/external; the Pulumi
 * component runs it itself while the program runs (at preview and at up).
 */
export const HOST_PROBE_SCRIPT = join(__dirname, "host-probe.cjs");

/** The probe's input for one host of the pool (strings only: Terraform's external takes no other). */
export function probeQuery(plan: PoolPlan, host: HostRef): Record<string, string> {
  const { pool } = plan;
  return {
    uri: host.uri,
    candidates: pool.storage.candidates.map((c) => c.name).join(","),
    member_pattern: memberNamePattern(pool.mask).source,
    // Detached members keep their names but are independent VMs now, not members.
    detached: pool.detached.join(","),
    size: String(pool.size),
    holder_uri: HOLDER_NAMESPACE,
    member_uri: METADATA_NAMESPACE,
    host: host.name,
    placement: placementQuery(plan),
  };
}

/**
 * Which member indices the plan puts on which host, `h1=1-5,9;h2=6-8` (hosts in cluster order):
 * every probe gets all of it, so a member found on the wrong host can say where it belongs.
 */
export function placementQuery(plan: PoolPlan): string {
  return plan.pool.clusterHosts
    .map((h) => [h.name, indexRanges(plan.members.filter((m) => m.host.name === h.name).map((m) => m.index))])
    .filter(([, ranges]) => ranges !== "")
    .map(([name, ranges]) => `${name}=${ranges}`)
    .join(";");
}

/**
 * Whether members' volumes go where the probe says (several candidates and autoSelectTarget: the
 * one with the most free space at plan time); otherwise into the first candidate.
 */
export const probePicksStoragePool = (plan: PoolPlan): boolean =>
  plan.pool.storage.autoSelectTarget && plan.pool.storage.candidates.length > 1;

/** What the probe answers (all strings, empty when none). */
export interface ProbeResult {
  readonly storage_pool: string;
  readonly available_bytes: string;
  readonly max_member_index: string;
  readonly held_above: string;
  readonly undetached: string;
  readonly member_count: string;
  /**
   * Members defined on this host that the plan puts on another, e.g. `MyPool-007 (planned on h2)`.
   * Optional for `hostProbe` functions written before it existed: absent is none.
   */
  readonly misplaced?: string;
}

/** One check of the shrink guard: `failed` tells from a result, `message` says why and what to do. */
export interface GuardCheck {
  readonly field: keyof ProbeResult;
  readonly failed: (result: ProbeResult) => boolean;
  /** The message; `value` is the field's value (cdktf passes a Terraform expression for it). */
  readonly message: (value: string) => string;
}

/**
 * The checks a plan must pass on a host, as both engines apply them (cdktf as postconditions of
 * the probe's data source, Pulumi when the probe answers). A held VM is never destroyed by a
 * shrink, allowShrink or not (seed: never while held).
 */
export function guardChecks(plan: PoolPlan, host: HostRef): readonly GuardCheck[] {
  const { pool } = plan;
  const held: GuardCheck = {
    field: "held_above",
    failed: (r) => r.held_above !== "",
    message: (v) =>
      `Pool ${pool.name}: host ${host.name} has members above the new size ${pool.size} that users hold ` +
      `(${v}); lowering size would destroy them. Have them returned first (vmpools return), or raise size again.`,
  };
  const undetached: GuardCheck = {
    field: "undetached",
    failed: (r) => r.undetached !== "",
    message: (v) =>
      `Pool ${pool.name}: host ${host.name} has members listed in detached that are still members ` +
      `(${v}); run vmpools detach POOL VM for each first (Down members only).`,
  };
  const shrink: GuardCheck = {
    field: "max_member_index",
    failed: (r) => Number(r.max_member_index) > pool.size,
    message: () =>
      `Pool ${pool.name}: host ${host.name} has members above the new size ${pool.size}; lowering size ` +
      `would destroy them. Raise size again, detach those members, or set allowShrink: true.`,
  };
  // A member on the wrong host: the record was lost or is stale, or the reconciler migrated the
  // member and has not moved it home yet. The plan would create a second domain of its name.
  const misplaced: GuardCheck = {
    field: "misplaced",
    failed: (r) => (r.misplaced ?? "") !== "",
    message: (v) =>
      `Pool ${pool.name}: host ${host.name} already has members that the plan would create on another host ` +
      `(${v}). The placement record (vmpools.placement.json) was lost or is stale, or the reconciler ` +
      `migrated them and has not moved them home yet: restore vmpools.placement.json from version control, ` +
      `or record where each is, e.g. "${pool.name}": { "<member>": "${host.name}" }.`,
  };
  return pool.allowShrink ? [held, undetached, misplaced] : [shrink, held, undetached, misplaced];
}
