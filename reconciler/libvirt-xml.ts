// Reads the few facts the reconciler needs out of libvirt's own XML (as virsh prints it).
import { unescapeXml } from "../core/xml";

/** Attributes of one start tag, e.g. `<source pool='p' volume="v"/>`, unescaped. */
export function attributes(tag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of tag.matchAll(/([A-Za-z_][\w.:-]*)\s*=\s*(?:'([^']*)'|"([^"]*)")/g)) {
    out[m[1]!] = unescapeXml(m[2] ?? m[3]!);
  }
  return out;
}

/** Every `<name …>…</name>` or `<name …/>` element, in document order (no nesting of the same name). */
export function elements(xml: string, name: string): string[] {
  const re = new RegExp(`<${name}\\b[^>]*?(?:/>|>[\\s\\S]*?</${name}>)`, "g");
  return [...xml.matchAll(re)].map((m) => m[0]);
}

const firstTag = (xml: string, name: string): string | undefined => new RegExp(`<${name}\\b[^>]*>`).exec(xml)?.[0];

export interface VolumeRef {
  /** libvirt storage pool. */
  readonly storagePool: string;
  readonly volume: string;
}

/**
 * The member's system disk: the disk booted first (else the first `vda`, else the first disk),
 * when it is a storage-pool volume. undefined for file or block disks.
 */
export function systemVolumeOf(domainXml: string): VolumeRef | undefined {
  const disks = elements(domainXml, "disk").filter((d) => attributes(firstTag(d, "disk")!).device === "disk");
  const pick =
    disks.find((d) => attributes(firstTag(d, "boot") ?? "").order === "1") ??
    disks.find((d) => attributes(firstTag(d, "target") ?? "").dev === "vda") ??
    disks[0];
  if (!pick || attributes(firstTag(pick, "disk")!).type !== "volume") return undefined;
  const source = attributes(firstTag(pick, "source") ?? "");
  return source.pool && source.volume ? { storagePool: source.pool, volume: source.volume } : undefined;
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
  const capacity = /<capacity\b([^>]*)>(\d+)<\/capacity>/.exec(volumeXml);
  const backing = elements(volumeXml, "backingStore")[0];
  const target = elements(volumeXml, "target")[0];
  const backingPath = backing && /<path>([^<]+)<\/path>/.exec(backing)?.[1];
  if (!capacity || !backing || !backingPath || !target) return undefined;
  const unit = attributes(capacity[1]!).unit ?? "bytes";
  return {
    capacityBytes: Number(capacity[2]) * (UNIT_BYTES[unit] ?? 1),
    format: attributes(firstTag(target, "format") ?? "").type ?? "qcow2",
    backingPath: unescapeXml(backingPath),
    backingFormat: attributes(firstTag(backing, "format") ?? "").type ?? "raw",
  };
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
  const element = elements(domainXml, "graphics").find((g) => attributes(firstTag(g, "graphics")!).type === "spice");
  if (!element) return undefined;
  const a = attributes(firstTag(element, "graphics")!);
  const listen = a.listen ?? attributes(firstTag(element, "listen") ?? "").address;
  const port = Number(a.port);
  const tlsPort = Number(a.tlsPort);
  return {
    element,
    ...(port > 0 ? { port } : {}),
    ...(tlsPort > 0 ? { tlsPort } : {}),
    ...(listen ? { listen } : {}),
  };
}
