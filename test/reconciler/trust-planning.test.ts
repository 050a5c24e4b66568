// The pure rules of reconciler/cluster/trust.ts: a host's trust from verdicts, the reason it is
// out of service, and which clusters are attested.
import type { AttestationSettings } from "../../core";
import {
  nextTrust,
  notAttestedYet,
  trustedClusters,
  untrustedReason,
  type HostTrust,
  type PoolTrustFacts,
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
  const facts = (pool: string, o: Partial<PoolTrustFacts> = {}): PoolTrustFacts => ({
    pool,
    cluster: "secure",
    trusted: true,
    hosts: ["h1", "h2"],
    ...o,
  });

  it("polls each cluster's settings and keeps hosts out of service where they cannot vouch for them", () => {
    const { settings, pinned } = trustedClusters([
      facts("A", { attestation: SETTINGS }),
      facts("B"),
      facts("C", { cluster: "other", hosts: ["h7"] }),
      facts("D", { cluster: "plain", trusted: false, hosts: ["h9"] }),
    ]);
    expect([...settings.keys()]).toEqual(["secure"]);
    expect([...pinned]).toEqual([
      [
        "h7",
        {
          cluster: "other",
          reason:
            "its attestation settings are unknown (no policy document of its pools that carries them has been read)",
        },
      ],
    ]);
  });

  it("stays trusted when a document without settings says otherwise: any source marking a pool trusted counts", () => {
    // The reconciler passes trusted: true when a member's metadata says so, whatever the document.
    const { pinned } = trustedClusters([facts("A", { trusted: true, hosts: ["h1", "h2"] })]);
    expect([...pinned.keys()]).toEqual(["h1", "h2"]);
  });

  it("keeps hosts with members of a trusted pool out of service when the cluster does not list them (other case, cluster shrunk)", () => {
    const { pinned } = trustedClusters([facts("A", { attestation: SETTINGS, hosts: ["h1", "H2", "h3"] })]);
    expect([...pinned.keys()]).toEqual(["H2", "h3"]);
    expect(pinned.get("H2")!.reason).toBe(
      "it has members of trusted pool A, but trusted cluster secure does not list it (it lists h1, h2): name the host alike in serve --host and the cluster's hosts",
    );
  });

  it("polls nothing for a cluster whose pools' documents disagree", () => {
    const other = { ...SETTINGS, url: "https://old-verifier:8881" };
    const { settings, pinned } = trustedClusters([
      facts("A", { attestation: SETTINGS }),
      facts("B", { attestation: other }),
    ]);
    expect(settings.size).toBe(0);
    expect(pinned.get("h1")!.reason).toBe(
      "the policy documents of its pools disagree on how to attest it (A / B): deploy them again",
    );
  });

  it("keeps a host listed by two trusted clusters out of service", () => {
    const second = { ...SETTINGS, cluster: "second", hosts: [{ name: "h2", attestationId: "x" }] };
    const { settings, pinned } = trustedClusters([
      facts("A", { attestation: SETTINGS }),
      facts("B", { cluster: "second", hosts: ["h2"], attestation: second }),
    ]);
    expect([...settings.keys()].sort()).toEqual(["second", "secure"]);
    expect([...pinned]).toEqual([
      [
        "h2",
        {
          cluster: "secure+second",
          reason: "it is listed by two trusted clusters (secure, second); a host belongs to one",
        },
      ],
    ]);
  });
});
