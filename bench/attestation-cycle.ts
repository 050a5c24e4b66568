// One attestation poll cycle for 1000 hosts against the loopback servers of the tests
// (test/support/attestation: HTTPS with a test PKI, Keylime with mutual TLS), through the client
// the reconciler and the plan-time check use (core/attestation/protocol.cjs):
//   npx ts-node --transpile-only bench/attestation-cycle.ts      (RUNS=5 by default)
// - OpenAttestation: a first stage of 10 hosts, then 990 in 50 requests (49 of 20, one of 10),
//   those concurrently;
// - Keylime: one bulk GET of 1000 agents, and the fallback of one GET per agent (20 at once);
// - cold: a new client (TLS handshakes; Keylime's GET /version); warm: the next cycle of the same
//   client, over its kept-alive connections (what every poll after the first costs).
// The servers run in this process, so their work is in the times too.
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { createAttestationClient, type Verdict } from "../core/attestation/protocol.cjs";
import type { AttestationSettings } from "../core/trust";
import {
  DEFAULT_POLL_URI,
  makeTestPki,
  startKeylimeVerifier,
  startOpenAttestationServer,
  type TestPki,
} from "../test/support/attestation";
import { median, min } from "./api-load";

const RUNS = Number(process.env.RUNS ?? 5);
const HOSTS = 1000;

interface Shape {
  readonly name: string;
  readonly requestsPerCycle: number;
  readonly settings: AttestationSettings;
  readonly clientKeyPem?: string;
}

interface Result {
  coldMs: number;
  warmMs: number;
}

async function cycle(shape: Shape): Promise<Result> {
  const client = createAttestationClient(shape.settings, { clientKeyPem: shape.clientKeyPem });
  const check = (v: readonly Verdict[]): void => {
    const bad = v.filter((x) => x.level !== "trusted");
    if (v.length !== HOSTS || bad.length > 0)
      throw new Error(`${shape.name}: ${bad.length} hosts not trusted, e.g. ${JSON.stringify(bad[0])}`);
  };
  try {
    let t = performance.now();
    check(await client.attest());
    const coldMs = performance.now() - t;
    t = performance.now();
    check(await client.attest());
    return { coldMs, warmMs: performance.now() - t };
  } finally {
    client.close();
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "vmpools-bench-attestation-"));
  const pki: TestPki = makeTestPki(dir);
  const oat = await startOpenAttestationServer({ pki, defaultTrust: "trusted" });
  const keylime = await startKeylimeVerifier({ pki });
  const perAgent = await startKeylimeVerifier({ pki });
  perAgent.setBulkSupported(false);
  const hosts = Array.from({ length: HOSTS }, (_, i) => ({
    name: `h${i + 1}`,
    attestationId: `00000000-0000-4000-8000-${String(i + 1).padStart(12, "0")}`,
  }));
  for (const h of hosts) {
    keylime.setAgent(h.attestationId);
    perAgent.setAgent(h.attestationId);
  }
  const common = {
    cluster: "bench",
    verifyServerCertificate: true,
    caCertificatePem: pki.caPem,
    pollIntervalMs: 500,
    requestTimeoutMs: 5000,
    hosts,
  };
  const keylimeSettings = (url: string): AttestationSettings => ({
    ...common,
    type: "keylime",
    url,
    clientCertificatePem: pki.clientCertPem,
    firstStageSize: 0,
    batchSize: 0,
    maxAttestationAgeSeconds: 60,
  });
  const shapes: Shape[] = [
    {
      name: "OpenAttestation PollHosts (10, then 20 a request)",
      requestsPerCycle: 1 + Math.ceil((HOSTS - 10) / 20),
      settings: {
        ...common,
        type: "openattestation",
        url: `${oat.url}/${DEFAULT_POLL_URI}`,
        firstStageSize: 10,
        batchSize: 20,
        maxAttestationAgeSeconds: 0,
      },
    },
    {
      name: "Keylime bulk GET",
      requestsPerCycle: 1,
      settings: keylimeSettings(keylime.url),
      clientKeyPem: pki.clientKeyPem,
    },
    {
      name: "Keylime one GET per agent (no bulk)",
      requestsPerCycle: HOSTS,
      settings: keylimeSettings(perAgent.url),
      clientKeyPem: pki.clientKeyPem,
    },
  ];
  const results = new Map<string, Result[]>(shapes.map((s) => [s.name, []]));
  try {
    await cycle(shapes[0]!); // warm-up: JIT and the servers' first connections
    // Interleaved, so a drift of the machine's speed hits every shape alike.
    for (let i = 0; i < RUNS; i++) for (const s of shapes) results.get(s.name)!.push(await cycle(s));
  } finally {
    await Promise.all([oat.close(), keylime.close(), perAgent.close()]);
    rmSync(dir, { recursive: true, force: true });
  }
  const mm = (v: number[]) => `${min(v).toFixed(1)} / ${median(v).toFixed(1)}`;
  console.log(
    `machine: ${cpus().length} x ${cpus()[0]?.model ?? "?"}, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}, ${RUNS} runs, min / median`,
  );
  console.log(`| attestation of ${HOSTS} hosts | requests per cycle | cold cycle (ms) | warm cycle (ms) |`);
  console.log("|---|---:|---:|---:|");
  for (const s of shapes) {
    const r = results.get(s.name)!;
    console.log(
      `| ${s.name} | ${s.requestsPerCycle} | ${mm(r.map((x) => x.coldMs))} | ${mm(r.map((x) => x.warmMs))} |`,
    );
  }
}

void main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
