import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { METADATA_NAMESPACE, parseMetadataXml, renderMetadataXml } from "../../core/metadata";
import { escapeXml } from "../../core/xml";
import { DomainEvents, type LifecycleEvent } from "../../reconciler/driver/events";
import { VirshDriver } from "../../reconciler/driver/libvirt-driver";
import { VirshError, quoteVirshArg } from "../../reconciler/driver/virsh-session";
import { memberMetadataFixture } from "../support/fixtures";
import { requireLibvirtd } from "../support/libvirt";

// libvirt's test hypervisor served by libvirtd: real RPCs and events, no guests. Its state lives
// as long as one client is connected, so everything here runs while the driver's session is open.
const URI = "test+unix:///default";
const suffix = randomBytes(4).toString("hex");
// A space and a quote prove the quoting end to end.
const NAME = `vmp-drv ${suffix} it's`;
const PLAIN = `vmp-drv-${suffix}-plain`;

const meta = memberMetadataFixture({ pool: "DriverPool", allowedHosts: ["h1", "h2"], migrationDowntimeMs: 500 });

const domainXml = (name: string, metadata?: string) =>
  `<domain type="test"><name>${escapeXml(name)}</name><memory unit="KiB">1024</memory>` +
  `<os><type>hvm</type></os>${metadata ? `<metadata>${metadata}</metadata>` : ""}</domain>`;

let driver: VirshDriver;
let events: DomainEvents;
const defined: string[] = [];

beforeAll(async () => {
  driver = new VirshDriver({ uri: URI });
  events = new DomainEvents({ uri: URI });
  await events.ready();
  await driver.defineDomain(domainXml(NAME, renderMetadataXml(meta)));
  await driver.defineDomain(domainXml(PLAIN));
  defined.push(NAME, PLAIN);
});

afterAll(async () => {
  for (const name of defined) {
    await driver.destroy(name).catch(() => undefined);
    await driver.undefineDomain(name).catch(() => undefined);
  }
  await events?.close();
  await driver?.close();
});

const eventFor = (name: string, event: LifecycleEvent["event"]) => {
  const seen = events.waitFor((e) => e.domain === name && e.event === event, 5000);
  // Keeps a failing test's abandoned wait from crashing the run; awaiting it still throws.
  seen.catch(() => undefined);
  return seen;
};

test("lists domains with state and pool metadata that core parses", async () => {
  const domains = await driver.listDomains();
  const mine = domains.find((d) => d.name === NAME);
  expect(mine).toMatchObject({ state: "shut off", uuid: expect.stringMatching(/^[0-9a-f-]{36}$/) });
  expect(mine!.metadataXml).toContain(METADATA_NAMESPACE);
  expect(parseMetadataXml(mine!.metadataXml!)).toEqual(meta);
  const plain = domains.find((d) => d.name === PLAIN);
  expect(plain?.state).toBe("shut off");
  expect(plain?.metadataXml).toBeUndefined();
  expect((await driver.listDomains({ metadata: false })).find((d) => d.name === NAME)?.metadataXml).toBeUndefined();
});

test("setMetadata replaces the element on inactive and running domains", async () => {
  await driver.setMetadata(NAME, METADATA_NAMESPACE, renderMetadataXml({ ...meta, templateVersion: 3 }));
  expect(parseMetadataXml((await driver.getMetadata(NAME, METADATA_NAMESPACE))!)?.templateVersion).toBe(3);
  await driver.start(NAME);
  await driver.setMetadata(NAME, METADATA_NAMESPACE, renderMetadataXml({ ...meta, templateVersion: 4 }));
  expect(parseMetadataXml((await driver.getMetadata(NAME, METADATA_NAMESPACE))!)?.templateVersion).toBe(4);
  await driver.destroy(NAME);
  // Written to the persistent config too, not only the live domain.
  expect(parseMetadataXml((await driver.getMetadata(NAME, METADATA_NAMESPACE))!)?.templateVersion).toBe(4);
  expect(await driver.getMetadata(NAME, "https://example.invalid/none")).toBeUndefined();
});

test("start, destroy and shutdown change the state and raise lifecycle events", async () => {
  const started = eventFor(NAME, "Started");
  await driver.start(NAME);
  expect(await started).toMatchObject({ domain: NAME, event: "Started", detail: "Booted" });
  expect(await driver.domainState(NAME)).toBe("running");

  const destroyed = eventFor(NAME, "Stopped");
  await driver.destroy(NAME);
  expect(await destroyed).toMatchObject({ detail: "Destroyed" });
  expect(await driver.domainState(NAME)).toBe("shut off");

  await driver.start(NAME);
  const shutDown = eventFor(NAME, "Stopped");
  await driver.shutdown(NAME);
  const e = await shutDown;
  expect(e.detail).toBe("Shutdown");
  expect(Math.abs(e.timestamp.getTime() - Date.now())).toBeLessThan(60_000);
  expect(await driver.domainState(NAME)).toBe("shut off");
});

test("define and undefine raise events; errors name the command and libvirt's reason", async () => {
  const other = `vmp-drv-${suffix}-b`;
  const definedEvent = eventFor(other, "Defined");
  await driver.defineDomain(domainXml(other));
  defined.push(other);
  await definedEvent;
  await expect(driver.defineDomain("<domain type='test'><name>broken")).rejects.toThrow(
    /^virsh define --file \S+: Failed to define domain .*Premature end of data/s,
  );

  const missing = `vmp-missing-${suffix}`;
  const error = await driver.domainState(missing).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(VirshError);
  expect((error as VirshError).notFound).toBe(true);
  expect((error as VirshError).message).toBe(`virsh domstate --domain ${missing}: failed to get domain '${missing}'`);

  await driver.start(other);
  await expect(driver.start(other)).rejects.toThrow(/Domain is already active/);
  await driver.destroy(other);

  const undefinedEvent = eventFor(other, "Undefined");
  await driver.undefineDomain(other);
  await undefinedEvent;
  await expect(driver.domainState(other)).rejects.toThrow(/failed to get domain/);
});

test("a command line virsh cannot parse fails alone", async () => {
  await expect(driver.session.run(["list", "--no-such-option"])).rejects.toThrow(
    /doesn't support option --no-such-option/,
  );
  await expect(driver.session.run(["no-such-command"])).rejects.toThrow(/unknown command/);
  expect(await driver.session.run(["echo", "still here"])).toBe("still here");
  expect(() => quoteVirshArg("two\nlines")).toThrow(/control characters/);
});

test("100 concurrent commands each get their own answer", async () => {
  const payloads = Array.from({ length: 100 }, (_, i) => `#${i} it's "q" ; a\\b é ${"x".repeat(i)}`);
  const answers = await Promise.all([
    ...payloads.map((p) => driver.session.run(["echo", p])),
    ...Array.from({ length: 20 }, () => driver.domainState(PLAIN)),
  ]);
  expect(answers.slice(0, 100)).toEqual(payloads);
  expect(new Set(answers.slice(100))).toEqual(new Set(["shut off"]));
});

test("background work runs on a session of its own, which never waits behind the shared ones", async () => {
  const background = driver.background;
  expect(driver.background).toBe(background); // one, made once
  // The shared session busy for a second: the background answers meanwhile.
  const busy = driver.session.run(["event", "--event", "lifecycle", "--timeout", "1"]);
  const t0 = Date.now();
  expect(await background.domainState(PLAIN)).toBe("shut off");
  expect(Date.now() - t0).toBeLessThan(900);
  await busy;
  expect(background.session.pid).toBeDefined();
  expect(background.session.pid).not.toBe(driver.session.pid);
});

test("the session survives a killed virsh child and fails what was in flight", async () => {
  await driver.domainState(NAME);
  const first = driver.session.pid!;
  // `event --timeout` keeps virsh busy, so the command is surely in flight when the child dies.
  const inFlight = driver.session.run(["event", "--event", "lifecycle", "--timeout", "10"]);
  await new Promise((r) => setTimeout(r, 100));
  process.kill(first, "SIGKILL");
  await expect(inFlight).rejects.toThrow(
    /exited \(SIGKILL\) while running `event --event lifecycle --timeout 10`; the command may or may not/,
  );
  expect(await driver.domainState(NAME)).toBe("shut off");
  expect(driver.session.pid).not.toBe(first);

  await expect(
    driver.session.run(["event", "--event", "lifecycle", "--timeout", "10"], { timeoutMs: 200 }),
  ).rejects.toThrow(/timed out after 200 ms/);
  expect(await driver.session.run(["echo", "ok"])).toBe("ok");
  expect(driver.session.latencyStats().count).toBeGreaterThan(100);
});

test("the event stream re-subscribes after its virsh child dies", async () => {
  const disconnected = new Promise<string>((resolve) => events.once("disconnected", resolve));
  const resubscribed = new Promise<void>((resolve) => events.once("ready", resolve));
  process.kill(events.pid!, "SIGKILL");
  expect(await disconnected).toMatch(/SIGKILL/);
  await resubscribed;
  const started = eventFor(NAME, "Started");
  await driver.start(NAME);
  await started;
  await driver.destroy(NAME);
});

test("overlay volumes in the test driver's pool record their backing store", async () => {
  const name = `vmp-overlay-${suffix}.qcow2`;
  const path = await driver.createOverlayVolume("default-pool", name, {
    backingPath: "/var/lib/libvirt/images/base.qcow2",
    backingFormat: "qcow2",
    capacityBytes: 1 << 30,
  });
  expect(path).toBe(`/default-pool/${name}`);
  const xml = await driver.volumeXml("default-pool", name);
  expect(xml).toMatch(
    /<backingStore>\s*<path>\/var\/lib\/libvirt\/images\/base.qcow2<\/path>\s*<format type='qcow2'\/>/,
  );
  await driver.deleteVolume("default-pool", name);
  const gone = await driver.volumePath("default-pool", name).catch((e: unknown) => e);
  expect((gone as VirshError).notFound).toBe(true);
});

test("migrate reports the driver's refusal", async () => {
  await expect(driver.migrate(NAME, URI, { maxDowntimeMs: 100 })).rejects.toThrow(/virsh migrate .*not supported/);
});

// The test driver only records a backing store; qemu's dir pool really runs qemu-img.
// Fails, never skips, without qemu:///system: scripts/setup-system.sh and libvirt-up.sh provide it.
test("overlay volumes on qemu:///system are qcow2 files over the base image", async () => {
  requireLibvirtd("qemu:///system");
  const dir = mkdtempSync(join(tmpdir(), "vmpools-pool-"));
  const pool = `vmp-drv-${suffix}`;
  const qemu = new VirshDriver({ uri: "qemu:///system" });
  try {
    const base = join(dir, "base.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", base, "64M"]);
    await qemu.session.run(["pool-create-as", "--name", pool, "--type", "dir", "--target", dir]);
    const path = await qemu.createOverlayVolume(pool, "member-1.qcow2", {
      backingPath: base,
      backingFormat: "qcow2",
      capacityBytes: 64 << 20,
    });
    expect(path).toBe(join(dir, "member-1.qcow2"));
    const info = JSON.parse(execFileSync("qemu-img", ["info", "-U", "--output=json", path], { encoding: "utf8" }));
    expect(info).toMatchObject({ format: "qcow2", "backing-filename": base, "virtual-size": 64 << 20 });
    await qemu.deleteVolume(pool, "member-1.qcow2");
    await expect(qemu.volumePath(pool, "member-1.qcow2")).rejects.toThrow(/not found|failed to get vol/);
  } finally {
    await qemu.session.run(["pool-destroy", "--pool", pool]).catch(() => undefined);
    await qemu.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
