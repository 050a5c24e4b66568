// The pure rules of reconciler/cluster/trust.ts: a host's trust from verdicts, the reason it is
// out of service, and which clusters are attested.
import type { AttestationSettings } from "../../core";
import {
  nextTrust,
  notAttestedYet,
  trustedClusters,
  untrustedReason,
  type HostTrust,
} from "../../reconciler/cluster/trust";

const SETTINGS: AttestationSettings = {
  cluster: "secure",
  type: "keylime",
  url: "https://verifier:8881",
  verifyServerCertificate: true,
  firstStageSize: 0,
  batchSize: 0,
  maxAttestationAgeSeconds: 60,
  pollIntervalMs: 500,
  requestTimeoutMs: 5000,
  hosts: [
    { name: "h1", attestationId: "d432fbb3-d2f1-4a97-9ef7-75bd81c00000" },
    { name: "h2", attestationId: "d432fbb3-d2f1-4a97-9ef7-75bd81c00001" },
  ],
};

const T0 = Date.parse("2026-12-02T10:00:00Z");

describe("nextTrust", () => {
  it("starts out of service, not attested yet, and follows each verdict's level", () => {
    const start = notAttestedYet(SETTINGS, T0);
    expect(start).toMatchObject({ level: "unknown", reason: "not attested yet", sinceMs: T0 });
    expect(untrustedReason(start)).toBe("not trusted (unknown) by Keylime of trusted cluster secure: not attested yet");
    const trusted = nextTrust(start, { host: "h1", level: "trusted", reason: "x" }, T0 + 1);
    expect(trusted).toMatchObject({ level: "trusted", reason: "trusted", checkedAtMs: T0 + 1, sinceMs: T0 + 1 });
    expect(untrustedReason(trusted)).toBeUndefined();
    const again = nextTrust(trusted, { host: "h1", level: "trusted", reason: "x" }, T0 + 2);
    expect(again.sinceMs).toBe(T0 + 1); // since: when the level began
    const failed = nextTrust(
      again,
      { host: "h1", level: "untrusted", reason: "Keylime: operational_state 7 (Failed)" },
      T0 + 3,
    );
    expect(failed).toMatchObject({ level: "untrusted", sinceMs: T0 + 3 });
    expect(untrustedReason(failed)).toBe(
      "not trusted (untrusted) by Keylime of trusted cluster secure: Keylime: operational_state 7 (Failed)",
    );
    for (const level of ["unknown", "stale", "unreachable"] as const) {
      expect(untrustedReason(nextTrust(trusted, { host: "h1", level, reason: "r" }, T0 + 4))).toMatch(`(${level})`);
    }
  });

  it("takes a host back only on a trusted verdict attested after it lost trust (or undated)", () => {
    const lost: HostTrust = {
      ...notAttestedYet(SETTINGS, T0),
      level: "untrusted",
      reason: "bad",
      checkedAtMs: T0,
      sinceMs: T0,
    };
    const old = nextTrust(
      lost,
      { host: "h1", level: "trusted", reason: "", attestedAt: new Date(T0 - 1000).toISOString() },
      T0 + 500,
    );
    expect(old.level).toBe("untrusted");
    expect(old.reason).toMatch(/^bad; waiting for a fresh trusted verdict/);
    expect(old.sinceMs).toBe(T0);
    const sameMoment = nextTrust(
      lost,
      { host: "h1", level: "trusted", reason: "", attestedAt: new Date(T0).toISOString() },
      T0 + 500,
    );
    expect(sameMoment.level).toBe("untrusted");
    const fresh = nextTrust(
      lost,
      { host: "h1", level: "trusted", reason: "", attestedAt: new Date(T0 + 1).toISOString() },
      T0 + 600,
    );
    expect(fresh).toMatchObject({ level: "trusted", sinceMs: T0 + 600 });
    // No date from the service (OpenAttestation without a readable vtime): the new poll's verdict counts.
    expect(nextTrust(lost, { host: "h1", level: "trusted", reason: "" }, T0 + 700).level).toBe("trusted");
    // The first verdict ever is never held back (nothing was lost).
    const first = nextTrust(
      notAttestedYet(SETTINGS, T0),
      { host: "h1", level: "trusted", reason: "", attestedAt: new Date(T0 - 5000).toISOString() },
      T0 + 1,
    );
    expect(first.level).toBe("trusted");
  });
});

describe("trustedClusters", () => {
  it("collects each cluster's settings, and flags hosts of trusted pools whose settings are unknown", () => {
    const { settings, unattested } = trustedClusters([
      { cluster: "secure", allowedHosts: [], attestation: SETTINGS },
      { cluster: "secure", trusted: true, allowedHosts: ["h1", "h2"] },
      { cluster: "other", trusted: true, allowedHosts: ["h7"] },
      { cluster: "plain", allowedHosts: ["h9"] },
    ]);
    expect([...settings.keys()]).toEqual(["secure"]);
    expect([...unattested]).toEqual([["h7", "other"]]);
  });
});
