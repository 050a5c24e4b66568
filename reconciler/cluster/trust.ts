// A trusted cluster's hosts, from the attestation service's verdicts (pure). Only a trusted verdict
// keeps a host Up; anything else (untrusted, unknown, stale, unreachable, or no verdict yet)
// makes it Non Operational, and it is Up again only after a fresh trusted verdict.
import type { TrustLevel, Verdict } from "../../core/attestation/protocol.cjs";
import type { AttestationSettings } from "../../core/trust";

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
  /** Out of service whatever a service says (see trustedClusters): verdicts do not change it. */
  readonly pinned?: boolean;
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

/** What the reconciler knows of a pool that has members, for `trustedClusters`. */
export interface PoolTrustFacts {
  readonly pool: string;
  readonly cluster: string;
  /** Any source says the pool is on a trusted cluster: its members' metadata, its policy document. */
  readonly trusted: boolean;
  /** Hosts it may run on, and those its members are on. */
  readonly hosts: readonly string[];
  /** The attestation settings of its policy document. */
  readonly attestation?: AttestationSettings;
}

/** A host kept out of service whatever any service says, and why. */
export interface PinnedHost {
  readonly cluster: string;
  readonly reason: string;
}

/**
 * The attestation settings to poll, one per trusted cluster, and the hosts that stay out of
 * service because the settings cannot vouch for them. Fail-closed: a pool any source marks
 * trusted stays trusted (a document without settings does not switch attestation off); pools of
 * one cluster whose documents disagree poll nothing for it; a host with members of a trusted pool
 * must be listed by that pool's cluster, and by one trusted cluster only.
 */
export function trustedClusters(pools: Iterable<PoolTrustFacts>): {
  readonly settings: ReadonlyMap<string, AttestationSettings>;
  readonly pinned: ReadonlyMap<string, PinnedHost>;
} {
  const candidates = new Map<string, Map<string, { settings: AttestationSettings; pools: string[] }>>();
  const trustedPools: PoolTrustFacts[] = [];
  for (const p of pools) {
    if (!p.trusted && !p.attestation) continue;
    trustedPools.push(p);
    if (!p.attestation) continue;
    const byText = candidates.get(p.attestation.cluster) ?? new Map();
    const key = JSON.stringify(p.attestation);
    const c = byText.get(key) ?? { settings: p.attestation, pools: [] };
    c.pools.push(p.pool);
    byText.set(key, c);
    candidates.set(p.attestation.cluster, byText);
  }
  const settings = new Map<string, AttestationSettings>();
  const pinned = new Map<string, PinnedHost>();
  const pin = (host: string, cluster: string, reason: string) => {
    if (!pinned.has(host)) pinned.set(host, { cluster, reason });
  };
  for (const [cluster, byText] of candidates) {
    const versions = [...byText.values()];
    if (versions.length === 1) {
      settings.set(cluster, versions[0]!.settings);
      continue;
    }
    const which = versions.map((v) => v.pools.join(", ")).join(" / ");
    for (const v of versions) {
      for (const h of v.settings.hosts) {
        pin(
          h.name,
          cluster,
          `the policy documents of its pools disagree on how to attest it (${which}): deploy them again`,
        );
      }
    }
  }
  // A host listed by two trusted clusters: which verdict would count?
  const listedBy = new Map<string, string[]>();
  for (const s of settings.values())
    for (const h of s.hosts) listedBy.set(h.name, [...(listedBy.get(h.name) ?? []), s.cluster]);
  for (const [host, clusters] of listedBy) {
    if (clusters.length > 1)
      pin(
        host,
        clusters.join("+"),
        `it is listed by two trusted clusters (${clusters.join(", ")}); a host belongs to one`,
      );
  }
  for (const p of trustedPools) {
    const s = settings.get(p.cluster);
    for (const host of p.hosts) {
      if (!s) {
        if (!candidates.has(p.cluster)) {
          pin(
            host,
            p.cluster,
            "its attestation settings are unknown (no policy document of its pools that carries them has been read)",
          );
        }
      } else if (!s.hosts.some((h) => h.name === host)) {
        pin(
          host,
          p.cluster,
          `it has members of trusted pool ${p.pool}, but trusted cluster ${p.cluster} does not list it (it lists ${s.hosts.map((h) => h.name).join(", ")}): name the host alike in serve --host and the cluster's hosts`,
        );
      }
    }
  }
  return { settings, pinned };
}
