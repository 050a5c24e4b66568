import { execFileSync } from "child_process";
import fc from "fast-check";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "fs";
import { join } from "path";
import { imageTools } from "../support/image-tools";
import { buildIso, type MediaFile } from "../../core/media";

// Images are checked with the real readers (genisoimage's isoinfo/isovfy, xorriso, libblkid),
// never with a parser of our own; genisoimage itself is the oracle for sort order. A missing tool
// fails the suite: a skipped check proves nothing.
const { workDir, run, writeImage } = imageTools(["isoinfo", "isovfy", "xorriso", "blkid", "genisoimage"], {
  suffix: "iso",
});

/** File names in an `isoinfo -l` listing of the root (files only, not `.` and `..`). */
function listRoot(path: string, joliet: boolean): string[] {
  const listing = run("isoinfo", [...(joliet ? ["-J"] : []), "-l", "-i", path]).toString("utf8");
  return listing
    .split("\n")
    .filter((line) => line.startsWith("-"))
    .map((line) => line.replace(/^.*?\]\s{2}/, "").replace(/ $/, ""));
}

function extractWithIsoinfo(path: string, name: string, joliet = true): Buffer {
  return run("isoinfo", [...(joliet ? ["-J"] : []), "-x", `/${name}`, "-i", path]);
}

/** Every file xorriso restores from the image (it loads the Joliet tree, as there is no Rock Ridge). */
function extractWithXorriso(path: string): Map<string, Buffer> {
  const out = mkdtempSync(join(workDir, "x-"));
  const root = join(out, "root");
  run("xorriso", ["-local_charset", "UTF-8", "-indev", path, "-osirrox", "on", "-extract", "/", root]);
  const files = new Map(readdirSync(root).map((name) => [name, readFileSync(join(root, name))] as const));
  // osirrox restores the read-only modes of the medium; make the tree removable again.
  execFileSync("chmod", ["-R", "u+w", out]);
  rmSync(out, { recursive: true, force: true });
  return files;
}

function isovfy(path: string): string {
  return run("isovfy", [path]).toString("utf8");
}

function blkid(path: string): Record<string, string> {
  const lines = run("blkid", ["-p", "-o", "export", path]).toString("utf8").trim().split("\n");
  // Export format: KEY=value with shell-style backslash escapes.
  return Object.fromEntries(
    lines.map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1).replace(/\\(.)/g, "$1")]),
  );
}

/**
 * The readers above only use the little-endian halves of ECMA-119's both-endian fields and the
 * L path table, so this checks the big-endian copies and M path tables against them (offsets
 * from ECMA-119 8.4, 9.1 and 9.4). Returns the mismatches found.
 */
function bigEndianMismatches(image: Buffer): string[] {
  const problems: string[] = [];
  const pair = (at: number, bytes: 2 | 4, what: string): number => {
    const le = bytes === 2 ? image.readUInt16LE(at) : image.readUInt32LE(at);
    const be = bytes === 2 ? image.readUInt16BE(at + 2) : image.readUInt32BE(at + 4);
    if (le !== be) problems.push(`${what}: little-endian ${le}, big-endian ${be}`);
    return le;
  };
  const record = (at: number, what: string): { extent: number; bytes: number } => {
    pair(at + 28, 2, `${what} volume sequence number`);
    return { extent: pair(at + 2, 4, `${what} extent`), bytes: pair(at + 10, 4, `${what} data length`) };
  };
  for (const [sector, tree] of [
    [16, "primary"],
    [17, "joliet"],
  ] as const) {
    const vd = sector * 2048;
    if (pair(vd + 80, 4, `${tree} volume space size`) * 2048 !== image.length) problems.push(`${tree}: volume size`);
    pair(vd + 120, 2, `${tree} volume set size`);
    pair(vd + 124, 2, `${tree} volume sequence number`);
    pair(vd + 128, 2, `${tree} logical block size`);
    const tableBytes = pair(vd + 132, 4, `${tree} path table size`);
    const l = image.readUInt32LE(vd + 140) * 2048;
    const m = image.readUInt32BE(vd + 148) * 2048;
    const mirrored = Buffer.from(image.subarray(l, l + tableBytes));
    mirrored.writeUInt32BE(image.readUInt32LE(l + 2), 2);
    mirrored.writeUInt16BE(image.readUInt16LE(l + 6), 6);
    if (!mirrored.equals(image.subarray(m, m + tableBytes))) problems.push(`${tree}: M path table`);
    const root = record(vd + 156, `${tree} root`);
    for (let at = root.extent * 2048; at < root.extent * 2048 + root.bytes;) {
      if (image[at] === 0) at = (Math.floor(at / 2048) + 1) * 2048;
      else {
        record(at, `${tree} record at ${at}`);
        at += image[at]!;
      }
    }
  }
  return problems;
}

const bytesOf = (content: string | Uint8Array): Buffer =>
  typeof content === "string" ? Buffer.from(content, "utf8") : Buffer.from(content);

/** Deterministic bytes that differ from sector to sector (a 4099-byte pattern, repeated). */
function binary(length: number, seed: number): Buffer {
  const pattern = Buffer.from(Array.from({ length: 4099 }, (_, i) => (i * 131 + seed * 17 + (i >> 8)) & 0xff));
  return Buffer.alloc(length, pattern);
}

describe("cloud-init NoCloud seed", () => {
  const files: MediaFile[] = [
    { name: "user-data", content: "#cloud-config\nhostname: web-01\nruncmd:\n  - echo 'grüße, 世界'\n" },
    { name: "meta-data", content: "instance-id: web-01.tpl-v3\nlocal-hostname: web-01\n" },
    { name: "network-config", content: "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n" },
  ];
  let path = "";
  beforeAll(() => {
    path = writeImage(buildIso({ volumeId: "cidata", files }));
  });

  it("carries the label cidata in lower case, as blkid and isoinfo report it", () => {
    const probe = blkid(path);
    expect(probe.TYPE).toBe("iso9660");
    expect(probe.LABEL).toBe("cidata");
    expect(probe.VERSION).toBe("Joliet Extension");
    const info = run("isoinfo", ["-d", "-i", path]).toString("utf8");
    expect(info).toMatch(/^Volume id: cidata$/m);
    expect(info).toMatch(/^Logical block size is: 2048$/m);
    expect(info).toMatch(/^Joliet with UCS level 3 found$/m);
  });

  it("lists the real names in the Joliet tree and 8.3 names in the primary tree, both sorted", () => {
    expect(listRoot(path, true)).toEqual(["meta-data", "network-config", "user-data"]);
    expect(listRoot(path, false)).toEqual(["META_DAT.;1", "NETWORK_.;1", "USER_DAT.;1"]);
  });

  it("returns every file byte for byte by its Joliet name, its primary name and through xorriso", () => {
    const primaryNames = { "meta-data": "META_DAT.;1", "network-config": "NETWORK_.;1", "user-data": "USER_DAT.;1" };
    const restored = extractWithXorriso(path);
    for (const f of files) {
      const expected = bytesOf(f.content);
      expect(extractWithIsoinfo(path, f.name)).toEqual(expected);
      expect(extractWithIsoinfo(path, primaryNames[f.name as keyof typeof primaryNames], false)).toEqual(expected);
      expect(restored.get(f.name)).toEqual(expected);
    }
    expect([...restored.keys()].sort()).toEqual(["meta-data", "network-config", "user-data"]);
  });

  it("passes isovfy, and the path tables point at the root directories", () => {
    expect(isovfy(path)).toMatch(/No errors found/);
    for (const joliet of [false, true]) {
      const flag = joliet ? ["-J"] : [];
      const table = run("isoinfo", [...flag, "-p", "-i", path]).toString("utf8");
      const rootExtent = /\[\s*(\d+) 02\]\s+\.\s*$/m.exec(run("isoinfo", [...flag, "-l", "-i", path]).toString("utf8"));
      expect(table).toMatch(new RegExp(`^ +1: +1 ${Number(rootExtent![1]).toString(16)} $`, "m"));
    }
    expect(bigEndianMismatches(readFileSync(path))).toEqual([]);
    expect(run("isoinfo", ["-d", "-i", path]).toString("utf8")).toMatch(
      new RegExp(`^Volume size is: ${readFileSync(path).length / 2048}$`, "m"),
    );
  });
});

describe("Windows sysprep media and other content", () => {
  it("keeps long mixed-case names, UTF-8 text, binary data over several sectors and empty files", () => {
    const files: MediaFile[] = [
      {
        name: "Autounattend.xml",
        content: '\ufeff<?xml version="1.0" encoding="utf-8"?>\n<unattend>Ünïcødé ✓</unattend>\n',
      },
      { name: "Unattend.xml", content: "<unattend/>\n" },
      { name: "drivers.bin", content: binary(3 * 2048 + 17, 7) },
      { name: "empty", content: "" },
      { name: "empty-too", content: new Uint8Array(0) },
      { name: "exactly-one-sector", content: binary(2048, 9) },
    ];
    const path = writeImage(buildIso({ volumeId: "SYSPREP", files }));
    // Sorted by UTF-16 code unit, so upper case first.
    expect(listRoot(path, true)).toEqual([
      "Autounattend.xml",
      "Unattend.xml",
      "drivers.bin",
      "empty",
      "empty-too",
      "exactly-one-sector",
    ]);
    expect(listRoot(path, false)).toEqual([
      "AUTOUNAT.XML;1",
      "DRIVERS.BIN;1",
      "EMPTY.;1",
      "EMPTY_TO.;1",
      "EXACTLY_.;1",
      "UNATTEND.XML;1",
    ]);
    const restored = extractWithXorriso(path);
    for (const f of files) {
      expect(extractWithIsoinfo(path, f.name)).toEqual(bytesOf(f.content));
      expect(restored.get(f.name)).toEqual(bytesOf(f.content));
    }
    expect(blkid(path).LABEL).toBe("SYSPREP");
    expect(isovfy(path)).toMatch(/No errors found/);
  });

  it("keeps non-ASCII names in the Joliet tree (read back with xorriso)", () => {
    const files: MediaFile[] = [
      { name: "Grüße an alle.txt", content: "ä" },
      { name: "日本語", content: "にほんご" },
    ];
    const path = writeImage(buildIso({ volumeId: "X", files }));
    const restored = extractWithXorriso(path);
    expect([...restored.keys()].sort()).toEqual(["Grüße an alle.txt", "日本語"]);
    for (const f of files) expect(restored.get(f.name)).toEqual(bytesOf(f.content));
    expect(listRoot(path, false)).toEqual(["GR__E_AN.TXT;1", "___.;1"]);
  });

  it("makes clashing primary names unique and keeps Joliet names apart", () => {
    const files: MediaFile[] = [
      { name: "user-data", content: "1" },
      { name: "user_data", content: "2" },
      { name: "user.data", content: "3" },
      { name: "user-data-old", content: "4" },
    ];
    const path = writeImage(buildIso({ volumeId: "X", files }));
    const primary = listRoot(path, false);
    expect(new Set(primary).size).toBe(4);
    for (const name of primary) expect(name).toMatch(/^[A-Z0-9_]{1,8}\.[A-Z0-9_]{0,3};1$/);
    for (const f of files) expect(extractWithIsoinfo(path, f.name)).toEqual(bytesOf(f.content));
  });

  it("spreads a directory over several sectors without splitting a record", () => {
    const files = Array.from({ length: 80 }, (_, i) => ({
      name: `a-rather-long-file-name-number-${String(i).padStart(3, "0")}.yaml`,
      content: `file ${i}\n`,
    }));
    const path = writeImage(buildIso({ volumeId: "MANY", files }));
    expect(isovfy(path)).toMatch(/No errors found/);
    expect(bigEndianMismatches(readFileSync(path))).toEqual([]);
    expect(listRoot(path, true)).toEqual(files.map((f) => f.name));
    const restored = extractWithXorriso(path);
    for (const f of files) expect(restored.get(f.name)?.toString("utf8")).toBe(f.content);
  });

  it("sorts both trees exactly as genisoimage does", () => {
    // Tricky pairs: '-' < '.' < '_' in code units, while ECMA-119 compares names before extensions.
    const names = ["a b", "a-c", "a.b", "a.b.c", "ab", "B", "b0.x", "b.x0", "Z_", "z.Z"];
    const src = mkdtempSync(join(workDir, "src-"));
    for (const n of names) writeFileSync(join(src, n), n);
    const reference = join(workDir, "reference.iso");
    run("genisoimage", ["-quiet", "-J", "-o", reference, src]);
    const path = writeImage(buildIso({ volumeId: "X", files: names.map((n) => ({ name: n, content: n })) }));
    expect(listRoot(path, true)).toEqual(listRoot(reference, true));
    expect(listRoot(path, false)).toEqual(listRoot(reference, false));
  });

  it("stores a 32-character volume id in full; blkid merges the 16-character Joliet copy back", () => {
    const volumeId = "A_Long_Volume_Label_Of_32_Chars_";
    const path = writeImage(buildIso({ volumeId, files: [] }));
    expect(blkid(path).LABEL).toBe(volumeId);
    expect(run("isoinfo", ["-d", "-i", path]).toString("utf8")).toMatch(new RegExp(`^Volume id: ${volumeId}$`, "m"));
    expect(listRoot(path, true)).toEqual([]);
  });
});

describe("determinism", () => {
  const files: MediaFile[] = [
    { name: "user-data", content: "#cloud-config\n" },
    { name: "meta-data", content: "instance-id: a\n" },
  ];

  it("builds byte-identical images from the same input, whatever the file order", () => {
    const a = buildIso({ volumeId: "cidata", files });
    expect(buildIso({ volumeId: "cidata", files }).equals(a)).toBe(true);
    expect(buildIso({ volumeId: "cidata", files: [...files].reverse() }).equals(a)).toBe(true);
  });

  it("dates everything 2000-01-01 00:00 UTC unless told otherwise", () => {
    expect(blkid(writeImage(buildIso({ volumeId: "cidata", files }))).UUID).toBe("2000-01-01-00-00-00-00");
    const timestamp = new Date("2024-05-06T07:08:09Z");
    const path = writeImage(buildIso({ volumeId: "cidata", files, timestamp }));
    expect(blkid(path).UUID).toBe("2024-05-06-07-08-09-00");
    expect(run("isoinfo", ["-J", "-l", "-i", path]).toString("utf8")).toMatch(/May {2}6 2024.*user-data/);
  });
});

describe("property: every file comes back unchanged", () => {
  // Names valid for Joliet: no control characters, none of * / : ; ? \, no trailing dot or space.
  // Half the sets stay ASCII, which isoinfo can show; xorriso reads all of them.
  const name = (alphabet: string): fc.Arbitrary<string> =>
    fc
      .array(fc.constantFrom(...alphabet), { minLength: 1, maxLength: 64 })
      .map((chars) => chars.join(""))
      .filter((n) => !/[. ]$/.test(n));
  const content = fc.oneof(fc.string({ unit: "grapheme", maxLength: 300 }), fc.uint8Array({ maxLength: 5000 }));
  const fileSet = (alphabet: string): fc.Arbitrary<{ name: string; content: string | Uint8Array }[]> =>
    fc.uniqueArray(fc.record({ name: name(alphabet), content }), {
      maxLength: 8,
      selector: (f) => f.name.toUpperCase(),
    });
  const ascii = "abcXYZ019-_.~+ ";

  it("through xorriso and isoinfo, with a clean isovfy report", () => {
    fc.assert(
      fc.property(fc.oneof(fileSet(ascii), fileSet(`${ascii}é日`)), (files) => {
        const image = buildIso({ volumeId: "cidata", files });
        const path = writeImage(image);
        expect(isovfy(path)).toMatch(/No errors found/);
        expect(bigEndianMismatches(image)).toEqual([]);
        const restored = extractWithXorriso(path);
        expect([...restored.keys()].sort()).toEqual(files.map((f) => f.name).sort());
        for (const f of files) {
          expect(restored.get(f.name)).toEqual(bytesOf(f.content));
        }
        expect(new Set(listRoot(path, false)).size).toBe(files.length);
        // isoinfo shows other characters as `_`, so `日` and `_` would look alike: ASCII sets only.
        if (files.every((f) => /^[\x20-\x7e]+$/.test(f.name))) {
          expect(listRoot(path, true)).toEqual(files.map((f) => f.name).sort());
          for (const f of files) expect(extractWithIsoinfo(path, f.name)).toEqual(bytesOf(f.content));
        }
      }),
      { numRuns: 15 },
    );
  });
});

describe("input validation", () => {
  const ok: MediaFile = { name: "user-data", content: "" };

  it.each([
    ["", /ISO volume id "": must be 1-32 characters/],
    ["ci-data", /ISO volume id "ci-data"/],
    ["cïdata", /ISO volume id "cïdata"/],
    ["A".repeat(33), /must be 1-32 characters of A-Z, a-z, 0-9 and _/],
  ])("rejects volume id %j", (volumeId, message) => {
    expect(() => buildIso({ volumeId, files: [ok] })).toThrow(message);
  });

  it.each([
    ["", /ISO file name "": must not be empty/],
    ["x".repeat(65), /is 65 characters long, Joliet allows at most 64/],
    ["dir/file", /must not contain control characters or any of/],
    ["a;1", /must not contain control characters or any of/],
    ["tab\there", /must not contain control characters/],
    ["what?", /must not contain control characters or any of/],
    ["trailing.", /must not end with a dot or a space/],
    ["trailing ", /must not end with a dot or a space/],
    ["emoji-😀", /outside the Basic Multilingual Plane/],
  ])("rejects file name %j", (name, message) => {
    expect(() => buildIso({ volumeId: "X", files: [{ name, content: "" }] })).toThrow(message);
  });

  it("accepts a 64-character name", () => {
    const name = "n".repeat(64);
    const path = writeImage(buildIso({ volumeId: "X", files: [{ name, content: "64" }] }));
    expect(extractWithIsoinfo(path, name).toString()).toBe("64");
  });

  it("rejects duplicate names, also when they differ only in case", () => {
    expect(() => buildIso({ volumeId: "X", files: [ok, ok] })).toThrow('ISO file name "user-data": duplicate');
    expect(() => buildIso({ volumeId: "X", files: [ok, { name: "User-Data", content: "" }] })).toThrow(
      'ISO file names "user-data" and "User-Data": duplicates when case is ignored',
    );
  });

  it.each([
    [new Date(Number.NaN), /ISO timestamp Invalid Date/],
    [new Date("1899-12-31T23:59:59Z"), /years 1900-2155/],
    [new Date("2156-01-01T00:00:00Z"), /years 1900-2155/],
  ])("rejects timestamp %s", (timestamp, message) => {
    expect(() => buildIso({ volumeId: "X", files: [ok], timestamp })).toThrow(message);
  });
});

describe("images of a pool's members (one layout, many contents)", () => {
  const seed = (metaData: string, userData: string): MediaFile[] => [
    { name: "meta-data", content: metaData },
    { name: "user-data", content: userData },
  ];

  it("builds from a remembered layout the same bytes as from scratch, with the member's own data", () => {
    const first = buildIso({ volumeId: "cidata", files: seed("instance-id: a\n", "x".repeat(3000)) });
    first.fill(0xff, 0, 4096); // a caller's changes to a returned image reach no later image
    const second = buildIso({ volumeId: "cidata", files: seed("instance-id: b\n", "y".repeat(3000)) });
    let fresh!: Buffer;
    jest.isolateModules(() => {
      // A new module instance remembers no layout.
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a fresh instance needs require
      const media = require("../../core/media") as typeof import("../../core/media");
      fresh = media.buildIso({ volumeId: "cidata", files: seed("instance-id: b\n", "y".repeat(3000)) });
    });
    expect(second.equals(fresh)).toBe(true);
    const path = writeImage(second);
    expect(extractWithIsoinfo(path, "meta-data").toString()).toBe("instance-id: b\n");
    expect(extractWithIsoinfo(path, "user-data").toString()).toBe("y".repeat(3000));
  });

  it("lays out again when a file's size differs", () => {
    buildIso({ volumeId: "cidata", files: seed("short\n", "u") });
    const longer = buildIso({ volumeId: "cidata", files: seed("a much longer meta-data file\n", "u".repeat(5000)) });
    const path = writeImage(longer);
    expect(extractWithIsoinfo(path, "meta-data").toString()).toBe("a much longer meta-data file\n");
    expect(extractWithIsoinfo(path, "user-data").length).toBe(5000);
    expect(isovfy(path)).toMatch(/No errors found/);
  });
});
