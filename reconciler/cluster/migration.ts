// Whether and how a member may be live-migrated, from its pool's migration settings (seed:
// Migration mode, Migration policy, custom downtime, auto-converge, compression, pass-through
// host CPU). Pure: the actuator runs what this returns.
import type { MigrateOptions } from "../driver/libvirt-driver";
import type { PoolPolicy } from "../pools";

/** Who asks: an admin's `vmpools migrate`, or the reconciler itself (a host going into maintenance). */
export type MigrationTrigger = "manual" | "automatic";

export type MigrationDecision =
  { readonly allowed: true; readonly options: MigrateOptions } | { readonly allowed: false; readonly reason: string };

/** How long a migration may run before it is aborted (minimal downtime) or the guest paused to finish. */
export const MIGRATION_CONVERGE_MS = 120_000;
/** libvirt's own default maximum downtime, which oVirt's policies start from. */
const DEFAULT_DOWNTIME_MS = 300;

type MigrationSettings = Pick<
  PoolPolicy,
  "migrationMode" | "migrationPolicy" | "migrationDowntimeMs" | "autoConverge" | "compression"
>;

/**
 * The mode says who may migrate: "manual-and-automatic" both, "manual-only" an admin only,
 * "none" nobody. A guest with the host CPU passed through never migrates (its CPU model is the
 * source host's; validation already forbids it outside mode "none", this also covers domains
 * defined by hand). The policy maps to libvirt's migration flags:
 * - legacy: a plain live migration; auto-converge and compression as set ("inherit" leaves
 *   libvirt's default, off), the custom downtime as the maximum pause;
 * - minimal-downtime: never throttles the guest; the pause stays at the custom downtime (default
 *   libvirt's 300 ms), and a migration that does not converge in time is aborted, the guest
 *   running on where it was;
 * - suspend-workload-if-needed: throttles a busy guest (auto-converge) and, when it still does not
 *   converge in time, pauses it to finish: it always arrives, with a longer pause.
 * No policy: libvirt's defaults.
 */
export function planMigration(
  policy: MigrationSettings,
  facts: { readonly trigger: MigrationTrigger; readonly hostCpuPassthrough: boolean },
): MigrationDecision {
  if (policy.migrationMode === "none") return { allowed: false, reason: 'its pool\'s migration mode is "none"' };
  if (policy.migrationMode === "manual-only" && facts.trigger === "automatic") {
    return { allowed: false, reason: 'its pool\'s migration mode is "manual-only" (an admin may migrate it)' };
  }
  if (facts.hostCpuPassthrough) {
    return { allowed: false, reason: "it runs with the host CPU passed through, which cannot migrate" };
  }
  const downtime = policy.migrationDowntimeMs ? { maxDowntimeMs: policy.migrationDowntimeMs } : {};
  const base = { live: true, persistent: true, undefineSource: true } as const;
  switch (policy.migrationPolicy) {
    case "legacy":
      return {
        allowed: true,
        options: {
          ...base,
          ...downtime,
          ...(policy.autoConverge === "on" ? { autoConverge: true } : {}),
          ...(policy.compression === "on" ? { compressed: true } : {}),
        },
      };
    case "minimal-downtime":
      return {
        allowed: true,
        options: {
          ...base,
          maxDowntimeMs: policy.migrationDowntimeMs || DEFAULT_DOWNTIME_MS,
          onTimeout: "abort",
          timeoutMs: MIGRATION_CONVERGE_MS,
        },
      };
    case "suspend-workload-if-needed":
      return {
        allowed: true,
        options: { ...base, ...downtime, autoConverge: true, onTimeout: "suspend", timeoutMs: MIGRATION_CONVERGE_MS },
      };
    default:
      return { allowed: true, options: { ...base, ...downtime } };
  }
}
