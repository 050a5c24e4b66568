// The loopback attestation servers themselves, driven with plain node:https requests: their TLS
// (the test CA verifies them, the other CA's server does not, the Keylime verifier refuses a
// client without a certificate), their answers as the real services give them, and every fault.
import * as forge from "node-forge";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { Agent, request as httpsRequest, type RequestOptions } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  DEFAULT_POLL_URI,
  makeTestPki,
  startKeylimeVerifier,
  startOpenAttestationServer,
  type KeylimeVerifier,
  type OpenAttestationServer,
  type TestPki,
} from "../support/attestation";

interface Answer {
  readonly status: number;
  readonly contentType: string | undefined;
  readonly body: string;
}

function call(url: string, options: RequestOptions & { body?: string; timeoutMs?: number } = {}): Promise<Answer> {
  const { body, timeoutMs = 3000, ...rest } = options;
  const send = url.startsWith("https:") ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(url, { method: body === undefined ? "GET" : "POST", ...rest }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          contentType: res.headers["content-type"],
          body: Buffer.concat(chunks).toString("utf8"),
        }),
      );
      res.on("error", reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end(body);
  });
}

const json = { "Content-Type": "application/json", Accept: "application/json" };

let dir: string;
let pki: TestPki;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "vmpools-attest-"));
  const t0 = Date.now();
  pki = makeTestPki(dir);
  // Recorded, not asserted tightly: RSA key generation time varies with load.
  expect(Date.now() - t0).toBeLessThan(5000);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("test PKI", () => {
  test("the truststore opens with node-forge with its password, holds only the CA, and refuses another password", () => {
    const path = pki.truststoreP12("changeit");
    const der = readFileSync(path).toString("binary");
    const p12 = forge.pkcs12.pkcs12FromAsn1(forge.asn1.fromDer(der), "changeit");
    const certs = p12.getBags({ bagType: forge.pki.oids.certBag! })[forge.pki.oids.certBag!] ?? [];
    expect(certs).toHaveLength(1);
    expect(certs[0]!.cert!.subject.getField("CN").value).toBe("vmpools test CA");
    expect(
      p12.getBags({ bagType: forge.pki.oids.pkcs8ShroudedKeyBag! })[forge.pki.oids.pkcs8ShroudedKeyBag!] ?? [],
    ).toHaveLength(0);
    expect(() => forge.pkcs12.pkcs12FromAsn1(forge.asn1.fromDer(der), "password")).toThrow(/MAC could not be verified/);
  });

  test("node-forge reads the CA and client certificates (RSA), which core/trust.ts checks", () => {
    for (const pem of [pki.caPem, pki.otherCaPem, pki.clientCertPem])
      expect(() => forge.pki.certificateFromPem(pem)).not.toThrow();
    const client = forge.pki.certificateFromPem(pki.clientCertPem);
    expect(client.subject.getField("CN").value).toBe(pki.clientCommonName);
    expect(forge.pki.certificateFromPem(pki.caPem).verify(client)).toBe(true);
  });

  test("no private key is readable by others", () => {
    for (const p of [pki.serverKeyPath, pki.clientKeyPath, pki.otherServerKeyPath])
      expect(statSync(p).mode & 0o077).toBe(0);
  });
});

describe("OpenAttestation PollHosts server", () => {
  let oat: OpenAttestationServer;
  let agent: Agent;
  const poll = (hosts: unknown, extra: RequestOptions & { timeoutMs?: number } = {}): Promise<Answer> =>
    call(`${oat.url}/${DEFAULT_POLL_URI}`, { agent, headers: json, body: JSON.stringify({ hosts }), ...extra });

  beforeAll(async () => {
    oat = await startOpenAttestationServer({ pki, now: () => Date.UTC(2026, 0, 2, 3, 4, 5, 678) });
    agent = new Agent({ ca: pki.caPem, keepAlive: true, maxSockets: 4 });
  });
  afterAll(async () => {
    agent.destroy();
    await oat.close();
  });
  beforeEach(() => {
    oat.setFault(undefined);
    oat.clearRequests();
  });

  test("answers each host asked, in order, with trust_lvl and a Jackson ISO vtime; unknown hosts are unknown", async () => {
    oat.setTrust("h1", "trusted");
    oat.setTrust("h2", "untrusted");
    oat.setTrust("h4", "timeout");
    const a = await poll(["h1", "h2", "h3", "h4"]);
    expect(a.status).toBe(200);
    expect(a.contentType).toBe("application/json");
    expect(JSON.parse(a.body)).toEqual({
      hosts: [
        { host_name: "h1", trust_lvl: "trusted", vtime: "2026-01-02T03:04:05.678+0000" },
        { host_name: "h2", trust_lvl: "untrusted", vtime: "2026-01-02T03:04:05.678+0000" },
        { host_name: "h3", trust_lvl: "unknown", vtime: "2026-01-02T03:04:05.678+0000" },
        { host_name: "h4", trust_lvl: "timeout", vtime: "2026-01-02T03:04:05.678+0000" },
      ],
    });
    expect(oat.requests).toEqual([{ hosts: ["h1", "h2", "h3", "h4"], path: `/${DEFAULT_POLL_URI}` }]);
  });

  test("vtime overrides: a string as is, null leaves it out, undefined goes back to the answer's time", async () => {
    oat.setVtime("v1", "Tue Feb 14 09:02:48 2012");
    oat.setVtime("v2", null);
    oat.setVtime("v3", 1700000000000);
    const [e1, e2, e3] = JSON.parse((await poll(["v1", "v2", "v3"])).body).hosts;
    expect(e1.vtime).toBe("Tue Feb 14 09:02:48 2012");
    expect(e2).toEqual({ host_name: "v2", trust_lvl: "unknown" });
    expect(e3.vtime).toBe(1700000000000);
    oat.setVtime("v1", undefined);
    expect(JSON.parse((await poll(["v1"])).body).hosts[0].vtime).toBe("2026-01-02T03:04:05.678+0000");
  });

  test("a single-string hosts is one host (OAT's ACCEPT_SINGLE_VALUE_AS_ARRAY)", async () => {
    oat.setTrust("solo", "trusted");
    expect(JSON.parse((await poll("solo")).body).hosts).toEqual([
      { host_name: "solo", trust_lvl: "trusted", vtime: "2026-01-02T03:04:05.678+0000" },
    ]);
  });

  test("refuses what JAX-RS would: another path 404, GET 405, no JSON content type 415, not JSON 400, no hosts 500", async () => {
    expect(
      (await call(`${oat.url}/AttestationService/resources/Other`, { agent, headers: json, body: "{}" })).status,
    ).toBe(404);
    expect((await call(`${oat.url}/${DEFAULT_POLL_URI}`, { agent })).status).toBe(405);
    expect((await poll(["h1"], { headers: { "Content-Type": "text/plain" } })).status).toBe(415);
    expect((await call(`${oat.url}/${DEFAULT_POLL_URI}`, { agent, headers: json, body: "{hosts" })).status).toBe(400);
    expect((await call(`${oat.url}/${DEFAULT_POLL_URI}`, { agent, headers: json, body: "{}" })).status).toBe(500);
    expect(oat.requests).toHaveLength(0);
  });

  test("faults: 5xx, malformed JSON, missing hosts, slow, timeout", async () => {
    oat.setTrust("h1", "trusted");
    oat.setFault("5xx");
    expect((await poll(["h1"])).status).toBe(500);
    oat.setFault({ kind: "5xx", status: 503 });
    expect((await poll(["h1"])).status).toBe(503);

    oat.setFault("malformed-json");
    const bad = await poll(["h1"]);
    expect(bad.status).toBe(200);
    expect(() => JSON.parse(bad.body)).toThrow();

    oat.setFault("missing-hosts");
    expect(
      JSON.parse((await poll(["a", "b", "c", "d"])).body).hosts.map((h: { host_name: string }) => h.host_name),
    ).toEqual(["a", "c"]);
    oat.setFault({ kind: "missing-hosts", omit: ["c"] });
    expect(
      JSON.parse((await poll(["a", "b", "c", "d"])).body).hosts.map((h: { host_name: string }) => h.host_name),
    ).toEqual(["a", "b", "d"]);

    oat.setFault({ kind: "slow", delayMs: 300 });
    const t0 = Date.now();
    expect((await poll(["h1"])).status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);

    oat.setFault("timeout");
    await expect(poll(["h1"], { timeoutMs: 300 })).rejects.toThrow("no answer within 300 ms");
    expect(oat.requests.map((r) => r.hosts)).toHaveLength(7);
  });

  test("odd fields, each variant", async () => {
    oat.setTrust("t", "trusted");
    const odd = async (variant: string): Promise<unknown> => {
      oat.setFault({ kind: "odd-fields", variant: variant as never });
      const a = await poll(["t", "u"]);
      expect(a.status).toBe(200);
      return JSON.parse(a.body);
    };
    const vtime = "2026-01-02T03:04:05.678+0000";
    expect(await odd("trust-lvl-number")).toEqual({
      hosts: [
        { host_name: "t", trust_lvl: 1, vtime },
        { host_name: "u", trust_lvl: 0, vtime },
      ],
    });
    expect(await odd("missing-host-name")).toEqual({
      hosts: [
        { trust_lvl: "trusted", vtime },
        { trust_lvl: "unknown", vtime },
      ],
    });
    expect(await odd("missing-trust-lvl")).toEqual({
      hosts: [
        { host_name: "t", vtime },
        { host_name: "u", vtime },
      ],
    });
    expect(await odd("hosts-not-array")).toEqual({ hosts: "t,u" });
    expect(await odd("hosts-object")).toEqual({
      count: 2,
      hosts: { t: { trust_lvl: "trusted", timestamp: vtime }, u: { trust_lvl: "unknown", timestamp: vtime } },
    });
    expect(await odd("null-entries")).toEqual({ hosts: [null, null] });
    oat.setFault({ kind: "odd-fields", variant: "trust-lvl-number", only: ["u"] });
    expect(JSON.parse((await poll(["t", "u"])).body)).toEqual({
      hosts: [
        { host_name: "t", trust_lvl: "trusted", vtime },
        { host_name: "u", trust_lvl: 0, vtime },
      ],
    });
  });

  test("1000 hosts in oVirt's batches (10, then 20s) are answered quickly and recorded batch by batch", async () => {
    const hosts = Array.from({ length: 1000 }, (_, i) => `host-${String(i).padStart(4, "0")}`);
    hosts.forEach((h, i) => oat.setTrust(h, i % 7 === 0 ? "untrusted" : "trusted"));
    const batches = [hosts.slice(0, 10)];
    for (let i = 10; i < hosts.length; i += 20) batches.push(hosts.slice(i, i + 20));
    const connectionsBefore = oat.connections;
    const t0 = Date.now();
    const answers = await Promise.all(batches.map((b) => poll(b)));
    const ms = Date.now() - t0;
    const levels = new Map<string, string>();
    for (const a of answers) for (const e of JSON.parse(a.body).hosts) levels.set(e.host_name, e.trust_lvl);
    expect(levels.size).toBe(1000);
    expect([...levels.values()].filter((l) => l === "untrusted")).toHaveLength(143);
    expect(oat.requests.map((r) => r.hosts.length)).toEqual([10, ...Array<number>(49).fill(20), 10]);
    expect(ms).toBeLessThan(3000);
    // Kept alive: the agent's 4 sockets carry the 51 requests.
    expect(oat.connections - connectionsBefore).toBeLessThanOrEqual(4);
  });

  test("TLS: the other CA's server fails verification against the test CA; plain HTTP with tls none", async () => {
    const other = await startOpenAttestationServer({ pki, tls: "other-ca" });
    const plain = await startOpenAttestationServer({ pki, tls: "none", defaultTrust: "trusted" });
    try {
      await expect(
        call(`${other.url}/${DEFAULT_POLL_URI}`, { ca: pki.caPem, headers: json, body: '{"hosts":["h"]}' }),
      ).rejects.toMatchObject({ code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" });
      expect(other.requests).toHaveLength(0);
      // The same server verifies against its own CA: the refusal is the CA, not the server.
      expect(
        (await call(`${other.url}/${DEFAULT_POLL_URI}`, { ca: pki.otherCaPem, headers: json, body: '{"hosts":["h"]}' }))
          .status,
      ).toBe(200);
      // Verified by name too: "localhost" is in the certificate's SANs.
      expect(
        (
          await call(`${oat.url.replace("127.0.0.1", "localhost")}/${DEFAULT_POLL_URI}`, {
            ca: pki.caPem,
            headers: json,
            body: '{"hosts":["h"]}',
          })
        ).status,
      ).toBe(200);
      expect(plain.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(
        JSON.parse((await call(`${plain.url}/${DEFAULT_POLL_URI}`, { headers: json, body: '{"hosts":["h"]}' })).body)
          .hosts[0].trust_lvl,
      ).toBe("trusted");
    } finally {
      await other.close();
      await plain.close();
    }
  });

  test("other vtime formats: epoch ms (Jackson's timestamps) and asctime (the javadoc's)", async () => {
    const at = Date.UTC(2012, 1, 14, 9, 2, 48);
    const ms = await startOpenAttestationServer({ pki, tls: "none", vtimeFormat: "epoch-ms", now: () => at });
    const asc = await startOpenAttestationServer({ pki, tls: "none", vtimeFormat: "asctime", now: () => at });
    try {
      const vtime = async (s: OpenAttestationServer): Promise<unknown> =>
        JSON.parse((await call(`${s.url}/${DEFAULT_POLL_URI}`, { headers: json, body: '{"hosts":["h"]}' })).body)
          .hosts[0].vtime;
      expect(await vtime(ms)).toBe(at);
      expect(await vtime(asc)).toBe("Tue Feb 14 09:02:48 2012");
    } finally {
      await ms.close();
      await asc.close();
    }
  });

  test("close() ends a held (timeout) request", async () => {
    const s = await startOpenAttestationServer({ pki, tls: "none" });
    s.setFault("timeout");
    const pending = call(`${s.url}/${DEFAULT_POLL_URI}`, { headers: json, body: '{"hosts":["h"]}', timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    await s.close();
    await expect(pending).rejects.toThrow(/socket hang up|ECONNRESET/);
    expect(Date.now() - t0).toBeLessThan(1000);
  });
});

describe("Keylime verifier", () => {
  let kl: KeylimeVerifier;
  let agent: Agent;
  const nowMs = Date.UTC(2026, 0, 2, 3, 4, 5);
  const get = (path: string, extra: RequestOptions & { timeoutMs?: number } = {}): Promise<Answer> =>
    call(`${kl.url}${path}`, { agent, ...extra });
  const results = async (path: string): Promise<Record<string, unknown>> => {
    const a = await get(path);
    const body = JSON.parse(a.body);
    expect(body.code).toBe(a.status);
    return body;
  };

  beforeAll(async () => {
    kl = await startKeylimeVerifier({ pki, now: () => nowMs });
    agent = new Agent({ ca: pki.caPem, cert: pki.clientCertPem, key: pki.clientKeyPem, keepAlive: true });
  });
  afterAll(async () => {
    agent.destroy();
    await kl.close();
  });
  beforeEach(() => {
    kl.setFault(undefined);
    kl.setBulkSupported(true);
    kl.clearRequests();
  });

  test("GET /version and /versions", async () => {
    for (const p of ["/version", "/versions"])
      expect(await results(p)).toEqual({
        code: 200,
        status: "Success",
        results: {
          current_version: "2.6",
          supported_versions: ["1.0", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "3.0"],
        },
      });
    expect(kl.requests).toEqual([
      { method: "GET", path: "/version", clientCommonName: "vmpools-tenant" },
      { method: "GET", path: "/versions", clientCommonName: "vmpools-tenant" },
    ]);
  });

  test("a healthy agent has the verifier's fields: state 3, PASS, attested now", async () => {
    kl.setAgent("d432fbb3-d2f1-4a97-9ef7-75bd81c00000");
    const body = await results("/v2.6/agents/d432fbb3-d2f1-4a97-9ef7-75bd81c00000");
    expect(body.status).toBe("Success");
    const r = body.results as Record<string, unknown>;
    expect(r).toMatchObject({
      operational_state: 3,
      attestation_status: "PASS",
      last_successful_attestation: nowMs / 1000,
      last_received_quote: nowMs / 1000,
      attestation_period: "2s",
      maximum_attestation_interval: "10s",
      hash_alg: "sha256",
      verifier_id: "default",
      verifier_port: kl.port,
      severity_level: null,
    });
    expect(Object.keys(r).sort()).toEqual(
      [
        "operational_state",
        "v",
        "ip",
        "port",
        "tpm_policy",
        "meta_data",
        "has_mb_refstate",
        "has_runtime_policy",
        "accept_tpm_hash_algs",
        "accept_tpm_encryption_algs",
        "accept_tpm_signing_algs",
        "hash_alg",
        "enc_alg",
        "sign_alg",
        "verifier_id",
        "verifier_ip",
        "verifier_port",
        "severity_level",
        "last_event_id",
        "attestation_count",
        "last_received_quote",
        "last_successful_attestation",
        "attestation_status",
        "attestation_period",
        "maximum_attestation_interval",
      ].sort(),
    );
    expect(Buffer.from(r.v as string, "base64")).toHaveLength(32);
    kl.removeAgent("d432fbb3-d2f1-4a97-9ef7-75bd81c00000");
  });

  test("setAgent merges; attestation_status follows operational_state as the verifier derives it; undefined drops a field", async () => {
    kl.setAgent("a1", { operational_state: 7 });
    expect(((await results("/v2.6/agents/a1")).results as Record<string, unknown>).attestation_status).toBe("FAIL");
    kl.setAgent("a1", { operational_state: 4, last_successful_attestation: 1000 });
    const r = (await results("/v2/agents/a1")).results as Record<string, unknown>;
    expect(r).toMatchObject({ operational_state: 4, attestation_status: "PASS", last_successful_attestation: 1000 });
    kl.setAgent("a1", { operational_state: 1 });
    expect(((await results("/v2.1/agents/a1")).results as Record<string, unknown>).attestation_status).toBe("PENDING");
    kl.setAgent("a1", { attestation_status: "FAIL", operational_state: 3 });
    expect(((await results("/v2.6/agents/a1")).results as Record<string, unknown>).attestation_status).toBe("FAIL");
    kl.setAgent("a1", { attestation_status: undefined, last_successful_attestation: undefined });
    const dropped = (await results("/v2.6/agents/a1")).results as Record<string, unknown>;
    expect(dropped).not.toHaveProperty("attestation_status");
    expect(dropped).not.toHaveProperty("last_successful_attestation");
    kl.removeAgent("a1");
  });

  test("unknown agent 404, invalid id 400, as the v2 handler answers", async () => {
    expect(await results("/v2.6/agents/nobody")).toEqual({ code: 404, status: "agent id not found", results: {} });
    kl.setAgent("gone");
    kl.removeAgent("gone");
    expect((await get("/v2.6/agents/gone")).status).toBe(404);
    expect(await results("/v2.6/agents/bad%20id")).toEqual({
      code: 400,
      status: "agent_id not not valid",
      results: {},
    });
  });

  test("an unsupported version path is an empty 404 (the web framework routes no such version); 400 JSON with legacyRouting", async () => {
    const a = await get("/v2.9/agents/x");
    expect(a).toEqual({ status: 404, contentType: undefined, body: "" });
    expect((await get("/v9/agents/x")).status).toBe(404);
    expect((await get("/nothing")).status).toBe(404);
    const old = await startKeylimeVerifier({
      pki,
      legacyRouting: true,
      supportedVersions: ["2.0", "2.1"],
      currentVersion: "2.1",
    });
    try {
      expect(JSON.parse((await call(`${old.url}/v2.6/agents/x`, { agent })).body)).toEqual({
        code: 400,
        status: "API Version not supported",
        results: {},
      });
      expect(JSON.parse((await call(`${old.url}/version`, { agent })).body).results).toEqual({
        current_version: "2.1",
        supported_versions: ["2.0", "2.1"],
      });
      old.setAgent("x");
      expect((await call(`${old.url}/v2.1/agents/x`, { agent })).status).toBe(200);
    } finally {
      await old.close();
    }
  });

  test("bulk: ?bulk=True answers every agent keyed by id; a bare ?bulk (parse_qsl drops it) and a verifier without bulk answer the uuids list", async () => {
    kl.setAgent("b1");
    kl.setAgent("b2", { operational_state: 9 });
    kl.setAgent("b3", { verifier_id: "other" });
    const bulk = (await results("/v2.6/agents/?bulk=True")).results as Record<string, Record<string, unknown>>;
    expect(Object.keys(bulk).sort()).toEqual(["b1", "b2", "b3"]);
    expect(bulk.b2).toMatchObject({ operational_state: 9, attestation_status: "FAIL" });
    expect(Object.keys((await results("/v2.6/agents/?bulk=True&verifier=default")).results as object).sort()).toEqual([
      "b1",
      "b2",
    ]);
    expect((await results("/v2.6/agents/?bulk")).results).toEqual({ uuids: [["b1"], ["b2"], ["b3"]] });
    expect((await results("/v2.6/agents/")).results).toEqual({ uuids: [["b1"], ["b2"], ["b3"]] });
    kl.setBulkSupported(false);
    expect((await results("/v2.6/agents/?bulk=True")).results).toEqual({ uuids: [["b1"], ["b2"], ["b3"]] });
    for (const id of ["b1", "b2", "b3"]) kl.removeAgent(id);
  });

  test("bulk of 1000 agents in one answer", async () => {
    for (let i = 0; i < 1000; i++) kl.setAgent(`agent-${i}`, i % 10 === 0 ? { operational_state: 7 } : {});
    const t0 = Date.now();
    const r = (await results("/v2.6/agents/?bulk=True")).results as Record<string, { attestation_status: string }>;
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(Object.keys(r)).toHaveLength(1000);
    expect(Object.values(r).filter((a) => a.attestation_status === "FAIL")).toHaveLength(100);
    for (let i = 0; i < 1000; i++) kl.removeAgent(`agent-${i}`);
  });

  test("faults: 5xx, malformed JSON, odd fields, slow, timeout; scope agents leaves /version alone", async () => {
    kl.setAgent("f1");
    kl.setFault("5xx");
    const e = await get("/v2.6/agents/f1");
    expect(e.status).toBe(500);
    expect(e.contentType).toMatch(/^text\/html/);
    kl.setFault({ kind: "5xx", status: 503, scope: "agents" });
    expect((await get("/v2.6/agents/f1")).status).toBe(503);
    expect((await get("/version")).status).toBe(200);

    kl.setFault("malformed-json");
    const cut = (await get("/v2.6/agents/f1")).body;
    expect(() => JSON.parse(cut)).toThrow();

    const odd = async (variant: string, path = "/v2.6/agents/f1"): Promise<unknown> => {
      kl.setFault({ kind: "odd-fields", variant: variant as never });
      return JSON.parse((await get(path)).body);
    };
    expect(((await odd("operational-state-string")) as { results: object }).results).toMatchObject({
      operational_state: "3",
    });
    expect(((await odd("missing-operational-state")) as { results: object }).results).not.toHaveProperty(
      "operational_state",
    );
    expect(((await odd("last-successful-string")) as { results: object }).results).toMatchObject({
      last_successful_attestation: "2026-01-02T03:04:05.000Z",
    });
    expect(Array.isArray(((await odd("results-not-object")) as { results: unknown }).results)).toBe(true);
    expect(await odd("unwrapped")).toMatchObject({ operational_state: 3 });
    expect(
      ((await odd("operational-state-string", "/v2.6/agents/?bulk=True")) as { results: { f1: object } }).results.f1,
    ).toMatchObject({
      operational_state: "3",
    });

    kl.setFault({ kind: "slow", delayMs: 300 });
    const t0 = Date.now();
    expect((await get("/v2.6/agents/f1")).status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);

    kl.setFault("timeout");
    await expect(get("/v2.6/agents/f1", { timeoutMs: 300 })).rejects.toThrow("no answer within 300 ms");
    kl.removeAgent("f1");
  });

  test("mutual TLS: a client without a certificate, or with one from another CA, is refused", async () => {
    await expect(call(`${kl.url}/version`, { ca: pki.caPem })).rejects.toMatchObject({
      code: expect.stringMatching(/ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED|ECONNRESET|EPROTO/),
    });
    // A client certificate the test CA did not sign: the other server's own (EC) certificate.
    await expect(
      call(`${kl.url}/version`, { ca: pki.caPem, cert: pki.otherServerCertPem, key: pki.otherServerKeyPem }),
    ).rejects.toMatchObject({ code: expect.stringMatching(/ALERT_UNKNOWN_CA|ECONNRESET|EPROTO/) });
    expect(kl.requests).toHaveLength(0);
  });

  test("a verifier with the other CA's certificate fails verification against the test CA", async () => {
    const other = await startKeylimeVerifier({ pki, tls: "other-ca" });
    try {
      await expect(
        call(`${other.url}/version`, { ca: pki.caPem, cert: pki.clientCertPem, key: pki.clientKeyPem }),
      ).rejects.toMatchObject({ code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" });
      expect(other.requests).toHaveLength(0);
    } finally {
      await other.close();
    }
  });

  test("verifiers before 7.14 answer without attestation_status", async () => {
    const old = await startKeylimeVerifier({ pki, withAttestationStatus: false });
    try {
      old.setAgent("o1");
      const r = JSON.parse((await call(`${old.url}/v2.1/agents/o1`, { agent })).body).results;
      expect(r.operational_state).toBe(3);
      for (const k of ["attestation_status", "attestation_period", "maximum_attestation_interval"])
        expect(r).not.toHaveProperty(k);
    } finally {
      await old.close();
    }
  });
});
