import fc from "fast-check";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "fs";
import { join } from "path";
import { imageTools } from "../support/image-tools";
import { buildFloppy, type MediaFile } from "../../core/media";

// Images are checked with the real readers (mtools, libblkid), never with a parser of our own.
// A missing tool fails the suite: a skipped check proves nothing.
const { workDir, run, writeImage } = imageTools(["mdir", "mtype", "mcopy", "minfo", "blkid"], {
  suffix: "img",
  // Image files have no drive geometry for mtools to cross-check.
  env: { MTOOLS_SKIP_CHECK: "1" },
});
const DATA_BYTES = 2847 * 512;

/** Long names (or 8.3 names where there is no long one) at the root, in directory order. */
function listRoot(path: string): string[] {
  const bare = run("mdir", ["-b", "-i", path, "::"]).toString("utf8");
  return bare
    .split("\n")
    .filter(Boolean)
    .map((line) => line.replace(/^::\//, ""));
}

function extractAll(path: string): Map<string, Buffer> {
  const out = mkdtempSync(join(workDir, "x-"));
  if (listRoot(path).length > 0) run("mcopy", ["-n", "-i", path, "::/*", out]);
  const files = new Map(readdirSync(out).map((name) => [name, readFileSync(join(out, name))] as const));
  rmSync(out, { recursive: true, force: true });
  return files;
}

function blkid(path: string): Record<string, string> {
  const lines = run("blkid", ["-p", "-o", "export", path]).toString("utf8").trim().split("\n");
  // Export format: KEY=value with shell-style backslash escapes.
  return Object.fromEntries(
    lines.map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1).replace(/\\(.)/g, "$1")]),
  );
}

const bytesOf = (content: string | Uint8Array): Buffer =>
  typeof content === "string" ? Buffer.from(content, "utf8") : Buffer.from(content);

/** Deterministic bytes that differ from sector to sector (a 4099-byte pattern, repeated). */
function binary(length: number, seed: number): Buffer {
  const pattern = Buffer.from(Array.from({ length: 4099 }, (_, i) => (i * 131 + seed * 17 + (i >> 8)) & 0xff));
  return Buffer.alloc(length, pattern);
}

describe("Windows answer-file floppy", () => {
  const files: MediaFile[] = [
    { name: "Unattend.xml", content: '\ufeff<?xml version="1.0" encoding="utf-8"?>\n<unattend>Ünïcødé ✓</unattend>\n' },
    { name: "Autounattend.xml", content: "<unattend/>\n" },
    { name: "README.TXT", content: "plain 8.3 name\r\n" },
    { name: "driver.bin", content: binary(5 * 512 + 3, 11) },
    { name: "empty", content: "" },
  ];
  let path = "";
  beforeAll(() => {
    path = writeImage(buildFloppy({ label: "UNATTEND", files }));
  });

  it("is a 1.44 MB FAT12 volume with the label, as blkid and minfo see it", () => {
    expect(readFileSync(path).length).toBe(1474560);
    const probe = blkid(path);
    expect(probe).toMatchObject({ TYPE: "vfat", VERSION: "FAT12", LABEL: "UNATTEND", LABEL_FATBOOT: "UNATTEND" });
    expect(probe.UUID).toMatch(/^[0-9A-F]{4}-[0-9A-F]{4}$/);
    const info = run("minfo", ["-i", path, "::"]).toString("utf8");
    expect(info).toContain("mformat -t 80 -h 2 -s 18");
    expect(info).toMatch(/sectors per fat: 9\n/);
    expect(info).toMatch(/max available root directory slots: 224\n/);
  });

  it("lists long names, sorted, with 8.3 names only where they are the real name", () => {
    expect(listRoot(path)).toEqual(["Autounattend.xml", "README.TXT", "Unattend.xml", "driver.bin", "empty"]);
    const listing = run("mdir", ["-i", path, "::"]).toString("utf8");
    expect(listing).toMatch(/Volume in drive : is UNATTEND/);
    expect(listing).toMatch(/^AUTOUN~1 XML +12 2000-01-01 +0:00 +Autounattend\.xml$/m);
    expect(listing).toMatch(/^UNATTEND XML +\d+ 2000-01-01 +0:00 +Unattend\.xml$/m);
    expect(listing).toMatch(/^README +TXT +16 2000-01-01 +0:00 *$/m);
    expect(listing).toMatch(/^EMPTY +0 2000-01-01 +0:00 +empty$/m);
  });

  it("returns every file byte for byte, by long and by short name", () => {
    for (const f of files) expect(run("mtype", ["-i", path, `::/${f.name}`])).toEqual(bytesOf(f.content));
    expect(run("mtype", ["-i", path, "::/AUTOUN~1.XML"])).toEqual(bytesOf(files[1]!.content));
    const restored = extractAll(path);
    expect([...restored.keys()].sort()).toEqual(files.map((f) => f.name).sort());
    for (const f of files) expect(restored.get(f.name)).toEqual(bytesOf(f.content));
  });
});

describe("labels, names and capacity", () => {
  it("keeps a lower-case cidata label as written, for cloud-init's NoCloud on vfat", () => {
    const path = writeImage(
      buildFloppy({ label: "cidata", files: [{ name: "user-data", content: "#cloud-config\n" }] }),
    );
    expect(blkid(path).LABEL).toBe("cidata");
    expect(run("mtype", ["-i", path, "::/user-data"]).toString()).toBe("#cloud-config\n");
  });

  it("gives clashing short names distinct ~N tails without taking another file's name", () => {
    const files: MediaFile[] = [
      { name: "AUTOUN~1.XML", content: "a" },
      { name: "Autounattend.xml", content: "b" },
      { name: "autounattend-old.xml", content: "c" },
      { name: "a very long name with spaces, ünïcode — 日本.txt", content: "d" },
      // Sorts first, and its natural short name is the next file's real name.
      { name: "12345678901.txt", content: "e" },
      { name: "123456~1.TXT", content: "f" },
    ];
    const path = writeImage(buildFloppy({ label: "X", files }));
    const shortNames = run("mdir", ["-i", path, "::"])
      .toString("utf8")
      .split("\n")
      .filter((l) => /^\S.{7} \S{0,3} +\d/.test(l))
      .map((l) => l.slice(0, 12));
    expect(new Set(shortNames).size).toBe(files.length);
    expect(shortNames).toContain("AUTOUN~1 XML");
    expect(shortNames).toContain("123456~2 TXT");
    expect(run("mtype", ["-i", path, "::/123456~1.TXT"]).toString()).toBe("f");
    const restored = extractAll(path);
    for (const f of files) expect(restored.get(f.name)).toEqual(bytesOf(f.content));
  });

  it("fills the whole data area, and refuses one byte more", () => {
    const full = binary(DATA_BYTES, 3);
    const path = writeImage(buildFloppy({ label: "FULL", files: [{ name: "full.bin", content: full }] }));
    const restored = run("mtype", ["-i", path, "::/full.bin"]);
    expect(restored.length).toBe(DATA_BYTES);
    expect(restored.equals(full)).toBe(true); // toEqual walks 1.4 MB byte by byte, for seconds
    expect(run("mdir", ["-i", path, "::"]).toString("utf8")).toMatch(/^ +0 bytes free$/m);
    expect(() =>
      buildFloppy({
        label: "FULL",
        files: [
          { name: "full.bin", content: binary(DATA_BYTES - 511, 3) },
          { name: "b", content: "x" },
        ],
      }),
    ).toThrow("floppy: files need 1458176 bytes of clusters, a 1.44 MB floppy holds 1457664");
  });

  it("fills the root directory (223 8.3 files beside the label), and refuses one more", () => {
    const names = (n: number): MediaFile[] =>
      Array.from({ length: n }, (_, i) => ({ name: `F${String(i).padStart(3, "0")}.TXT`, content: `${i}` }));
    const path = writeImage(buildFloppy({ label: "ROOT", files: names(223) }));
    expect(listRoot(path)).toEqual(names(223).map((f) => f.name));
    expect(() => buildFloppy({ label: "ROOT", files: names(224) })).toThrow(
      "floppy: 224 files need 225 root directory entries (label and long names included), the root holds 224",
    );
    // A 14-character long name takes two long-name entries plus its 8.3 entry.
    const longNames = Array.from({ length: 75 }, (_, i) => ({
      name: `long-name-${String(i).padStart(4, "0")}`,
      content: "",
    }));
    expect(() => buildFloppy({ label: "ROOT", files: longNames })).toThrow("75 files need 226 root directory entries");
  });
});

describe("determinism", () => {
  const files: MediaFile[] = [
    { name: "Unattend.xml", content: "<a/>" },
    { name: "setup.cmd", content: "echo hi\r\n" },
  ];

  it("builds byte-identical images from the same input, whatever the file order", () => {
    const a = buildFloppy({ label: "UNATTEND", files });
    expect(buildFloppy({ label: "UNATTEND", files }).equals(a)).toBe(true);
    expect(buildFloppy({ label: "UNATTEND", files: [...files].reverse() }).equals(a)).toBe(true);
  });

  it("dates files 2000-01-01 00:00 unless told otherwise, and derives the serial from the content", () => {
    const plain = writeImage(buildFloppy({ label: "UNATTEND", files }));
    expect(run("mdir", ["-i", plain, "::"]).toString("utf8")).toMatch(/^UNATTEND XML +4 2000-01-01 +0:00 /m);
    const timestamp = new Date("2024-05-06T07:08:09Z");
    const dated = writeImage(buildFloppy({ label: "UNATTEND", files, timestamp }));
    expect(run("mdir", ["-i", dated, "::"]).toString("utf8")).toMatch(/^UNATTEND XML +4 2024-05-06 +7:08 /m);
    const other = writeImage(buildFloppy({ label: "UNATTEND", files: [{ name: "Unattend.xml", content: "<b/>" }] }));
    expect(blkid(other).UUID).not.toBe(blkid(plain).UUID);
  });
});

describe("property: every file comes back unchanged", () => {
  // Names valid for VFAT: no control characters, none of " * / : < > ? \ |, no trailing dot or space.
  const nameChar = fc.constantFrom(..."abcXYZ019-_.~+ é日".split(""));
  const name = fc
    .array(nameChar, { minLength: 1, maxLength: 40 })
    .map((chars) => chars.join(""))
    .filter((n) => !/[. ]$/.test(n));
  const content = fc.oneof(fc.string({ unit: "grapheme", maxLength: 300 }), fc.uint8Array({ maxLength: 3000 }));
  const fileSet = fc.uniqueArray(fc.record({ name, content }), {
    maxLength: 8,
    selector: (f) => f.name.toUpperCase(),
  });

  it("through mcopy, listed in name order", () => {
    fc.assert(
      fc.property(fileSet, (files) => {
        const path = writeImage(buildFloppy({ label: "PROP", files }));
        expect(listRoot(path)).toEqual(files.map((f) => f.name).sort());
        const restored = extractAll(path);
        expect(restored.size).toBe(files.length);
        for (const f of files) expect(restored.get(f.name)).toEqual(bytesOf(f.content));
      }),
      { numRuns: 15 },
    );
  });
});

describe("input validation", () => {
  const ok: MediaFile = { name: "Unattend.xml", content: "" };

  it.each([
    ["", /floppy label "": must be 1-11 characters/],
    ["TWELVE_CHARS", /floppy label "TWELVE_CHARS"/],
    ["MY DISK", /floppy label "MY DISK"/],
    ["ÄPFEL", /must be 1-11 characters of A-Z, a-z, 0-9, _ and -/],
  ])("rejects label %j", (label, message) => {
    expect(() => buildFloppy({ label, files: [ok] })).toThrow(message);
  });

  it.each([
    ["", /floppy file name "": must not be empty/],
    ["x".repeat(256), /is 256 characters long, FAT long names allow at most 255/],
    ["dir\\file", /must not contain control characters or any of/],
    ['say "hi"', /must not contain control characters or any of/],
    ["a|b", /must not contain control characters or any of/],
    ["nul\u0000", /must not contain control characters/],
    ["trailing.", /must not end with a dot or a space/],
    ["trailing ", /must not end with a dot or a space/],
  ])("rejects file name %j", (name, message) => {
    expect(() => buildFloppy({ label: "X", files: [{ name, content: "" }] })).toThrow(message);
  });

  it("accepts a 255-character name", () => {
    const name = "n".repeat(255);
    const path = writeImage(buildFloppy({ label: "X", files: [{ name, content: "255" }] }));
    expect(listRoot(path)).toEqual([name]);
    expect(run("mtype", ["-i", path, `::/${name}`]).toString()).toBe("255");
  });

  it("rejects duplicate names, also when they differ only in case", () => {
    expect(() => buildFloppy({ label: "X", files: [ok, ok] })).toThrow('floppy file name "Unattend.xml": duplicate');
    expect(() => buildFloppy({ label: "X", files: [ok, { name: "UNATTEND.XML", content: "" }] })).toThrow(
      'floppy file names "Unattend.xml" and "UNATTEND.XML": duplicates when case is ignored',
    );
  });

  it.each([
    [new Date(Number.NaN), /floppy timestamp Invalid Date/],
    [new Date("1979-12-31T23:59:59Z"), /years 1980-2107/],
    [new Date("2108-01-01T00:00:00Z"), /years 1980-2107/],
  ])("rejects timestamp %s", (timestamp, message) => {
    expect(() => buildFloppy({ label: "X", files: [ok], timestamp })).toThrow(message);
  });
});
