/**
 * 1.44 MB FAT12 floppy images, built in memory, for Windows setups that read `A:\Unattend.xml`.
 *
 * Standard 3.5" HD geometry (what `mkfs.fat -C img 1440` and DOS `format` produce): 512-byte
 * sectors, one sector per cluster, one reserved sector, two FATs of 9 sectors, 224 root entries
 * (14 sectors), then 2847 data clusters. Files sit in the root directory, sorted by name, with
 * their data in consecutive clusters in the same order. Same input, same bytes.
 */
import { createHash } from "crypto";
import type { MediaFile } from "./iso9660";

export interface FloppyOptions {
  /**
   * Volume label, 1-11 of `[A-Za-z0-9_-]`, written verbatim (like `mkfs.fat -n`): lower case
   * stays lower case, which older cloud-init releases need to find a `cidata` seed.
   */
  readonly label: string;
  /** Files at the root; order does not matter (the image lists them sorted). */
  readonly files: readonly MediaFile[];
  /** Fixed timestamp for determinism, stored as UTC; @default 2000-01-01T00:00:00Z */
  readonly timestamp?: Date;
}

const SECTOR_BYTES = 512;
const TOTAL_SECTORS = 2880;
const FAT_SECTORS = 9;
const FAT_COUNT = 2;
const ROOT_ENTRIES = 224;
const DIR_ENTRY_BYTES = 32;
const ROOT_SECTOR = 1 + FAT_COUNT * FAT_SECTORS;
const DATA_SECTOR = ROOT_SECTOR + (ROOT_ENTRIES * DIR_ENTRY_BYTES) / SECTOR_BYTES;
/** Clusters are numbered from 2; one sector each. */
const DATA_CLUSTERS = TOTAL_SECTORS - DATA_SECTOR;
const MEDIA_DESCRIPTOR = 0xf0;
const END_OF_CHAIN = 0xfff;
const MAX_LONG_NAME_CHARS = 255;
const LONG_NAME_CHARS_PER_ENTRY = 13;
const DEFAULT_TIMESTAMP = new Date(Date.UTC(2000, 0, 1));
/** Characters allowed in 8.3 names besides A-Z and 0-9 (FAT spec, "short name" rules). */
const SHORT_NAME_PUNCTUATION = "!#$%&'()-@^_`{}~";

interface FloppyFile {
  readonly name: string;
  readonly data: Uint8Array;
  /** 11 bytes: base padded to 8, extension padded to 3. */
  shortName: string;
  /** 0 when the name is exactly its 8.3 form. */
  longNameEntries: number;
  firstCluster: number;
}

/** Builds the image; throws when names are unusable or the files do not fit. */
export function buildFloppy(opts: FloppyOptions): Buffer {
  if (!/^[A-Za-z0-9_-]{1,11}$/.test(opts.label)) {
    throw new Error(`floppy label ${JSON.stringify(opts.label)}: must be 1-11 characters of A-Z, a-z, 0-9, _ and -`);
  }
  const time = opts.timestamp ?? DEFAULT_TIMESTAMP;
  const year = time.getUTCFullYear();
  // FAT dates count years from 1980 in 7 bits.
  if (Number.isNaN(time.getTime()) || year < 1980 || year > 2107) {
    throw new Error(`floppy timestamp ${String(time)}: must be a valid date in the years 1980-2107`);
  }

  const files = opts.files.map((f): FloppyFile => {
    checkLongName(f.name);
    const data = typeof f.content === "string" ? Buffer.from(f.content, "utf8") : f.content;
    return { name: f.name, data, shortName: "", longNameEntries: 0, firstCluster: 0 };
  });
  // FAT looks names up case-insensitively, so names differing only in case would shadow each other.
  const byUpper = new Map<string, FloppyFile>();
  for (const f of files) {
    const other = byUpper.get(f.name.toUpperCase());
    if (other) {
      throw new Error(
        other.name === f.name
          ? `floppy file name ${JSON.stringify(f.name)}: duplicate`
          : `floppy file names ${JSON.stringify(other.name)} and ${JSON.stringify(f.name)}: duplicates when case is ignored, as FAT does`,
      );
    }
    byUpper.set(f.name.toUpperCase(), f);
  }
  files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  assignShortNames(files, byUpper);

  const dirEntries = 1 + files.reduce((n, f) => n + f.longNameEntries + 1, 0);
  if (dirEntries > ROOT_ENTRIES) {
    throw new Error(
      `floppy: ${files.length} files need ${dirEntries} root directory entries (label and long names included), the root holds ${ROOT_ENTRIES}`,
    );
  }
  const clusters = files.reduce((n, f) => n + Math.ceil(f.data.length / SECTOR_BYTES), 0);
  if (clusters > DATA_CLUSTERS) {
    throw new Error(
      `floppy: files need ${clusters * SECTOR_BYTES} bytes of clusters, a 1.44 MB floppy holds ${DATA_CLUSTERS * SECTOR_BYTES}`,
    );
  }

  const img = Buffer.alloc(TOTAL_SECTORS * SECTOR_BYTES);
  writeBootSector(img, opts.label, volumeSerial(opts.label, files));

  const fat = Buffer.alloc(FAT_SECTORS * SECTOR_BYTES);
  setFatEntry(fat, 0, 0xf00 | MEDIA_DESCRIPTOR);
  setFatEntry(fat, 1, END_OF_CHAIN);
  let nextCluster = 2;
  for (const f of files) {
    const count = Math.ceil(f.data.length / SECTOR_BYTES);
    if (count === 0) continue; // empty files own no cluster (first cluster 0)
    f.firstCluster = nextCluster;
    for (let i = 0; i < count; i++) {
      setFatEntry(fat, nextCluster + i, i === count - 1 ? END_OF_CHAIN : nextCluster + i + 1);
    }
    img.set(f.data, (DATA_SECTOR + nextCluster - 2) * SECTOR_BYTES);
    nextCluster += count;
  }
  for (let i = 0; i < FAT_COUNT; i++) fat.copy(img, (1 + i * FAT_SECTORS) * SECTOR_BYTES);

  const { date, clock } = fatDateTime(time);
  let at = ROOT_SECTOR * SECTOR_BYTES;
  const shortEntry = (name11: string, attributes: number, file?: FloppyFile): void => {
    img.write(name11, at, "latin1");
    img[at + 11] = attributes;
    img.writeUInt16LE(clock, at + 14); // created
    img.writeUInt16LE(date, at + 16);
    img.writeUInt16LE(date, at + 18); // last access
    img.writeUInt16LE(clock, at + 22); // written
    img.writeUInt16LE(date, at + 24);
    img.writeUInt16LE(file?.firstCluster ?? 0, at + 26);
    img.writeUInt32LE(file?.data.length ?? 0, at + 28);
    at += DIR_ENTRY_BYTES;
  };
  shortEntry(opts.label.padEnd(11), 0x08); // volume label
  for (const f of files) {
    at = writeLongNameEntries(img, at, f);
    shortEntry(f.shortName, 0x20, f); // archive
  }
  return img;
}

function checkLongName(name: string): void {
  const problem =
    name.length === 0
      ? "must not be empty"
      : name.length > MAX_LONG_NAME_CHARS
        ? `is ${name.length} characters long, FAT long names allow at most ${MAX_LONG_NAME_CHARS}`
        : /["*/:<>?\\|]/.test(name) || [...name].some((c) => c < " ")
          ? 'must not contain control characters or any of " * / : < > ? \\ |'
          : /[. ]$/.test(name)
            ? "must not end with a dot or a space (Windows strips them)"
            : undefined;
  if (problem) throw new Error(`floppy file name ${JSON.stringify(name)}: ${problem}`);
}

/**
 * 8.3 names the way Windows makes them: upper case, spaces and extra dots dropped, other
 * characters replaced by `_`; lossy or truncated names get a `~N` tail. A name that already is a
 * valid 8.3 name keeps it and needs no long-name entries. No short name may equal another
 * file's long name, since lookups match either.
 */
function assignShortNames(files: readonly FloppyFile[], byUpper: ReadonlyMap<string, FloppyFile>): void {
  const taken = new Set<string>();
  const free = (f: FloppyFile, dotted: string): boolean =>
    !taken.has(dotted) && (byUpper.get(dotted) ?? f) === f && dotted !== "." && dotted !== "..";
  for (const f of files) {
    const dot = f.name.lastIndexOf(".");
    const [stem, extension] = dot > 0 ? [f.name.slice(0, dot), f.name.slice(dot + 1)] : [f.name, ""];
    let lossy = false;
    const clean = (s: string): string =>
      [...s.replace(/[ .]/g, "").toUpperCase()]
        .map((c) => {
          if (/[A-Z0-9]/.test(c) || SHORT_NAME_PUNCTUATION.includes(c)) return c;
          lossy = true;
          return "_";
        })
        .join("");
    const fullBase = clean(stem) || "_";
    const fullExt = clean(extension);
    const base = fullBase.slice(0, 8);
    const ext = fullExt.slice(0, 3);
    const dotted = (b: string): string => (ext ? `${b}.${ext}` : b);
    let shortBase = base;
    if (lossy || fullBase.length > 8 || fullExt.length > 3 || !free(f, dotted(base))) {
      for (let n = 1; ; n++) {
        const tail = `~${n}`;
        shortBase = base.slice(0, 8 - tail.length) + tail;
        if (free(f, dotted(shortBase))) break;
      }
    }
    taken.add(dotted(shortBase));
    f.shortName = shortBase.padEnd(8) + ext.padEnd(3);
    f.longNameEntries = dotted(shortBase) === f.name ? 0 : Math.ceil(f.name.length / LONG_NAME_CHARS_PER_ENTRY);
  }
}

/**
 * VFAT long-name entries, last part first, each holding 13 UTF-16 units at fixed offsets; the
 * name ends with 0x0000 if room is left, the rest is 0xFFFF. Returns the offset after them.
 */
function writeLongNameEntries(img: Buffer, start: number, f: FloppyFile): number {
  const count = f.longNameEntries;
  const units = Array.from({ length: count * LONG_NAME_CHARS_PER_ENTRY }, (_, i) =>
    i < f.name.length ? f.name.charCodeAt(i) : i === f.name.length ? 0 : 0xffff,
  );
  const checksum = shortNameChecksum(f.shortName);
  const unitOffsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
  let at = start;
  for (let seq = count; seq >= 1; seq--) {
    img[at] = seq | (seq === count ? 0x40 : 0);
    img[at + 11] = 0x0f; // attributes of a long-name entry
    img[at + 13] = checksum;
    unitOffsets.forEach((o, i) => img.writeUInt16LE(units[(seq - 1) * LONG_NAME_CHARS_PER_ENTRY + i]!, at + o));
    at += DIR_ENTRY_BYTES;
  }
  return at;
}

/** Ties long-name entries to their 8.3 entry (FAT spec: rotate right, add next byte). */
function shortNameChecksum(name11: string): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = (((sum & 1) << 7) + (sum >> 1) + name11.charCodeAt(i)) & 0xff;
  return sum;
}

/** FAT12 packs two 12-bit entries into three bytes. */
function setFatEntry(fat: Buffer, cluster: number, value: number): void {
  const at = Math.floor((cluster * 3) / 2);
  if (cluster % 2 === 0) {
    fat[at] = value & 0xff;
    fat[at + 1] = (fat[at + 1]! & 0xf0) | (value >> 8);
  } else {
    fat[at] = (fat[at]! & 0x0f) | ((value & 0x0f) << 4);
    fat[at + 1] = value >> 4;
  }
}

function writeBootSector(img: Buffer, label: string, serial: number): void {
  img.set([0xeb, 0x3c, 0x90], 0); // jump over the BPB to the boot code at 0x3e
  img.write("MSWIN4.1", 3, "latin1"); // the OEM name the FAT spec recommends for compatibility
  img.writeUInt16LE(SECTOR_BYTES, 11);
  img[13] = 1; // sectors per cluster
  img.writeUInt16LE(1, 14); // reserved sectors
  img[16] = FAT_COUNT;
  img.writeUInt16LE(ROOT_ENTRIES, 17);
  img.writeUInt16LE(TOTAL_SECTORS, 19);
  img[21] = MEDIA_DESCRIPTOR;
  img.writeUInt16LE(FAT_SECTORS, 22);
  img.writeUInt16LE(18, 24); // sectors per track
  img.writeUInt16LE(2, 26); // heads
  img[38] = 0x29; // extended boot signature: serial, label and type follow
  img.writeUInt32LE(serial, 39);
  img.write(label.padEnd(11), 43, "latin1");
  img.write("FAT12   ", 54, "latin1");
  // Not bootable: `int 18h` hands over to the next boot device, then halt.
  img.set([0xcd, 0x18, 0xf4, 0xeb, 0xfd], 0x3e);
  img.set([0x55, 0xaa], 510);
}

/** Hash of label, names and contents: distinct media get distinct serials, reproducibly. */
function volumeSerial(label: string, files: readonly FloppyFile[]): number {
  const hash = createHash("sha256").update(label);
  for (const f of files) hash.update(`\0${f.name}\0`).update(f.data);
  return hash.digest().readUInt32LE(0);
}

function fatDateTime(t: Date): { readonly date: number; readonly clock: number } {
  return {
    date: ((t.getUTCFullYear() - 1980) << 9) | ((t.getUTCMonth() + 1) << 5) | t.getUTCDate(),
    clock: (t.getUTCHours() << 11) | (t.getUTCMinutes() << 5) | (t.getUTCSeconds() >> 1),
  };
}
