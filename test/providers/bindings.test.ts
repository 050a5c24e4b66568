import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const ROOT = join(__dirname, "../..");

function digestTree(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else out.set(relative(dir, p), createHash("sha256").update(readFileSync(p)).digest("hex"));
    }
  };
  walk(dir);
  return out;
}

describe("provider bindings", () => {
  it("are generated reproducibly from the pinned schemas and match providers/gen", () => {
    const [a, b] = [mkdtempSync(join(tmpdir(), "gen-a-")), mkdtempSync(join(tmpdir(), "gen-b-"))];
    try {
      for (const out of [a, b]) execFileSync("node", ["providers/generate.mjs", out], { cwd: ROOT, stdio: "pipe" });
      const [da, db] = [digestTree(a), digestTree(b)];
      expect(db).toEqual(da);
      expect(digestTree(join(ROOT, "providers/gen"))).toEqual(da);
      for (const type of [
        "libvirt/domain/index.ts",
        "libvirt/volume/index.ts",
        "libvirt/cloudinit-disk/index.ts",
        "libvirt/pool/index.ts",
      ]) {
        expect(da.has(`providers/${type}`)).toBe(true);
      }
    } finally {
      rmSync(a, { recursive: true, force: true });
      rmSync(b, { recursive: true, force: true });
    }
  });

  it("pin dmacvicar/libvirt 0.9.7 and record it in the generated provider", () => {
    // The schema dumped from the provider's own code at v0.9.7 (see providers/schema/).
    const schema = JSON.parse(
      readFileSync(join(ROOT, "providers/schema/dmacvicar-libvirt-0.9.7.code-schema.json"), "utf8"),
    );
    expect(schema.note).toContain("v0.9.7 (1c5c0016)");
    expect(Object.keys(schema.provider_schemas)).toEqual(["registry.terraform.io/dmacvicar/libvirt"]);
    const provider = readFileSync(join(ROOT, "providers/gen/providers/libvirt/provider/index.ts"), "utf8");
    expect(provider).toContain("providerVersion: '0.9.7'");
  });
});
