// A pool on a trusted cluster, on fakes (test/support/fake-cluster.ts), with the attestation
// client replaced by a scripted one that answers what a test sets (the real clients against
// loopback OpenAttestation and Keylime servers are tested in test/attestation/, and the whole on
// real libvirt hosts in test/cluster/trusted-hosts.test.ts). Hosts are Non Operational until
// trusted; a host losing trust stops its free members, migrates held ones where the pool allows
// and shuts them down where not; it is Up again only after a fresh trusted verdict.
import type { AttestationClient, Verdict } from "../../core/attestation/protocol.cjs";
import {
  TrustedClusterConfig,
  planPool,
  policyVolumeName,
  type AttestationSettings,
  type VmPoolProps,
} from "../../core";
import { formatStatus } from "../../reconciler/cli";
import { startFakeCluster, fakeUri, type FakeCluster } from "../support/fake-cluster";
import { STORAGE_POOL } from "../support/fake-pool";
import { validProps } from "../support/fixtures";
import { until } from "../support/qemu-pool";

let c: FakeCluster | undefined;
afterEach(async () => {
  await c?.close();
  c = undefined;
});

/** What the scripted service answers per host (default: trusted), and how often it was asked. */
class ScriptedService {
  readonly verdicts = new Map<string, Omit<Verdict, "host">>();
  polls = 0;
  /** While set, a poll never answers (a service that accepts and trickles). */
  hang = false;
  settings?: AttestationSettings;
  set(host: string, level: Verdict["level"], reason = `scripted ${level}`, attestedAt?: string): void {
    this.verdicts.set(host, { level, reason, ...(attestedAt ? { attestedAt } : {}) });
  }
  client = (settings: AttestationSettings): AttestationClient => {
    this.settings = settings;
    return {
      attest: async () => {
        this.polls++;
        while (this.hang) await new Promise((r) => setTimeout(r, 20));
        return settings.hosts.map((h) => ({
          host: h.name,
          ...(this.verdicts.get(h.name) ?? { level: "trusted" as const, reason: "trusted" }),
        }));
      },
      close: () => undefined,
    };
  };
  /** Resolves after `n` more polls. */
  async polled(n = 2): Promise<void> {
    const target = this.polls + n;
    await until(`${n} polls`, () => this.polls >= target, 5000);
  }
}

function trustedCluster(hosts: number): TrustedClusterConfig {
  return new TrustedClusterConfig({
    name: "secure",
    hosts: Array.from({ length: hosts }, (_, i) => ({ name: `h${i + 1}`, uri: fakeUri(`h${i + 1}`) })),
    // Plain HTTP: these tests never reach a server (the scripted client answers).
    attestation: { type: "openattestation", server: "oat.example.com", secureConnection: false },
    pollIntervalSeconds: 0.1,
    requestTimeoutSeconds: 0.4,
  });
}

async function start(props: Partial<VmPoolProps>, service: ScriptedService, hosts = 2): Promise<FakeCluster> {
  return startFakeCluster(
    hosts,
    { cluster: trustedCluster(hosts), ...props },
    { publishPolicy: true, attestation: { createClient: service.client } },
  );
}

/** alice takes `n` members; those on `host`, which the test needs some of. */
async function heldOn(host: string, n: number): Promise<string[]> {
  const vms = [];
  for (let i = 0; i < n; i++) vms.push((await c!.reconciler.take(c!.pool, "alice")).vm);
  await c!.reconciler.idle();
  const on = vms.filter((vm) => c!.member(vm).host === host);
  expect(on.length).toBeGreaterThan(0);
  return on;
}

const hostOf = (cl: FakeCluster, name: string) => cl.reconciler.status().hosts.find((h) => h.name === name)!;

describe("a trusted cluster", () => {
  it("polls its service with the settings of the pool's policy document and keeps untrusted hosts out of service", async () => {
    const service = new ScriptedService();
    service.set("h2", "unknown", "OpenAttestation: trust_lvl unknown");
    c = await start({ size: 6, prestarted: 2, maxVmsPerUser: 6 }, service);

    expect(service.settings).toMatchObject({
      cluster: "secure",
      type: "openattestation",
      url: "http://oat.example.com:8443/AttestationService/resources/PollHosts",
      firstStageSize: 10,
      batchSize: 20,
    });
    expect(hostOf(c, "h1")).toMatchObject({ state: "up", trust: { level: "trusted", service: "openattestation" } });
    expect(hostOf(c, "h2")).toMatchObject({
      state: "non-operational",
      reason: "not trusted (unknown) by OpenAttestation of trusted cluster secure: OpenAttestation: trust_lvl unknown",
      trust: { cluster: "secure", level: "unknown" },
    });
    // Prestarted members and takes only on h1; nothing runs on h2.
    const members = c.reconciler.status().pools[0]!.members;
    expect(members.filter((m) => m.role === "prestarted").map((m) => m.host)).toEqual(["h1", "h1"]);
    for (let i = 0; i < 3; i++) expect(c.member((await c.reconciler.take(c.pool, "alice")).vm).host).toBe("h1");
    await c.reconciler.idle();
    expect(c.reconciler.status().pools[0]!.members.filter((m) => m.host === "h2" && m.state === "running")).toEqual([]);
    // Plain HTTP is warned about.
    expect(c.warnings).toEqual([
      "trusted cluster secure: verdicts come over plain HTTP from http://oat.example.com:8443/AttestationService/resources/PollHosts, unauthenticated",
    ]);
    // The CLI's status names the trust of each host.
    const text = formatStatus(c.reconciler.status());
    expect(text).toMatch(/host h1: up, trusted \(openattestation, checked \d{4}-\d\d-\d\dT[^)]+\)/);
    expect(text).toContain("host h2: non-operational (not trusted (unknown) by OpenAttestation");
  });

  it("on a host turning untrusted: free members stop, held members live-migrate to a trusted host", async () => {
    const service = new ScriptedService();
    c = await start(
      { size: 12, prestarted: 2, maxVmsPerUser: 8, host: { migration: { mode: "manual-and-automatic" } } },
      service,
    );
    const takes = [];
    for (let i = 0; i < 4; i++) takes.push(await c.reconciler.take(c.pool, `u${i}`));
    await c.reconciler.idle();
    const heldOnH1 = takes.filter((t) => c!.member(t.vm).host === "h1").map((t) => t.vm);
    expect(heldOnH1.length).toBeGreaterThan(0);
    service.set("h1", "untrusted", "OpenAttestation: trust_lvl untrusted");
    await until("h1 non-operational", () => hostOf(c!, "h1").state === "non-operational", 2000);
    await c.reconciler.idle();
    for (const vm of heldOnH1) {
      expect(c.whereIs(vm)).toBe("h2");
      expect(c.member(vm)).toMatchObject({ host: "h2", state: "running", role: "held" });
    }
    const members = c.reconciler.status().pools[0]!.members;
    expect(members.filter((m) => m.host === "h1" && m.state === "running")).toEqual([]);
    const freeOnH2 = members.filter((m) => m.host === "h2" && m.role !== "held").length;
    expect(freeOnH2).toBeGreaterThanOrEqual(2);
    expect(members.filter((m) => m.role === "prestarted").map((m) => m.host)).toEqual(["h2", "h2"]);
  });

  it('shuts held members down where the pool forbids migration (mode "none"), says why, and takes them back', async () => {
    const service = new ScriptedService();
    c = await start({ size: 4, maxVmsPerUser: 4, host: { migration: { mode: "none" } } }, service);
    const onH1 = await heldOn("h1", 4);
    service.set("h1", "untrusted", "OpenAttestation: trust_lvl untrusted");
    await until("members on h1 down", () => onH1.every((vm) => c!.member(vm).state === "shut off"), 5000);
    await c.reconciler.idle();
    for (const vm of onH1) {
      // An automatic pool takes back a VM that went down (as after the user's shutdown).
      expect(c.member(vm)).toMatchObject({ host: "h1", state: "shut off", role: "free" });
      expect(c.member(vm).problem).toMatch(
        /^shut down on h1, not migrated, .*migration mode is "none".*: host h1 is not trusted \(untrusted\) by OpenAttestation/,
      );
      expect(c.activities).toContainEqual(expect.objectContaining({ kind: "untrusted-stopped", vm, user: "alice" }));
    }
    expect(c.hosts.get("h1")!.migrations).toEqual([]);
    // Nothing of h1 is handed out meanwhile.
    for (const vm of onH1) expect(c.reconciler.status().users.alice?.map((h) => h.vm) ?? []).not.toContain(vm);
  });

  it("keeps held members running where their host's trust is only unconfirmed (unknown) and nothing can move", async () => {
    const service = new ScriptedService();
    c = await start({ size: 4, maxVmsPerUser: 4, host: { migration: { mode: "none" } } }, service);
    const onH1 = await heldOn("h1", 4);
    service.set("h1", "unreachable", "no answer within 5 s");
    await until("h1 non-operational", () => hostOf(c!, "h1").state === "non-operational", 2000);
    await c.reconciler.idle();
    for (const vm of onH1) {
      expect(c.member(vm)).toMatchObject({ state: "running", role: "held" });
      expect(c.member(vm).problem).toMatch(/^stays on h1, not migrated, .*: host h1 is not trusted \(unreachable\)/);
    }
    // Found untrusted later: shut down now.
    service.set("h1", "untrusted", "OpenAttestation: trust_lvl untrusted");
    await until("members on h1 down", () => onH1.every((vm) => c!.member(vm).state === "shut off"), 5000);
  });

  it("hands out nothing when the host loses trust while a take starts its member; the member does not stay up there", async () => {
    const service = new ScriptedService();
    c = await start(
      { size: 2, maxVmsPerUser: 2, host: { startRunningOn: { hosts: ["h1"] }, migration: { mode: "none" } } },
      service,
    );
    const gate = c.hosts.get("h1")!.pauseNext("start");
    const take = c.reconciler.take(c.pool, "alice").catch((e: unknown) => e);
    await gate.reached;
    service.set("h1", "untrusted", "OpenAttestation: trust_lvl untrusted");
    await until("h1 non-operational", () => hostOf(c!, "h1").state === "non-operational", 2000);
    gate.release();
    expect(await take).toBeInstanceOf(Error);
    expect(String(await take)).toMatch(/its host h1 went non-operational while it started/);
    await c.reconciler.idle();
    expect(c.reconciler.status().users.alice ?? []).toEqual([]);
    await until(
      "nothing up on h1",
      () => c!.reconciler.status().pools[0]!.members.every((m) => m.state === "shut off"),
      5000,
    );
  });

  it("shuts a held member down when its migration off an untrusted host fails", async () => {
    const service = new ScriptedService();
    c = await start({ size: 8, maxVmsPerUser: 8, host: { migration: { mode: "manual-and-automatic" } } }, service);
    const onH1 = await heldOn("h1", 4);
    c.hosts.get("h1")!.failNext("migrate", { times: Infinity });
    service.set("h1", "untrusted", "OpenAttestation: trust_lvl untrusted");
    await until("members on h1 down", () => onH1.every((vm) => c!.member(vm).state === "shut off"), 5000);
    for (const vm of onH1)
      expect(c.member(vm).problem).toMatch(/^shut down on h1, its migration to h2 failed \(.*injected failure/);
  });

  it("keeps hosts out of service when one host's copy of the policy document has no attestation settings", async () => {
    const service = new ScriptedService();
    c = await start({ size: 4, prestarted: 2 }, service);
    // h2's copy as if from a deploy without the trusted cluster: the members still say trusted.
    const plain = planPool(
      validProps({
        name: "Cl-???",
        size: 4,
        prestarted: 2,
        cluster: {
          name: "secure",
          hosts: [
            { name: "h1", uri: fakeUri("h1") },
            { name: "h2", uri: fakeUri("h2") },
          ],
        },
      }),
    );
    c.hosts.get("h2")!.uploadVolume(STORAGE_POOL, policyVolumeName(c.pool, "h2"), plain.policy.xml);
    c.hosts.get("h1")!.uploadVolume(STORAGE_POOL, policyVolumeName(c.pool, "h1"), plain.policy.xml);
    await c.reconciler.resync();
    await c.reconciler.idle();
    for (const h of ["h1", "h2"]) {
      expect(hostOf(c, h).state).toBe("non-operational");
      expect(hostOf(c, h).reason).toMatch(/attestation settings are unknown/);
    }
    expect(c.reconciler.status().pools[0]!.members.filter((m) => m.state === "running")).toEqual([]);
  });

  it("keeps a host with members of the trusted pool out of service when the cluster does not list it (named otherwise)", async () => {
    const service = new ScriptedService();
    // The cluster lists h1 only; the pool's members are on h1 and h2 (as after a shrink, or
    // when serve names a host otherwise than the cluster does).
    const shrunk = new TrustedClusterConfig({
      name: "secure",
      hosts: [{ name: "h1", uri: fakeUri("h1") }],
      attestation: { type: "openattestation", server: "oat.example.com", secureConnection: false },
      pollIntervalSeconds: 0.1,
    });
    c = await start({ size: 4, prestarted: 2 }, service);
    const plan = planPool(validProps({ name: "Cl-???", size: 4, prestarted: 2, cluster: shrunk }));
    for (const h of ["h1", "h2"])
      c.hosts.get(h)!.uploadVolume(STORAGE_POOL, policyVolumeName(c.pool, h), plan.policy.xml);
    await c.reconciler.resync();
    await c.reconciler.idle();
    expect(hostOf(c, "h1").state).toBe("up");
    expect(hostOf(c, "h2")).toMatchObject({ state: "non-operational" });
    expect(hostOf(c, "h2").reason).toMatch(
      /it has members of trusted pool Cl-\?\?\?, but trusted cluster secure does not list it \(it lists h1\)/,
    );
    const running = c.reconciler.status().pools[0]!.members.filter((m) => m.state === "running");
    expect(running.map((m) => m.host)).toEqual(["h1", "h1"]);
  });

  it("takes a host out of service when its service stops answering mid-poll (no verdict for twice interval + time limit)", async () => {
    const service = new ScriptedService();
    c = await start({ size: 2 }, service);
    expect(hostOf(c, "h1").state).toBe("up");
    service.hang = true;
    await until("h1 non-operational", () => hostOf(c!, "h1").state === "non-operational", 3000);
    expect(hostOf(c, "h1").reason).toMatch(
      /\(unreachable\) .*no verdict for 1 s: the service has not finished answering this poll/,
    );
    service.hang = false;
    await until("h1 up", () => hostOf(c!, "h1").state === "up", 3000);
  });

  it("warns about a client key for a cluster no pool names", async () => {
    const service = new ScriptedService();
    c = await startFakeCluster(
      2,
      { cluster: trustedCluster(2), size: 2 },
      { publishPolicy: true, attestation: { createClient: service.client, clientKeys: new Map([["Secure", "k"]]) } },
    );
    expect(c.warnings).toContain(
      "--attestation-key Secure: no trusted cluster of the pools is named so (they name secure)",
    );
  });

  it("is Up again only after a fresh trusted verdict", async () => {
    const service = new ScriptedService();
    c = await start({ size: 2 }, service);
    const lostAt = Date.now();
    service.set("h1", "untrusted");
    await until("h1 non-operational", () => hostOf(c!, "h1").state === "non-operational", 2000);
    // A PASS the service dates before the loss of trust does not bring the host back.
    service.set("h1", "trusted", "trusted", new Date(lostAt - 60_000).toISOString());
    await service.polled(3);
    expect(hostOf(c, "h1")).toMatchObject({ state: "non-operational" });
    expect(hostOf(c, "h1").reason).toMatch(/waiting for a fresh trusted verdict/);
    service.set("h1", "trusted", "trusted", new Date(Date.now() + 1000).toISOString());
    await until("h1 up", () => hostOf(c!, "h1").state === "up", 2000);
    expect(hostOf(c, "h1").trust).toMatchObject({ level: "trusted", reason: "trusted" });
  });

  it("without the pool's policy document (no attestation settings), keeps the trusted pool's hosts out of service", async () => {
    const service = new ScriptedService();
    c = await startFakeCluster(
      2,
      { cluster: trustedCluster(2), size: 4, prestarted: 2 },
      { attestation: { createClient: service.client } },
    );
    expect(service.polls).toBe(0);
    for (const h of ["h1", "h2"]) {
      expect(hostOf(c, h)).toMatchObject({ state: "non-operational", trust: { cluster: "secure", level: "unknown" } });
      expect(hostOf(c, h).reason).toBe(
        "not trusted (unknown) by the attestation service of trusted cluster secure: its attestation settings are unknown (no policy document of its pools that carries them has been read)",
      );
    }
    expect(c.reconciler.status().pools[0]!.members.filter((m) => m.state === "running")).toEqual([]);
    await expect(c.reconciler.take(c.pool, "alice")).rejects.toThrow();
  });
});
