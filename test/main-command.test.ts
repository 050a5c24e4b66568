import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readStackDir } from "../engines/cdktf";

const ROOT = join(__dirname, "..");

describe("README commands", () => {
  it("the main command synthesizes the example and prints its summary", () => {
    const out = mkdtempSync(join(tmpdir(), "vmpools-main-"));
    try {
      const stdout = execFileSync("npx", ["ts-node", "--transpile-only", "stacks/summarize.ts"], {
        cwd: ROOT,
        encoding: "utf8",
        env: { ...process.env, VMPOOLS_OUTDIR: out },
      });
      expect(stdout).toContain("Pool MyPool-???: 10 members (MyPool-001 … MyPool-010)");
      expect(stdout).toContain(
        "prestarted: 2 kept up and idle by the reconciler (first picks: MyPool-001, MyPool-002)",
      );
      expect(stdout).toMatch(/MyPool-010 +host localhost +hostname mypool-010 +vda=MyPool-010.qcow2/);
      expect(stdout).toContain("10 libvirt_domain, 21 libvirt_volume, 1 terraform_data");
      expect(existsSync(join(out, "stacks/linux-desktop-pool/cdk.tf.json"))).toBe(true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("the main command then runs the example pool on libvirt's test hypervisor", () => {
    const stdout = execFileSync("npx", ["ts-node", "--transpile-only", "reconciler/local/demo.ts"], {
      cwd: ROOT,
      encoding: "utf8",
    });
    expect(stdout).toContain("defined 10 members; starting the reconciler");
    expect(stdout).toMatch(/pool MyPool-\?\?\?: 10 members, 0 held, 2 prestarted, 8 free/);
    expect(stdout).toMatch(/alice takes a VM: MyPool-00\d in [\d.]+ ms \(was prestarted\)/);
    expect(stdout).toMatch(/alice returns MyPool-00\d: reverted to the base image and free again/);
    expect(stdout).toMatch(/pool MyPool-\?\?\?: 10 members, 1 held, 2 prestarted, 7 free/);
    expect(stdout).toMatch(/user bob: MyPool-\?\?\?\/MyPool-00\d/);
  });

  it("`npx cdktf synth` works offline", () => {
    const out = mkdtempSync(join(tmpdir(), "vmpools-cdktf-"));
    try {
      execFileSync("npx", ["cdktf", "synth", "--output", out], {
        cwd: ROOT,
        stdio: "pipe",
        env: { ...process.env, CHECKPOINT_DISABLE: "1" },
      });
      const json = readStackDir(join(out, "stacks/linux-desktop-pool")) as { resource: Record<string, object> };
      expect(json.resource.libvirt_domain).toBeDefined();
      expect(Object.keys(json.resource.libvirt_domain!)).toHaveLength(10);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
