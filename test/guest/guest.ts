// A tiny real guest for end-to-end tests (kernel + busybox initramfs built by build-guest.sh).
// The guest reads/writes a text marker in sector 0 of its first virtio disk and powers off, so
// a test can prove that a disk change landed in a qcow2 overlay and that recreating the overlay
// reverts it.
import { execFileSync } from "node:child_process";
import { requireLibvirtd, virsh as virshAt } from "../support/libvirt";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export const GUEST_BUILD_SCRIPT = path.join(__dirname, "build-guest.sh");
export const DEFAULT_GUEST_DIR = "/var/cache/vmpools-test-guest";

export interface GuestFiles {
  kernelPath: string;
  initrdPath: string;
  /** e.g. "6.1.0-56-cloud-amd64" */
  kernelVersion: string;
}

export function guestDir(): string {
  return process.env.VMPOOLS_GUEST_DIR || DEFAULT_GUEST_DIR;
}

let cached: GuestFiles | undefined;

/** Builds the guest once per process (the script itself is a no-op when its cache is current). */
export function ensureGuest(): GuestFiles {
  if (cached) return cached;
  const dir = guestDir();
  execFileSync("bash", [GUEST_BUILD_SCRIPT], {
    env: { ...process.env, VMPOOLS_GUEST_DIR: dir },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stamp = fs.readFileSync(path.join(dir, "stamp"), "utf8").split("\n");
  cached = {
    kernelPath: path.join(dir, "vmlinuz"),
    initrdPath: path.join(dir, "initrd.cpio.gz"),
    kernelVersion: stamp[1] ?? "",
  };
  return cached;
}

/** What /init does after boot; markers are limited to characters safe on a kernel cmdline. */
export type GuestAction = { kind: "read-marker" } | { kind: "write-marker"; text: string };

const MARKER_RE = /^[A-Za-z0-9._:-]{1,200}$/;

/**
 * Kernel cmdline for an action: serial console, quiet boot, and panic → reboot (→ destroy). With
 * `stay`, the guest stays up after the action (until destroyed) instead of powering off.
 */
export function guestCmdline(action: GuestAction, opts: { readonly stay?: boolean } = {}): string {
  let a: string;
  if (action.kind === "write-marker") {
    if (!MARKER_RE.test(action.text)) throw new Error(`bad marker text: ${action.text}`);
    a = `write-marker:${action.text}`;
  } else {
    a = "read-marker";
  }
  return `console=ttyS0 quiet panic=-1 vmpools.action=${a}${opts.stay ? " vmpools.after=stay" : ""}`;
}

export interface GuestDomainOptions {
  name: string;
  diskPath: string;
  diskFormat: "qcow2" | "raw";
  serialLogPath: string;
  cmdline: string;
  /** Raw XML placed inside <metadata>; elements must carry their own namespace. */
  metadataXml?: string;
  memoryMiB?: number;
  /** Defaults to ensureGuest(). */
  guest?: Pick<GuestFiles, "kernelPath" | "initrdPath">;
}

function esc(s: string): string {
  return s
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/'/g, "&apos;")
    .replace(/"/g, "&quot;");
}

/**
 * Domain XML for qemu:///system. Type "qemu" (TCG) because KVM guests fault on these machines;
 * <acpi/> lets `poweroff -f` really power off (state "shut off", reason "shutdown"), and
 * on_reboot=destroy stops a panicking guest instead of looping. No network, graphics, USB or
 * balloon: less to emulate means a faster boot.
 */
export function guestDomainXml(o: GuestDomainOptions): string {
  const g = o.guest ?? ensureGuest();
  const mem = o.memoryMiB ?? 192;
  if (mem < 128 || mem > 256) throw new Error(`memoryMiB must be 128..256, got ${mem}`);
  const metadata = o.metadataXml ? `  <metadata>\n    ${o.metadataXml}\n  </metadata>\n` : "";
  return `<domain type='qemu'>
  <name>${esc(o.name)}</name>
${metadata}  <memory unit='MiB'>${mem}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>${esc(g.kernelPath)}</kernel>
    <initrd>${esc(g.initrdPath)}</initrd>
    <cmdline>${esc(o.cmdline)}</cmdline>
  </os>
  <features>
    <acpi/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='${o.diskFormat}'/>
      <source file='${esc(o.diskPath)}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path='${esc(o.serialLogPath)}'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='${esc(o.serialLogPath)}'/>
      <target type='serial' port='0'/>
    </console>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

export interface GuestLog {
  ready: boolean;
  /** Sector 0 as the guest saw it at boot (NULs stripped); undefined if never printed. */
  marker?: string;
  written?: string;
  error?: string;
  poweredOff: boolean;
}

/** Parses the guest's serial output (see the protocol comment in build-guest.sh's /init). */
export function parseGuestLog(log: string): GuestLog {
  const lines = log.split(/\r?\n/);
  const pick = (re: RegExp): string | undefined => {
    for (const l of lines) {
      const m = re.exec(l);
      if (m) return m[1];
    }
    return undefined;
  };
  return {
    ready: lines.includes("VMPOOLS-GUEST-READY"),
    marker: pick(/^MARKER\[(.*)\]$/),
    written: pick(/^MARKER-WRITTEN\[(.*)\]$/),
    error: pick(/^VMPOOLS-GUEST-ERROR (.*)$/),
    poweredOff: lines.includes("VMPOOLS-GUEST-POWEROFF"),
  };
}

/** Sector 0 of a disk image as text (NULs stripped), read on the host through qemu-img. */
export function readImageMarker(
  imagePath: string,
  format: "qcow2" | "raw",
  opts: { readonly whileRunning?: boolean } = {},
): string {
  // qemu-img dd cannot write to a pipe (it resizes its output), hence a scratch file.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "vmpools-sector0-"));
  try {
    const out = path.join(tmp, "s0.raw");
    // -U: read without the image lock while a guest has the image open (it fsyncs its writes).
    const shared = opts.whileRunning ? ["-U"] : [];
    execFileSync(
      "qemu-img",
      ["dd", ...shared, "-f", format, "-O", "raw", "bs=512", "count=1", `if=${imagePath}`, `of=${out}`],
      {
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    return fs
      .readFileSync(out)
      .toString("latin1")
      .replace(/[\0\n]/g, "");
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export const LIBVIRT_URI = "qemu:///system";

export const virsh = (...args: string[]): string => virshAt(LIBVIRT_URI, ...args).trim();

/**
 * Fails (never skips) unless qemu:///system answers. Installing libvirt, starting it and fixing
 * /dev/kvm's group is the job of scripts/setup-system.sh and scripts/libvirt-up.sh, which
 * `npm test` runs first.
 */
export const ensureLibvirt = (): void => requireLibvirtd(LIBVIRT_URI);

/** Polls `virsh domstate` every 200 ms until the domain is shut off; returns the state reason. */
export async function waitShutOff(name: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = virsh("domstate", "--reason", name);
    if (state.startsWith("shut off")) return state;
    if (Date.now() > deadline) throw new Error(`${name} still "${state}" after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
