// Reads what the reconciler needs out of libvirt's own XML (as virsh prints it), through the
// XML library: any quoting, attribute order, whitespace or character references.
import { LIBVIRT_DEFAULT_LIFECYCLE, type DomainDescription, type DomainDisk } from "../core/domain";
import {
  buildXml,
  childElement,
  childElements,
  parseXml,
  textOf,
  withoutIndentation,
  type XmlElement,
} from "../core/xml";

/** Attributes of one start tag, e.g. `<source pool='p' volume="v"/>`, unescaped. */
export function attributes(tag: string): Record<string, string> {
  // A start tag alone is not a document: close it, so the parser reads it.
  return { ...parseXml(tag.trim().replace(/\/?>$/, "/>"))?.attrs };
}

/** Every element of this name, in document order, as written in `xml` (outermost ones only). */
export function elements(xml: string, name: string): string[] {
  const root = parseXml(xml, { spans: true });
  return root ? descendants(root, name).map((e) => xml.slice(e.span!.start, e.span!.end)) : [];
}

function descendants(root: XmlElement, name: string): XmlElement[] {
  const out: XmlElement[] = [];
  const walk = (e: XmlElement) => {
    if (e.name === name) out.push(e);
    else for (const c of childElements(e)) walk(c);
  };
  walk(root);
  return out;
}

/** The element at this path of child names, first match at each step. */
const at = (e: XmlElement | undefined, ...path: string[]): XmlElement | undefined =>
  path.reduce<XmlElement | undefined>((cur, name) => cur && childElement(cur, name), e);

export interface VolumeRef {
  /** libvirt storage pool. */
  readonly storagePool: string;
  readonly volume: string;
}

/** The disk booted first, else the first `vda`, else the first disk: the member's system disk. */
function systemDiskElement(domain: XmlElement): XmlElement | undefined {
  const disks = childElements(at(domain, "devices") ?? domain, "disk").filter((d) => d.attrs.device === "disk");
  return (
    disks.find((d) => at(d, "boot")?.attrs.order === "1") ??
    disks.find((d) => at(d, "target")?.attrs.dev === "vda") ??
    disks[0]
  );
}

/** The member's system disk when it is a storage-pool volume; undefined for file or block disks. */
export function systemVolumeOf(domainXml: string): VolumeRef | undefined {
  const root = parseXml(domainXml);
  const pick = root && systemDiskElement(root);
  if (!pick || pick.attrs.type !== "volume") return undefined;
  const source = at(pick, "source")?.attrs ?? {};
  return source.pool && source.volume ? { storagePool: source.pool, volume: source.volume } : undefined;
}

/**
 * The domain XML with the disk that reads `from` (a `<disk type='volume'>` in `storagePool`)
 * reading `to` instead; undefined when no such disk is there (e.g. already switched). Everything
 * else is written back as it was read (libvirt re-reads and normalises it anyway).
 */
export function withDiskVolume(domainXml: string, storagePool: string, from: string, to: string): string | undefined {
  const root = parseXml(domainXml);
  let switched = false;
  const visit = (e: XmlElement, inDisk: boolean): XmlElement => {
    if (inDisk && e.name === "source" && e.attrs.pool === storagePool && e.attrs.volume === from) {
      switched = true;
      return { ...e, attrs: { ...e.attrs, volume: to } };
    }
    const disk = e.name === "disk" && e.attrs.type === "volume";
    return { ...e, children: e.children.map((c) => (typeof c === "string" ? c : visit(c, disk))) };
  };
  const result = root && visit(root, false);
  return result && switched ? buildXml(result) : undefined;
}

/** What recreating an overlay needs: the same capacity, format and backing file. */
export interface OverlayFacts {
  readonly capacityBytes: number;
  readonly format: string;
  readonly backingPath: string;
  readonly backingFormat: string;
}

const UNIT_BYTES: Record<string, number> = { bytes: 1, b: 1, KiB: 1024, k: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };

/** Overlay facts from `vol-dumpxml`; undefined when the volume has no backing file (a full copy). */
export function overlayFactsOf(volumeXml: string): OverlayFacts | undefined {
  const root = parseXml(volumeXml);
  const capacity = at(root, "capacity");
  const backing = at(root, "backingStore");
  const backingPath = textOf(at(backing, "path"))?.trim();
  const target = at(root, "target");
  const bytes = textOf(capacity)?.trim() ?? "";
  if (!capacity || !/^\d+$/.test(bytes) || !backing || !backingPath || !target) return undefined;
  return {
    capacityBytes: Number(bytes) * (UNIT_BYTES[capacity.attrs.unit ?? "bytes"] ?? 1),
    format: at(target, "format")?.attrs.type ?? "qcow2",
    backingPath,
    backingFormat: at(backing, "format")?.attrs.type ?? "raw",
  };
}

/** The bytes a volume takes on disk (`<allocation>` of `vol-dumpxml`); undefined when absent. */
export function allocationOf(volumeXml: string): number | undefined {
  const allocation = at(parseXml(volumeXml), "allocation");
  const value = textOf(allocation)?.trim() ?? "";
  if (!allocation || !/^\d+$/.test(value)) return undefined;
  return Number(value) * (UNIT_BYTES[allocation.attrs.unit ?? "bytes"] ?? 1);
}

/** The domain's SPICE display as the running domain reports it. */
export interface SpiceDisplay {
  /** The whole `<graphics type='spice'>` element, to send back with a new password. */
  readonly element: string;
  readonly port?: number;
  readonly tlsPort?: number;
  readonly listen?: string;
}

export function spiceDisplayOf(domainXml: string): SpiceDisplay | undefined {
  const root = parseXml(domainXml, { spans: true });
  const graphics = root && descendants(root, "graphics").find((g) => g.attrs.type === "spice");
  if (!graphics) return undefined;
  const a = graphics.attrs;
  const listen = a.listen ?? at(graphics, "listen")?.attrs.address;
  const port = Number(a.port);
  const tlsPort = Number(a.tlsPort);
  return {
    // As libvirt wrote it: update-device gets back exactly what the domain has.
    element: domainXml.slice(graphics.span!.start, graphics.span!.end),
    ...(port > 0 ? { port } : {}),
    ...(tlsPort > 0 ? { tlsPort } : {}),
    ...(listen ? { listen } : {}),
  };
}

/** A domain read back in the terms of core's description, with what the engine chose. */
export interface DomainRead {
  readonly description: DomainDescription;
  /** The storage pool of each disk, in disk order. */
  readonly storagePools: readonly string[];
  /** Whether a SPICE password is set (the lock's value is never returned). */
  readonly hasConsolePassword: boolean;
}

const MIB: Record<string, number> = { KiB: 1 / 1024, k: 1 / 1024, MiB: 1, M: 1, GiB: 1024, G: 1024 };
const toMiB = (e: XmlElement | undefined, value: string | undefined) =>
  Number(value) * (MIB[e?.attrs.unit ?? "KiB"] ?? Number.NaN);

/**
 * A member's domain XML (ours or libvirt's `dumpxml --inactive --security-info`) in the terms of
 * `describeDomain`: what each device is, not how the text is laid out. For checks that what
 * libvirt holds is what was described; undefined when the text is not a domain.
 */
export function readDomainXml(xml: string): DomainRead | undefined {
  const root = parseXml(xml);
  if (!root || root.name !== "domain") return undefined;
  const devices = at(root, "devices");
  const system = systemDiskElement(root);
  const diskEls = devices ? childElements(devices, "disk") : [];
  const disks = diskEls.map((d): DomainDisk => ({
    role: d === system ? "system" : "config",
    device: d.attrs.device as DomainDisk["device"],
    volume: at(d, "source")?.attrs.volume ?? "",
    driver: { name: "qemu", type: at(d, "driver")?.attrs.type as DomainDisk["driver"]["type"] },
    target: { dev: at(d, "target")?.attrs.dev ?? "", bus: at(d, "target")?.attrs.bus as DomainDisk["target"]["bus"] },
    readOnly: at(d, "readonly") !== undefined,
    bootOrder: at(d, "boot") ? Number(at(d, "boot")!.attrs.order) : undefined,
  }));
  const cpu = at(root, "cpu");
  const cells = childElements(at(cpu, "numa") ?? { name: "", attrs: {}, children: [] }, "cell");
  const tune = at(root, "numatune");
  const os = at(root, "os");
  const kernel = textOf(at(os, "kernel"));
  const graphics = devices && childElements(devices, "graphics").find((g) => g.attrs.type === "spice");
  const text = (name: string) => textOf(at(root, name));
  const metadata = at(root, "metadata");
  const ours = metadata && childElements(metadata)[0];
  const description: DomainDescription = {
    name: text("name") ?? "",
    type: root.attrs.type as DomainDescription["type"],
    description: text("description") || undefined,
    memoryMiB: toMiB(at(root, "memory"), text("memory")),
    vcpus: Number(text("vcpu")),
    cpu: cpu && {
      mode: cpu.attrs.mode as "host-passthrough" | undefined,
      numaCells: cells.map((c, i) => ({
        id: c.attrs.id === undefined ? i : Number(c.attrs.id),
        cpus: c.attrs.cpus ?? "",
        memoryMiB: toMiB(c, c.attrs.memory),
      })),
    },
    numaTune: tune && {
      memory: { mode: at(tune, "memory")?.attrs.mode ?? "", nodeset: at(tune, "memory")?.attrs.nodeset ?? "" },
      memNodes: childElements(tune, "memnode").map((n) => ({
        cellId: Number(n.attrs.cellid),
        mode: n.attrs.mode ?? "",
        nodeset: n.attrs.nodeset ?? "",
      })),
    },
    os: {
      type: textOf(at(os, "type"))?.trim() as "hvm",
      machine: at(os, "type")?.attrs.machine ?? "",
      smbios: at(os, "smbios")?.attrs.mode as "sysinfo",
      kernel: kernel
        ? {
            path: kernel,
            initrd: textOf(at(os, "initrd")) || undefined,
            cmdline: textOf(at(os, "cmdline")) || undefined,
          }
        : undefined,
    },
    features: { acpi: (at(root, "features", "acpi") !== undefined) as true },
    sysinfo: {
      type: at(root, "sysinfo")?.attrs.type as "smbios",
      oemStrings: childElements(at(root, "sysinfo", "oemStrings") ?? root, "entry").map((e) => textOf(e) ?? ""),
    },
    lifecycle: {
      onPoweroff: text("on_poweroff") ?? LIBVIRT_DEFAULT_LIFECYCLE.onPoweroff,
      onReboot: text("on_reboot") ?? LIBVIRT_DEFAULT_LIFECYCLE.onReboot,
      onCrash: text("on_crash") ?? LIBVIRT_DEFAULT_LIFECYCLE.onCrash,
    },
    devices: {
      disks,
      interfaces: (devices ? childElements(devices, "interface") : []).map((n) => ({
        type: n.attrs.type as "network",
        network: at(n, "source")?.attrs.network ?? "",
        model: at(n, "model")?.attrs.type ?? "",
      })),
      graphics: {
        type: graphics?.attrs.type as "spice",
        autoPort: (graphics?.attrs.autoport === "yes") as true,
        listen: graphics?.attrs.listen ?? at(graphics, "listen")?.attrs.address ?? "",
        lock: { passwdValidTo: graphics?.attrs.passwdValidTo as "1970-01-01T00:00:00" },
      },
      videos: (devices ? childElements(devices, "video") : []).map((v) => ({
        model: at(v, "model")?.attrs.type as "qxl",
        primary: (at(v, "model")?.attrs.primary === "yes") as true,
      })),
      channels: (devices ? childElements(devices, "channel") : []).map((c) => ({
        type: c.attrs.type as "spicevmc",
        target: at(c, "target")?.attrs.type as "virtio",
        name: at(c, "target")?.attrs.name ?? "",
      })),
      serial: {
        port: Number(at(devices, "serial", "target")?.attrs.port) as 0,
        console: at(devices, "console", "target")?.attrs.type as "serial",
      },
    },
    metadataXml: ours ? buildXml(withoutIndentation(ours)) : "",
  };
  return {
    description,
    storagePools: diskEls.map((d) => at(d, "source")?.attrs.pool ?? ""),
    hasConsolePassword: (graphics?.attrs.passwd ?? "") !== "",
  };
}

/** Whether the domain passes the host CPU through (`<cpu mode='host-passthrough'>`), which cannot migrate. */
export function passesHostCpuThrough(domainXml: string): boolean {
  const root = parseXml(domainXml);
  const cpu = root && childElement(root, "cpu");
  return cpu?.attrs.mode === "host-passthrough";
}

/** The storage pools the domain's volume disks (system disk, media) are in, each once. */
export function volumePoolsOf(domainXml: string): string[] {
  const root = parseXml(domainXml);
  const disks = root ? childElements(at(root, "devices") ?? root, "disk").filter((d) => d.attrs.type === "volume") : [];
  return [...new Set(disks.map((d) => at(d, "source")?.attrs.pool).filter((p): p is string => !!p))];
}
