// One scenario run against VirshDriver on libvirt's test hypervisor and against FakeDriver: the
// transcripts (answers, states, errors, lifecycle events) must be equal, so that tests on the fake
// say something about the real driver. What the test hypervisor cannot do (live device updates,
// volume contents, refusing to start without its disks) is tested on the fake alone below, as qemu
// behaves.
import type { ChildProcess } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import {
  HOLDER_NAMESPACE,
  HOLDER_PREFIX,
  METADATA_NAMESPACE,
  parseHolderXml,
  parseMetadataXml,
  policyVolumeName,
  renderHolderXml,
  renderMetadataXml,
} from "../../core/metadata";
import { escapeXml } from "../../core/xml";
import { DomainEvents, type LifecycleEvent } from "../../reconciler/driver/events";
import { VirshDriver, type LibvirtDriver } from "../../reconciler/driver/libvirt-driver";
import { VirshError } from "../../reconciler/driver/virsh-session";
import { overlayFactsOf, spiceDisplayOf } from "../../reconciler/libvirt-xml";
import { FakeDriver } from "../support/fake-driver";
import { memberMetadataFixture } from "../support/fixtures";
import { holdTestDriver, releaseTestDriver, requireLibvirtd, TEST_URI } from "../support/libvirt";

const suffix = randomBytes(4).toString("hex");
const A = `vmp-ct-${suffix}-a`;
const B = `vmp-ct-${suffix}-b`;
const MISSING = `vmp-ct-${suffix}-missing`;
const UUID_A = randomUUID();
const VOLUME = `vmp-ct-${suffix}.qcow2`;
const STORAGE_POOL = "default-pool";

const meta = memberMetadataFixture({ pool: "ContractPool" });

const domainXml = (name: string, opts: { uuid?: string; metadata?: string; memoryKiB?: number } = {}) =>
  `<domain type="test"><name>${escapeXml(name)}</name>${opts.uuid ? `<uuid>${opts.uuid}</uuid>` : ""}` +
  `<memory unit="KiB">${opts.memoryKiB ?? 1024}</memory><os><type>hvm</type></os>` +
  `${opts.metadata ? `<metadata>${opts.metadata}</metadata>` : ""}</domain>`;

/** What the scenario needs besides the driver: suspend/resume (not part of LibvirtDriver) and events. */
interface Subject {
  readonly driver: LibvirtDriver;
  suspend(name: string): Promise<void>;
  resume(name: string): Promise<void>;
  onLifecycle(listener: (e: LifecycleEvent) => void): void;
  waitFor(predicate: (e: LifecycleEvent) => boolean): Promise<LifecycleEvent>;
}

/** Temp file paths differ per run; everything else in a message must be equal. */
const normalize = (text: string) => text.replace(/\/tmp\/vmpools-virsh-[^/\s]+\/[0-9a-f-]+\.xml/g, "<file>");

async function outcome<T>(work: Promise<T>): Promise<unknown> {
  try {
    return { ok: await work };
  } catch (e) {
    if (e instanceof VirshError) {
      return { virshError: normalize(e.message), notFound: e.notFound, connectionLost: e.connectionLost };
    }
    return { error: (e as Error).message };
  }
}

const metadataBlock = (xml: string) => /<metadata>[\s\S]*?<\/metadata>/.exec(xml)?.[0] ?? "";

/** The same steps on either driver; returns everything observed, in order. */
async function scenario(s: Subject): Promise<{ steps: [string, unknown][]; events: string[] }> {
  const d = s.driver;
  const steps: [string, unknown][] = [];
  const step = async (label: string, work: Promise<unknown>) => steps.push([label, await outcome(work)]);
  const events: string[] = [];
  s.onLifecycle((e) => {
    if (e.domain === A || e.domain === B) events.push(`${e.domain === A ? "A" : "B"} ${e.event} ${e.detail}`);
  });
  const mine = async (options?: Parameters<LibvirtDriver["listDomains"]>[0]) =>
    (await d.listDomains(options))
      .filter((x) => x.name === A || x.name === B)
      .sort((x, y) => x.name.localeCompare(y.name))
      .map((x) => ({
        name: x.name,
        state: x.state,
        // B is defined without a UUID: libvirt picks one.
        uuid:
          x.name === A
            ? x.uuid === UUID_A
            : /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(x.uuid),
        persistent: x.persistent,
        metadataXml: x.metadataXml,
      }));
  const state = (after: string) => step(`state of A after ${after}`, d.domainState(A));

  await step("define A", d.defineDomain(domainXml(A, { uuid: UUID_A, metadata: renderMetadataXml(meta) })));
  await step("define B", d.defineDomain(domainXml(B)));
  await step("list", mine());
  await step("list without metadata", mine({ metadata: false }));
  await step("list holder metadata", mine({ metadataUri: HOLDER_NAMESPACE }));
  const memberXml = await d.getMetadata(A, METADATA_NAMESPACE);
  steps.push(["member metadata", memberXml], ["member metadata parsed", parseMetadataXml(memberXml ?? "")]);
  await step("metadata of another namespace", d.getMetadata(A, "https://example.invalid/none"));
  await step("metadata by UUID", d.getMetadata(UUID_A, METADATA_NAMESPACE));

  await step("set holder", d.setMetadata(A, HOLDER_NAMESPACE, renderHolderXml("alice o'neil"), HOLDER_PREFIX));
  await step("get holder", d.getMetadata(A, HOLDER_NAMESPACE));
  const xml = await d.domainXml(A);
  steps.push([
    "domain XML facts",
    {
      uuid: new RegExp(`<uuid>${UUID_A}</uuid>`).test(xml),
      member: parseMetadataXml(metadataBlock(xml)),
      holder: parseHolderXml(metadataBlock(xml)),
      prefixedMember: metadataBlock(xml).includes(`<vmpools:member xmlns:vmpools="${METADATA_NAMESPACE}"`),
      prefixedHolder: metadataBlock(xml).includes(
        `<${HOLDER_PREFIX}:holder xmlns:${HOLDER_PREFIX}="${HOLDER_NAMESPACE}"`,
      ),
    },
  ]);
  await step("remove holder", d.removeMetadata(A, HOLDER_NAMESPACE));
  await step("get removed holder", d.getMetadata(A, HOLDER_NAMESPACE));
  await step("remove absent holder", d.removeMetadata(A, HOLDER_NAMESPACE));

  await step("start A", d.start(A));
  await state("start A");
  await step("start A again", d.start(A));
  await step("set holder while running", d.setMetadata(A, HOLDER_NAMESPACE, renderHolderXml("bob"), HOLDER_PREFIX));
  await step(
    "holder in the persistent config",
    d.domainXml(A, { inactive: true }).then((x) => parseHolderXml(metadataBlock(x))),
  );
  await step(
    "live XML has an id",
    d.domainXml(A).then((x) => /^<domain type='test' id='\d+'>|^<domain type="test" id="\d+">/.test(x)),
  );
  await step("suspend A", s.suspend(A));
  await state("suspend A");
  await step("list paused", mine({ metadata: false }));
  await step("suspend A again", s.suspend(A));
  await step("resume A", s.resume(A));
  await step("resume A again", s.resume(A));
  await step("shutdown A", d.shutdown(A));
  await state("shutdown A");
  await step("shutdown A again", d.shutdown(A));
  await step("start A", d.start(A));
  await step("destroy A", d.destroy(A));
  await state("destroy A");
  await step("destroy A again", d.destroy(A));

  await step("redefine A (same UUID)", d.defineDomain(domainXml(A, { uuid: UUID_A, memoryKiB: 2048 })));
  await step("metadata after redefine without it", d.getMetadata(A, METADATA_NAMESPACE));
  await step("define A without UUID", d.defineDomain(domainXml(A)));
  await step("define A with another UUID", d.defineDomain(domainXml(A, { uuid: randomUUID() })));
  await step("define another name with A's UUID", d.defineDomain(domainXml(MISSING, { uuid: UUID_A })));
  await step(
    "define broken XML",
    d.defineDomain("<domain type='test'><name>broken").catch((e: unknown) => {
      // The parse error itself is libxml2's on one side and fast-xml-parser's on the other.
      throw new Error(e instanceof VirshError && !e.notFound ? normalize(e.message).split("\n")[0] : String(e));
    }),
  );

  for (const [label, work] of [
    ["domstate", () => d.domainState(MISSING)],
    ["start", () => d.start(MISSING)],
    ["shutdown", () => d.shutdown(MISSING)],
    ["destroy", () => d.destroy(MISSING)],
    ["undefine", () => d.undefineDomain(MISSING)],
    ["get metadata", () => d.getMetadata(MISSING, METADATA_NAMESPACE)],
    ["set metadata", () => d.setMetadata(MISSING, HOLDER_NAMESPACE, renderHolderXml("x"), HOLDER_PREFIX)],
    ["remove metadata", () => d.removeMetadata(MISSING, HOLDER_NAMESPACE)],
    ["dumpxml", () => d.domainXml(MISSING)],
  ] as const) {
    await step(`missing domain: ${label}`, work());
  }

  // Undefined while running: transient until it stops, then gone.
  await step("start A", d.start(A));
  await step("undefine running A", d.undefineDomain(A));
  await step("list transient", mine({ metadata: false }));
  await step("set metadata on transient A", d.setMetadata(A, HOLDER_NAMESPACE, renderHolderXml("bob"), HOLDER_PREFIX));
  await step("destroy transient A", d.destroy(A));
  await state("destroy transient A");
  await step("list after", mine({ metadata: false }));

  const spec = {
    backingPath: "/var/lib/libvirt/images/base & co.qcow2",
    backingFormat: "qcow2",
    capacityBytes: 1 << 30,
  };
  await step("create overlay", d.createOverlayVolume(STORAGE_POOL, VOLUME, spec));
  await step("volume XML", d.volumeXml(STORAGE_POOL, VOLUME));
  await step("overlay facts", d.volumeXml(STORAGE_POOL, VOLUME).then(overlayFactsOf));
  await step("volume path", d.volumePath(STORAGE_POOL, VOLUME));
  await step("create overlay again", d.createOverlayVolume(STORAGE_POOL, VOLUME, spec));
  await step(
    "create overlay of no size",
    d.createOverlayVolume(STORAGE_POOL, `${VOLUME}-0`, { ...spec, capacityBytes: 0 }),
  );
  await step("create overlay in a missing pool", d.createOverlayVolume(`${STORAGE_POOL}-none`, VOLUME, spec));
  await step("delete volume", d.deleteVolume(STORAGE_POOL, VOLUME));
  await step("path of deleted volume", d.volumePath(STORAGE_POOL, VOLUME));
  await step("XML of deleted volume", d.volumeXml(STORAGE_POOL, VOLUME));
  await step("delete deleted volume", d.deleteVolume(STORAGE_POOL, VOLUME));
  await step("volume of a missing pool", d.volumeXml(`${STORAGE_POOL}-none`, VOLUME));
  // The test hypervisor cannot download volumes: no documents there, and none on a fresh fake.
  await step(
    "policy documents",
    d.readPolicyDocuments().then((docs) => docs.filter((doc) => doc.includes("ContractPool"))),
  );
  await step("migrate", d.migrate(B, TEST_URI));

  const lastEvent = s.waitFor((e) => e.domain === B && e.event === "Undefined");
  await step("undefine B", d.undefineDomain(B));
  await lastEvent;
  return { steps, events };
}

let holder: ChildProcess;
let real: VirshDriver;
let realEvents: DomainEvents;

beforeAll(async () => {
  requireLibvirtd();
  holder = holdTestDriver();
  real = new VirshDriver({ uri: TEST_URI });
  realEvents = new DomainEvents({ uri: TEST_URI });
  await realEvents.ready();
});

afterAll(async () => {
  for (const name of [A, B, MISSING]) {
    await real?.destroy(name).catch(() => undefined);
    await real?.undefineDomain(name).catch(() => undefined);
  }
  await real?.deleteVolume(STORAGE_POOL, VOLUME).catch(() => undefined);
  await realEvents?.close();
  await real?.close();
  if (holder) await releaseTestDriver(holder);
});

test("VirshDriver on the test hypervisor and FakeDriver give the same transcript", async () => {
  const realRun = await scenario({
    driver: real,
    suspend: async (name) => void (await real.session.run(["suspend", "--domain", name])),
    resume: async (name) => void (await real.session.run(["resume", "--domain", name])),
    onLifecycle: (listener) => realEvents.on("lifecycle", listener),
    waitFor: (predicate) => realEvents.waitFor(predicate, 5000),
  });
  const fake = new FakeDriver();
  const fakeRun = await scenario({
    driver: fake,
    // The fake's helpers throw synchronously, as the interactive command would answer at once.
    suspend: async (name) => fake.suspend(name),
    resume: async (name) => fake.resume(name),
    onLifecycle: (listener) => fake.events.on("lifecycle", listener),
    waitFor: (predicate) => fake.events.waitFor(predicate, 5000),
  });
  await fake.close();

  // Step by step, so that a difference names its step.
  expect(fakeRun.steps.map(([label]) => label)).toEqual(realRun.steps.map(([label]) => label));
  for (const [i, [label, value]] of realRun.steps.entries()) {
    expect([label, fakeRun.steps[i]![1]]).toEqual([label, value]);
  }
  expect(fakeRun.events).toEqual(realRun.events);

  // The scenario would pass on two drivers that both failed everything: pin what it saw.
  const seen = Object.fromEntries(realRun.steps);
  expect(seen["state of A after start A"]).toEqual({ ok: "running" });
  expect(seen["state of A after suspend A"]).toEqual({ ok: "paused" });
  expect(seen["state of A after destroy transient A"]).toMatchObject({ notFound: true });
  expect(seen["member metadata parsed"]).toEqual(meta);
  expect(seen["missing domain: domstate"]).toEqual({
    virshError: `virsh domstate --domain ${MISSING}: failed to get domain '${MISSING}'`,
    notFound: true,
    connectionLost: false,
  });
  expect(seen["define A with another UUID"]).toMatchObject({
    virshError: expect.stringContaining(`domain '${A}' already exists with uuid ${UUID_A}`),
    notFound: false,
  });
  expect(seen["XML of deleted volume"]).toMatchObject({ notFound: true });
  expect(realRun.events.slice(0, 4)).toEqual([
    "A Defined Added",
    "B Defined Added",
    "A Started Booted",
    "A Suspended Paused",
  ]);
});

// ---- what the test hypervisor cannot do: the fake does it as qemu does ----------------------------

const spiceDomain = (name: string, volume: string) =>
  `<domain type="kvm"><name>${name}</name><memory unit="MiB">64</memory><os><type>hvm</type></os><devices>` +
  `<disk type="volume" device="disk"><source pool="${STORAGE_POOL}" volume="${volume}"/><target dev="vda"/></disk>` +
  `<graphics type="spice" autoport="yes" passwd="locked" passwdValidTo="1970-01-01T00:00:00"><listen type="address" address="127.0.0.1"/></graphics>` +
  `</devices></domain>`;

describe("FakeDriver beyond the test hypervisor", () => {
  let fake: FakeDriver;
  beforeEach(() => (fake = new FakeDriver()));
  afterEach(() => fake.close());

  test("starting needs the domain's volumes, as qemu does; the error carries notFound as qemu's does", async () => {
    await fake.defineDomain(spiceDomain("m1", "m1.qcow2"));
    const error = await fake.start("m1").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VirshError);
    expect((error as VirshError).message).toBe(
      "virsh start --domain m1: Failed to start domain 'm1'\nStorage volume not found: no storage vol with matching name 'm1.qcow2'",
    );
    await fake.createOverlayVolume(STORAGE_POOL, "m1.qcow2", {
      backingPath: "/b.qcow2",
      backingFormat: "qcow2",
      capacityBytes: 1 << 20,
    });
    await fake.start("m1");
    expect(await fake.domainState("m1")).toBe("running");
  });

  test("a live graphics update sets the SPICE ticket; passwords show only with securityInfo", async () => {
    await fake.createOverlayVolume(STORAGE_POOL, "m1.qcow2", {
      backingPath: "/b.qcow2",
      backingFormat: "qcow2",
      capacityBytes: 1 << 20,
    });
    await fake.defineDomain(spiceDomain("m1", "m1.qcow2"));
    const display = spiceDisplayOf(await fake.domainXml("m1", { inactive: true }))!;
    await expect(fake.updateDeviceLive("m1", display.element)).rejects.toThrow(
      /^virsh update-device --domain m1 --file \S+ --live: Failed to update device from \S+\nRequested operation is not valid: domain is not running$/,
    );
    await fake.start("m1");
    const live = spiceDisplayOf(await fake.domainXml("m1"))!;
    expect(live).toMatchObject({ port: expect.any(Number), listen: "127.0.0.1" });
    expect(live.element).not.toContain("passwd=");
    await fake.updateDeviceLive("m1", `<graphics type="spice" passwd="t1ck3t" passwdValidTo="2030-01-01T00:00:00"/>`);
    const secured = await fake.domainXml("m1", { securityInfo: true });
    expect(spiceDisplayOf(secured)).toMatchObject({ port: live.port });
    expect(secured).toMatch(/<graphics [^>]*passwd="t1ck3t" passwdValidTo="2030-01-01T00:00:00"/);
    expect(await fake.domainXml("m1")).not.toContain("t1ck3t");
    // The persistent definition keeps its lock.
    expect(await fake.domainXml("m1", { inactive: true, securityInfo: true })).toContain('passwd="locked"');
  });

  test("policy documents are read from active pools' uploaded policy volumes", async () => {
    fake.uploadVolume(STORAGE_POOL, policyVolumeName("P-???", "h1"), "<doc>p</doc>");
    fake.uploadVolume(STORAGE_POOL, "other.xml", "<doc>not a policy</doc>");
    fake.addStoragePool({ name: "off", path: "/off", active: false });
    fake.addStoragePool({ name: "on", path: "/on" });
    fake.uploadVolume("on", policyVolumeName("Q", "h1"), "<doc>q</doc>");
    expect(await fake.readPolicyDocuments()).toEqual(["<doc>p</doc>", "<doc>q</doc>"]);
    await expect(fake.volumePath("off", "x")).rejects.toThrow(/failed to get pool 'off'/);
  });

  test("a guest may ignore a shutdown request (only destroy stops it) or take its time", async () => {
    await fake.defineDomain(domainXml("g"));
    await fake.start("g");
    fake.setGuest("g", { ignoresShutdown: true });
    await fake.shutdown("g");
    expect(await fake.domainState("g")).toBe("running");
    fake.setGuest("g", { shutdownDelayMs: 30 });
    const stopped = fake.events.waitFor((e) => e.domain === "g" && e.event === "Stopped", 1000);
    await fake.shutdown("g");
    expect(await fake.domainState("g")).toBe("running");
    expect(await stopped).toMatchObject({ detail: "Shutdown" });
    expect(await fake.domainState("g")).toBe("shut off");
  });

  test("failure injection: the next N matching calls fail, before or after taking effect; calls are counted", async () => {
    await fake.defineDomain(domainXml("f1"));
    await fake.defineDomain(domainXml("f2"));
    const uuid = fake.domain("f1")!.uuid;
    fake.failNext("start", { target: "f1", times: 2 });
    await expect(fake.start(uuid)).rejects.toThrow("virsh start " + uuid + ": injected failure (FakeDriver.failNext)");
    await fake.start("f2");
    await expect(fake.start("f1")).rejects.toThrow(/injected failure/);
    await fake.start("f1");
    expect([fake.calls("start"), fake.calls("start", "f1"), fake.calls("start", "f2")]).toEqual([4, 3, 1]);

    const custom = new VirshError(["destroy", "--domain", "f1"], "Cannot recv data: Connection reset by peer");
    fake.failNext("destroy", { error: custom, afterEffect: true });
    await expect(fake.destroy("f1")).rejects.toBe(custom);
    expect(custom.connectionLost).toBe(true);
    // It took effect all the same.
    expect(await fake.domainState("f1")).toBe("shut off");

    fake.failNext("domainState", { times: Infinity });
    await expect(fake.domainState("f2")).rejects.toThrow(/injected/);
    await expect(fake.domainState("f2")).rejects.toThrow(/injected/);
    fake.heal("domainState");
    expect(await fake.domainState("f2")).toBe("running");
  });

  test("a gate holds one call until released; events are dropped while the stream is disconnected", async () => {
    await fake.defineDomain(domainXml("g1"));
    const gate = fake.pauseNext("start", "g1");
    let done = false;
    const starting = fake.start("g1").then(() => (done = true));
    await gate.reached;
    await new Promise((r) => setTimeout(r, 20));
    expect([done, fake.domain("g1")!.state]).toEqual([false, "shut off"]);
    gate.release();
    await starting;
    expect(fake.domain("g1")!.state).toBe("running");

    const seen: string[] = [];
    fake.events.on("lifecycle", (e) => seen.push(`${e.event} ${e.detail}`));
    const reasons: string[] = [];
    fake.events.on("disconnected", (r) => reasons.push(r));
    fake.events.disconnect();
    await fake.destroy("g1");
    await new Promise((r) => setImmediate(r));
    const ready = fake.events.ready();
    fake.events.reconnect();
    await ready;
    const started = fake.events.waitFor((e) => e.event === "Started", 1000);
    await fake.start("g1");
    await started;
    expect(reasons).toEqual(["virsh event exited (code 1)"]);
    expect(seen).toEqual(["Started Booted"]);
  });

  test("a closed driver refuses calls as a closed session does; libvirtd down fails every call", async () => {
    fake.setLibvirtdDown(true);
    await expect(fake.listDomains()).rejects.toThrow(/Failed to connect socket/);
    fake.setLibvirtdDown(false);
    expect(await fake.listDomains()).toEqual([]);
    await fake.close();
    await expect(fake.listDomains()).rejects.toThrow("virsh session for fake:///default is closed");
  });
});
