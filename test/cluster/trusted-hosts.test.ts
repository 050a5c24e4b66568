// A trusted cluster of two real libvirt hosts (test/support/cluster-hosts.ts) attested by a
// protocol-faithful OpenAttestation PollHosts server on loopback over HTTPS (a stand-in: the real
// server is Java from 2015 and needs Intel TXT hosts; test/support/attestation/), with real tiny
// guests. The reconciler talks to it with the real client and the test CA. A host turning
// untrusted while it runs held members: it is Non Operational at once, the held member of a
// migratable pool live-migrates to the trusted host and its guest runs on, the held member of a
// pool that never migrates is shut down and reported; nothing runs there until a fresh trusted
// verdict. A service that fails (HTTP 500) takes every host out of service (never trusts it) but
// shuts nothing down: an unconfirmed trust is not a failed attestation.
import * as fs from "node:fs";
import * as path from "node:path";
import { TrustedClusterConfig } from "../../core";
import type { PoolPlan } from "../../core/plan";
import type { Reconciler } from "../../reconciler/reconciler";
import { ensureGuest } from "../guest/guest";
import { makeTestPki, startOpenAttestationServer, type OpenAttestationServer } from "../support/attestation";
import { openClusterHarness, type ClusterHarness } from "../support/cluster-harness";
import { startTestCluster, type TestCluster } from "../support/cluster-hosts";
import { until } from "../support/qemu-pool";

let cluster: TestCluster;
let harness: ClusterHarness;
let oat: OpenAttestationServer;
let reconciler: Reconciler;
let work: string;
let mig: PoolPlan;

const beats = (vm: string) => harness.beats(vm);
const hostStatus = (name: string) => reconciler.status().hosts.find((h) => h.name === name)!;
const member = (pool: string, vm: string) =>
  reconciler
    .status()
    .pools.find((p) => p.name === pool)!
    .members.find((m) => m.name === vm)!;
const runningOn = (host: string) =>
  cluster
    .host(host)
    .virsh("list", "--name")
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);

beforeAll(async () => {
  ensureGuest();
  cluster = await startTestCluster({ hosts: 2, name: "trust" });
  harness = openClusterHarness(cluster);
  work = fs.mkdtempSync("/tmp/vmpools-trusted-");
  const pki = makeTestPki(path.join(work, "pki"));
  oat = await startOpenAttestationServer({ pki, defaultTrust: "trusted" });
  const trusted = new TrustedClusterConfig({
    name: "secure",
    hosts: cluster.hosts.map((h) => ({ name: h.name, uri: h.uri })),
    attestation: {
      type: "openattestation",
      server: "127.0.0.1",
      port: oat.port,
      caCertificatePem: pki.caPem,
    },
    pollIntervalSeconds: 0.2,
    requestTimeoutSeconds: 2,
  });
  // Migratable, on both hosts; nothing prestarted (takes start members).
  mig = await harness.deploy(
    harness.props("TMig-??", {
      size: 4,
      maxVmsPerUser: 4,
      cluster: trusted,
      host: { migration: { mode: "manual-and-automatic", policy: "minimal-downtime" } },
    }),
    { publish: true },
  );
  // Never migrates; one member, on h1.
  await harness.deploy(
    harness.props("TFix-??", {
      size: 1,
      cluster: trusted,
      host: { startRunningOn: { hosts: ["h1"] }, migration: { mode: "none" } },
    }),
    { publish: true },
  );
  reconciler = await harness.start({ shutdownTimeoutMs: 3000 });
}, 180_000);

afterAll(async () => {
  await harness?.close();
  await oat?.close();
  await cluster?.close();
  if (work) fs.rmSync(work, { recursive: true, force: true });
}, 120_000);

test("both hosts are attested over HTTPS and up; the service is asked for them by their names", async () => {
  for (const h of ["h1", "h2"]) {
    expect(hostStatus(h)).toMatchObject({
      state: "up",
      trust: { cluster: "secure", service: "openattestation", level: "trusted" },
    });
  }
  expect(oat.requests.length).toBeGreaterThan(0);
  expect(new Set(oat.requests.flatMap((r) => r.hosts))).toEqual(new Set(["h1", "h2"]));
  expect(mig.members.some((m) => m.host.name === "h1")).toBe(true);
});

test("a host turning untrusted: non-operational, its migratable held member live-migrates and runs on, the other is shut down", async () => {
  // alice holds a member of the migratable pool on h1 (takes start members where there is the most headroom).
  let onH1: string | undefined;
  for (let i = 0; i < 4 && !onH1; i++) {
    const t = await reconciler.take("TMig-??", "alice");
    if (member("TMig-??", t.vm).host === "h1") onH1 = t.vm;
  }
  expect(onH1).toBeDefined();
  const fixed = (await reconciler.take("TFix-??", "bob")).vm;
  await reconciler.idle();
  await until(`${onH1} runs its guest`, () => beats(onH1!).length > 3, 60_000);
  await until(`${fixed} runs its guest`, () => beats(fixed).length > 0, 60_000);
  const before = beats(onH1!);

  const flipped = Date.now();
  oat.setTrust("h1", "untrusted");
  await until("h1 non-operational", () => hostStatus("h1").state === "non-operational", 5000);
  console.log(`h1 non-operational ${Date.now() - flipped} ms after the server turned it untrusted`);
  expect(hostStatus("h1")).toMatchObject({
    reason: expect.stringMatching(/^not trusted \(untrusted\) by OpenAttestation of trusted cluster secure: /),
    trust: { level: "untrusted" },
  });
  expect(hostStatus("h2").state).toBe("up");

  await until(`${onH1} migrated to h2`, () => member("TMig-??", onH1!).host === "h2", 60_000);
  await until(`${fixed} shut down`, () => member("TFix-??", fixed).state === "shut off", 30_000);
  await reconciler.idle();
  // The migrated guest noticed nothing but a pause: one boot, its counter goes on one by one.
  await until("heartbeats from h2", () => beats(onH1!).length > before.length + 5, 30_000);
  const after = beats(onH1!);
  expect(after).toEqual(after.map((_, i) => i + 1));
  expect(harness.boots(onH1!)).toBe(1);
  expect(member("TMig-??", onH1!)).toMatchObject({
    host: "h2",
    state: "running",
    role: "held",
    holder: { user: "alice" },
  });
  // The member that may not migrate was shut down, taken back (an automatic pool) and says why.
  expect(member("TFix-??", fixed).problem).toMatch(
    /^shut down on h1, not migrated, .*"none".*: host h1 is not trusted \(untrusted\) by OpenAttestation/,
  );
  expect(harness.activities).toContainEqual(
    expect.objectContaining({ kind: "untrusted-stopped", vm: fixed, user: "bob" }),
  );
  expect(harness.store.assignments("TFix-??")).toEqual([]);
  // Nothing runs on h1, and nothing of it is handed out.
  expect(runningOn("h1")).toEqual([]);
  await expect(reconciler.take("TFix-??", "carol")).rejects.toThrow();
}, 240_000);

test("the host is up again only after a trusted verdict; a failing service (HTTP 500) takes every host out of service but stops no held VM", async () => {
  oat.setTrust("h1", "trusted");
  await until("h1 up", () => hostStatus("h1").state === "up", 5000);
  expect(hostStatus("h1").trust).toMatchObject({ level: "trusted", reason: "trusted" });
  expect(member("TFix-??", "TFix-01").problem).toBeUndefined();
  const t = await reconciler.take("TFix-??", "carol");
  expect(t.vm).toBe("TFix-01");
  await reconciler.idle();

  oat.setFault({ kind: "5xx", status: 500 });
  await until(
    "both hosts non-operational",
    () => ["h1", "h2"].every((h) => hostStatus(h).state === "non-operational"),
    5000,
  );
  for (const h of ["h1", "h2"]) {
    expect(hostStatus(h).trust!.level).toBe("unreachable");
    expect(hostStatus(h).reason).toMatch(/500/);
  }
  await reconciler.idle();
  // Held members keep running where they are (there is no trusted host to go to), reported.
  expect(member("TFix-??", t.vm)).toMatchObject({ state: "running", role: "held", holder: { user: "carol" } });
  expect(member("TFix-??", t.vm).problem).toMatch(
    /^stays on h1, not migrated, .*"none": host h1 is not trusted \(unreachable\) by OpenAttestation .*HTTP 500/,
  );
  const alices = harness.store.assignments("TMig-??").map((a) => a.vm);
  expect(alices.length).toBeGreaterThan(0);
  for (const vm of alices) expect(member("TMig-??", vm)).toMatchObject({ state: "running", role: "held" });
  await expect(reconciler.take("TMig-??", "dave")).rejects.toThrow();
  oat.setFault(undefined);
  await until("both hosts up", () => ["h1", "h2"].every((h) => hostStatus(h).state === "up"), 5000);
  expect(member("TFix-??", t.vm).problem).toBeUndefined();
  expect(harness.failures.filter((f) => f.context === "attestation")).toEqual([]);
}, 180_000);
