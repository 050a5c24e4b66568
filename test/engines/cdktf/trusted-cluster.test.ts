// The cdktf TrustedCluster: synth of a pool on it (OpenAttestation with a real truststore and its
// password; Keylime with a client certificate and key) leaks no secret into any file of the
// output (the Keylime key's own 0600 asset excepted), carries the plan-time check with its
// postcondition, and the pool's policy document carries the attestation settings.
import { App, Testing, TerraformStack } from "cdktf";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { parsePolicyDocument, PoolSpecError, TrustedClusterConfig, type TrustedClusterProps } from "../../../core";
import { readStackDir, TrustedCluster, VmPool } from "../../../engines/cdktf";
import { makeTestPki, type TestPki } from "../../support/attestation/pki";
import { validProps } from "../../support/fixtures";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const PASSWORD = "Tru5tstore-Passw0rd";
const UPLOADS = "assets/vmpools.uploads";
let dir: string;
let pki: TestPki;
let truststore: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "vmpools-tc-synth-"));
  pki = makeTestPki(join(dir, "pki"));
  truststore = pki.truststoreP12(PASSWORD);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const hosts = [
  { name: "h1", uri: "test:///default" },
  { name: "h2", uri: "test:///default?h2" },
];
const openAttestation = (p: Partial<TrustedClusterProps> = {}): TrustedClusterProps => ({
  name: "secure",
  hosts,
  attestation: {
    type: "openattestation",
    server: "oat.example.com",
    truststorePath: truststore,
    truststorePassword: PASSWORD,
  },
  ...p,
});
const keylime = (p: Partial<TrustedClusterProps> = {}): TrustedClusterProps => ({
  name: "secure",
  hosts: hosts.map((h, i) => ({ ...h, attestationId: `agent-${i + 1}` })),
  attestation: {
    type: "keylime",
    verifierUrl: "https://verifier.example.com:8881",
    caCertificatePem: pki.caPem,
    clientCertificatePem: pki.clientCertPem,
    clientKeyPem: pki.clientKeyPem,
  },
  ...p,
});

/** Synthesizes a stack with a trusted cluster and a pool on it, as `cdktf synth` does. */
function synth(props: TrustedClusterProps, name: string) {
  const outdir = join(dir, name);
  const app = new App({ outdir });
  const stack = new TerraformStack(app, "stack");
  const cluster = new TrustedCluster(stack, "Secure", props);
  new VmPool(stack, "Pool", validProps({ size: 2, cluster }));
  app.synth();
  const stackDir = join(outdir, "stacks", "stack");
  return { outdir, stackDir, json: readStackDir(stackDir) as Json, cluster };
}

/** Every file under `root`, relative path → contents. */
function files(root: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else out.set(relative(root, join(d, e.name)), readFileSync(join(d, e.name)));
    }
  };
  walk(root);
  return out;
}

/** The base64 body of a PEM, joined, and its lines (a line alone is a leak too). */
const pemBody = (pem: string) => pem.split("\n").filter((l) => l !== "" && !l.startsWith("-----"));

describe("TrustedCluster (cdktf)", () => {
  it("OpenAttestation: no password anywhere in the output; the check and the policy's settings are there", () => {
    const { outdir, stackDir, json, cluster } = synth(openAttestation(), "oat");
    const all = files(outdir);
    expect(all.size).toBeGreaterThan(5);
    for (const [file, content] of all) {
      expect([file, content.includes(PASSWORD)]).toEqual([file, false]);
      expect([file, content.includes(Buffer.from(PASSWORD).toString("base64"))]).toEqual([file, false]);
    }
    // The check: the probe with protocol.cjs beside it, the settings (no secret) as its query.
    const check = json.data.external.Secure_attestation;
    expect(check.program).toEqual(["node", `\${path.module}/${UPLOADS}/Secure/attestation-probe.cjs`]);
    expect(JSON.parse(check.query.settings)).toEqual(cluster.trustedCluster.settings);
    expect(check.query.client_key_file).toBe("");
    expect(check.lifecycle.postcondition).toEqual([
      {
        condition: '${self.result.not_trusted == ""}',
        error_message: expect.stringContaining(
          "TrustedCluster secure: the OpenAttestation server https://oat.example.com:8443/AttestationService/resources/PollHosts does not vouch for these hosts: ${self.result.not_trusted}.",
        ),
      },
    ]);
    expect(check.provider).toBe("external");
    expect(readdirSync(join(stackDir, UPLOADS, "Secure")).sort()).toEqual(["attestation-probe.cjs", "protocol.cjs"]);
    // The pool's policy document carries the settings, the members the trusted flag.
    const policy = readFileSync(join(stackDir, UPLOADS, "Pool", "policy.xml"), "utf8");
    expect(parsePolicyDocument(policy)?.policy.attestation).toEqual(cluster.trustedCluster.settings);
    const domains = Object.values(json.resource.libvirt_domain) as Json[];
    expect(domains).toHaveLength(2);
    for (const d of domains) expect(JSON.stringify(d)).toContain('trusted=\\"true\\"');
  });

  it("Keylime: the key only in its 0600 asset (0700 folder), named by path in the query", () => {
    const { outdir, stackDir, json } = synth(keylime(), "keylime");
    const keyAsset = join(UPLOADS, "Secure", "client-key.pem");
    const body = pemBody(pki.clientKeyPem);
    const all = files(outdir);
    expect(all.has(join("stacks", "stack", keyAsset))).toBe(true);
    for (const [file, content] of all) {
      if (file === join("stacks", "stack", keyAsset)) continue;
      const text = content.toString("latin1");
      expect([file, text.includes(body.join(""))]).toEqual([file, false]);
      for (const line of body) expect([file, text.includes(line)]).toEqual([file, false]);
      expect([file, text.includes(Buffer.from(pki.clientKeyPem).toString("base64").slice(0, 60))]).toEqual([
        file,
        false,
      ]);
    }
    expect(readFileSync(join(stackDir, keyAsset), "utf8")).toBe(pki.clientKeyPem);
    expect(statSync(join(stackDir, keyAsset)).mode & 0o777).toBe(0o600);
    expect(statSync(join(stackDir, UPLOADS, "Secure")).mode & 0o777).toBe(0o700);
    const check = json.data.external.Secure_attestation;
    expect(check.query.client_key_file).toBe(`\${path.module}/${keyAsset}`);
    expect(check.lifecycle.postcondition[0].error_message).toContain(
      "TrustedCluster secure: the Keylime verifier https://verifier.example.com:8881 does not vouch",
    );
    // The public certificates travel in the settings (the reconciler needs them).
    expect(JSON.parse(check.query.settings)).toMatchObject({ clientCertificatePem: pki.clientCertPem });
  });

  it("writes no check, probe or key with checkAtPlan: false; a re-synth removes what it wrote before", () => {
    synth(keylime(), "toggle");
    const { stackDir, json } = synth(keylime({ checkAtPlan: false }), "toggle");
    expect(json.data?.external?.Secure_attestation).toBeUndefined();
    expect(readdirSync(join(stackDir, UPLOADS))).toEqual(["Pool", ".built.json"].sort());
  });

  it("shows its warnings at synth, as the pool's", () => {
    const app = Testing.app();
    const stack = new TerraformStack(app, "warn");
    const cluster = new TrustedCluster(stack, "Secure", {
      ...openAttestation(),
      attestation: { type: "openattestation", secureConnection: false },
    });
    const warnings = cluster.node.metadata.filter((m) => m.type === "@cdktf/warn").map((m) => m.data);
    expect(warnings).toEqual([
      "TrustedCluster secure: attestation.secureConnection is false: verdicts travel over plain HTTP, unauthenticated",
    ]);
  });

  it("refuses bad props at construction, the password redacted", () => {
    const stack = new TerraformStack(Testing.app(), "bad");
    let error: unknown;
    try {
      new TrustedCluster(stack, "Secure", {
        ...openAttestation(),
        attestation: { type: "openattestation", truststorePath: truststore, truststorePassword: "Not-The-0ne" },
      });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(PoolSpecError);
    expect((error as Error).message).toContain('attestation.truststorePassword = "<redacted>"');
    expect((error as Error).message).not.toContain("Not-The-0ne");
  });

  it("refuses a pool on a bare TrustedClusterConfig (it would skip the plan-time check), naming the construct", () => {
    const stack = new TerraformStack(Testing.app(), "bare");
    const config = new TrustedClusterConfig(openAttestation());
    expect(() => new VmPool(stack, "Pool", validProps({ cluster: config }))).toThrow(
      /cluster = "trusted cluster [^"]+": is not this engine's TrustedCluster, so the plan would not check the hosts' attestation: give new TrustedCluster\(stack, "Secure", props\) from vmpools\/cdktf/,
    );
    // Without the check wanted, the config alone is enough.
    const unchecked = new TrustedClusterConfig({ ...openAttestation(), checkAtPlan: false });
    expect(() => new VmPool(stack, "Pool2", validProps({ name: "Other-???", cluster: unchecked }))).not.toThrow();
  });

  it("the synthesized probe runs from the assets and answers for every host", () => {
    const { stackDir, json } = synth(openAttestation(), "run");
    const check = json.data.external.Secure_attestation;
    // Nothing listens on this port: every host is unreachable, which is an answer, not a failure.
    const settings = {
      ...JSON.parse(check.query.settings),
      url: "https://127.0.0.1:1/PollHosts",
      requestTimeoutMs: 2000,
    };
    const out = execFileSync("node", [join(stackDir, UPLOADS, "Secure", "attestation-probe.cjs")], {
      input: JSON.stringify({ settings: JSON.stringify(settings), client_key_file: "" }),
      encoding: "utf8",
    });
    const result = JSON.parse(out);
    expect(Object.keys(result).sort()).toEqual(["not_trusted", "trusted"]);
    expect(result.trusted).toBe("");
    expect(result.not_trusted).toMatch(/^h1 \(unreachable: .*ECONNREFUSED.*\); h2 \(unreachable: .*\)$/);
  });
  it("the probe exits non-zero only for a query it cannot use, naming the key file but never its content", () => {
    const { stackDir, json } = synth(keylime(), "bad-query");
    const probe = join(stackDir, UPLOADS, "Secure", "attestation-probe.cjs");
    const run = (query: unknown) => spawnSync("node", [probe], { input: JSON.stringify(query), encoding: "utf8" });
    expect(run({}).status).toBe(1);
    expect(run({}).stderr).toBe("vmpools attestation probe: query.settings is required\n");
    expect(run({ settings: "{not json" }).status).toBe(1);
    expect(run({ settings: JSON.stringify({ hosts: [] }) }).stderr).toMatch(/query\.settings must be/);
    const settings = json.data.external.Secure_attestation.query.settings;
    const missing = run({ settings, client_key_file: join(dir, "no-such-key.pem") });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toBe(
      `vmpools attestation probe: cannot read the client key file ${join(dir, "no-such-key.pem")} (ENOENT)\n`,
    );
    // The synthesized key file is read (the verifier in settings does not exist: unreachable, exit 0).
    const ok = run({
      settings: JSON.stringify({ ...JSON.parse(settings), url: "https://127.0.0.1:1", requestTimeoutMs: 2000 }),
      client_key_file: join(stackDir, UPLOADS, "Secure", "client-key.pem"),
    });
    expect(ok.status).toBe(0);
    expect(JSON.parse(ok.stdout).not_trusted).toMatch(/^h1 \(unreachable: .*\); h2 \(unreachable: .*\)$/);
    for (const out of [ok.stdout, ok.stderr, missing.stderr]) expect(out).not.toContain(pemBody(pki.clientKeyPem)[1]);
  });
});
