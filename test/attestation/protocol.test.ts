// The attestation clients (core/attestation/protocol.cjs): the pure verdict rules here, the
// network clients against the loopback servers in the second half.
import fc from "fast-check";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import {
  createAttestationClient,
  parseVtime,
  verdictFromKeylimeAgent,
  verdictsFromPollHosts,
  type TrustLevel,
  type Verdict,
} from "../../core/attestation/protocol.cjs";
import type { AttestationSettings } from "../../core/trust";
import {
  asctimeDate,
  makeTestPki,
  ODD_FIELD_VARIANTS,
  startKeylimeVerifier,
  startOpenAttestationServer,
  type KeylimeVerifier,
  type OpenAttestationServer,
  type TestPki,
} from "../support/attestation";

const LEVELS: readonly TrustLevel[] = ["trusted", "untrusted", "unknown", "stale", "unreachable"];
const hosts = (...ids: string[]) => ids.map((id, i) => ({ name: `h${i + 1}`, attestationId: id }));

describe("parseVtime", () => {
  it.each([
    ["2014-02-05T11:57:13Z", "2014-02-05T11:57:13.000Z"],
    ["2014-02-05T11:57:13.5Z", "2014-02-05T11:57:13.500Z"],
    ["2014-02-05T11:57:13.123456789Z", "2014-02-05T11:57:13.123Z"],
    ["2014-02-05T11:57:13+08:00", "2014-02-05T03:57:13.000Z"],
    ["2014-02-05T11:57:13-0500", "2014-02-05T16:57:13.000Z"],
    ["2014-02-05T11:57:13", "2014-02-05T11:57:13.000Z"],
    ["2014-02-05T11:57", "2014-02-05T11:57:00.000Z"],
    ["2014-02-05 11:57:13", "2014-02-05T11:57:13.000Z"],
    ["2014-02-05 11:57:13.250", "2014-02-05T11:57:13.250Z"],
    ["2014-02-05 11:57:13 UTC", "2014-02-05T11:57:13.000Z"],
    ["  2014-02-05 11:57:13  ", "2014-02-05T11:57:13.000Z"],
    ["2014-02-05", "2014-02-05T00:00:00.000Z"],
    ["Wed Feb 05 11:57:13 CST 2014", "2014-02-05T17:57:13.000Z"],
    ["Wed Feb 05 11:57:13 UTC 2014", "2014-02-05T11:57:13.000Z"],
    ["Wed Feb 05 11:57:13 GMT 2014", "2014-02-05T11:57:13.000Z"],
    ["Wed Feb 05 11:57:13 PST 2014", "2014-02-05T19:57:13.000Z"],
    ["Sun Jul 06 11:57:13 EDT 2014", "2014-07-06T15:57:13.000Z"],
    ["Wed Feb 05 11:57:13 GMT+08:00 2014", "2014-02-05T03:57:13.000Z"],
    ["Wed Feb 5 01:02:03 UTC 2014", "2014-02-05T01:02:03.000Z"],
    [1391601433, "2014-02-05T11:57:13.000Z"],
    [1391601433.5, "2014-02-05T11:57:13.500Z"],
    [1391601433000, "2014-02-05T11:57:13.000Z"],
    ["1391601433", "2014-02-05T11:57:13.000Z"],
    ["1391601433000", "2014-02-05T11:57:13.000Z"],
  ])("%j → %s", (input, iso) => {
    expect(parseVtime(input)).toBe(iso);
  });

  it.each([
    ["unreadable text", "yesterday"],
    ["an impossible day", "2014-02-30 00:00:00"],
    ["an impossible hour", "2014-02-05 25:00:00"],
    ["an impossible month", "2014-13-05T00:00:00Z"],
    ["an unlisted zone name", "Wed Feb 05 11:57:13 IST 2014"],
    ["an unknown month", "Wed Foo 05 11:57:13 UTC 2014"],
    ["an offset beyond 14 h", "2014-02-05T11:57:13+15:00"],
    ["zero", 0],
    ["a negative epoch", -5],
    ["NaN", Number.NaN],
    ["Infinity", Number.POSITIVE_INFINITY],
    ["beyond Date's range", 1e20],
    ["null", null],
    ["an object", { time: 1 }],
    ["a boolean", true],
    ["an empty string", ""],
    ["a very long string", `2014-02-05T11:57:13Z${" ".repeat(100)}x`],
  ])("%s → undefined", (_what, input) => {
    expect(parseVtime(input)).toBeUndefined();
  });

  it("any input: an ISO 8601 string or undefined, never a throw", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.jsonValue(),
          fc.string(),
          fc.double(),
          fc.date().map((d) => String(d)),
        ),
        (v) => {
          const iso = parseVtime(v);
          if (iso !== undefined) expect(new Date(iso).toISOString()).toBe(iso);
        },
      ),
    );
  });

  it("every time written as ISO 8601, as Java's Date.toString in UTC and as epoch seconds reads back", () => {
    const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    const pad = (n: number) => String(n).padStart(2, "0");
    fc.assert(
      fc.property(fc.integer({ min: Date.UTC(1990, 0, 1) / 1000, max: Date.UTC(2100, 0, 1) / 1000 }), (s) => {
        const d = new Date(s * 1000);
        const iso = d.toISOString();
        const java =
          `${DAYS[d.getUTCDay()]} ${MONTHS[d.getUTCMonth()]} ${pad(d.getUTCDate())} ` +
          `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC ${d.getUTCFullYear()}`;
        expect(parseVtime(iso)).toBe(iso);
        expect(parseVtime(iso.replace("T", " ").replace(".000Z", ""))).toBe(iso);
        expect(parseVtime(java)).toBe(iso);
        expect(parseVtime(s)).toBe(iso);
        expect(parseVtime(String(s * 1000))).toBe(iso);
      }),
    );
  });
});

describe("verdictsFromPollHosts", () => {
  const answer = (...entries: unknown[]) => ({ hosts: entries });

  it("maps trust_lvl by host_name back to our host names, in our order", () => {
    const v = verdictsFromPollHosts(
      answer(
        { host_name: "oat-b", trust_lvl: "untrusted", vtime: "2014-02-05 11:57:13" },
        { host_name: "oat-a", trust_lvl: "trusted", vtime: "Wed Feb 05 11:57:13 UTC 2014" },
      ),
      hosts("oat-a", "oat-b"),
    );
    expect(v).toEqual([
      {
        host: "h1",
        level: "trusted",
        reason: "OpenAttestation: trust_lvl trusted",
        attestedAt: "2014-02-05T11:57:13.000Z",
      },
      {
        host: "h2",
        level: "untrusted",
        reason: "OpenAttestation: trust_lvl untrusted",
        attestedAt: "2014-02-05T11:57:13.000Z",
      },
    ]);
  });

  it.each([
    ["TRUSTED", "trusted", "OpenAttestation: trust_lvl trusted"],
    [" Trusted ", "trusted", "OpenAttestation: trust_lvl trusted"],
    ["UnTrusted", "untrusted", "OpenAttestation: trust_lvl untrusted"],
    ["unknown", "unknown", "OpenAttestation: trust_lvl unknown"],
    ["timeout", "unknown", "OpenAttestation: trust_lvl timeout"],
    ["pending", "unknown", "OpenAttestation: trust_lvl pending"],
    ["UNINITIALIZED", "unknown", "OpenAttestation: trust_lvl uninitialized"],
    ["", "unknown", "OpenAttestation: trust_lvl empty"],
    ["trusted-ish", "unknown", "OpenAttestation: trust_lvl trusted-ish"],
    [undefined, "unknown", "OpenAttestation: trust_lvl missing"],
    [null, "unknown", "OpenAttestation: trust_lvl is null, not a level"],
    [1, "unknown", "OpenAttestation: trust_lvl is a number, not a level"],
    [true, "unknown", "OpenAttestation: trust_lvl is a boolean, not a level"],
    [["trusted"], "unknown", "OpenAttestation: trust_lvl is an array, not a level"],
  ])("trust_lvl %j → %s", (trustLvl, level, reason) => {
    const [v] = verdictsFromPollHosts(answer({ host_name: "a", trust_lvl: trustLvl }), hosts("a"));
    expect(v).toEqual({ host: "h1", level, reason });
  });

  it("a host missing from the answer is unknown", () => {
    const v = verdictsFromPollHosts(answer({ host_name: "a", trust_lvl: "trusted" }), hosts("a", "b"));
    expect(v[1]).toEqual({ host: "h2", level: "unknown", reason: "OpenAttestation: not in the answer" });
  });

  it("matches host names without regard to case, and ignores hosts not asked about", () => {
    const v = verdictsFromPollHosts(
      answer({ host_name: "other", trust_lvl: "trusted" }, { host_name: "NODE1.example.COM", trust_lvl: "trusted" }),
      hosts("node1.example.com"),
    );
    expect(v).toEqual([{ host: "h1", level: "trusted", reason: "OpenAttestation: trust_lvl trusted" }]);
  });

  it("a host named twice with different levels is unknown; twice the same level stands", () => {
    const v = verdictsFromPollHosts(
      answer(
        { host_name: "a", trust_lvl: "trusted" },
        { host_name: "a", trust_lvl: "untrusted" },
        { host_name: "b", trust_lvl: "trusted" },
        { host_name: "b", trust_lvl: "TRUSTED" },
      ),
      hosts("a", "b"),
    );
    expect(v.map((x) => x.level)).toEqual(["unknown", "trusted"]);
    expect(v[0]!.reason).toMatch(/twice/);
  });

  it("two of our hosts sharing a name at the service get its verdict both", () => {
    const v = verdictsFromPollHosts(answer({ host_name: "a", trust_lvl: "untrusted" }), hosts("a", "a"));
    expect(v.map((x) => [x.host, x.level])).toEqual([
      ["h1", "untrusted"],
      ["h2", "untrusted"],
    ]);
  });

  it("an unreadable vtime leaves attestedAt undefined and the verdict as it is", () => {
    const [v] = verdictsFromPollHosts(answer({ host_name: "a", trust_lvl: "trusted", vtime: "soon" }), hosts("a"));
    expect(v).toEqual({ host: "h1", level: "trusted", reason: "OpenAttestation: trust_lvl trusted" });
    expect(v).not.toHaveProperty("attestedAt");
  });

  it.each([
    [null, /is null, not an object/],
    ["text", /is a string, not an object/],
    [[1], /is an array, not an object/],
    [{}, /no hosts list/],
    [{ hosts: "a" }, /no hosts list/],
    [{ hosts: [null, 1, "a", { trust_lvl: "trusted" }, { host_name: 7, trust_lvl: "trusted" }] }, /not in the answer/],
  ])("an odd answer %j makes every host unknown", (body, reason) => {
    const v = verdictsFromPollHosts(body, hosts("a", "b"));
    expect(v).toHaveLength(2);
    for (const x of v) {
      expect(x.level).toBe("unknown");
      expect(x.reason).toMatch(reason);
    }
  });

  it("text from the answer in a reason is clipped and without control characters", () => {
    const [v] = verdictsFromPollHosts(answer({ host_name: "a", trust_lvl: `x\n\u0000${"y".repeat(500)}` }), hosts("a"));
    expect(v!.level).toBe("unknown");
    expect(v!.reason.length).toBeLessThanOrEqual(100);
    // eslint-disable-next-line no-control-regex
    expect(v!.reason).not.toMatch(/[\u0000-\u001f]/);
  });

  it("a prototype's names in the answer are data, not properties", () => {
    const body = JSON.parse('{"hosts":[{"host_name":"a","__proto__":{"trust_lvl":"trusted"}}]}');
    const [v] = verdictsFromPollHosts(body, hosts("a"));
    expect(v!.level).toBe("unknown");
  });

  it("any JSON answer: one verdict per host asked, in order, never a throw; trusted only when it says so", () => {
    const ids = fc.constantFrom("a", "b", "c", "A");
    const entry = fc.oneof(
      fc.record(
        {
          host_name: fc.oneof(ids, fc.jsonValue()),
          trust_lvl: fc.oneof(fc.constantFrom("trusted", "untrusted"), fc.jsonValue()),
          vtime: fc.jsonValue(),
        },
        { requiredKeys: [] },
      ),
      fc.jsonValue(),
    );
    const body = fc.oneof(fc.jsonValue(), fc.record({ hosts: fc.oneof(fc.array(entry), fc.jsonValue()) }));
    fc.assert(
      fc.property(body, fc.uniqueArray(ids, { minLength: 1 }), (b, ourIds) => {
        const asked = hosts(...ourIds);
        const v: Verdict[] = verdictsFromPollHosts(b, asked);
        expect(v.map((x) => x.host)).toEqual(asked.map((h) => h.name));
        for (const [i, x] of v.entries()) {
          expect(LEVELS).toContain(x.level);
          expect(typeof x.reason).toBe("string");
          if (x.level === "trusted") {
            const list = (b as { hosts: unknown[] }).hosts;
            const said = list.filter(
              (e) =>
                typeof e === "object" &&
                e !== null &&
                String((e as Record<string, unknown>).host_name).toLowerCase() === ourIds[i]!.toLowerCase(),
            ) as Record<string, unknown>[];
            expect(said.length).toBeGreaterThan(0);
            for (const e of said) expect(String(e.trust_lvl).trim().toLowerCase()).toBe("trusted");
          }
        }
      }),
    );
  });
});

describe("verdictFromKeylimeAgent", () => {
  const NOW_MS = 1_700_000_000_000;
  const NOW_S = NOW_MS / 1000;
  const agent = (fields: Record<string, unknown>) => ({
    operational_state: 3,
    attestation_status: "PASS",
    last_successful_attestation: NOW_S - 2,
    attestation_count: 10,
    ...fields,
  });
  const verdict = (a: unknown, max = 60) => verdictFromKeylimeAgent("h1", a, NOW_MS, max);

  it("an agent in Get Quote with a recent attestation is trusted, attestedAt from last_successful_attestation", () => {
    expect(verdict(agent({}))).toEqual({
      host: "h1",
      level: "trusted",
      reason: "Keylime: operational_state 3 (Get Quote), last successful attestation 2 s ago",
      attestedAt: new Date((NOW_S - 2) * 1000).toISOString(),
    });
  });

  it("an agent the verifier does not know is unknown", () => {
    expect(verdict(undefined)).toEqual({
      host: "h1",
      level: "unknown",
      reason: "Keylime: the verifier does not know this agent",
    });
  });

  it.each([
    [7, "Failed"],
    [8, "Terminated"],
    [9, "Invalid Quote"],
    [10, "Tenant Quote Failed"],
  ])("operational_state %i is untrusted, named %s", (state, name) => {
    // Even if the status still says PASS and the last attestation is recent.
    const v = verdict(agent({ operational_state: state }));
    expect(v).toMatchObject({ level: "untrusted", reason: `Keylime: operational_state ${state} (${name})` });
  });

  it("attestation_status FAIL is untrusted (push mode: no operational_state)", () => {
    expect(verdict(agent({ operational_state: null, attestation_status: "FAIL" }))).toMatchObject({
      level: "untrusted",
      reason: "Keylime: attestation_status FAIL",
    });
    expect(verdict(agent({ attestation_status: "fail" })).level).toBe("untrusted");
  });

  it.each([0, 1, 2, 5, 6])("operational_state %i is unknown: not attested yet", (state) => {
    const v = verdict(agent({ operational_state: state }));
    expect(v.level).toBe("unknown");
    expect(v.reason).toMatch(new RegExp(`^Keylime: not attested yet: operational_state ${state} \\(`));
  });

  it("attestation_status PENDING is unknown: not attested yet", () => {
    expect(verdict(agent({ operational_state: null, attestation_status: "PENDING" }))).toMatchObject({
      level: "unknown",
      reason: "Keylime: not attested yet: attestation_status PENDING",
    });
  });

  it("push mode's TIMEOUT is stale", () => {
    expect(verdict(agent({ operational_state: null, attestation_status: "TIMEOUT" })).level).toBe("stale");
  });

  it("PASS without a state (push mode) and a recent attestation is trusted", () => {
    expect(verdict(agent({ operational_state: null }))).toMatchObject({
      level: "trusted",
      reason: "Keylime: attestation_status PASS, last successful attestation 2 s ago",
    });
  });

  it("state 4 (retry) reports PASS: stale once the last attestation is older than the limit", () => {
    const v = verdict(agent({ operational_state: 4, last_successful_attestation: NOW_S - 75 }));
    expect(v).toEqual({
      host: "h1",
      level: "stale",
      reason: "Keylime: last successful attestation 75 s ago (limit 60 s)",
      attestedAt: new Date((NOW_S - 75) * 1000).toISOString(),
    });
    expect(verdict(agent({ operational_state: 4, last_successful_attestation: NOW_S - 60 })).level).toBe("trusted");
    expect(verdict(agent({ operational_state: 4, last_successful_attestation: NOW_S - 61 })).level).toBe("stale");
    expect(verdict(agent({ last_successful_attestation: NOW_S - 61 }), 120).level).toBe("trusted");
  });

  it("a verifier before 7.14 (no last_successful_attestation): state 3 trusted, state 4 stale", () => {
    const old = (state: number) => ({ operational_state: state, v: "x", ip: "10.0.0.1", port: 9002 });
    expect(verdict(old(3))).toEqual({
      host: "h1",
      level: "trusted",
      reason: "Keylime: operational_state 3 (Get Quote)",
    });
    const v = verdict(old(4));
    expect(v.level).toBe("stale");
    expect(v.reason).toMatch(/^Keylime: operational_state 4 \(Get Quote \(retry\)\).*before 7\.14/);
    expect(verdict(old(7)).level).toBe("untrusted");
    expect(verdict(old(2)).level).toBe("unknown");
  });

  it("no successful attestation yet (0 or null) is unknown", () => {
    expect(verdict(agent({ last_successful_attestation: 0 }))).toMatchObject({
      level: "unknown",
      reason: "Keylime: not attested yet: operational_state 3 (Get Quote), no successful attestation",
    });
    expect(verdict(agent({ last_successful_attestation: null })).level).toBe("unknown");
  });

  it("a last attestation far in the future is unknown (clocks apart); a little ahead is fine", () => {
    expect(verdict(agent({ last_successful_attestation: NOW_S + 3600 }))).toMatchObject({
      level: "unknown",
      reason: expect.stringMatching(/3600 s in the future/),
    });
    expect(verdict(agent({ last_successful_attestation: NOW_S + 5 }))).toMatchObject({
      level: "trusted",
      reason: "Keylime: operational_state 3 (Get Quote), last successful attestation 0 s ago",
    });
  });

  it.each([
    ["null", null],
    ["a string", "PASS"],
    ["an array", [agent({})]],
    ["a number", 3],
    ["neither state nor status", { ip: "10.0.0.1" }],
    ["a state out of range", agent({ operational_state: 11 })],
    ["a fractional state", agent({ operational_state: 3.5 })],
    ["a state as a string", agent({ operational_state: "3" })],
    ["an odd status", { attestation_status: "MAYBE" }],
    ["a status that is a number", agent({ attestation_status: 1 })],
    ["last_successful_attestation as a string", agent({ last_successful_attestation: "recent" })],
    ["a negative last_successful_attestation", agent({ last_successful_attestation: -1 })],
  ])("%s → unknown", (_what, a) => {
    const v = verdict(a);
    expect(v.level).toBe("unknown");
    expect(v.reason).toMatch(/^Keylime: /);
  });

  it("any JSON: one verdict, never a throw; trusted only with a quoting state or PASS, recent or pre-7.14 state 3", () => {
    const field = <T>(a: fc.Arbitrary<T>) => fc.oneof(a, fc.jsonValue());
    const a = fc.oneof(
      fc.jsonValue(),
      fc.record(
        {
          operational_state: field(fc.integer({ min: -1, max: 12 })),
          attestation_status: field(fc.constantFrom("PASS", "FAIL", "PENDING", "TIMEOUT", "pass")),
          last_successful_attestation: field(fc.integer({ min: NOW_S - 200, max: NOW_S + 200 })),
        },
        { requiredKeys: [] },
      ),
    );
    fc.assert(
      fc.property(a, fc.integer({ min: 1, max: 120 }), (x, max) => {
        const v = verdictFromKeylimeAgent("h1", x, NOW_MS, max);
        expect(v.host).toBe("h1");
        expect(LEVELS).toContain(v.level);
        expect(v.reason).toMatch(/^Keylime: /);
        if (v.level === "trusted") {
          const r = x as Record<string, unknown>;
          expect(
            [3, 4].includes(r.operational_state as number) || String(r.attestation_status).toUpperCase() === "PASS",
          ).toBe(true);
          expect([7, 8, 9, 10]).not.toContain(r.operational_state);
          if ("last_successful_attestation" in r) {
            expect(NOW_S - (r.last_successful_attestation as number)).toBeLessThanOrEqual(max);
          } else expect(r.operational_state).toBe(3);
        }
      }),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// The clients against the loopback servers (real HTTPS, certificates made for the run).

let dir: string;
let pki: TestPki;
const POLL_PATH = "/AttestationService/resources/PollHosts";

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "vmpools-protocol-"));
  pki = makeTestPki(dir);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const namedHosts = (n: number, prefix: string) =>
  Array.from({ length: n }, (_, i) => ({ name: `h${i + 1}`, attestationId: `${prefix}${i + 1}` }));

function oatSettings(url: string, over: Partial<AttestationSettings> = {}): AttestationSettings {
  return {
    cluster: "trusted",
    type: "openattestation",
    url: `${url}${POLL_PATH}`,
    verifyServerCertificate: true,
    caCertificatePem: pki.caPem,
    firstStageSize: 10,
    batchSize: 20,
    maxAttestationAgeSeconds: 0,
    pollIntervalMs: 500,
    requestTimeoutMs: 2000,
    hosts: namedHosts(3, "oat-"),
    ...over,
  };
}

/** Runs fn with a client, closed afterwards. */
async function withClient<T>(
  settings: AttestationSettings,
  fn: (attest: () => Promise<readonly Verdict[]>) => Promise<T>,
  options?: Parameters<typeof createAttestationClient>[1],
): Promise<T> {
  const client = createAttestationClient(settings, options);
  try {
    return await fn(() => client.attest());
  } finally {
    client.close();
  }
}

const attestOnce = (settings: AttestationSettings, options?: Parameters<typeof createAttestationClient>[1]) =>
  withClient(settings, (attest) => attest(), options);

const levels = (v: readonly Verdict[]) => Object.fromEntries(v.map((x) => [x.host, x.level]));

/** No reason may carry a key, a certificate or what we sent. */
function expectNoSecrets(v: readonly Verdict[]): void {
  for (const x of v) {
    expect(x.reason).not.toMatch(/PRIVATE KEY|BEGIN CERTIFICATE|"hosts"/);
    expect(x.reason).not.toContain(pki.clientKeyPem.split("\n")[1]!);
  }
}

describe("OpenAttestation client (PollHosts over HTTPS)", () => {
  let oat: OpenAttestationServer;
  beforeAll(async () => {
    oat = await startOpenAttestationServer({ pki });
  });
  afterAll(() => oat.close());
  beforeEach(() => {
    oat.setFault(undefined);
    oat.setDefaultTrust("trusted");
    oat.clearRequests();
  });

  it("every level the server answers → the verdict, attestedAt from vtime", async () => {
    const hosts = namedHosts(7, "oat-v");
    const answered = ["trusted", "untrusted", "unknown", "timeout", "pending", "uninitialized", "TRUSTED"];
    answered.forEach((level, i) => oat.setTrust(hosts[i]!.attestationId, level));
    const before = Date.now();
    const v = await attestOnce(oatSettings(oat.url, { hosts }));
    expect(v.map((x) => [x.host, x.level, x.reason])).toEqual([
      ["h1", "trusted", "OpenAttestation: trust_lvl trusted"],
      ["h2", "untrusted", "OpenAttestation: trust_lvl untrusted"],
      ["h3", "unknown", "OpenAttestation: trust_lvl unknown"],
      ["h4", "unknown", "OpenAttestation: trust_lvl timeout"],
      ["h5", "unknown", "OpenAttestation: trust_lvl pending"],
      ["h6", "unknown", "OpenAttestation: trust_lvl uninitialized"],
      ["h7", "trusted", "OpenAttestation: trust_lvl trusted"],
    ]);
    for (const x of v) {
      // Jackson's "…+0000" with milliseconds, read back to the ms.
      const at = Date.parse(x.attestedAt!);
      expect(at).toBeGreaterThanOrEqual(before);
      expect(at).toBeLessThanOrEqual(Date.now());
    }
    expect(oat.requests).toEqual([{ hosts: hosts.map((h) => h.attestationId), path: POLL_PATH }]);
  });

  it("vtime as epoch ms, as the javadoc's asctime, missing or unreadable: the verdict stands", async () => {
    const hosts = namedHosts(4, "oat-t");
    const t = Date.UTC(2015, 1, 14, 9, 2, 48);
    oat.setVtime("oat-t1", t);
    oat.setVtime("oat-t2", asctimeDate(t));
    oat.setVtime("oat-t3", null);
    oat.setVtime("oat-t4", "not a time");
    const v = await attestOnce(oatSettings(oat.url, { hosts }));
    expect(v.map((x) => x.attestedAt)).toEqual([
      "2015-02-14T09:02:48.000Z",
      "2015-02-14T09:02:48.000Z",
      undefined,
      undefined,
    ]);
    expect(v.every((x) => x.level === "trusted")).toBe(true);
  });

  it("batches: the first stage (10) alone, then 20 a request; every host asked once", async () => {
    const hosts = namedHosts(45, "oat-b");
    const v = await attestOnce(oatSettings(oat.url, { hosts }));
    expect(v.every((x) => x.level === "trusted")).toBe(true);
    const sizes = oat.requests.map((r) => r.hosts.length);
    expect(sizes[0]).toBe(10);
    expect(sizes.slice(1).sort((a, b) => a - b)).toEqual([15, 20]);
    expect(oat.requests[0]!.hosts).toEqual(hosts.slice(0, 10).map((h) => h.attestationId));
    const asked = oat.requests.flatMap((r) => r.hosts).sort();
    expect(asked).toEqual(hosts.map((h) => h.attestationId).sort());
  });

  it("the batches after the first are sent concurrently, once the first is answered", async () => {
    oat.setFault({ kind: "slow", delayMs: 300 });
    const t = performance.now();
    const v = await attestOnce(oatSettings(oat.url, { hosts: namedHosts(110, "oat-c") }));
    const ms = performance.now() - t;
    expect(v.every((x) => x.level === "trusted")).toBe(true);
    expect(oat.requests).toHaveLength(6);
    // Sequentially 6 × 300 ms; the first stage then the other five together is about 600 ms.
    expect(ms).toBeGreaterThanOrEqual(590);
    expect(ms).toBeLessThan(1400);
  });

  it("1000 hosts: 51 requests over a few kept-alive connections", async () => {
    const hosts = namedHosts(1000, "oat-k");
    oat.setTrust("oat-k500", "untrusted");
    const connections = oat.connections;
    const v = await attestOnce(oatSettings(oat.url, { hosts }));
    expect(v).toHaveLength(1000);
    expect(v.filter((x) => x.level !== "trusted").map((x) => x.host)).toEqual(["h500"]);
    // 10, then 990 in 49 of 20 and one of 10 (answered in any order).
    const sizes = oat.requests.map((r) => r.hosts.length);
    expect(sizes[0]).toBe(10);
    expect(sizes.slice(1).sort((a, b) => a - b)).toEqual([10, ...Array<number>(49).fill(20)]);
    expect(oat.connections - connections).toBeLessThanOrEqual(20);
  });

  it("a client asks again over its kept-alive connection", async () => {
    await withClient(oatSettings(oat.url), async (attest) => {
      const connections = oat.connections;
      for (let i = 0; i < 5; i++)
        expect(levels(await attest())).toEqual({ h1: "trusted", h2: "trusted", h3: "trusted" });
      expect(oat.connections - connections).toBe(1);
    });
  });

  it("a host that turns untrusted is seen on the next poll", async () => {
    await withClient(oatSettings(oat.url, { hosts: namedHosts(2, "oat-f") }), async (attest) => {
      expect(levels(await attest())).toEqual({ h1: "trusted", h2: "trusted" });
      oat.setTrust("oat-f2", "untrusted");
      expect(levels(await attest())).toEqual({ h1: "trusted", h2: "untrusted" });
    });
  });

  it("no answer within the time limit → unreachable; a dead first stage spares the later batches", async () => {
    oat.setFault("timeout");
    const t = performance.now();
    const v = await attestOnce(oatSettings(oat.url, { hosts: namedHosts(50, "oat-w"), requestTimeoutMs: 300 }));
    const ms = performance.now() - t;
    expect(v.every((x) => x.level === "unreachable" && x.reason === "no answer within 0.3 s")).toBe(true);
    expect(oat.requests).toHaveLength(1);
    expect(ms).toBeGreaterThanOrEqual(290);
    expect(ms).toBeLessThan(1500);
  });

  it("HTTP 5xx → unreachable naming the status", async () => {
    oat.setFault({ kind: "5xx", status: 503 });
    const v = await attestOnce(oatSettings(oat.url));
    expect(v.map((x) => [x.level, x.reason])).toEqual(Array(3).fill(["unreachable", "HTTP 503 Service Unavailable"]));
    expectNoSecrets(v);
  });

  it("a body that is not JSON → unknown", async () => {
    oat.setFault("malformed-json");
    const v = await attestOnce(oatSettings(oat.url));
    expect(v.map((x) => [x.level, x.reason])).toEqual(Array(3).fill(["unknown", "answer is not JSON"]));
  });

  it.each(ODD_FIELD_VARIANTS.filter((x) => x !== "hosts-object"))("odd fields (%s) → unknown", async (variant) => {
    oat.setFault({ kind: "odd-fields", variant });
    const v = await attestOnce(oatSettings(oat.url));
    expect(v.map((x) => x.level)).toEqual(["unknown", "unknown", "unknown"]);
  });

  it("odd fields for one host make only that host unknown", async () => {
    oat.setFault({ kind: "odd-fields", variant: "missing-trust-lvl", only: ["oat-2"] });
    const v = await attestOnce(oatSettings(oat.url));
    expect(v.map((x) => [x.level, x.reason])).toEqual([
      ["trusted", "OpenAttestation: trust_lvl trusted"],
      ["unknown", "OpenAttestation: trust_lvl missing"],
      ["trusted", "OpenAttestation: trust_lvl trusted"],
    ]);
  });

  it("the javadoc's older answer (hosts keyed by name, timestamp) is read", async () => {
    oat.setTrust("oat-o3", "untrusted");
    oat.setFault({ kind: "odd-fields", variant: "hosts-object" });
    const v = await attestOnce(oatSettings(oat.url, { hosts: namedHosts(3, "oat-o") }));
    expect(v.map((x) => x.level)).toEqual(["trusted", "trusted", "untrusted"]);
    expect(v.every((x) => x.attestedAt !== undefined)).toBe(true);
  });

  it("hosts left out of the answer → unknown, not in the answer", async () => {
    oat.setFault({ kind: "missing-hosts", omit: ["oat-2"] });
    const v = await attestOnce(oatSettings(oat.url));
    expect(v[1]).toEqual({ host: "h2", level: "unknown", reason: "OpenAttestation: not in the answer" });
    expect(levels(v)).toEqual({ h1: "trusted", h2: "unknown", h3: "trusted" });
  });

  it("our host names, not the service's, in the verdicts", async () => {
    const hosts = [
      { name: "rack1-a", attestationId: "node-a.example.com" },
      { name: "rack1-b", attestationId: "node-b.example.com" },
    ];
    oat.setTrust("node-b.example.com", "untrusted");
    expect(levels(await attestOnce(oatSettings(oat.url, { hosts })))).toEqual({
      "rack1-a": "trusted",
      "rack1-b": "untrusted",
    });
  });

  it("a wrong poll URI → unreachable with the server's 404", async () => {
    const v = await attestOnce({ ...oatSettings(oat.url), url: `${oat.url}/Nowhere/PollHosts` });
    expect(v.every((x) => x.level === "unreachable" && /^HTTP 404/.test(x.reason))).toBe(true);
  });

  it("a server certificate another CA signed does not verify → unreachable naming the TLS code", async () => {
    const other = await startOpenAttestationServer({ pki, tls: "other-ca", defaultTrust: "trusted" });
    try {
      const v = await attestOnce(oatSettings(other.url));
      for (const x of v) {
        expect(x.level).toBe("unreachable");
        expect(x.reason).toMatch(
          /^certificate does not verify: (UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY) /,
        );
      }
      expect(other.requests).toHaveLength(0);
      // Without a CA (the system's) it does not verify either.
      const none = await attestOnce({ ...oatSettings(other.url), caCertificatePem: undefined });
      expect(none.every((x) => x.level === "unreachable" && x.reason.startsWith("certificate does not verify"))).toBe(
        true,
      );
      // Verification turned off (explicitly, and warned about at synth): answered.
      const off = await attestOnce({
        ...oatSettings(other.url),
        verifyServerCertificate: false,
        caCertificatePem: undefined,
      });
      expect(off.map((x) => x.level)).toEqual(["trusted", "trusted", "trusted"]);
    } finally {
      await other.close();
    }
  });

  it("a server name the certificate does not hold does not verify", async () => {
    // The test certificate is for 127.0.0.1 and localhost; this server answers on 127.0.0.2
    // (loopback too) with it.
    const { createServer: createHttpsServer } = await import("node:https");
    const s = createHttpsServer({ cert: pki.serverCertPem, key: pki.serverKeyPem }, (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end('{"hosts":[{"host_name":"oat-1","trust_lvl":"trusted"}]}');
    });
    s.on("tlsClientError", () => undefined);
    await new Promise<void>((r) => s.listen(0, "127.0.0.2", r));
    try {
      const v = await attestOnce(oatSettings(`https://127.0.0.2:${(s.address() as AddressInfo).port}`));
      for (const x of v) {
        expect(x.level).toBe("unreachable");
        expect(x.reason).toMatch(/^certificate does not verify: ERR_TLS_CERT_ALTNAME_INVALID \(.*127\.0\.0\.2/);
      }
    } finally {
      await new Promise((r) => s.close(r));
    }
  });

  it("plain HTTP (secureConnection off) works", async () => {
    const plain = await startOpenAttestationServer({ pki, tls: "none", defaultTrust: "trusted" });
    try {
      const v = await attestOnce({ ...oatSettings(plain.url), caCertificatePem: undefined });
      expect(v.map((x) => x.level)).toEqual(["trusted", "trusted", "trusted"]);
    } finally {
      await plain.close();
    }
  });

  it("nothing listening → unreachable, connection refused", async () => {
    const s = createServer();
    await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
    const port = (s.address() as AddressInfo).port;
    await new Promise((r) => s.close(r));
    const v = await attestOnce(oatSettings(`https://127.0.0.1:${port}`));
    expect(v.map((x) => x.reason)).toEqual(
      Array(3).fill(`attestation service unreachable: connect ECONNREFUSED 127.0.0.1:${port}`),
    );
  });

  it("after close() every host is unreachable, without a request", async () => {
    const client = createAttestationClient(oatSettings(oat.url));
    client.close();
    const v = await client.attest();
    expect(v.map((x) => x.level)).toEqual(["unreachable", "unreachable", "unreachable"]);
    expect(oat.requests).toHaveLength(0);
  });
});

describe("answers that misbehave below the protocol (a plain HTTP server of the test's)", () => {
  let server: Server;
  let url: string;
  let behaviour: (res: import("node:http").ServerResponse) => void;
  const sockets = new Set<Socket>();
  beforeAll(async () => {
    server = createServer((req, res) => {
      req.resume();
      req.on("end", () => behaviour(res));
    });
    server.on("connection", (s: Socket) => (sockets.add(s), s.on("close", () => sockets.delete(s))));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });
  const settings = () => oatSettings(url, { caCertificatePem: undefined, requestTimeoutMs: 400 });

  it("headers sent, then the body never finished → no answer within the limit", async () => {
    behaviour = (res) => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.write('{"hosts":[');
    };
    const v = await attestOnce(settings());
    expect(v.map((x) => [x.level, x.reason])).toEqual(Array(3).fill(["unreachable", "no answer within 0.4 s"]));
  });

  it("an answer over 16 MiB → unknown, whether announced by Content-Length or streamed", async () => {
    behaviour = (res) => {
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": String(17 * 2 ** 20) });
      res.write("[");
    };
    expect((await attestOnce(settings())).map((x) => [x.level, x.reason])).toEqual(
      Array(3).fill(["unknown", "answer larger than 16 MiB"]),
    );
    const chunk = Buffer.alloc(2 ** 20, 0x20);
    behaviour = (res) => {
      res.writeHead(200, { "Content-Type": "application/json" });
      let sent = 0;
      const more = (): void => {
        while (sent < 17 && res.write(chunk)) sent++;
        if (sent < 17 && !res.destroyed) res.once("drain", () => (sent++, more()));
        else res.end();
      };
      more();
    };
    expect((await attestOnce({ ...settings(), requestTimeoutMs: 5000 })).map((x) => [x.level, x.reason])).toEqual(
      Array(3).fill(["unknown", "answer larger than 16 MiB"]),
    );
  });

  it("the connection dropped mid-answer → unreachable", async () => {
    behaviour = (res) => {
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": "100" });
      res.write('{"hosts":');
      setTimeout(() => res.socket?.destroy(), 20);
    };
    const v = await attestOnce(settings());
    expect(v.every((x) => x.level === "unreachable" && x.reason.startsWith("attestation service unreachable"))).toBe(
      true,
    );
  });
});

describe("Keylime client (verifier API v2.x, mutual TLS)", () => {
  let clockMs = Date.UTC(2026, 0, 1);
  const now = () => clockMs;
  const nowS = () => Math.floor(clockMs / 1000);
  let kl: KeylimeVerifier;
  const AGENTS = namedHosts(6, "d432fbb3-d2f1-4a97-9ef7-75bd81c0000");

  function klSettings(url: string, over: Partial<AttestationSettings> = {}): AttestationSettings {
    return {
      cluster: "trusted",
      type: "keylime",
      url,
      verifyServerCertificate: true,
      caCertificatePem: pki.caPem,
      clientCertificatePem: pki.clientCertPem,
      firstStageSize: 0,
      batchSize: 0,
      maxAttestationAgeSeconds: 60,
      pollIntervalMs: 500,
      requestTimeoutMs: 2000,
      hosts: AGENTS.slice(0, 3),
      ...over,
    };
  }
  const key = { clientKeyPem: "" as string, now };

  beforeAll(async () => {
    key.clientKeyPem = pki.clientKeyPem;
    kl = await startKeylimeVerifier({ pki, now });
  });
  afterAll(() => kl.close());
  beforeEach(() => {
    clockMs = Date.UTC(2026, 0, 1);
    kl.setFault(undefined);
    kl.setBulkSupported(true);
    for (const a of AGENTS) kl.removeAgent(a.attestationId);
    for (const a of AGENTS.slice(0, 3)) kl.setAgent(a.attestationId);
    kl.clearRequests();
  });
  const paths = () => kl.requests.map((r) => r.path);

  it("every verdict through one bulk GET, after GET /version picks the highest 2.x", async () => {
    const id = (i: number) => AGENTS[i]!.attestationId;
    kl.setAgent(id(1), { operational_state: 7 });
    kl.setAgent(id(2), { operational_state: 2 });
    kl.setAgent(id(3), { operational_state: 4, last_successful_attestation: nowS() - 75 });
    kl.setAgent(id(4), { operational_state: 9 });
    // AGENTS[5] is not registered at the verifier.
    const v = await attestOnce(klSettings(kl.url, { hosts: AGENTS }), key);
    expect(v.map((x) => [x.host, x.level, x.reason])).toEqual([
      ["h1", "trusted", "Keylime: operational_state 3 (Get Quote), last successful attestation 0 s ago"],
      ["h2", "untrusted", "Keylime: operational_state 7 (Failed)"],
      ["h3", "unknown", "Keylime: not attested yet: operational_state 2 (Saved)"],
      ["h4", "stale", "Keylime: last successful attestation 75 s ago (limit 60 s)"],
      ["h5", "untrusted", "Keylime: operational_state 9 (Invalid Quote)"],
      ["h6", "unknown", "Keylime: the verifier does not know this agent"],
    ]);
    expect(v[0]!.attestedAt).toBe(new Date(nowS() * 1000).toISOString());
    expect(paths()).toEqual(["/version", "/v2.6/agents/?bulk=True"]);
    expect(kl.requests.every((r) => r.clientCommonName === pki.clientCommonName)).toBe(true);
    expectNoSecrets(v);
  });

  it("GET /version once per client; a given apiVersion skips it", async () => {
    await withClient(
      klSettings(kl.url),
      async (attest) => {
        await attest();
        await attest();
      },
      key,
    );
    expect(paths()).toEqual(["/version", "/v2.6/agents/?bulk=True", "/v2.6/agents/?bulk=True"]);
    kl.clearRequests();
    await attestOnce(klSettings(kl.url, { apiVersion: "2.1" }), key);
    expect(paths()).toEqual(["/v2.1/agents/?bulk=True"]);
  });

  it("the highest 2.x is compared by number (2.10 above 2.9); current_version when no list", async () => {
    const v210 = await startKeylimeVerifier({
      pki,
      now,
      supportedVersions: ["2.0", "2.9", "2.10", "3.0"],
      currentVersion: "2.9",
    });
    try {
      v210.setAgent(AGENTS[0]!.attestationId);
      const v = await attestOnce(klSettings(v210.url, { hosts: AGENTS.slice(0, 1) }), key);
      expect(v[0]!.level).toBe("trusted");
      expect(v210.requests.map((r) => r.path)).toEqual(["/version", "/v2.10/agents/?bulk=True"]);
    } finally {
      await v210.close();
    }
  });

  it("an injected clock decides staleness against maxAttestationAgeSeconds", async () => {
    const t = nowS();
    kl.setAgent(AGENTS[0]!.attestationId, { last_successful_attestation: t });
    await withClient(
      klSettings(kl.url, { hosts: AGENTS.slice(0, 1), maxAttestationAgeSeconds: 60 }),
      async (attest) => {
        clockMs = (t + 30) * 1000;
        expect((await attest())[0]).toMatchObject({ level: "trusted" });
        clockMs = (t + 60) * 1000;
        expect((await attest())[0]).toMatchObject({ level: "trusted" });
        clockMs = (t + 75) * 1000;
        expect((await attest())[0]).toEqual({
          host: "h1",
          level: "stale",
          reason: "Keylime: last successful attestation 75 s ago (limit 60 s)",
          attestedAt: new Date(t * 1000).toISOString(),
        });
      },
      key,
    );
  });

  it("a verifier without bulk (the uuids list): one GET per agent, and remembered", async () => {
    kl.setBulkSupported(false);
    kl.setAgent(AGENTS[1]!.attestationId, { operational_state: 10 });
    await withClient(
      klSettings(kl.url, { hosts: AGENTS.slice(0, 4), apiVersion: "2.2" }),
      async (attest) => {
        for (let round = 0; round < 2; round++) {
          const v = await attest();
          expect(v.map((x) => [x.level, x.reason])).toEqual([
            ["trusted", "Keylime: operational_state 3 (Get Quote), last successful attestation 0 s ago"],
            ["untrusted", "Keylime: operational_state 10 (Tenant Quote Failed)"],
            ["trusted", "Keylime: operational_state 3 (Get Quote), last successful attestation 0 s ago"],
            ["unknown", "Keylime: the verifier does not know this agent"],
          ]);
        }
      },
      key,
    );
    const perAgent = AGENTS.slice(0, 4).map((a) => `/v2.2/agents/${a.attestationId}`);
    expect(paths()[0]).toBe("/v2.2/agents/?bulk=True");
    expect(paths().slice(1, 5).sort()).toEqual([...perAgent].sort());
    // The second round asks each agent without trying bulk again.
    expect(paths().slice(5).sort()).toEqual([...perAgent].sort());
  });

  it("per-agent GETs for 200 agents: at most 20 at once, over kept-alive connections", async () => {
    kl.setBulkSupported(false);
    const many = namedHosts(200, "agent-");
    for (const a of many) kl.setAgent(a.attestationId);
    try {
      const connections = kl.connections;
      const v = await attestOnce(klSettings(kl.url, { hosts: many, apiVersion: "2.6" }), key);
      expect(v.every((x) => x.level === "trusted")).toBe(true);
      expect(kl.requests).toHaveLength(201);
      expect(kl.connections - connections).toBeLessThanOrEqual(20);
    } finally {
      for (const a of many) kl.removeAgent(a.attestationId);
    }
  });

  it("an API version the verifier does not serve → unreachable saying so (empty 404, and the old 400)", async () => {
    const v = await attestOnce(klSettings(kl.url, { apiVersion: "2.99" }), key);
    for (const x of v) {
      expect(x.level).toBe("unreachable");
      expect(x.reason).toMatch(
        /^HTTP 404 Not Found \(the verifier serves no \/v2\.99\/agents\/: is API 2\.99 supported\?\)$/,
      );
    }
    const legacy = await startKeylimeVerifier({ pki, now, legacyRouting: true });
    try {
      const w = await attestOnce(klSettings(legacy.url, { apiVersion: "2.99" }), key);
      expect(
        w.every((x) => x.level === "unreachable" && /^HTTP 400 .*\(API Version not supported\)$/.test(x.reason)),
      ).toBe(true);
    } finally {
      await legacy.close();
    }
  });

  it("a verifier before 7.14 (no attestation_status, no last_successful_attestation): state 3 trusted, 4 stale", async () => {
    const old = await startKeylimeVerifier({ pki, now, withAttestationStatus: false });
    try {
      old.setAgent(AGENTS[0]!.attestationId, { last_successful_attestation: undefined });
      old.setAgent(AGENTS[1]!.attestationId, { last_successful_attestation: undefined, operational_state: 4 });
      old.setAgent(AGENTS[2]!.attestationId, { last_successful_attestation: undefined, operational_state: 8 });
      const v = await attestOnce(klSettings(old.url), key);
      expect(v.map((x) => x.level)).toEqual(["trusted", "stale", "untrusted"]);
      expect(v[2]!.reason).toBe("Keylime: operational_state 8 (Terminated)");
    } finally {
      await old.close();
    }
  });

  it("attestation_status FAIL while the state looks healthy → untrusted", async () => {
    kl.setAgent(AGENTS[0]!.attestationId, { attestation_status: "FAIL" });
    const v = await attestOnce(klSettings(kl.url), key);
    expect(v[0]).toMatchObject({ level: "untrusted", reason: "Keylime: attestation_status FAIL" });
  });

  it("no client key → every host unreachable, nothing sent", async () => {
    const v = await attestOnce(klSettings(kl.url), { now });
    expect(v.map((x) => [x.level, x.reason])).toEqual(
      Array(3).fill([
        "unreachable",
        "Keylime: mutual TLS needs the client certificate and its key, and one is not given",
      ]),
    );
    expect(kl.requests).toHaveLength(0);
  });

  it("a client certificate the verifier's CA did not sign → refused, unreachable naming the TLS failure", async () => {
    const v = await attestOnce(klSettings(kl.url, { clientCertificatePem: pki.otherServerCertPem }), {
      clientKeyPem: pki.otherServerKeyPem,
      now,
    });
    for (const x of v) {
      expect(x.level).toBe("unreachable");
      expect(x.reason).toMatch(
        /^attestation service unreachable: .*did the verifier refuse the client certificate\?\)$/,
      );
    }
    expect(kl.requests).toHaveLength(0);
    expectNoSecrets(v);
    expect(v[0]!.reason).not.toContain(pki.otherServerKeyPem.split("\n")[1]!);
  });

  it("a client key Node cannot read → unreachable, the key not in the reason", async () => {
    const bad = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
    const v = await attestOnce(klSettings(kl.url), { clientKeyPem: bad, now });
    for (const x of v) {
      expect(x.level).toBe("unreachable");
      expect(x.reason).toMatch(/^unusable TLS settings \(CA, client certificate or key\): /);
      expect(x.reason).not.toContain("c2VjcmV0");
    }
  });

  it("the wrong CA for the verifier's certificate → certificate does not verify", async () => {
    const v = await attestOnce(klSettings(kl.url, { caCertificatePem: pki.otherCaPem }), key);
    expect(v.every((x) => x.level === "unreachable" && /^certificate does not verify: [A-Z_]+ /.test(x.reason))).toBe(
      true,
    );
    expect(kl.requests).toHaveLength(0);
  });

  it("no answer within the time limit → unreachable, at GET /version or at the agents", async () => {
    kl.setFault("timeout");
    const v = await attestOnce(klSettings(kl.url, { requestTimeoutMs: 250 }), key);
    expect(v.map((x) => x.reason)).toEqual(Array(3).fill("no answer within 0.25 s"));
    kl.setFault({ kind: "timeout", scope: "agents" });
    kl.setBulkSupported(false);
    const t = performance.now();
    const w = await attestOnce(klSettings(kl.url, { requestTimeoutMs: 250, apiVersion: "2.6" }), key);
    expect(w.map((x) => x.reason)).toEqual(Array(3).fill("no answer within 0.25 s"));
    expect(performance.now() - t).toBeLessThan(1500);
  });

  it("HTTP 5xx → unreachable; not JSON → unknown", async () => {
    kl.setFault({ kind: "5xx", status: 503 });
    const v = await attestOnce(klSettings(kl.url), key);
    expect(v.map((x) => [x.level, x.reason])).toEqual(
      Array(3).fill(["unreachable", "HTTP 503 Service Unavailable (GET /version; set apiVersion to skip it)"]),
    );
    kl.setFault({ kind: "5xx", status: 500, scope: "agents" });
    const u = await attestOnce(klSettings(kl.url), key);
    expect(u.map((x) => [x.level, x.reason])).toEqual(Array(3).fill(["unreachable", "HTTP 500 Internal Server Error"]));
    kl.setFault({ kind: "malformed-json", scope: "agents" });
    const w = await attestOnce(klSettings(kl.url), key);
    expect(w.map((x) => [x.level, x.reason])).toEqual(Array(3).fill(["unknown", "answer is not JSON"]));
  });

  it.each([
    ["operational-state-string", true],
    ["missing-operational-state", false],
    ["last-successful-string", true],
    ["results-not-object", true],
    ["unwrapped", true],
  ] as const)("odd fields (%s): never trusted on a misread", async (variant, unknownOnly) => {
    kl.setFault({ kind: "odd-fields", variant, scope: "agents" });
    for (const bulk of [true, false]) {
      kl.setBulkSupported(bulk);
      const v = await attestOnce(klSettings(kl.url), key);
      expect(v).toHaveLength(3);
      if (unknownOnly) expect(v.map((x) => x.level)).toEqual(["unknown", "unknown", "unknown"]);
      // Without operational_state, 7.14's attestation_status PASS and a fresh attestation still say trusted.
      else expect(v.map((x) => x.level)).toEqual(["trusted", "trusted", "trusted"]);
    }
  });
});
