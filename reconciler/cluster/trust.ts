// A trusted cluster's hosts, from the attestation service's verdicts (pure). Only a trusted verdict
// keeps a host Up; anything else (untrusted, unknown, stale, unreachable, or no verdict yet)
// makes it Non Operational, and it is Up again only after a fresh trusted verdict.
import type { TrustLevel, Verdict } from "../../core/attestation/protocol.cjs";
import type { AttestationSettings } from "../../core/trust";
import type { PoolPolicy } from "../pools";

export type { TrustLevel, Verdict };

/** What vmpools knows of a host's trust, for status and the host's state. */
export interface HostTrust {
  /** The trusted cluster the host belongs to. */
  readonly cluster: string;
  /** The service; undefined while the cluster's settings are unknown. */
  readonly service?: AttestationSettings["type"];
  readonly level: TrustLevel;
  readonly reason: string;
  /** When this reconciler last heard a verdict (ms since the epoch); undefined: not yet. */
  readonly checkedAtMs?: number;
  /** When the service says it attested the host, ISO 8601, when it says. */
  readonly attestedAt?: string;
  /** Since when the host has been at its current trust (trusted or not); ms since the epoch. */
  readonly sinceMs: number;
}

const SERVICE_WORDS: Readonly<Record<AttestationSettings["type"], string>> = {
  openattestation: "OpenAttestation",
  keylime: "Keylime",
};

/** A host of a trusted cluster before its first verdict: out of service until attested. */
export function notAttestedYet(settings: AttestationSettings, nowMs: number): HostTrust {
  return {
    cluster: settings.cluster,
    service: settings.type,
    level: "unknown",
    reason: "not attested yet",
    sinceMs: nowMs,
  };
}

/**
 * The host's trust after a verdict. A trusted verdict on a host that was not trusted counts only
 * if it is fresh: when the service dates its attestation (Keylime's last successful attestation,
 * OpenAttestation's vtime), that date must be later than the moment the host lost trust — an
 * old PASS must not bring back a host that failed since.
 */
export function nextTrust(prev: HostTrust, verdict: Verdict, nowMs: number): HostTrust {
  const base = {
    cluster: prev.cluster,
    ...(prev.service ? { service: prev.service } : {}),
    checkedAtMs: nowMs,
    attestedAt: verdict.attestedAt,
  };
  if (verdict.level === "trusted" && prev.level !== "trusted" && prev.checkedAtMs !== undefined) {
    const attestedMs = verdict.attestedAt === undefined ? NaN : Date.parse(verdict.attestedAt);
    if (Number.isFinite(attestedMs) && attestedMs <= prev.sinceMs) {
      return {
        ...base,
        level: prev.level,
        reason: `${prev.reason}; waiting for a fresh trusted verdict (the service's last attestation, ${verdict.attestedAt}, is older than the loss of trust)`,
        sinceMs: prev.sinceMs,
      };
    }
  }
  const reason = verdict.level === "trusted" ? "trusted" : verdict.reason;
  return { ...base, level: verdict.level, reason, sinceMs: verdict.level === prev.level ? prev.sinceMs : nowMs };
}

/** Why a host is out of service for its trust, or undefined when it is trusted. */
export function untrustedReason(t: HostTrust): string | undefined {
  if (t.level === "trusted") return undefined;
  const service = t.service === undefined ? "the attestation service" : SERVICE_WORDS[t.service];
  return `not trusted (${t.level}) by ${service} of trusted cluster ${t.cluster}: ${t.reason}`;
}

/**
 * The attestation settings of each trusted cluster the pools name, and the hosts of trusted pools
 * whose cluster has none (its pools' policy documents were never read): those stay out of service
 * rather than being trusted by default.
 */
export function trustedClusters(
  policies: Iterable<
    Pick<PoolPolicy, "cluster" | "trusted" | "allowedHosts"> & { readonly attestation?: AttestationSettings }
  >,
): { readonly settings: ReadonlyMap<string, AttestationSettings>; readonly unattested: ReadonlyMap<string, string> } {
  const settings = new Map<string, AttestationSettings>();
  const trustedHosts = new Map<string, string>();
  for (const p of policies) {
    if (p.attestation) settings.set(p.attestation.cluster, p.attestation);
    else if (p.trusted) for (const h of p.allowedHosts) trustedHosts.set(h, p.cluster);
  }
  const attested = new Set([...settings.values()].flatMap((s) => s.hosts.map((h) => h.name)));
  const unattested = new Map([...trustedHosts].filter(([h]) => !attested.has(h)));
  return { settings, unattested };
}
