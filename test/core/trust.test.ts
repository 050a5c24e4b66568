// TrustedClusterConfig: oVirt's OpenAttestation defaults, every refusal (all at once, with the
// prop, the value and the fix, secrets redacted), the warnings, and the settings carried through
// the pool's policy document. Truststores and certificates are real ones (test/support/attestation/pki).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import {
  parseMetadataXml,
  parsePolicyDocument,
  planPool,
  PoolSpecError,
  TrustedClusterConfig,
  type KeylimeSpec,
  type OpenAttestationSpec,
  type TrustedClusterProps,
} from "../../core";
import { makeTestPki, type TestPki } from "../support/attestation/pki";
import { validProps } from "../support/fixtures";

const PASSWORD = "tRust-st0re-pass";
let dir: string;
let pki: TestPki;
let truststore: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "vmpools-trust-"));
  pki = makeTestPki(join(dir, "pki"));
  truststore = pki.truststoreP12(PASSWORD);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const hosts = [
  { name: "h1", uri: "qemu+ssh://root@h1/system" },
  { name: "h2", uri: "qemu+ssh://root@h2/system" },
];
const oat = (a: Partial<OpenAttestationSpec> = {}, p: Partial<TrustedClusterProps> = {}): TrustedClusterProps => ({
  name: "trusted",
  hosts,
  attestation: { type: "openattestation", truststorePath: truststore, truststorePassword: PASSWORD, ...a },
  ...p,
});
const keylime = (a: Partial<KeylimeSpec> = {}, p: Partial<TrustedClusterProps> = {}): TrustedClusterProps => ({
  name: "trusted",
  hosts: hosts.map((h, i) => ({ ...h, attestationId: `d432fbb3-d2f1-4a97-9ef7-75bd81c0000${i}` })),
  attestation: {
    type: "keylime",
    verifierUrl: "https://verifier.example.com:8881/",
    caCertificatePem: pki.caPem,
    clientCertificatePem: pki.clientCertPem,
    clientKeyPem: pki.clientKeyPem,
    ...a,
  },
  ...p,
});

/** The issues construction refuses the props with (fails when it accepts them). */
function refusal(props: unknown): PoolSpecError {
  try {
    new TrustedClusterConfig(props as TrustedClusterProps);
  } catch (e) {
    expect(e).toBeInstanceOf(PoolSpecError);
    messages.push((e as Error).message);
    return e as PoolSpecError;
  }
  throw new Error("accepted");
}
const issue = (e: PoolSpecError, prop: string) => e.issues.find((i) => i.prop === prop);
/** Every refusal message of this file, checked for secrets at the end. */
const messages: string[] = [];
const keyBody = () => pki.clientKeyPem.split("\n").filter((l) => l !== "" && !l.startsWith("-----"));

describe("OpenAttestation", () => {
  it('has oVirt\'s defaults: oat-server, 8443, PollUri, TrustStore.jks opened with "password", 10 then 20, HTTPS', () => {
    // TrustStore.jks in the working directory, as oVirt's engine reads it (a PKCS#12 under that name).
    const cwd = process.cwd();
    const here = join(dir, "defaults");
    mkdirSync(here);
    execFileSync("cp", [pki.truststoreP12("password"), join(here, "TrustStore.jks")]);
    process.chdir(here);
    let config: TrustedClusterConfig;
    try {
      config = new TrustedClusterConfig({ name: "trusted", hosts, attestation: { type: "openattestation" } });
    } finally {
      process.chdir(cwd);
    }
    expect(config.settings).toEqual({
      cluster: "trusted",
      type: "openattestation",
      url: "https://oat-server:8443/AttestationService/resources/PollHosts",
      verifyServerCertificate: true,
      caCertificatePem: pki.caPem,
      firstStageSize: 10,
      batchSize: 20,
      maxAttestationAgeSeconds: 0,
      pollIntervalMs: 500,
      requestTimeoutMs: 5000,
      hosts: [
        { name: "h1", attestationId: "h1" },
        { name: "h2", attestationId: "h2" },
      ],
    });
    expect(config.checkAtPlan).toBe(true);
    expect(config.warnings).toEqual([]);
    expect(config.hosts).toEqual(hosts);
    expect(config.clientKeyPem).toBeUndefined();
  });

  it("takes its settings: server, port, poll URI, first stage, attestation ids, timings", () => {
    const config = new TrustedClusterConfig(
      oat(
        { server: "oat.example.com", port: 9443, pollUri: "/x/PollHosts", firstStageSize: 3 },
        {
          hosts: [{ ...hosts[0]!, attestationId: "h1.example.com" }, hosts[1]!],
          pollIntervalSeconds: 2,
          requestTimeoutSeconds: 1.5,
          checkAtPlan: false,
        },
      ),
    );
    expect(config.settings).toMatchObject({
      url: "https://oat.example.com:9443/x/PollHosts",
      firstStageSize: 3,
      batchSize: 20,
      pollIntervalMs: 2000,
      requestTimeoutMs: 1500,
      hosts: [
        { name: "h1", attestationId: "h1.example.com" },
        { name: "h2", attestationId: "h2" },
      ],
    });
    expect(config.checkAtPlan).toBe(false);
  });

  it("reads the CA certificates out of a PKCS#12 truststore (OpenSSL 3's PBES2/AES, and an EC CA)", () => {
    expect(new TrustedClusterConfig(oat()).settings.caCertificatePem).toBe(pki.caPem);
    // An EC CA: node-forge does not decode its certificate, which must not make the store look empty.
    const ec = join(dir, "ec");
    mkdirSync(ec);
    execFileSync(
      "sh",
      [
        "-c",
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem -out ca.pem " +
          "-subj /CN=ec-ca -days 2 2>/dev/null && openssl pkcs12 -export -nokeys -in ca.pem -out ts.p12 -passout pass:x",
      ],
      { cwd: ec },
    );
    const config = new TrustedClusterConfig(oat({ truststorePath: join(ec, "ts.p12"), truststorePassword: "x" }));
    expect(config.settings.caCertificatePem).toMatch(
      /^-----BEGIN CERTIFICATE-----\n[\s\S]+\n-----END CERTIFICATE-----\n$/,
    );
    expect(config.settings.caCertificatePem).toBe(
      execFileSync("openssl", ["x509", "-in", join(ec, "ca.pem")], { encoding: "utf8" }),
    );
  });

  it("takes PEM CA certificates instead of a truststore, which is then not read", () => {
    const config = new TrustedClusterConfig(
      oat({ truststorePath: join(dir, "missing.p12"), caCertificatePem: `${pki.caPem}\r\n${pki.otherCaPem}` }),
    );
    expect(config.settings.caCertificatePem).toBe(`${pki.caPem}${pki.otherCaPem}`);
  });

  it("refuses a missing truststore, and one it cannot read, naming the path and the alternative", () => {
    const missing = join(dir, "nowhere", "TrustStore.p12");
    expect(issue(refusal(oat({ truststorePath: missing })), "attestation.truststorePath")).toEqual({
      prop: "attestation.truststorePath",
      value: missing,
      message:
        "cannot be read (ENOENT): give the OpenAttestation server's CA as a PKCS#12 truststore at this path, or as attestation.caCertificatePem",
    });
    // A folder: unreadable as a file whatever the user (these tests may run as root).
    expect(issue(refusal(oat({ truststorePath: dir })), "attestation.truststorePath")?.message).toMatch(
      /^cannot be read \(EISDIR\)/,
    );
    const garbage = join(dir, "garbage.p12");
    writeFileSync(garbage, "not a keystore at all");
    expect(issue(refusal(oat({ truststorePath: garbage })), "attestation.truststorePath")?.message).toMatch(
      /^is not a PKCS#12 truststore \(/,
    );
  });

  it("refuses a JKS keystore with the keytool command that converts it", () => {
    const jks = join(dir, "TrustStore.jks");
    // A JKS file starts with the magic 0xFEEDFEED and version 2.
    writeFileSync(jks, Buffer.concat([Buffer.from([0xfe, 0xed, 0xfe, 0xed, 0, 0, 0, 2]), Buffer.alloc(64)]));
    expect(issue(refusal(oat({ truststorePath: jks })), "attestation.truststorePath")).toEqual({
      prop: "attestation.truststorePath",
      value: jks,
      message: `is a JKS keystore; convert it to PKCS#12: keytool -importkeystore -srckeystore ${jks} -destkeystore TrustStore.p12 -deststoretype PKCS12`,
    });
  });

  it("refuses a wrong truststore password naming attestation.truststorePassword, the value redacted", () => {
    const e = refusal(oat({ truststorePassword: "Wr0ng-Passw0rd" }));
    expect(e.issues).toEqual([
      {
        prop: "attestation.truststorePassword",
        value: "<redacted>",
        message: `does not open ${truststore} (the truststore's MAC does not verify): give its password`,
      },
    ]);
    expect(e.message).not.toContain("Wr0ng-Passw0rd");
    // The default password ("password") on a store with another one: the same refusal.
    expect(issue(refusal(oat({ truststorePassword: undefined })), "attestation.truststorePassword")?.value).toBe(
      "<redacted>",
    );
  });

  it("refuses host names that differ only in case, and two hosts with one name at the service", () => {
    const e = refusal({
      name: "c",
      hosts: [
        { name: "kvm1", uri: "qemu:///system" },
        { name: "KVM1", uri: "qemu:///system" },
        { name: "kvm2", uri: "qemu:///system", attestationId: "Kvm1" },
      ],
      attestation: { type: "openattestation", secureConnection: false },
    });
    expect(e.issues.map((i) => [i.prop, i.value, i.message])).toEqual([
      ["hosts[1].name", "KVM1", "is listed twice (as hosts[0], case aside); host names must be unique"],
      [
        "hosts[2].attestationId",
        "Kvm1",
        "is also hosts[0]'s name at the attestation service: one verdict would count for both",
      ],
    ]);
  });

  it("lists every bad setting at once, with its value and the fix", () => {
    const e = refusal({
      name: "bad name",
      hosts: [
        { name: "h1", uri: "qemu:///system" },
        { name: "h1", uri: "qemu:///system" },
        { name: "h/3", uri: "not a uri" },
        { name: "h4", uri: "qemu:///system", attestationId: "has space" },
      ],
      attestation: {
        type: "openattestation",
        server: "oat server",
        port: 70000,
        pollUri: "a path?with=query",
        firstStageSize: 0,
        secureConnection: "yes",
        verifyServerCertificate: "no",
        truststorePath: truststore,
        truststorePassword: PASSWORD,
      },
      pollIntervalSeconds: 0,
      requestTimeoutSeconds: "5",
      checkAtPlan: 1,
    });
    expect(e.message).toMatch(/^TrustedCluster bad name: invalid pool definition\n/);
    expect(e.issues.map((i) => [i.prop, i.value])).toEqual([
      ["name", "bad name"],
      ["hosts[1].name", "h1"],
      ["hosts[2].name", "h/3"],
      ["hosts[2].uri", "not a uri"],
      ["hosts[3].attestationId", "has space"],
      ["pollIntervalSeconds", 0],
      ["requestTimeoutSeconds", "5"],
      ["attestation.server", "oat server"],
      ["attestation.port", 70000],
      ["attestation.pollUri", "a path?with=query"],
      ["attestation.firstStageSize", 0],
      ["attestation.secureConnection", "yes"],
      ["attestation.verifyServerCertificate", "no"],
      ["checkAtPlan", 1],
    ]);
    const by = (prop: string) => issue(e, prop)!.message;
    expect(by("name")).toBe("must be letters, digits, '.', '_' or '-', e.g. \"trusted\"");
    expect(by("hosts[1].name")).toBe("is listed twice (as hosts[0], case aside); host names must be unique");
    expect(by("hosts[2].name")).toBe("must be letters, digits, '.', '_' or '-'");
    expect(by("hosts[2].uri")).toBe('must be a libvirt URI such as "qemu+ssh://root@host1/system"');
    expect(by("hosts[3].attestationId")).toBe("must be a name without spaces or commas");
    expect(by("pollIntervalSeconds")).toBe("must be a number of seconds from 0.1 to 3600");
    expect(by("requestTimeoutSeconds")).toBe("must be a number of seconds from 0.1 to 300");
    expect(by("attestation.server")).toBe('must be a host name or IP address, e.g. "oat.example.com"');
    expect(by("attestation.port")).toBe("must be 1..65535");
    expect(by("attestation.pollUri")).toBe('must be a URL path such as "AttestationService/resources/PollHosts"');
    expect(by("attestation.firstStageSize")).toBe("must be a whole number from 1 to 1000");
    expect(by("attestation.secureConnection")).toBe("must be true or false");
    expect(by("checkAtPlan")).toBe("must be true or false");
  });

  it("refuses no hosts, no attestation service, and a poll URI that is not a string (without a crash)", () => {
    expect(refusal({ name: "t", hosts: [], attestation: { type: "openattestation" } }).issues[0]).toEqual({
      prop: "hosts",
      value: [],
      message: "needs at least one host: [{ name, uri }]",
    });
    expect(issue(refusal({ name: "t", hosts }), "attestation.type")?.message).toBe(
      'must be "openattestation" or "keylime"',
    );
    expect(issue(refusal({ name: "t", hosts, attestation: { type: "tpm" } }), "attestation.type")?.value).toBe("tpm");
    expect(issue(refusal(oat({ pollUri: 42 as unknown as string })), "attestation.pollUri")?.value).toBe(42);
  });

  it("warns when the certificate is not verified, and over plain HTTP, where no truststore is read", () => {
    const unverified = new TrustedClusterConfig(oat({ verifyServerCertificate: false, truststorePath: "/nowhere" }));
    expect(unverified.warnings).toEqual([
      "TrustedCluster trusted: attestation.verifyServerCertificate is false: any server is accepted as the attestation service",
    ]);
    expect(unverified.settings).toMatchObject({
      verifyServerCertificate: false,
      url: expect.stringMatching(/^https:/),
    });
    expect(unverified.settings.caCertificatePem).toBeUndefined();

    const plain = new TrustedClusterConfig(oat({ secureConnection: false, truststorePath: "/nowhere", port: 8080 }));
    expect(plain.warnings).toEqual([
      "TrustedCluster trusted: attestation.secureConnection is false: verdicts travel over plain HTTP, unauthenticated",
    ]);
    expect(plain.settings.url).toBe("http://oat-server:8080/AttestationService/resources/PollHosts");
    expect(plain.settings.caCertificatePem).toBeUndefined();
  });
});

describe("Keylime", () => {
  it("takes the verifier URL, its CA, the client certificate and key, one agent id per host", () => {
    const config = new TrustedClusterConfig(keylime({ apiVersion: "2.1", maxAttestationAgeSeconds: 30 }));
    expect(config.settings).toEqual({
      cluster: "trusted",
      type: "keylime",
      url: "https://verifier.example.com:8881",
      verifyServerCertificate: true,
      caCertificatePem: pki.caPem,
      clientCertificatePem: pki.clientCertPem,
      firstStageSize: 0,
      batchSize: 0,
      apiVersion: "2.1",
      maxAttestationAgeSeconds: 30,
      pollIntervalMs: 500,
      requestTimeoutMs: 5000,
      hosts: [
        { name: "h1", attestationId: "d432fbb3-d2f1-4a97-9ef7-75bd81c00000" },
        { name: "h2", attestationId: "d432fbb3-d2f1-4a97-9ef7-75bd81c00001" },
      ],
    });
    // The key is kept for the plan-time check's 0600 file, never in the settings.
    expect(config.clientKeyPem).toBe(pki.clientKeyPem);
    expect(JSON.stringify(config.settings)).not.toContain(keyBody()[1]);
    // A default maximum age of a PASS, and the API version asked of the verifier.
    const defaults = new TrustedClusterConfig(keylime());
    expect(defaults.settings.maxAttestationAgeSeconds).toBe(60);
    expect(defaults.settings.apiVersion).toBeUndefined();
  });

  it("requires an agent id per host", () => {
    const e = refusal(keylime({}, { hosts: [hosts[0]!, { ...hosts[1]!, attestationId: "agent-2" }] }));
    expect(e.issues).toEqual([
      {
        prop: "hosts[0].attestationId",
        value: undefined,
        message: "is required with Keylime: the host's agent id (a UUID)",
      },
    ]);
  });

  it("refuses a verifier URL that is not https, and one with credentials without showing them", () => {
    for (const url of ["http://verifier:8881", "verifier:8881", "https://v:8881/?token=T0ken-in-query"]) {
      expect(issue(refusal(keylime({ verifierUrl: url })), "attestation.verifierUrl")).toEqual({
        prop: "attestation.verifierUrl",
        value: url.includes("?") ? "<redacted>" : url,
        message:
          'must be an https URL without credentials, query or fragment, e.g. "https://verifier.example.com:8881"',
      });
    }
    const e = refusal(keylime({ verifierUrl: "https://tenant:S3cr3t-in-url@verifier:8881" }));
    expect(issue(e, "attestation.verifierUrl")?.value).toBe("<redacted>");
    expect(e.message).not.toContain("S3cr3t-in-url");
  });

  it("refuses certificates that are not PEM, and a key that is not one, does not match or is encrypted, never quoting it", () => {
    const e = refusal(
      keylime({ caCertificatePem: "just text", clientCertificatePem: pki.clientKeyPem, clientKeyPem: "nope" }),
    );
    expect(e.issues).toEqual([
      {
        prop: "attestation.caCertificatePem",
        value: "just text…",
        message: "must hold PEM certificates (-----BEGIN CERTIFICATE-----)",
      },
      // The key given as the certificate by mistake is not shown either.
      {
        prop: "attestation.clientCertificatePem",
        value: "<redacted>",
        message: "must hold PEM certificates (-----BEGIN CERTIFICATE-----)",
      },
      {
        prop: "attestation.clientKeyPem",
        value: "<redacted>",
        message: 'must be a PEM private key, e.g. secretFromFile("/etc/keylime/tenant-key.pem")',
      },
    ]);
    // Another key than the certificate's: found now, not at the first handshake.
    const other = issue(refusal(keylime({ clientKeyPem: pki.serverKeyPem })), "attestation.clientKeyPem");
    expect(other).toEqual({
      prop: "attestation.clientKeyPem",
      value: "<redacted>",
      message: "does not belong to attestation.clientCertificatePem: give the key of that certificate",
    });
    const encrypted = execFileSync(
      "openssl",
      ["pkey", "-in", pki.clientKeyPath, "-aes256", "-passout", "pass:keypass"],
      { encoding: "utf8" },
    );
    expect(issue(refusal(keylime({ clientKeyPem: encrypted })), "attestation.clientKeyPem")?.message).toMatch(
      /^is not a readable unencrypted PEM private key \(decrypt it first/,
    );
    expect(issue(refusal(keylime({ apiVersion: "3.0" })), "attestation.apiVersion")?.message).toBe(
      'must be a 2.x API version such as "2.1"',
    );
    expect(
      issue(refusal(keylime({ maxAttestationAgeSeconds: 0 })), "attestation.maxAttestationAgeSeconds"),
    ).toBeDefined();
  });

  it("warns when the verifier's certificate is not verified", () => {
    expect(new TrustedClusterConfig(keylime({ verifyServerCertificate: false })).warnings).toEqual([
      "TrustedCluster trusted: attestation.verifyServerCertificate is false: any server is accepted as the attestation service",
    ]);
  });
});

describe("a pool on a trusted cluster", () => {
  const plan = (cluster: NonNullable<Parameters<typeof validProps>[0]>["cluster"]) =>
    planPool(validProps({ size: 3, cluster }));

  it("carries the attestation settings in its policy document, read back as written", () => {
    for (const props of [oat(), keylime()]) {
      const config = new TrustedClusterConfig(props);
      const { policy, members, pool } = plan(config);
      expect(pool.trust).toEqual(config.settings);
      expect(pool.clusterName).toBe("trusted");
      expect(parsePolicyDocument(policy.xml)?.policy.attestation).toEqual(config.settings);
      // The key never, the certificates (public) as given.
      expect(policy.xml).not.toContain(keyBody()[1]);
      for (const m of members) {
        expect(m.metadata.trusted).toBe(true);
        expect(m.metadataXml).toContain('trusted="true"');
        // Members carry the flag, not the settings.
        expect(m.metadataXml).not.toContain("attestation");
        expect(parseMetadataXml(m.metadataXml)).toMatchObject({ trusted: true, cluster: "trusted" });
        expect(parseMetadataXml(m.metadataXml)?.attestation).toBeUndefined();
      }
    }
  });

  it("is the pool of a plain cluster of the same hosts plus the attestation element and the trusted flag", () => {
    const trusted = plan(new TrustedClusterConfig(oat()));
    const plain = plan({ name: "trusted", hosts });
    expect(plain.pool.trust).toBeUndefined();
    expect(plain.policy.xml).not.toMatch(/attestation|trusted=/);
    expect(parsePolicyDocument(plain.policy.xml)?.policy).not.toHaveProperty("attestation");
    expect(
      trusted.policy.xml
        .replace(/<vmpools:attestation [\s\S]*<\/vmpools:attestation>/, "")
        .replace(' trusted="true"', ""),
    ).toBe(plain.policy.xml);
    trusted.members.forEach((m, i) => {
      expect(plain.members[i]!.metadataXml).not.toContain("trusted=");
      expect(parseMetadataXml(plain.members[i]!.metadataXml)).not.toHaveProperty("trusted");
      expect(m.metadataXml.replace(' trusted="true"', "")).toBe(plain.members[i]!.metadataXml);
    });
  });
});

afterAll(() => {
  // No refusal of this file quoted a password or a line of a key.
  expect(messages.length).toBeGreaterThan(10);
  for (const m of messages) {
    for (const secret of [PASSWORD, "Wr0ng-Passw0rd", "S3cr3t-in-url", ...keyBody()]) expect(m).not.toContain(secret);
  }
});
