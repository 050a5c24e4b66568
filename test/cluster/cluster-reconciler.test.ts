// One reconciler for three real libvirt hosts (test/support/cluster-hosts.ts: separate libvirtd
// instances in network namespaces, reached over qemu+tcp, one shared storage pool) with real
// tiny guests: placement by startRunningOn, takes and prestarts across hosts, a host whose
// libvirtd is stopped and brought back, maintenance live-migrating a held member whose guest
// keeps running, and the migrations the pool's settings or the guest's CPU forbid.
// test/reconciler/cluster.test.ts covers the same rules, and more cases, on fakes.
import { MigrationRefusedError } from "../../reconciler/errors";
import type { PoolPlan } from "../../core/plan";
import type { Reconciler } from "../../reconciler/reconciler";
import { ensureGuest } from "../guest/guest";
import { openClusterHarness, type ClusterHarness } from "../support/cluster-harness";
import { startTestCluster, type TestCluster } from "../support/cluster-hosts";
import { until } from "../support/qemu-pool";

let cluster: TestCluster;
let harness: ClusterHarness;
let reconciler: Reconciler;
const plans: PoolPlan[] = [];

const beats = (vm: string) => harness.beats(vm);
const boots = (vm: string) => harness.boots(vm);
const member = (pool: string, vm: string) =>
  reconciler
    .status()
    .pools.find((p) => p.name === pool)!
    .members.find((m) => m.name === vm)!;
const members = (pool: string) => reconciler.status().pools.find((p) => p.name === pool)!.members;
const hostOf = (vm: string) =>
  cluster.hosts.find((h) => h.virsh("list", "--all", "--name").split("\n").includes(vm))?.name;

beforeAll(async () => {
  ensureGuest();
  cluster = await startTestCluster({ hosts: 3, name: "rec" });
  harness = openClusterHarness(cluster);
  const hosts = cluster.hosts.map((h) => ({ name: h.name, uri: h.uri, migrateUri: h.migrateUri }));
  const clusterProp = { name: "rec", hosts };
  // Migratable, on h1 and h2 only; two prestarted.
  plans.push(
    await harness.deploy(
      harness.props("Mig-??", {
        size: 6, // three on each host
        prestarted: 2,
        maxVmsPerUser: 4,
        cluster: clusterProp,
        host: {
          startRunningOn: { hosts: ["h1", "h2"] },
          migration: { mode: "manual-and-automatic", policy: "minimal-downtime", customDowntimeMs: 500 },
        },
      }),
    ),
  );
  // Never migrates; one member, on h3 alone.
  plans.push(
    await harness.deploy(
      harness.props("Fix-??", {
        size: 1,
        cluster: clusterProp,
        host: { startRunningOn: { hosts: ["h3"] }, migration: { mode: "none" } },
      }),
    ),
  );
  reconciler = await harness.start();
}, 120_000);

afterAll(async () => {
  await harness?.close();
  await cluster?.close();
}, 120_000);

test("members are where the plan put them (startRunningOn) and the prestarted ones spread over h1 and h2", async () => {
  for (const vm of plans[0]!.members) {
    expect(["h1", "h2"]).toContain(vm.host.name);
    expect(member("Mig-??", vm.name).host).toBe(vm.host.name);
    expect(hostOf(vm.name)).toBe(vm.host.name);
  }
  expect(plans[0]!.members.filter((m) => m.host.name === "h1")).toHaveLength(3);
  expect(member("Fix-??", "Fix-01").host).toBe("h3");
  const prestarted = members("Mig-??").filter((m) => m.role === "prestarted");
  expect(prestarted.map((m) => m.host).sort()).toEqual(["h1", "h2"]);
  for (const m of prestarted) await until(`${m.name} boots`, () => beats(m.name).length > 0, 60_000);
  expect(reconciler.status().hosts.map((h) => h.state)).toEqual(["up", "up", "up"]);
}, 120_000);

test("a host whose libvirtd stops: nothing of it is handed out, its prestarted member is replaced, and it is taken back", async () => {
  const h2 = cluster.host("h2");
  const onH2 = members("Mig-??").filter((m) => m.host === "h2");
  await h2.stopLibvirtd();
  await reconciler.resync();
  await reconciler.idle();
  expect(reconciler.status().hosts.find((h) => h.name === "h2")!.state).toBe("unreachable");
  // Still known, not forgotten, but not prestarted as far as takes go; two prestarted on h1 now.
  for (const m of members("Mig-??").filter((x) => x.host === "h2")) {
    expect(m.role).not.toBe("prestarted");
    expect(m.problem).toMatch(/host h2 is unreachable/);
  }
  expect(
    members("Mig-??")
      .filter((m) => m.host === "h2")
      .map((m) => m.name),
  ).toEqual(onH2.map((m) => m.name));
  const up = members("Mig-??").filter((m) => m.role === "prestarted" && m.host === "h1");
  expect(up).toHaveLength(2);
  const t = await reconciler.take("Mig-??", "alice");
  expect(member("Mig-??", t.vm).host).toBe("h1");
  expect(t.started).toBe(false);

  await h2.startLibvirtd();
  await reconciler.resync();
  await reconciler.idle();
  await until("h2 is up again", () => reconciler.status().hosts.find((h) => h.name === "h2")!.state === "up");
  await reconciler.idle();
  // Taken back without double assignment; the surplus prestarted member (h2's, running all along) is stopped or kept so that two are up.
  const held = harness.store.assignments("Mig-??").map((a) => a.vm);
  expect(held).toEqual([t.vm]);
  expect(members("Mig-??").filter((m) => m.role === "prestarted")).toHaveLength(2);
}, 180_000);

test("maintenance live-migrates a held member: its guest runs on, on the other host, with no reboot", async () => {
  const held = harness.store.assignments("Mig-??")[0]!.vm;
  const from = member("Mig-??", held).host;
  const to = from === "h1" ? "h2" : "h1";
  await until(`${held} runs its guest`, () => beats(held).length > 5, 60_000);
  const before = beats(held);
  const started = Date.now();
  await reconciler.setMaintenance(from, true);
  await until(
    `${held} migrated`,
    () =>
      member("Mig-??", held).host === to &&
      !reconciler.status().pools[0]!.members.some((m) => m.activity === "migrate"),
    60_000,
  );
  console.log(`maintenance of ${from}: ${held} live-migrated to ${to} in ${Date.now() - started} ms`);
  await reconciler.idle();
  expect(hostOf(held)).toBe(to);
  expect(member("Mig-??", held)).toMatchObject({ host: to, state: "running", role: "held", holder: { user: "alice" } });
  // The guest noticed nothing but a pause: one boot, its counter goes on one by one.
  await until("heartbeats from the destination", () => beats(held).length > before.length + 10, 30_000);
  const after = beats(held);
  expect(after).toEqual(after.map((_, i) => i + 1));
  expect(boots(held)).toBe(1);
  // Nothing else runs on the host in maintenance; the prestarted members moved to the other host.
  expect(members("Mig-??").filter((m) => m.host === from && m.state === "running")).toEqual([]);
  await until(
    "two prestarted on the other host",
    () => members("Mig-??").filter((m) => m.role === "prestarted" && m.host === to).length === 2,
  );
  await reconciler.setMaintenance(from, false);
}, 180_000);

test('maintenance leaves a held member of a pool with migration mode "none" running where it is, and says why', async () => {
  const t = await reconciler.take("Fix-??", "bob");
  await until(`${t.vm} boots`, () => beats(t.vm).length > 0, 60_000);
  await reconciler.setMaintenance("h3", true);
  await reconciler.idle();
  expect(member("Fix-??", t.vm)).toMatchObject({ host: "h3", state: "running", role: "held" });
  expect(member("Fix-??", t.vm).problem).toMatch(/stays on h3 in maintenance: not migrated, .*"none"/);
  await expect(reconciler.migrate("Fix-??", t.vm, "h1")).rejects.toBeInstanceOf(MigrationRefusedError);
  expect(hostOf(t.vm)).toBe("h3");
  await reconciler.setMaintenance("h3", false);
}, 120_000);

test("a guest with the host CPU passed through is never migrated", async () => {
  // As if defined by hand (validation never lets a migratable pool pass the CPU through).
  const down = members("Mig-??").find((m) => m.state === "shut off")!;
  const driver = harness.drivers.get(down.host)!;
  const xml = await driver.domainXml(down.name, { inactive: true, securityInfo: true });
  await driver.defineDomain(
    xml.replace(/<cpu[^>]*\/>|<cpu[\s\S]*?<\/cpu>/, "").replace("</vcpu>", "</vcpu><cpu mode='host-passthrough'/>"),
  );
  const error = await reconciler.migrate("Mig-??", down.name).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(MigrationRefusedError);
  expect((error as Error).message).toMatch(/host CPU passed through/);
  expect(hostOf(down.name)).toBe(down.host);
  expect(harness.failures.filter((f) => !/^host |lease|recovery/.test(f.context))).toEqual([]);
}, 60_000);
