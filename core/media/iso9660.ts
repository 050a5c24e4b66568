/**
 * ISO 9660 images (ECMA-119) with a Joliet tree, built in memory for per-VM "initial run"
 * media: cloud-init NoCloud seeds (`cidata`) and Windows sysprep answer files.
 *
 * Layout, fixed so that the same input always yields the same bytes:
 *   0-15 system area (zeros) | 16 primary descriptor | 17 Joliet descriptor | 18 terminator |
 *   19/20 primary L/M path tables | 21/22 Joliet L/M path tables | primary root directory |
 *   Joliet root directory | one zero sector shared by all empty files, if any | file data, one
 *   extent per file, in Joliet name order.
 * Both trees point at the same file extents. No Rock Ridge: Linux and Windows both read Joliet.
 */

export interface MediaFile {
  /** Name at the root of the medium, as the guest sees it (e.g. `user-data`, `Autounattend.xml`). */
  readonly name: string;
  /** Text is written as UTF-8; bytes as given. */
  readonly content: string | Uint8Array;
}

export interface IsoOptions {
  /**
   * Volume label, 1-32 of `[A-Za-z0-9_]`, written verbatim into both descriptors like
   * `genisoimage -V` does. Lower case is outside ISO 9660's d-characters but readers accept it,
   * and cloud-init's NoCloud looks for `LABEL=cidata` (older releases only in lower case): libblkid
   * without Joliet support reads only the primary descriptor, so the exact case must be there.
   * The Joliet descriptor holds the first 16 characters (its field is 16 UCS-2 characters);
   * current libblkid takes the Joliet label and restores the rest from the primary one.
   */
  readonly volumeId: string;
  /** Files at the root; order does not matter (the image lists them sorted). */
  readonly files: readonly MediaFile[];
  /** Fixed timestamp for determinism; @default 2000-01-01T00:00:00Z */
  readonly timestamp?: Date;
}

const SECTOR_BYTES = 2048;
const FIRST_DESCRIPTOR_SECTOR = 16;
/** Joliet allows 64 UCS-2 characters per name (without a `;1` version, as genisoimage writes it). */
const MAX_JOLIET_NAME_CHARS = 64;
const JOLIET_VOLUME_ID_CHARS = 16;
const DEFAULT_TIMESTAMP = new Date(Date.UTC(2000, 0, 1));
const APPLICATION_ID = "VMPOOLS";

interface IsoFile {
  readonly jolietName: string;
  readonly data: Uint8Array;
  /** First sector of the file's data. */
  extent: number;
}

/** One directory: records in order (`.` and `..` first) and where each starts. */
interface Directory {
  readonly records: readonly { readonly id: Buffer; readonly file?: IsoFile; readonly offset: number }[];
  readonly sectors: number;
  extent: number;
}

/** Builds the image; throws on any input a reader would misread or a guest could not find. */
export function buildIso(opts: IsoOptions): Buffer {
  const volumeId = opts.volumeId;
  if (!/^[A-Za-z0-9_]{1,32}$/.test(volumeId)) {
    throw new Error(`ISO volume id ${JSON.stringify(volumeId)}: must be 1-32 characters of A-Z, a-z, 0-9 and _`);
  }
  const time = opts.timestamp ?? DEFAULT_TIMESTAMP;
  const year = time.getUTCFullYear();
  // Directory records store the year as an offset from 1900 in one byte.
  if (Number.isNaN(time.getTime()) || year < 1900 || year > 2155) {
    throw new Error(`ISO timestamp ${String(time)}: must be a valid date in the years 1900-2155`);
  }

  const files = opts.files.map((f): IsoFile => {
    checkJolietName(f.name);
    const data = typeof f.content === "string" ? Buffer.from(f.content, "utf8") : f.content;
    return { jolietName: f.name, data, extent: 0 };
  });
  const seen = new Map<string, string>();
  for (const f of files) {
    // Windows looks names up case-insensitively, so `A.xml` and `a.xml` would shadow each other.
    const key = f.jolietName.toUpperCase();
    const other = seen.get(key);
    if (other !== undefined) {
      throw new Error(
        other === f.jolietName
          ? `ISO file name ${JSON.stringify(f.jolietName)}: duplicate`
          : `ISO file names ${JSON.stringify(other)} and ${JSON.stringify(f.jolietName)}: duplicates when case is ignored, as Windows does`,
      );
    }
    seen.set(key, f.jolietName);
  }
  // Joliet order: UTF-16 code units, as genisoimage and xorriso write it.
  files.sort((a, b) => (a.jolietName < b.jolietName ? -1 : a.jolietName > b.jolietName ? 1 : 0));

  // Everything but the file data depends only on the layout: a pool's members differ in content,
  // rarely in sizes, so one image per layout is kept and copied with the new data written in.
  const layoutKey = [volumeId, time.getTime(), ...files.map((f) => `${f.jolietName}\u0000${f.data.length}`)].join(
    "\u0000",
  );
  const cached = layouts.get(layoutKey);
  if (cached) {
    const img = Buffer.from(cached.image);
    files.forEach((f, i) => img.set(f.data, cached.extents[i]! * SECTOR_BYTES));
    return img;
  }
  const img = layoutImage(volumeId, time, files);
  if (layouts.size >= MAX_CACHED_LAYOUTS) layouts.delete(layouts.keys().next().value!);
  layouts.set(layoutKey, { image: Buffer.from(img), extents: files.map((f) => f.extent) });
  return img;
}

/** Images by layout (see buildIso); the same bytes as building them again, only faster. */
const layouts = new Map<string, { readonly image: Buffer; readonly extents: readonly number[] }>();
const MAX_CACHED_LAYOUTS = 16;

/** Lays out and writes a whole image for files in Joliet order (sets their extents). */
function layoutImage(volumeId: string, time: Date, files: IsoFile[]): Buffer {
  const primaryNames = primaryIdentifiers(files.map((f) => f.jolietName));
  const primaryOrder = files
    .map((file, i) => ({ name: primaryNames[i]!, file }))
    .sort((a, b) => comparePrimary(a.name, b.name));
  const primary = layoutDirectory(primaryOrder.map((e) => ({ id: Buffer.from(e.name, "latin1"), file: e.file })));
  const joliet = layoutDirectory(files.map((file) => ({ id: ucs2(file.jolietName), file })));

  const pathTableSector = FIRST_DESCRIPTOR_SECTOR + 3;
  primary.extent = pathTableSector + 4;
  joliet.extent = primary.extent + primary.sectors;
  let next = joliet.extent + joliet.sectors;
  // Empty files share one zero sector, as xorriso writes them, so no extent points into another
  // file's data or past the end of the volume.
  const emptyExtent = files.some((f) => f.data.length === 0) ? next++ : 0;
  for (const f of files) {
    f.extent = f.data.length === 0 ? emptyExtent : next;
    next += Math.ceil(f.data.length / SECTOR_BYTES);
  }
  const totalSectors = next;

  const img = Buffer.alloc(totalSectors * SECTOR_BYTES);
  const dirDate = directoryDate(time);
  const volume = { volumeId, totalSectors, dirDate, volDate: volumeDate(time) };
  writeVolumeDescriptor(img, FIRST_DESCRIPTOR_SECTOR, primary, pathTableSector, false, volume);
  writeVolumeDescriptor(img, FIRST_DESCRIPTOR_SECTOR + 1, joliet, pathTableSector + 2, true, volume);
  const terminator = (FIRST_DESCRIPTOR_SECTOR + 2) * SECTOR_BYTES;
  img[terminator] = 255;
  img.write("CD001", terminator + 1, "latin1");
  img[terminator + 6] = 1;

  for (const [dir, tableSector] of [
    [primary, pathTableSector],
    [joliet, pathTableSector + 2],
  ] as const) {
    writeRootPathTable(img, tableSector, dir.extent, false);
    writeRootPathTable(img, tableSector + 1, dir.extent, true);
    for (const r of dir.records) {
      const target = r.file ? { extent: r.file.extent, bytes: r.file.data.length } : dirTarget(dir);
      writeDirRecord(img, dir.extent * SECTOR_BYTES + r.offset, r.id, target, r.file === undefined, dirDate);
    }
  }
  for (const f of files) img.set(f.data, f.extent * SECTOR_BYTES);
  return img;
}

function checkJolietName(name: string): void {
  const problem =
    name.length === 0
      ? "must not be empty"
      : name.length > MAX_JOLIET_NAME_CHARS
        ? `is ${name.length} characters long, Joliet allows at most ${MAX_JOLIET_NAME_CHARS}`
        : /[*/:;?\\]/.test(name) || [...name].some((c) => c < " ")
          ? "must not contain control characters or any of * / : ; ? \\"
          : /[\ud800-\udfff]/.test(name)
            ? "must not contain characters outside the Basic Multilingual Plane (Joliet is UCS-2)"
            : /[. ]$/.test(name)
              ? "must not end with a dot or a space (Linux and Windows strip them when reading Joliet names)"
              : undefined;
  if (problem) throw new Error(`ISO file name ${JSON.stringify(name)}: ${problem}`);
}

/**
 * Level 1 (8.3) primary names, upper-cased with every other character replaced by `_`; clashes
 * get a numeric tail (`USER_DA1`). Names are assigned in Joliet order, so they are deterministic.
 */
function primaryIdentifiers(names: readonly string[]): string[] {
  const taken = new Set<string>();
  return names.map((name) => {
    const dot = name.lastIndexOf(".");
    const [stem, extension] = dot > 0 ? [name.slice(0, dot), name.slice(dot + 1)] : [name, ""];
    const dChars = (s: string): string => s.replace(/[^A-Za-z0-9_]/g, "_").toUpperCase();
    const base = dChars(stem).slice(0, 8);
    const ext = dChars(extension).slice(0, 3);
    let candidate = `${base}.${ext}`;
    for (let n = 1; taken.has(candidate); n++) {
      const tail = String(n);
      candidate = `${base.slice(0, 8 - tail.length)}${tail}.${ext}`;
    }
    taken.add(candidate);
    return `${candidate};1`;
  });
}

/** ECMA-119 9.3 order of `NAME.EXT;1` identifiers: name, then extension, each padded with spaces. */
function comparePrimary(a: string, b: string): number {
  const [aName = "", aExt = ""] = a.slice(0, -2).split(".");
  const [bName = "", bExt = ""] = b.slice(0, -2).split(".");
  return comparePadded(aName, bName) || comparePadded(aExt, bExt);
}

function comparePadded(a: string, b: string): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (i < a.length ? a.charCodeAt(i) : 0x20) - (i < b.length ? b.charCodeAt(i) : 0x20);
    if (d !== 0) return d;
  }
  return 0;
}

const SELF_ID = Buffer.from([0]);
const PARENT_ID = Buffer.from([1]);

function recordBytes(id: Buffer): number {
  // Records have even length: identifiers of even length get a padding byte.
  return 33 + id.length + (id.length % 2 === 0 ? 1 : 0);
}

/** Places the records; none may cross a sector boundary (ECMA-119 6.8.1.1). */
function layoutDirectory(entries: readonly { readonly id: Buffer; readonly file: IsoFile }[]): Directory {
  let offset = 0;
  const records = [{ id: SELF_ID }, { id: PARENT_ID }, ...entries].map((e) => {
    const bytes = recordBytes(e.id);
    if ((offset % SECTOR_BYTES) + bytes > SECTOR_BYTES) offset = Math.ceil(offset / SECTOR_BYTES) * SECTOR_BYTES;
    const placed = { ...e, offset };
    offset += bytes;
    return placed;
  });
  return { records, sectors: Math.ceil(offset / SECTOR_BYTES), extent: 0 };
}

/** The root is its own parent, so `.` and `..` both point at it. */
function dirTarget(dir: Directory): { readonly extent: number; readonly bytes: number } {
  return { extent: dir.extent, bytes: dir.sectors * SECTOR_BYTES };
}

/** ECMA-119 9.1. */
function writeDirRecord(
  img: Buffer,
  at: number,
  id: Buffer,
  target: { readonly extent: number; readonly bytes: number },
  isDirectory: boolean,
  date: Buffer,
): void {
  img[at] = recordBytes(id);
  bothEndian32(img, at + 2, target.extent);
  bothEndian32(img, at + 10, target.bytes);
  date.copy(img, at + 18);
  img[at + 25] = isDirectory ? 0x02 : 0;
  bothEndian16(img, at + 28, 1); // volume sequence number
  img[at + 32] = id.length;
  id.copy(img, at + 33);
}

/** ECMA-119 9.4: a one-entry table (the root, its own parent). */
function writeRootPathTable(img: Buffer, sector: number, rootExtent: number, bigEndian: boolean): void {
  const at = sector * SECTOR_BYTES;
  img[at] = 1;
  if (bigEndian) {
    img.writeUInt32BE(rootExtent, at + 2);
    img.writeUInt16BE(1, at + 6);
  } else {
    img.writeUInt32LE(rootExtent, at + 2);
    img.writeUInt16LE(1, at + 6);
  }
}

const PATH_TABLE_BYTES = 10;

/** ECMA-119 8.4 (primary) and 8.5 (supplementary, here Joliet UCS-2 level 3). */
function writeVolumeDescriptor(
  img: Buffer,
  sector: number,
  root: Directory,
  pathTableSector: number,
  isJoliet: boolean,
  volume: {
    readonly volumeId: string;
    readonly totalSectors: number;
    readonly dirDate: Buffer;
    readonly volDate: Buffer;
  },
): void {
  const at = sector * SECTOR_BYTES;
  const text = (offset: number, bytes: number, value: string): void => {
    paddedField(isJoliet, bytes, value).copy(img, at + offset, 0, bytes);
  };
  img[at] = isJoliet ? 2 : 1;
  img.write("CD001", at + 1, "latin1");
  img[at + 6] = 1;
  text(8, 32, ""); // system id
  text(40, 32, isJoliet ? volume.volumeId.slice(0, JOLIET_VOLUME_ID_CHARS) : volume.volumeId);
  bothEndian32(img, at + 80, volume.totalSectors);
  if (isJoliet) img.write("%/E", at + 88, "latin1");
  bothEndian16(img, at + 120, 1); // volume set size
  bothEndian16(img, at + 124, 1); // volume sequence number
  bothEndian16(img, at + 128, SECTOR_BYTES);
  bothEndian32(img, at + 132, PATH_TABLE_BYTES);
  img.writeUInt32LE(pathTableSector, at + 140);
  img.writeUInt32BE(pathTableSector + 1, at + 148);
  writeDirRecord(img, at + 156, SELF_ID, dirTarget(root), true, volume.dirDate);
  text(190, 128, ""); // volume set id
  text(318, 128, ""); // publisher
  text(446, 128, ""); // data preparer
  text(574, 128, APPLICATION_ID);
  text(702, 37, ""); // copyright file
  text(739, 37, ""); // abstract file
  text(776, 37, ""); // bibliographic file
  volume.volDate.copy(img, at + 813); // created
  volume.volDate.copy(img, at + 830); // modified
  UNSET_VOLUME_DATE.copy(img, at + 847); // expires
  UNSET_VOLUME_DATE.copy(img, at + 864); // effective
  img[at + 881] = 1; // file structure version
}

/** Encoded identifier fields, which repeat across images: a pool builds one image per member. */
const paddedFields = new Map<string, Buffer>();

/** Identifier fields are space padded; Joliet's in UCS-2, with a trailing zero byte in odd-sized ones. */
function paddedField(isJoliet: boolean, bytes: number, value: string): Buffer {
  const key = `${isJoliet ? "J" : "P"}${bytes}:${value}`;
  let encoded = paddedFields.get(key);
  if (!encoded) {
    encoded = isJoliet ? ucs2(value.padEnd(bytes >> 1)) : Buffer.from(value.padEnd(bytes), "latin1");
    paddedFields.set(key, encoded);
  }
  return encoded;
}

/** ECMA-119 9.1.5: years since 1900, month, day, hour, minute, second, GMT offset (UTC). */
function directoryDate(t: Date): Buffer {
  return Buffer.from([
    t.getUTCFullYear() - 1900,
    t.getUTCMonth() + 1,
    t.getUTCDate(),
    t.getUTCHours(),
    t.getUTCMinutes(),
    t.getUTCSeconds(),
    0,
  ]);
}

/** ECMA-119 8.4.26.1: "YYYYMMDDHHMMSScc" in ASCII digits, then the GMT offset (UTC). */
function volumeDate(t: Date): Buffer {
  const two = (n: number): string => String(n).padStart(2, "0");
  const digits =
    String(t.getUTCFullYear()).padStart(4, "0") +
    two(t.getUTCMonth() + 1) +
    two(t.getUTCDate()) +
    two(t.getUTCHours()) +
    two(t.getUTCMinutes()) +
    two(t.getUTCSeconds()) +
    two(Math.floor(t.getUTCMilliseconds() / 10));
  return Buffer.concat([Buffer.from(digits, "latin1"), Buffer.from([0])]);
}

const UNSET_VOLUME_DATE = Buffer.concat([Buffer.from("0".repeat(16), "latin1"), Buffer.from([0])]);

function bothEndian16(img: Buffer, at: number, value: number): void {
  img.writeUInt16LE(value, at);
  img.writeUInt16BE(value, at + 2);
}

function bothEndian32(img: Buffer, at: number, value: number): void {
  img.writeUInt32LE(value, at);
  img.writeUInt32BE(value, at + 4);
}

/** Joliet text: UCS-2 big-endian. */
function ucs2(s: string): Buffer {
  return Buffer.from(s, "utf16le").swap16();
}
