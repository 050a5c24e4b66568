// The cluster tests' infrastructure (test/support/cluster-hosts.ts) with a real guest: three
// libvirt hosts in their own namespaces, one shared storage pool, a tiny guest that boots on h1,
// is live-migrated to h2 without rebooting, and keeps running while h2's libvirtd is down.
// Needs root, libvirt and qemu (scripts/setup-system.sh); fails, never skips, without them.
import * as fs from "node:fs";
import * as path from "node:path";
import { ensureGuest, guestCmdline, guestDomainXml, parseGuestLog } from "../guest/guest";
import { startTestCluster, type TestCluster } from "../support/cluster-hosts";
import { until } from "../support/qemu-pool";

const BASE_MARKER = "CLUSTER-BASE";
const DOMAIN = "vmpools-cluster-guest";

let cluster: TestCluster;

beforeAll(async () => {
  ensureGuest();
  cluster = await startTestCluster({ hosts: 3, name: "hosts" });
  console.log(`3 cluster hosts up in ${cluster.startMs} ms`);
}, 60_000);

afterAll(async () => {
  await cluster?.close();
}, 60_000);

/** Heartbeats of the guest's serial log (build-guest.sh: vmpools.after=heartbeat), in order. */
function heartbeats(log: string): { n: number; uptimeS: number }[] {
  return [...log.matchAll(/^HEARTBEAT (\d+) ([\d.]+)$/gm)].map((m) => ({ n: Number(m[1]), uptimeS: Number(m[2]) }));
}

const inode = (file: string) => fs.statSync(file).ino;

test("three hosts answer over qemu+tcp, with distinct host UUIDs and hostnames, and the same shared pool", () => {
  expect(cluster.hosts.map((h) => h.name)).toEqual(["h1", "h2", "h3"]);
  for (const h of cluster.hosts) {
    expect(h.virsh("uri").trim()).toBe(h.uri);
    expect(h.uri).toBe(`qemu+tcp://${h.address}/system`);
    const caps = h.virsh("capabilities");
    expect(/<host>\s*<uuid>([0-9a-f-]+)<\/uuid>/.exec(caps)?.[1]).toBe(h.hostUuid);
    const pool = h.virsh("pool-dumpxml", cluster.storagePool);
    expect(/<path>([^<]+)<\/path>/.exec(pool)?.[1]).toBe(cluster.imageDir);
    expect(h.virsh("pool-info", cluster.storagePool)).toMatch(/State:\s+running/);
  }
  expect(new Set(cluster.hosts.map((h) => h.hostUuid)).size).toBe(3);
  expect(new Set(cluster.hosts.map((h) => h.virsh("hostname").trim())).size).toBe(3);
  // The machine's own libvirtd is not one of them: it still answers on its unix socket.
  expect(fs.readFileSync("/run/libvirtd.pid", "utf8").trim()).toMatch(/^\d+$/);
});

describe("a tiny guest on the shared pool", () => {
  const h1 = () => cluster.host("h1");
  const h2 = () => cluster.host("h2");
  const logPath = () => path.join(cluster.imageDir, `${DOMAIN}.log`);
  const guestLog = () => (fs.existsSync(logPath()) ? fs.readFileSync(logPath(), "utf8") : "");

  test("boots on h1 from an overlay volume of the shared pool", async () => {
    const base = path.join(cluster.imageDir, "base.raw");
    const sector = Buffer.alloc(1024 * 1024);
    sector.write(BASE_MARKER, "latin1");
    fs.writeFileSync(base, sector);
    h1().virsh("pool-refresh", cluster.storagePool);
    const overlay = `${DOMAIN}.qcow2`;
    h1().virsh(
      "vol-create-as",
      ...[cluster.storagePool, overlay, "1G", "--format", "qcow2"],
      ...["--backing-vol", base, "--backing-vol-format", "raw"],
    );
    const xml = guestDomainXml({
      name: DOMAIN,
      diskPath: path.join(cluster.imageDir, overlay),
      diskFormat: "qcow2",
      serialLogPath: logPath(),
      cmdline: `${guestCmdline({ kind: "read-marker" })} vmpools.after=heartbeat`,
    })
      // As a pool member's disk: a volume of the storage pool, which each host resolves itself.
      .replace(
        /<disk type='file' device='disk'>([\s\S]*?)<source file='[^']*'\/>/,
        `<disk type='volume' device='disk'>$1<source pool='${cluster.storagePool}' volume='${overlay}'/>`,
      )
      // The destination of a migration opens the log again: append, so the whole run stays in it.
      .replace(/<source path='([^']*)'\/>/g, "<source path='$1' append='on'/>");
    expect(xml).toContain("<disk type='volume'");
    expect(xml.match(/append='on'/g)).toHaveLength(2);
    const xmlFile = path.join(cluster.imageDir, `${DOMAIN}.xml`);
    fs.writeFileSync(xmlFile, xml);
    h1().virsh("define", xmlFile);
    h1().virsh("start", DOMAIN);

    await until("the guest's first heartbeats", () => heartbeats(guestLog()).length >= 3, 30_000);
    const booted = parseGuestLog(guestLog());
    expect(booted).toMatchObject({ ready: true, marker: BASE_MARKER, poweredOff: false });
    expect(booted.error).toBeUndefined();
    const pid = h1().qemuPid(DOMAIN);
    expect(pid).toBeDefined();
    // Its qemu runs in h1's network namespace.
    expect(inode(`/proc/${pid}/ns/net`)).toBe(inode(`/run/netns/${h1().netns}`));
  }, 60_000);

  test("live-migrates h1 → h2 with virsh from the root namespace, without a reboot", async () => {
    const before = heartbeats(guestLog());
    const sourcePid = h1().qemuPid(DOMAIN)!;
    // A volume disk is resolved on the destination: its pool must list the new volume.
    h2().virsh("pool-refresh", cluster.storagePool);

    const started = Date.now();
    // --unsafe: libvirt trusts only network/cluster file systems (NFS, GFS2, ...) as shared; the
    // shared folder here is local ext4, so without it the migration is refused as unsafe.
    h1().virsh("migrate", "--live", "--persistent", "--undefinesource", "--unsafe", DOMAIN, h2().uri);
    const migrationMs = Date.now() - started;
    const job = h2().virsh("domjobinfo", "--completed", DOMAIN);
    console.log(`live migration h1 → h2: virsh migrate ${migrationMs} ms; destination's job:\n${job}`);

    expect(h2().virsh("domstate", DOMAIN).trim()).toBe("running");
    expect(h1().virsh("list", "--all", "--name").split("\n")).not.toContain(DOMAIN);
    const targetPid = h2().qemuPid(DOMAIN);
    expect(targetPid).toBeDefined();
    expect(targetPid).not.toBe(sourcePid);
    expect(fs.existsSync(`/proc/${sourcePid}`)).toBe(false);
    expect(inode(`/proc/${targetPid}/ns/net`)).toBe(inode(`/run/netns/${h2().netns}`));

    // The counter goes on past its last value before the migration, one by one: the guest ran
    // on (a reboot would print READY again and restart at 1).
    const lastBefore = before[before.length - 1]!;
    await until("heartbeats from h2", () => heartbeats(guestLog()).length > before.length + 10, 30_000);
    const log = guestLog();
    const beats = heartbeats(log);
    expect(beats.map((b) => b.n)).toEqual(beats.map((_, i) => i + 1));
    expect(beats[beats.length - 1]!.uptimeS).toBeGreaterThan(lastBefore.uptimeS);
    expect(log.match(/^VMPOOLS-GUEST-READY$/gm)).toHaveLength(1);
  }, 60_000);

  test("keeps running while h2's libvirtd is down; h2 lists it running again once it is back", async () => {
    const pid = h2().qemuPid(DOMAIN)!;
    await h2().stopLibvirtd();
    expect(() => h2().virsh("uri")).toThrow(/unable to connect|Connection refused/i);
    const beatsWhileDown = heartbeats(guestLog()).length;
    await until("heartbeats while h2's libvirtd is down", () => heartbeats(guestLog()).length > beatsWhileDown + 5);
    expect(fs.existsSync(`/proc/${pid}`)).toBe(true);

    await h2().startLibvirtd();
    expect(h2().virsh("domstate", DOMAIN).trim()).toBe("running");
    expect(h2().virsh("list", "--name").split("\n")).toContain(DOMAIN);
    expect(h2().qemuPid(DOMAIN)).toBe(pid);
    // Still one boot, still counting.
    const beats = heartbeats(guestLog());
    expect(beats.map((b) => b.n)).toEqual(beats.map((_, i) => i + 1));
    expect(guestLog().match(/^VMPOOLS-GUEST-READY$/gm)).toHaveLength(1);
  }, 60_000);
});
