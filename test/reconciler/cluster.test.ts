// One reconciler for a cluster of hosts, on fakes (test/support/fake-cluster.ts): placement of
// takes and prestarts, a host that stops answering and comes back, maintenance with live
// migration as the pool allows, an admin's migration, and members going home afterwards.
// test/cluster/ runs the same on real libvirt hosts.
import { MigrationRefusedError, HostUnavailableError, UnknownHostError } from "../../reconciler/errors";
import { randomUUID } from "node:crypto";
import { LEASE_DOMAIN, LEASE_NAMESPACE } from "../../reconciler/lease";
import { startFakeCluster, fakeUri, type FakeCluster } from "../support/fake-cluster";
import { until } from "../support/qemu-pool";

let c: FakeCluster | undefined;
afterEach(async () => {
  await c?.close();
  c = undefined;
});

const byHost = (cl: FakeCluster) => {
  const out: Record<string, string[]> = {};
  for (const m of cl.reconciler.status().pools[0]!.members) (out[m.host] ??= []).push(m.name);
  return out;
};
const running = (cl: FakeCluster) =>
  cl.reconciler
    .status()
    .pools[0]!.members.filter((m) => m.state === "running")
    .map((m) => m.host)
    .sort();

describe("a pool on three hosts", () => {
  it("sees every member on its host and spreads the prestarted ones over the hosts", async () => {
    c = await startFakeCluster(3, { size: 9, prestarted: 3 });
    const hosts = byHost(c);
    expect(Object.keys(hosts).sort()).toEqual(["h1", "h2", "h3"]);
    for (const m of c.plan.members) expect(c.member(m.name).host).toBe(m.host.name);
    expect(running(c)).toEqual(["h1", "h2", "h3"]);
    expect(c.reconciler.status().hosts.map((h) => [h.name, h.state])).toEqual([
      ["h1", "up"],
      ["h2", "up"],
      ["h3", "up"],
    ]);
  });

  it("takes a prestarted member first, then a stopped one on the host with the most free memory", async () => {
    c = await startFakeCluster(3, { size: 9, maxVmsPerUser: 5 }, { freeMemoryMiB: { h1: 1000, h2: 9000, h3: 4000 } });
    await c.reconciler.resync(); // reads the hosts' free memory
    const cold = await c.reconciler.take(c.pool, "alice");
    expect(cold.started).toBe(true);
    expect(c.member(cold.vm).host).toBe("h2");
    // With h2 short of memory now, the next cold start goes to h3.
    c.hosts.get("h2")!.setFreeMemoryMiB(10);
    await c.reconciler.resync();
    expect(c.member((await c.reconciler.take(c.pool, "alice")).vm).host).toBe("h3");
  });

  it("honours startRunningOn: members live and prestart only on the named hosts", async () => {
    c = await startFakeCluster(3, { size: 6, prestarted: 2, host: { startRunningOn: { hosts: ["h2", "h3"] } } });
    expect(Object.keys(byHost(c)).sort()).toEqual(["h2", "h3"]);
    expect(running(c)).toEqual(["h2", "h3"]);
  });
});

describe("a host that stops answering", () => {
  it("hands out nothing of it, replaces its prestarted members elsewhere, and keeps its held ones held", async () => {
    c = await startFakeCluster(2, { size: 6, prestarted: 2, maxVmsPerUser: 3 });
    const onH1 = byHost(c).h1!;
    const taken = await c.reconciler.take(c.pool, "alice");
    await c.reconciler.idle();
    const h1 = c.hosts.get("h1")!;
    h1.setLibvirtdDown(true);
    h1.events.disconnect("virsh event exited (code 1)");
    await c.reconciler.resync();
    await c.reconciler.idle();
    const h1View = c.reconciler.status().hosts.find((h) => h.name === "h1")!;
    expect(h1View.state).toBe("unreachable");
    expect(h1View.reason).toMatch(/.+/);
    // Its members are still known (not forgotten), none is handed out; both prestarted run on h2 now.
    expect(byHost(c).h1).toEqual(onH1);
    const h2Running = c.reconciler
      .status()
      .pools[0]!.members.filter((m) => m.host === "h2" && m.state === "running" && m.role === "prestarted");
    expect(h2Running).toHaveLength(2);
    const takes = [await c.reconciler.take(c.pool, "bob"), await c.reconciler.take(c.pool, "bob")];
    for (const t of takes) expect(c.member(t.vm).host).toBe("h2");
    expect(c.store.holder(c.pool, taken.vm)?.user).toBe("alice");
    // A return of a member on the unreachable host is refused with the host named.
    if (c.member(taken.vm).host === "h1") {
      await expect(c.reconciler.return(c.pool, taken.vm, { user: "alice" })).rejects.toBeInstanceOf(
        HostUnavailableError,
      );
    }
  });

  it("is taken back when it answers again: surplus prestarts stopped, no member held twice", async () => {
    c = await startFakeCluster(2, { size: 6, prestarted: 2, maxVmsPerUser: 6 });
    const h1 = c.hosts.get("h1")!;
    h1.setLibvirtdDown(true);
    h1.events.disconnect();
    await c.reconciler.resync();
    await c.reconciler.idle();
    for (const u of ["a", "b"]) await c.reconciler.take(c.pool, u);
    await c.reconciler.idle();
    h1.setLibvirtdDown(false);
    h1.events.reconnect();
    await c.reconciler.resync();
    await c.reconciler.idle();
    expect(c.reconciler.status().hosts.find((h) => h.name === "h1")!.state).toBe("up");
    const status = c.reconciler.status().pools[0]!;
    expect(status.counts.prestarted).toBe(2);
    const holders = c.store.assignments(c.pool).map((a) => a.vm);
    expect(new Set(holders).size).toBe(holders.length);
    expect(c.failures.filter((f) => !/^host |lease/.test(f.context))).toEqual([]);
  });
});

describe("a host whose lease another reconciler takes", () => {
  it("is non-operational: nothing of it is handed out, started or returned, and the holder is named", async () => {
    c = await startFakeCluster(2, { size: 6, prestarted: 2, maxVmsPerUser: 6 }, { leaseTtlMs: 300 });
    const h2 = c.hosts.get("h2")!;
    const heldOnH2 = (await Promise.all([1, 2, 3, 4].map(() => c!.reconciler.take(c!.pool, "alice")))).find(
      (t) => c!.member(t.vm).host === "h2",
    );
    await c.reconciler.idle();
    // Another reconciler's placeholder replaces ours on h2 (as after our lease ran out there).
    await h2.undefineDomain(LEASE_DOMAIN);
    await h2.defineDomain(
      `<domain type='test'><name>${LEASE_DOMAIN}</name><uuid>${randomUUID()}</uuid><memory>1024</memory>` +
        `<os><type>hvm</type></os><metadata><l:lease xmlns:l='${LEASE_NAMESPACE}' id='other' ` +
        `host='elsewhere.example' pid='1' renewedAt='${Date.now()}' ttlMs='600000'/></metadata></domain>`,
    );
    await until(
      "h2 non-operational",
      () => c!.reconciler.status().hosts.find((h) => h.name === "h2")!.state === "non-operational",
    );
    await c.reconciler.resync(); // tries to take it back: held by the other one
    await c.reconciler.idle();
    const view = c.reconciler.status().hosts.find((h) => h.name === "h2")!;
    expect(view).toMatchObject({
      state: "non-operational",
      reason: expect.stringMatching(/pid 1 on elsewhere\.example/),
    });
    const startsBefore = h2.calls("start");
    for (let i = 0; i < 2; i++) {
      // Refused (nothing free on h1) or handed out from h1, never from h2.
      const t = await c.reconciler.take(c.pool, "bob").catch(() => undefined);
      if (t) expect(c.member(t.vm).host).toBe("h1");
    }
    await c.reconciler.idle();
    expect(h2.calls("start")).toBe(startsBefore);
    if (heldOnH2) {
      await expect(c.reconciler.return(c.pool, heldOnH2.vm, { user: "alice" })).rejects.toBeInstanceOf(
        HostUnavailableError,
      );
    }
  });
});

describe("maintenance", () => {
  it("stops free members there, starts nothing there, and live-migrates held members where the pool allows", async () => {
    c = await startFakeCluster(2, {
      size: 12,
      prestarted: 2,
      maxVmsPerUser: 6,
      host: { migration: { mode: "manual-and-automatic", policy: "legacy", customDowntimeMs: 200 } },
    });
    const takes = [];
    for (let i = 0; i < 3; i++) takes.push(await c.reconciler.take(c.pool, `u${i}`));
    await c.reconciler.idle();
    const heldOnH1 = takes.filter((t) => c!.member(t.vm).host === "h1").map((t) => t.vm);
    expect(heldOnH1.length).toBeGreaterThan(0);
    const view = await c.reconciler.setMaintenance("h1", true);
    expect(view.state).toBe("maintenance");
    await c.reconciler.idle();
    for (const vm of heldOnH1) {
      expect(c.whereIs(vm)).toBe("h2");
      expect(c.member(vm)).toMatchObject({ host: "h2", state: "running", role: "held" });
    }
    const h1Migrations = c.hosts.get("h1")!.migrations;
    expect(h1Migrations.map((m) => m.destinationUri)).toEqual(heldOnH1.map(() => fakeUri("h2")));
    expect(h1Migrations[0]!.options).toMatchObject({ live: true, maxDowntimeMs: 200 });
    // Nothing runs on h1 any more; the prestarted members are on h2, as many as its free members allow.
    const members = c.reconciler.status().pools[0]!.members;
    expect(members.filter((m) => m.host === "h1" && m.state === "running")).toEqual([]);
    const freeOnH2 = members.filter((m) => m.host === "h2" && m.role !== "held").length;
    expect(freeOnH2).toBeGreaterThanOrEqual(2);
    expect(members.filter((m) => m.role === "prestarted").map((m) => m.host)).toEqual(["h2", "h2"]);
    // Kept across a restart.
    await c.restart();
    expect(c.reconciler.status().hosts.find((h) => h.name === "h1")!.state).toBe("maintenance");
  });

  it('leaves held members of a pool with migration mode "none" where they are, and says why', async () => {
    c = await startFakeCluster(2, { size: 4, maxVmsPerUser: 4, host: { migration: { mode: "none" } } });
    const takes = [];
    for (let i = 0; i < 4; i++) takes.push(await c.reconciler.take(c.pool, "alice"));
    await c.reconciler.idle();
    await c.reconciler.setMaintenance("h1", true);
    await c.reconciler.idle();
    const stayed = takes.filter((t) => c!.member(t.vm).host === "h1");
    expect(stayed.length).toBeGreaterThan(0);
    for (const t of stayed) {
      expect(c.member(t.vm)).toMatchObject({ state: "running", role: "held" });
      expect(c.member(t.vm).problem).toMatch(/stays on h1 in maintenance: not migrated, .*migration mode is "none"/);
    }
    expect(c.hosts.get("h1")!.migrations).toEqual([]);
  });

  it('does not migrate automatically in mode "manual-only", but an admin may', async () => {
    c = await startFakeCluster(2, { size: 4, maxVmsPerUser: 4, host: { migration: { mode: "manual-only" } } });
    const takes = [];
    for (let i = 0; i < 4; i++) takes.push(await c.reconciler.take(c.pool, "alice"));
    await c.reconciler.idle();
    const vm = takes.find((t) => c!.member(t.vm).host === "h1")!.vm;
    await c.reconciler.setMaintenance("h1", true);
    await c.reconciler.idle();
    expect(c.member(vm).host).toBe("h1");
    expect(c.member(vm).problem).toMatch(/manual-only/);
    await c.reconciler.setMaintenance("h1", false);
    await expect(c.reconciler.migrate(c.pool, vm, "h2")).resolves.toEqual({ pool: c.pool, vm, from: "h1", to: "h2" });
    expect(c.whereIs(vm)).toBe("h2");
  });

  it("moves a migrated member home once it is returned and home is up again", async () => {
    c = await startFakeCluster(2, { size: 4, maxVmsPerUser: 4 });
    const takes = [];
    for (let i = 0; i < 4; i++) takes.push(await c.reconciler.take(c.pool, "alice"));
    await c.reconciler.idle();
    const vm = takes.find((t) => c!.member(t.vm).host === "h1")!.vm;
    await c.reconciler.setMaintenance("h1", true);
    await c.reconciler.idle();
    expect(c.whereIs(vm)).toBe("h2");
    await c.reconciler.setMaintenance("h1", false);
    await c.reconciler.return(c.pool, vm, { user: "alice" });
    await c.reconciler.idle();
    expect(c.whereIs(vm)).toBe("h1");
    expect(c.member(vm)).toMatchObject({ host: "h1", state: "shut off", role: "free" });
    expect(c.activities.filter((a) => a.kind === "moved-home")).toEqual([
      { kind: "moved-home", pool: c.pool, vm, from: "h2", to: "h1" },
    ]);
  });
});

describe("an admin's migration", () => {
  it("goes to the named host, or to the one with the most headroom, and refuses what the pool does not allow", async () => {
    c = await startFakeCluster(3, { size: 6, maxVmsPerUser: 6 }, { freeMemoryMiB: { h1: 100, h2: 200, h3: 9000 } });
    await c.reconciler.resync();
    const t = await c.reconciler.take(c.pool, "alice");
    const from = c.member(t.vm).host;
    const moved = await c.reconciler.migrate(c.pool, t.vm);
    expect(moved.from).toBe(from);
    expect(moved.to).toBe(from === "h3" ? "h2" : "h3");
    await expect(c.reconciler.migrate(c.pool, t.vm, "h9")).rejects.toBeInstanceOf(UnknownHostError);
    await expect(c.reconciler.migrate(c.pool, t.vm, moved.to)).rejects.toThrow(/on h\d already/);
    const down = c.reconciler.status().pools[0]!.members.find((m) => m.state === "shut off")!;
    const other = down.host === "h1" ? "h2" : "h1";
    await expect(c.reconciler.migrate(c.pool, down.name, other)).rejects.toThrow(
      /shut off; only running members migrate/,
    );
  });

  it("never migrates a guest with the host CPU passed through", async () => {
    c = await startFakeCluster(2, {
      size: 2,
      maxVmsPerUser: 2,
      host: { migration: { mode: "none" }, passThroughHostCpu: true },
    });
    const t = await c.reconciler.take(c.pool, "alice");
    const error = await c.reconciler.migrate(c.pool, t.vm).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MigrationRefusedError);
    expect((error as Error).message).toMatch(/migration mode is "none"/);
  });
});
