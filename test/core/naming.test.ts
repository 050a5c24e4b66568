import fc from "fast-check";
import { hostnameFor, maskCapacity, memberName, memberNamePattern, parseNameMask, type NameMask } from "../../core";

const mask = (pattern: string): NameMask => {
  const m = parseNameMask(pattern);
  if (typeof m === "string") throw new Error(m);
  return m;
};

describe("member naming (seed examples)", () => {
  it("MyPool → MyPool-1 … MyPool-10", () => {
    const names = Array.from({ length: 10 }, (_, i) => memberName(mask("MyPool"), i + 1));
    expect(names[0]).toBe("MyPool-1");
    expect(names[1]).toBe("MyPool-2");
    expect(names[9]).toBe("MyPool-10");
  });

  it("MyPool-??? → MyPool-001 … MyPool-010", () => {
    const names = Array.from({ length: 10 }, (_, i) => memberName(mask("MyPool-???"), i + 1));
    expect(names[0]).toBe("MyPool-001");
    expect(names[1]).toBe("MyPool-002");
    expect(names[9]).toBe("MyPool-010");
  });

  it("keeps text after the mask", () => {
    expect(memberName(mask("lab-??-x"), 7)).toBe("lab-07-x");
  });

  it.each([
    ["", /empty/],
    ["My Pool", /letters, digits/],
    ["a??b??", /single run/],
    ["???", /at least one character/],
    ["pool/1", /letters, digits/],
  ])("rejects %j", (pattern, message) => {
    const parsed = parseNameMask(pattern);
    expect(typeof parsed).toBe("string");
    expect(parsed).toMatch(message);
  });

  it("mask capacity is 10^width - 1, unbounded without a mask", () => {
    expect(maskCapacity(mask("P-??"))).toBe(99);
    expect(maskCapacity(mask("P"))).toBe(Number.POSITIVE_INFINITY);
  });
});

describe("member naming (properties)", () => {
  const prefix = fc.stringMatching(/^[A-Za-z0-9._-]{1,12}$/);
  const masked = fc.tuple(prefix, fc.integer({ min: 1, max: 4 }), fc.stringMatching(/^[A-Za-z0-9._-]{0,4}$/));

  it("names are unique, fit the mask and sort in index order", () => {
    fc.assert(
      fc.property(masked, fc.integer({ min: 1, max: 300 }), ([pre, width, post], size) => {
        const m = mask(`${pre}${"?".repeat(width)}${post}`);
        fc.pre(size <= maskCapacity(m));
        const names = Array.from({ length: size }, (_, i) => memberName(m, i + 1));
        const pattern = memberNamePattern(m);
        expect(new Set(names).size).toBe(size);
        names.forEach((n, i) => {
          expect(n).toHaveLength(pre.length + width + post.length);
          expect(Number(pattern.exec(n)?.[1])).toBe(i + 1);
        });
        expect([...names].sort()).toEqual(names);
      }),
      { numRuns: 200 },
    );
  });

  it("unmasked names are unique and parse back to their index", () => {
    fc.assert(
      fc.property(prefix, fc.integer({ min: 1, max: 500 }), (pre, size) => {
        const m = mask(pre);
        const names = Array.from({ length: size }, (_, i) => memberName(m, i + 1));
        expect(new Set(names).size).toBe(size);
        names.forEach((n, i) => expect(Number(memberNamePattern(m).exec(n)?.[1])).toBe(i + 1));
      }),
      { numRuns: 100 },
    );
  });

  it("hostnames are valid RFC 1123 labels and unique within a pool", () => {
    fc.assert(
      fc.property(masked, fc.integer({ min: 1, max: 99 }), ([pre, width, post], size) => {
        const m = mask(`${pre}${"?".repeat(width)}${post}`);
        fc.pre(size <= maskCapacity(m));
        const hosts = Array.from({ length: size }, (_, i) => hostnameFor(memberName(m, i + 1)));
        for (const h of hosts) expect(h).toMatch(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/);
        expect(new Set(hosts).size).toBe(size);
      }),
      { numRuns: 200 },
    );
  });
});
