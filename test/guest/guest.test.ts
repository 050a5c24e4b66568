// End-to-end: a real guest writes into its qcow2 overlay; recreating the overlay reverts it.
// Needs root, libvirtd and qemu (installed/started on demand); fails, never skips, without them.
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  ensureGuest,
  ensureLibvirt,
  guestCmdline,
  guestDomainXml,
  GuestAction,
  parseGuestLog,
  readImageMarker,
  virsh,
  waitShutOff,
} from "./guest";

// libvirt's own image folder: qemu runs as libvirt-qemu and must traverse the parent folders
// (a mkdtemp folder under /tmp is 0700). libvirt's default DAC labelling chowns the disks.
const IMAGES = "/var/lib/libvirt/images";
const BASE_MARKER = "BASE-CLEAN";

const sha256 = (p: string) => createHash("sha256").update(fs.readFileSync(p)).digest("hex");
const qemuImg = (...args: string[]) => execFileSync("qemu-img", args, { stdio: ["ignore", "ignore", "pipe"] });

describe("tiny real guest (qemu:///system, TCG)", () => {
  const id = `${process.pid}-${randomBytes(3).toString("hex")}`;
  const name = `vmpools-test-guest-${id}`;
  const dir = path.join(IMAGES, `vmpools-test-${id}`);
  const base = path.join(dir, "base.raw");
  const overlay = path.join(dir, "overlay.qcow2");

  afterAll(() => {
    try {
      virsh("destroy", name);
    } catch {
      /* not running */
    }
    try {
      virsh("undefine", name);
    } catch {
      /* never defined */
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function boot(action: GuestAction, log: string) {
    const xml = guestDomainXml({
      name,
      diskPath: overlay,
      diskFormat: "qcow2",
      serialLogPath: log,
      cmdline: guestCmdline(action),
      metadataXml: `<vmpools:test xmlns:vmpools="urn:vmpools:test">${id}</vmpools:test>`,
    });
    const xmlPath = path.join(dir, path.basename(log, ".log") + ".xml");
    fs.writeFileSync(xmlPath, xml);
    execFileSync("virt-xml-validate", [xmlPath, "domain"], { stdio: "pipe" });
    virsh("define", xmlPath);
    const t0 = Date.now();
    virsh("start", name);
    const reason = await waitShutOff(name, 60_000);
    const ms = Date.now() - t0;
    // Each boot defines afresh (a redefinition would need the old UUID).
    virsh("undefine", name);
    const raw = fs.readFileSync(log, "utf8");
    const out = parseGuestLog(raw);
    // Show the whole console when the guest misbehaved; the parsed view alone hides why.
    if (!out.ready || out.error || !out.poweredOff) throw new Error(`guest failed (${reason}):\n${raw}`);
    return { reason, ms, out };
  }

  test("writes land in the overlay; a fresh overlay reverts them", async () => {
    ensureLibvirt();
    let t = Date.now();
    const guest = ensureGuest();
    console.log(`guest build/cache check: ${Date.now() - t} ms (kernel ${guest.kernelVersion})`);
    expect(fs.statSync(guest.kernelPath).size).toBeGreaterThan(1_000_000);
    expect(fs.statSync(guest.initrdPath).size).toBeGreaterThan(100_000);

    fs.mkdirSync(dir, { mode: 0o755 });
    fs.chmodSync(dir, 0o755); // mkdir's mode is filtered by the umask
    const sector = Buffer.alloc(1024 * 1024);
    sector.write(BASE_MARKER, "latin1");
    fs.writeFileSync(base, sector);
    const baseHash = sha256(base);
    qemuImg("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", overlay);

    // Boot 1: the guest sees the base content through the overlay, then overwrites it.
    const text = `run-${id}`;
    const first = await boot({ kind: "write-marker", text }, path.join(dir, "boot1.log"));
    console.log(`boot→poweroff (write): ${first.ms} ms`);
    expect(first.out).toMatchObject({ ready: true, marker: BASE_MARKER, written: text, poweredOff: true });
    // "shutdown" (not "destroyed"/"crashed"): the guest powered itself off through ACPI.
    expect(first.reason).toBe("shut off (shutdown)");

    expect(readImageMarker(overlay, "qcow2")).toBe(text);
    expect(sha256(base)).toBe(baseHash);
    expect(readImageMarker(base, "raw")).toBe(BASE_MARKER);

    // Stateless revert: drop the overlay and create a fresh one on the untouched base.
    t = Date.now();
    fs.rmSync(overlay);
    qemuImg("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", overlay);
    console.log(`overlay recreate: ${Date.now() - t} ms`);
    expect(readImageMarker(overlay, "qcow2")).toBe(BASE_MARKER);

    // Boot 2: the guest itself sees the clean state again.
    const second = await boot({ kind: "read-marker" }, path.join(dir, "boot2.log"));
    console.log(`boot→poweroff (read): ${second.ms} ms`);
    expect(second.out).toMatchObject({ ready: true, marker: BASE_MARKER, poweredOff: true });
    expect(second.out.written).toBeUndefined();
    expect(second.reason).toBe("shut off (shutdown)");
    expect(sha256(base)).toBe(baseHash);
  }, 120_000);
});
