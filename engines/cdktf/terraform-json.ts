import type { VmPlan } from "../../core";
import { memberDomain, memberVolumes } from "../libvirt-provider/attributes";

/** A Terraform JSON value as written to a `.tf.json` file. */
export type Json = string | number | boolean | null | readonly Json[] | { readonly [key: string]: Json | undefined };
export type JsonObject = { readonly [key: string]: Json | undefined };

/** Where a member's resources point: decided by the construct, not by the plan. */
export interface MemberContext {
  /** `libvirt.<alias>` of the member's host. */
  readonly provider: string;
  /** Storage pool name, or an expression (the probe's pick at plan time). */
  readonly storagePool: string;
  /** Absolute upload path of the member's initial-run image, when it has one. */
  readonly mediaUrl?: string;
  readonly preventDestroy: boolean;
}

/** Terraform resource names of one member. */
export interface MemberIds {
  readonly system: string;
  readonly media: string;
  readonly domain: string;
}

/** The member's resources, grouped by Terraform resource type. */
export interface MemberJson {
  readonly libvirt_volume: Record<string, JsonObject>;
  readonly libvirt_domain: Record<string, JsonObject>;
}

const LIFECYCLE = {
  protected: { ignore_changes: "all", prevent_destroy: true },
  unprotected: { ignore_changes: "all", prevent_destroy: false },
} as const;

/**
 * One member as dmacvicar/libvirt 0.9.7 resources, in Terraform's JSON syntax (attributes from
 * engines/libvirt-provider, which `test/engines/cdktf` checks against the provider schema).
 * Written straight as JSON instead of through cdktf resource objects: cdktf resolves every value
 * of its tree three times (~4 µs per value each), which made 1000 members cost ~4 s to
 * synthesize; this costs ~40 ms.
 *
 * Every member resource is creation-time (`ignore_changes = all`): the provider's in-place
 * update of a domain shuts the guest down, and a volume update always fails.
 */
export function memberJson(m: VmPlan, ids: MemberIds, ctx: MemberContext): MemberJson {
  const head = { provider: ctx.provider, lifecycle: ctx.preventDestroy ? LIFECYCLE.protected : LIFECYCLE.unprotected };
  const volumes = memberVolumes(m, {
    storagePool: ctx.storagePool,
    ...(ctx.mediaUrl ? { mediaUrl: ctx.mediaUrl } : {}),
  });
  const domain = memberDomain(m, volumes.media !== undefined, {
    volume: (role, attribute) => `\${libvirt_volume.${role === "system" ? ids.system : ids.media}.${attribute}}`,
    // The provider does not mark passwd sensitive; Terraform's sensitive() keeps it out of plan output.
    consolePassword: "${sensitive(uuid())}",
  });
  return {
    libvirt_volume: {
      [ids.system]: { ...head, ...volumes.system },
      ...(volumes.media ? { [ids.media]: { ...head, ...volumes.media } } : {}),
    },
    libvirt_domain: { [ids.domain]: { ...head, ...domain } },
  };
}
