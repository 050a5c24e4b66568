import { join } from "node:path";
import { HOLDER_NAMESPACE, METADATA_NAMESPACE, memberNamePattern, type HostRef, type PoolPlan } from "../../core";

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
  };
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
  return pool.allowShrink ? [held, undetached] : [shrink, held, undetached];
}
