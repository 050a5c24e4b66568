// The plan-time attestation check through real Terraform (the provider stand-ins of
// test/support/terraform.ts): a pool on a TrustedCluster of two hosts (libvirt's test driver,
// test:///default, is all the plan needs of them) against the loopback OpenAttestation server
// and Keylime verifier. All hosts trusted: the plan succeeds. One untrusted: the plan fails
// naming the host and the reason, and `terraform apply` creates nothing (so the members need no
// dependency on the check). A certificate that does not verify, and Keylime's mutual TLS, likewise.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { TerraformStack } from "cdktf";
import type { TrustedClusterProps } from "../../core";
import { TrustedCluster, VmPool } from "../../engines/cdktf";
import {
  makeTestPki,
  startKeylimeVerifier,
  startOpenAttestationServer,
  type KeylimeVerifier,
  type OpenAttestationServer,
  type TestPki,
} from "../support/attestation";
import { requireLibvirtd } from "../support/libvirt";
import { effective, TerraformProject } from "../support/terraform";
import { validProps } from "../support/fixtures";

const PASSWORD = "plan-Truststore-pass";
const HOSTS = [
  { name: "h1", uri: "test:///default" },
  { name: "h2", uri: "test:///default" },
];
const AGENTS = { h1: "a1b2c3d4-0000-4000-8000-000000000001", h2: "a1b2c3d4-0000-4000-8000-000000000002" };

let work: string;
let pki: TestPki;
let truststore: string;
let oat: OpenAttestationServer;
let otherOat: OpenAttestationServer;
let verifier: KeylimeVerifier;
let project: TerraformProject;

/** Terraform's output wraps long messages at any space. */
const wrapped = (text: string) => new RegExp(text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/ /g, "\\s+"));

function synth(cluster: TrustedClusterProps): void {
  project.synth((app, id) => {
    const stack = new TerraformStack(app, id);
    const trusted = new TrustedCluster(stack, "Secure", cluster);
    new VmPool(
      stack,
      "Pool",
      validProps({
        name: "Trusted-?",
        size: 2,
        cluster: trusted,
        resourceAllocation: { disk: { storagePools: [{ name: "default-pool" }] } },
      }),
    );
    return stack;
  });
}

const openAttestation = (server: OpenAttestationServer): TrustedClusterProps => ({
  name: "secure",
  hosts: HOSTS,
  attestation: {
    type: "openattestation",
    server: "127.0.0.1",
    port: server.port,
    truststorePath: truststore,
    truststorePassword: PASSWORD,
  },
  requestTimeoutSeconds: 3,
});

const keylime = (client: { cert: string; key: string } = { cert: pki.clientCertPem, key: pki.clientKeyPem }) =>
  ({
    name: "secure",
    hosts: HOSTS.map((h) => ({ ...h, attestationId: AGENTS[h.name as keyof typeof AGENTS] })),
    attestation: {
      type: "keylime",
      verifierUrl: verifier.url,
      caCertificatePem: pki.caPem,
      clientCertificatePem: client.cert,
      clientKeyPem: client.key,
    },
    requestTimeoutSeconds: 3,
  }) satisfies TrustedClusterProps;

async function failedPlan(): Promise<string> {
  const planned = await project.run(["plan", "-no-color"], { allowFailure: true });
  expect(planned.code).not.toBe(0);
  return planned.stderr + planned.stdout;
}

beforeAll(async () => {
  requireLibvirtd();
  work = fs.mkdtempSync(path.join(os.tmpdir(), "vmpools-trusted-plan-"));
  pki = makeTestPki(path.join(work, "pki"));
  truststore = pki.truststoreP12(PASSWORD);
  [oat, otherOat, verifier] = await Promise.all([
    startOpenAttestationServer({ pki }),
    startOpenAttestationServer({ pki, tls: "other-ca" }),
    startKeylimeVerifier({ pki }),
  ]);
  project = new TerraformProject(path.join(work, "project"), "trusted");
  synth(openAttestation(oat));
  await project.init();
}, 120_000);

afterAll(async () => {
  await Promise.all([oat?.close(), otherOat?.close(), verifier?.close()]);
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe("terraform plan on a TrustedCluster", () => {
  it("OpenAttestation, every host trusted: the plan succeeds after asking the server about both", async () => {
    oat.setTrust("h1", "trusted");
    oat.setTrust("h2", "trusted");
    oat.clearRequests();
    synth(openAttestation(oat));
    const { changes } = await project.plan();
    expect(effective(changes).filter((c) => c.type === "libvirt_domain")).toHaveLength(2);
    expect(oat.requests.flatMap((r) => r.hosts).sort()).toEqual(["h1", "h2"]);
  });

  it("OpenAttestation, one host untrusted: the plan fails naming it and the reason; apply creates nothing", async () => {
    oat.setTrust("h2", "untrusted");
    synth(openAttestation(oat));
    const out = await failedPlan();
    expect(out).toMatch(wrapped("TrustedCluster secure: the OpenAttestation server"));
    expect(out).toMatch(
      wrapped("does not vouch for these hosts: h2 (untrusted: OpenAttestation: trust_lvl untrusted)."),
    );
    expect(out).toMatch(wrapped("Have the hosts attested again"));
    expect(out).not.toMatch(/h1 \(/);
    // A plain apply plans first and stops there: nothing is created, with no depends_on on the check.
    const applied = await project.run(["apply", "-no-color", "-auto-approve"], { allowFailure: true });
    expect(applied.code).not.toBe(0);
    expect(applied.stderr + applied.stdout).toMatch(wrapped("h2 (untrusted: OpenAttestation: trust_lvl untrusted)"));
    const listed = await project.run(["state", "list"], { allowFailure: true });
    expect(listed.stdout.trim()).toBe("");
  });

  it("OpenAttestation over a certificate the truststore does not vouch for: fails naming that for each host", async () => {
    otherOat.setDefaultTrust("trusted");
    synth(openAttestation(otherOat));
    const out = await failedPlan();
    for (const h of ["h1", "h2"]) expect(out).toMatch(new RegExp(`${h}\\s+\\(unreachable:[^)]*certificate`));
    // The server never saw a request: the handshake was refused before any was sent.
    expect(otherOat.requests).toEqual([]);
  });

  it("Keylime with mutual TLS: healthy agents pass, a failed one fails the plan, a refused client certificate too", async () => {
    verifier.setAgent(AGENTS.h1);
    verifier.setAgent(AGENTS.h2);
    verifier.clearRequests();
    synth(keylime());
    await project.plan();
    // Every request came with the tenant's client certificate.
    expect(verifier.requests.length).toBeGreaterThan(0);
    expect(new Set(verifier.requests.map((r) => r.clientCommonName))).toEqual(new Set([pki.clientCommonName]));

    verifier.setAgent(AGENTS.h1, { operational_state: 7 });
    synth(keylime());
    let out = await failedPlan();
    expect(out).toMatch(wrapped("TrustedCluster secure: the Keylime verifier"));
    expect(out).toMatch(/h1\s+\(untrusted:\s+Keylime:[^)]*7/);
    expect(out).not.toMatch(/h2 \(/);

    // A client certificate of another CA: the verifier refuses the handshake.
    verifier.setAgent(AGENTS.h1, { operational_state: 3 });
    synth(keylime({ cert: pki.otherServerCertPem, key: pki.otherServerKeyPem }));
    out = await failedPlan();
    for (const h of ["h1", "h2"]) expect(out).toMatch(new RegExp(`${h}\\s+\\(unreachable:`));
    // Neither the plan output nor anything Terraform printed holds the key.
    const keyLines = [pki.clientKeyPem, pki.otherServerKeyPem].flatMap((k) =>
      k.split("\n").filter((l) => l !== "" && !l.startsWith("-----")),
    );
    for (const entry of project.transcript) for (const line of keyLines) expect(entry).not.toContain(line);
    for (const entry of project.transcript) expect(entry).not.toContain(PASSWORD);
  });
});
