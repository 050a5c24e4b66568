// The Pulumi TrustedCluster under pulumi.runtime.setMocks (test/support/pulumi-mocks.ts), with a
// VmPool placed on it and the plan-time check run against real loopback attestation servers
// (test/support/attestation: an OpenAttestation PollHosts server and a Keylime verifier with
// mutual TLS, certificates from a PKI made per run). The host probe is a fake: no libvirt here.
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  parsePolicyDocument,
  TrustedClusterConfig,
  type HostRef,
  type OpenAttestationSpec,
  type TrustedClusterProps,
} from "../../../core";
import type { ProbeResult } from "../../../engines/libvirt-provider/probe";
import { TrustedCluster, VmPool } from "../../../engines/pulumi";
import { LIBVIRT_TYPES } from "../../../engines/pulumi/package";
import { makeTestPki, type TestPki } from "../../support/attestation/pki";
import {
  startKeylimeVerifier,
  OPERATIONAL_STATES,
  type KeylimeVerifier,
} from "../../support/attestation/keylime-verifier";
import {
  startOpenAttestationServer,
  type OpenAttestationServer,
} from "../../support/attestation/openattestation-server";
import { validProps } from "../../support/fixtures";
import { runMocked, type MockRun } from "../../support/pulumi-mocks";

const CLUSTER = "vmpools:index:TrustedCluster";
const PROVIDER = "pulumi:providers:libvirt";
const { volume: VOLUME, domain: DOMAIN } = LIBVIRT_TYPES;

const hosts = (...names: string[]): HostRef[] => names.map((name) => ({ name, uri: `qemu+ssh://root@${name}/system` }));
/** Keylime agent ids of h1..h3 (UUIDs, as agents have). */
const AGENT: Record<string, string> = { h1: randomUUID(), h2: randomUUID(), h3: randomUUID() };

/** A probe where nothing blocks the plan; it counts its calls. */
function fakeProbe() {
  const probe = async (query: Readonly<Record<string, string>>): Promise<ProbeResult> => {
    probe.calls++;
    return {
      storage_pool: query.candidates!.split(",")[0]!,
      available_bytes: String(100 << 30),
      max_member_index: "",
      held_above: "",
      undetached: "",
      member_count: "0",
    };
  };
  probe.calls = 0;
  return probe;
}

// A password nobody else uses, so that finding it anywhere is a leak and not a coincidence.
const TRUSTSTORE_PASSWORD = `ts-${randomBytes(12).toString("hex")}`;

let dir: string;
let pki: TestPki;
let truststore: string;
let oat: OpenAttestationServer;
let keylime: KeylimeVerifier;
let runs = 0;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "vmpools-pulumi-trusted-"));
  pki = makeTestPki(join(dir, "pki"));
  truststore = pki.truststoreP12(TRUSTSTORE_PASSWORD);
  [oat, keylime] = await Promise.all([startOpenAttestationServer({ pki }), startKeylimeVerifier({ pki })]);
});
afterAll(async () => {
  await Promise.all([oat?.close(), keylime?.close()]);
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  for (const h of ["h1", "h2", "h3"]) {
    oat.setTrust(h, "trusted");
    keylime.setAgent(AGENT[h]!, {
      operational_state: OPERATIONAL_STATES.GET_QUOTE,
      last_successful_attestation: undefined,
      attestation_status: undefined,
    });
  }
  oat.clearRequests();
  keylime.clearRequests();
});

function openAttestation(
  overrides: Partial<TrustedClusterProps> = {},
  server = oat,
  spec: Partial<OpenAttestationSpec> = {},
): TrustedClusterProps {
  return {
    name: "trusted",
    hosts: hosts("h1", "h2"),
    attestation: {
      type: "openattestation",
      server: "127.0.0.1",
      port: server.port,
      truststorePath: truststore,
      truststorePassword: TRUSTSTORE_PASSWORD,
      ...spec,
    },
    ...overrides,
  };
}

function keylimeCluster(overrides: Partial<TrustedClusterProps> = {}): TrustedClusterProps {
  return {
    name: "trusted",
    hosts: hosts("h1", "h2", "h3").map((h) => ({ ...h, attestationId: AGENT[h.name]! })),
    attestation: {
      type: "keylime",
      verifierUrl: keylime.url,
      caCertificatePem: pki.caPem,
      clientCertificatePem: pki.clientCertPem,
      clientKeyPem: pki.clientKeyPem,
    },
    ...overrides,
  };
}

interface Deployed extends MockRun<{ cluster: TrustedCluster; pool?: VmPool }> {
  readonly assetDir: string;
  readonly probe: ReturnType<typeof fakeProbe>;
}

/** A program of a TrustedCluster and (size > 0) a VmPool of `size` members on it. */
async function deploy(props: TrustedClusterProps, opts: { size?: number; preview?: boolean } = {}): Promise<Deployed> {
  const assetDir = join(dir, `assets-${++runs}`);
  const probe = fakeProbe();
  const size = opts.size ?? 4;
  const run = await runMocked(
    () => {
      const cluster = new TrustedCluster("Trusted", props);
      const pool =
        size > 0 ? new VmPool("MyPool", validProps({ size, cluster }), { hostProbe: probe, assetDir }) : undefined;
      return { cluster, pool };
    },
    { preview: opts.preview ?? false },
  );
  return { ...run, assetDir, probe };
}

/** Every file the program wrote for the provider (policy documents, media), as bytes. */
function assetFiles(assetDir: string): { file: string; bytes: Buffer }[] {
  let names: string[];
  try {
    names = readdirSync(assetDir, { recursive: true, encoding: "utf8" });
  } catch {
    return [];
  }
  return names.flatMap((n) => {
    try {
      return [{ file: n, bytes: readFileSync(join(assetDir, n)) }];
    } catch {
      return []; // a folder
    }
  });
}

/** Where any of `secrets` shows up: registered inputs and outputs, logs, errors, asset files. */
function leaks(d: Deployed, secrets: readonly string[]): string[] {
  const places: [string, Buffer][] = [
    ...d.resources.map((r): [string, Buffer] => [
      `${r.type} ${r.name}`,
      Buffer.from(JSON.stringify([r.inputs, r.outputs ?? {}])),
    ]),
    ["logs", Buffer.from(JSON.stringify(d.logs))],
    ["errors", Buffer.from(JSON.stringify(d.errors))],
    ...assetFiles(d.assetDir).map((f): [string, Buffer] => [`file ${f.file}`, f.bytes]),
  ];
  return places.flatMap(([where, bytes]) =>
    secrets.filter((s) => bytes.includes(s)).map((s) => `${where}: ${s.slice(0, 12)}…`),
  );
}

/** The key PEM, its base64 body in one piece, and each of its 64-character lines (JSON escapes the line ends). */
function keySecrets(pem: string): string[] {
  const lines = pem
    .trim()
    .split("\n")
    .filter((l) => !l.startsWith("-----"));
  return [pem, lines.join(""), ...lines.filter((l) => l.length >= 32)];
}

/** The policy document the pool's policy volume on `host` uploads. */
function policyXml(d: Deployed, host: string): string {
  const volume = d.get(VOLUME, `MyPool-policy-${host}`);
  return readFileSync(volume.inputs.create.content.url as string, "utf8");
}

describe("trusted: the pool registers and its policy document carries the attestation settings", () => {
  it("OpenAttestation with a PKCS#12 truststore: every host asked, members registered, no password anywhere", async () => {
    const d = await deploy(openAttestation());
    expect(d.errors).toEqual([]);
    const { cluster } = d.result;
    expect(oat.requests.map((r) => [...r.hosts].sort())).toEqual([["h1", "h2"]]);

    const component = d.get(CLUSTER, "Trusted");
    expect(component).toMatchObject({ custom: false, inputs: {}, outputs: { attestedHosts: ["h1", "h2"] } });
    expect(d.ofType(DOMAIN)).toHaveLength(4);
    for (const h of ["h1", "h2"]) {
      const doc = parsePolicyDocument(policyXml(d, h));
      expect(doc?.policy.attestation).toEqual(cluster.trustedCluster.settings);
      expect(doc?.policy.attestation?.url).toBe(`https://127.0.0.1:${oat.port}/AttestationService/resources/PollHosts`);
      // The truststore's CA, as PEM: what the reconciler verifies the server with.
      expect(doc?.policy.attestation?.caCertificatePem?.trim()).toBe(pki.caPem.trim());
    }
    // Positive control for the scan below: the settings' URL is found where it is written.
    expect(leaks(d, [`127.0.0.1:${oat.port}`]).some((l) => l.startsWith("file policy-"))).toBe(true);
    expect(leaks(d, [TRUSTSTORE_PASSWORD])).toEqual([]);
    expect(d.logs).toEqual([]);
  });

  it("Keylime with a client certificate: mutual TLS, members registered, no client key anywhere", async () => {
    const d = await deploy(keylimeCluster(), { size: 6 });
    expect(d.errors).toEqual([]);
    // Every request passed mutual TLS with the tenant certificate.
    expect(keylime.requests.length).toBeGreaterThan(0);
    expect(new Set(keylime.requests.map((r) => r.clientCommonName))).toEqual(new Set([pki.clientCommonName]));
    expect(d.get(CLUSTER, "Trusted").outputs).toEqual({ attestedHosts: ["h1", "h2", "h3"] });
    expect(d.ofType(DOMAIN)).toHaveLength(6);
    const attestation = parsePolicyDocument(policyXml(d, "h3"))?.policy.attestation;
    expect(attestation).toEqual(d.result.cluster.trustedCluster.settings);
    expect(attestation?.clientCertificatePem?.trim()).toBe(pki.clientCertPem.trim());
    expect(attestation?.hosts).toEqual(["h1", "h2", "h3"].map((name) => ({ name, attestationId: AGENT[name] })));
    expect(leaks(d, keySecrets(pki.clientKeyPem))).toEqual([]);
  });
  it("two pools on one cluster: the service is asked once, and both pools register", async () => {
    const assetDir = join(dir, `assets-${++runs}`);
    const run = await runMocked(() => {
      const cluster = new TrustedCluster("Trusted", openAttestation());
      for (const name of ["A", "B"]) {
        new VmPool(name, validProps({ name: `${name}-???`, size: 2, cluster }), {
          hostProbe: fakeProbe(),
          assetDir: join(assetDir, name),
        });
      }
    });
    expect(run.errors).toEqual([]);
    expect(oat.requests).toHaveLength(1);
    expect(
      run
        .ofType(DOMAIN)
        .map((r) => r.name)
        .sort(),
    ).toEqual(["A-A-001", "A-A-002", "B-B-001", "B-B-002"]);
  });
});

describe("a host not trusted fails the program naming it; no member is registered", () => {
  /** Nothing of a member, and no policy volume: every volume waits for the probe, which waits for the check. */
  /** The check's one error: its first line, its host lines, and the advice that ends it. */
  const checkError = (d: Deployed) => {
    expect(d.errors).toHaveLength(1);
    const [head, ...rest] = d.errors[0]!.split("\n");
    return { head, hosts: rest.slice(0, -1), advice: rest[rest.length - 1] };
  };
  const ADVICE =
    "Members would not be placed or started there: no pool on this cluster creates any. Have the hosts attested " +
    "again (or fix what the reason says), or remove them from the cluster's hosts; checkAtPlan: false runs " +
    "without this check (the reconciler still keeps them out of service).";
  const expectNoMember = (d: Deployed) => {
    expect(d.ofType(VOLUME)).toEqual([]);
    expect(d.ofType(DOMAIN)).toEqual([]);
  };

  it.each([false, true])("OpenAttestation answers h2 untrusted (preview: %s)", async (preview) => {
    oat.setTrust("h2", "untrusted");
    const d = await deploy(openAttestation(), { preview });
    expect(checkError(d)).toEqual({
      head:
        "TrustedCluster trusted: the OpenAttestation server " +
        `https://127.0.0.1:${oat.port}/AttestationService/resources/PollHosts does not vouch for 1 of 2 hosts:`,
      hosts: ["  - host h2: untrusted (OpenAttestation: trust_lvl untrusted)"],
      advice: ADVICE,
    });
    expectNoMember(d);
    // The providers are registered (they create nothing), and the probe ran: only the members wait.
    expect(d.ofType(PROVIDER)).toHaveLength(2);
    expect(leaks(d, [TRUSTSTORE_PASSWORD])).toEqual([]);
  });

  it("Keylime: a failed agent and a stale one are both named, with their levels and reasons", async () => {
    keylime.setAgent(AGENT.h1!, { last_successful_attestation: Math.floor(Date.now() / 1000) - 600 });
    keylime.setAgent(AGENT.h3!, { operational_state: OPERATIONAL_STATES.FAILED });
    const d = await deploy(keylimeCluster());
    const { head, hosts: lines, advice } = checkError(d);
    expect(head).toBe(`TrustedCluster trusted: the Keylime verifier ${keylime.url} does not vouch for 2 of 3 hosts:`);
    expect(advice).toBe(ADVICE);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^ {2}- host h1: stale \(Keylime: .*last successful attestation.*\)$/);
    expect(lines[1]).toMatch(/^ {2}- host h3: untrusted \(Keylime: operational_state 7 \(Failed\)\)$/);
    expectNoMember(d);
    expect(leaks(d, keySecrets(pki.clientKeyPem))).toEqual([]);
  });

  it("a server certificate that does not verify makes every host unreachable, naming the certificate", async () => {
    const foreign = await startOpenAttestationServer({ pki, tls: "other-ca" });
    try {
      foreign.setDefaultTrust("trusted");
      const d = await deploy(openAttestation({}, foreign));
      const { head, hosts: lines } = checkError(d);
      expect(head).toMatch(
        /^TrustedCluster trusted: the OpenAttestation server https:.* does not vouch for 2 of 2 hosts:$/,
      );
      expect(lines.map((l) => l.replace(/\(.*\)$/, "(…)"))).toEqual([
        "  - host h1: unreachable (…)",
        "  - host h2: unreachable (…)",
      ]);
      for (const l of lines) expect(l).toMatch(/certificate/i);
      // Refused during the handshake: the server never saw a PollHosts request.
      expect(foreign.requests).toEqual([]);
      expectNoMember(d);
    } finally {
      await foreign.close();
    }
  });

  it("a trusted cluster no pool uses yet still fails the program", async () => {
    oat.setTrust("h1", "unknown");
    const d = await deploy(openAttestation(), { size: 0 });
    expect(checkError(d).hosts).toEqual(["  - host h1: unknown (OpenAttestation: trust_lvl unknown)"]);
  });

  it("an unreachable service fails it too", async () => {
    const gone = await startOpenAttestationServer({ pki });
    await gone.close();
    const d = await deploy(openAttestation({}, gone));
    expect(d.errors).toEqual([
      expect.stringMatching(/- host h1: unreachable \(.*ECONNREFUSED.*\)\n.*- host h2: unreachable/),
    ]);
    expectNoMember(d);
  });
});

describe("options", () => {
  it("checkAtPlan: false asks no service: the members register whatever the hosts' trust", async () => {
    oat.setTrust("h1", "untrusted");
    const d = await deploy(openAttestation({ checkAtPlan: false }));
    expect(d.errors).toEqual([]);
    expect(oat.requests).toEqual([]);
    expect(d.ofType(DOMAIN)).toHaveLength(4);
    expect(d.get(CLUSTER, "Trusted").outputs).toEqual({ attestedHosts: [] });
  });

  it("verification off is warned about through pulumi.log.warn, and then a foreign certificate is accepted", async () => {
    const foreign = await startOpenAttestationServer({ pki, tls: "other-ca" });
    try {
      foreign.setDefaultTrust("trusted");
      const d = await deploy(openAttestation({}, foreign, { verifyServerCertificate: false }));
      expect(d.errors).toEqual([]);
      expect(d.logs).toEqual([
        {
          severity: "warning",
          message: expect.stringMatching(/^TrustedCluster trusted: attestation.verifyServerCertificate is false/),
        },
      ]);
      expect(foreign.requests).toHaveLength(1);
      expect(d.ofType(DOMAIN)).toHaveLength(4);
    } finally {
      await foreign.close();
    }
  });

  it("a pool on a bare TrustedClusterConfig is refused (it would skip the preview's check), naming the component", async () => {
    const config = new TrustedClusterConfig(openAttestation({}, oat));
    const run = runMocked(() => new VmPool("P", validProps({ cluster: config })));
    await expect(run).rejects.toThrow(
      /is not this engine's TrustedCluster, so the plan would not check the hosts' attestation: give new TrustedCluster\("secure", props\) from vmpools\/pulumi/,
    );
  });

  it("invalid props fail the program at construction, the password redacted", async () => {
    const props = openAttestation({}, oat, { truststorePassword: `wrong-${TRUSTSTORE_PASSWORD}` });
    const run = runMocked(() => new TrustedCluster("Trusted", props));
    await expect(run).rejects.toThrow(/attestation\.truststorePassword = "<redacted>": does not open/);
    await expect(run).rejects.not.toThrow(new RegExp(TRUSTSTORE_PASSWORD));
  });
});
