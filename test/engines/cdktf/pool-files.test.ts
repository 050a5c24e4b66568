// The pools' own files across synths into the same folder, as `cdktf synth` does on every run.
import { App, TerraformStack, Testing } from "cdktf";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VmPool, readStackDir, synthStack } from "../../../engines/cdktf";
import { SysprepConfig, type VmPoolProps } from "../../../core";
import { validProps } from "../../support/fixtures";

let outdir: string;
beforeEach(() => (outdir = mkdtempSync(join(tmpdir(), "vmpools-files-"))));
afterEach(() => rmSync(outdir, { recursive: true, force: true }));

const stackDir = () => join(outdir, "stacks/s");
function synth(pools: Record<string, VmPoolProps>): void {
  const app = new App({ outdir });
  const stack = new TerraformStack(app, "s");
  for (const [id, props] of Object.entries(pools)) new VmPool(stack, id, props);
  app.synth();
}
const windows = (password: string): VmPoolProps =>
  validProps({
    name: "W-?",
    size: 3,
    operatingSystem: "windows-server-2022",
    initialRun: { sysprep: new SysprepConfig({ localAdministrator: { password } }) },
  });
const unattend = (vm: string) =>
  execFileSync(
    "isoinfo",
    ["-J", "-x", "/Unattend.xml", "-i", join(stackDir(), `assets/vmpools.uploads/Win/${vm}-sysprep.iso`)],
    { encoding: "utf8" },
  );

test("a re-synth with a new password rebuilds every image (nothing built earlier is reused)", () => {
  synth({ Win: windows("first-password-1") });
  expect(unattend("W-2")).toContain("first-password-1");
  synth({ Win: windows("second-password-2") });
  for (const vm of ["W-1", "W-2", "W-3"]) {
    expect(unattend(vm)).toContain("second-password-2");
    expect(unattend(vm)).not.toContain("first-password-1");
    expect(statSync(join(stackDir(), `assets/vmpools.uploads/Win/${vm}-sysprep.iso`)).mode & 0o777).toBe(0o600);
  }
});

test("a re-synth rebuilds an image that was deleted, and leaves the others byte-identical", () => {
  synth({ Win: windows("same-password") });
  const dir = join(stackDir(), "assets/vmpools.uploads/Win");
  const before = readFileSync(join(dir, "W-1-sysprep.iso"));
  unlinkSync(join(dir, "W-2-sysprep.iso"));
  synth({ Win: windows("same-password") });
  expect(readFileSync(join(dir, "W-2-sysprep.iso")).equals(before)).toBe(false); // its own ComputerName
  expect(unattend("W-2")).toContain("<ComputerName>W-2</ComputerName>");
  expect(readFileSync(join(dir, "W-1-sysprep.iso")).equals(before)).toBe(true);
});

test("renaming or removing a pool removes its file and uploads from the stack folder", () => {
  synth({ A: validProps({ size: 2 }), B: validProps({ name: "B-?", size: 2 }) });
  expect(
    readdirSync(stackDir())
      .filter((f) => f.endsWith(".vmpools.tf.json"))
      .sort(),
  ).toEqual(["A.vmpools.tf.json", "B.vmpools.tf.json"]);
  synth({ Renamed: validProps({ size: 2 }) });
  expect(readdirSync(stackDir()).filter((f) => f.endsWith(".vmpools.tf.json"))).toEqual(["Renamed.vmpools.tf.json"]);
  expect(readdirSync(join(stackDir(), "assets/vmpools.uploads")).filter((f) => !f.startsWith("."))).toEqual([
    "Renamed",
  ]);
  // Terraform sees exactly the renamed pool's members.
  expect(Object.keys(readStackDir(stackDir()).resource as object)).toContain("libvirt_domain");
  expect(Object.keys((readStackDir(stackDir()).resource as Record<string, object>).libvirt_domain!).sort()).toEqual([
    "Renamed_MyPool-001_domain",
    "Renamed_MyPool-002_domain",
  ]);
  expect(existsSync(join(stackDir(), "assets/vmpools.uploads/A"))).toBe(false);
});

test("a smaller pool leaves no image of a member that is gone", () => {
  synth({ A: validProps({ size: 3 }) });
  synth({ A: validProps({ size: 2, allowShrink: true }) });
  expect(readdirSync(join(stackDir(), "assets/vmpools.uploads/A")).sort()).toEqual([
    "MyPool-001-cloud-init.iso",
    "MyPool-002-cloud-init.iso",
    "policy.xml",
  ]);
});

test("Testing.synth shows cdk.tf.json only; synthStack adds the pools' files, as Terraform reads the folder", () => {
  const stack = new TerraformStack(Testing.app(), "t");
  new VmPool(stack, "A", validProps({ size: 2, detached: ["MyPool-002"] }));
  new VmPool(stack, "B", validProps({ name: "B-?", size: 2, detached: ["B-1"] }));
  expect(JSON.parse(Testing.synth(stack)).resource?.libvirt_domain).toBeUndefined();
  const json = JSON.parse(synthStack(stack));
  expect(Object.keys(json.resource.libvirt_domain).sort()).toEqual(["A_MyPool-001_domain", "B_B-2_domain"]);
  // Both pools' removed blocks, not the last one's only.
  expect(json.removed.map((r: { from: string }) => r.from).sort()).toEqual(
    expect.arrayContaining(["libvirt_domain.A_MyPool-002_domain", "libvirt_domain.B_B-1_domain"]),
  );
  expect(json.provider.libvirt).toHaveLength(1);
});

test("a synth cut short after rewriting images never lets a later synth reuse them for other inputs", () => {
  synth({ Win: windows("aaaa-first") });
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the module object the code calls through
  const fs = require("node:fs") as typeof import("node:fs");
  const realOpen = fs.openSync;
  let manifestWrites = 0;
  const cut = jest.spyOn(fs, "openSync").mockImplementation(((...args: Parameters<typeof realOpen>) => {
    // The images are rewritten; the final manifest write fails (a kill, a full disk).
    if (String(args[0]).endsWith(".built.json") && args[1] === "w" && ++manifestWrites === 2)
      throw new Error("cut short");
    return realOpen(...args);
  }) as typeof realOpen);
  try {
    expect(() => synth({ Win: windows("bbbb-secnd") })).toThrow("cut short");
  } finally {
    cut.mockRestore();
  }
  expect(unattend("W-1")).toContain("bbbb-secnd");
  synth({ Win: windows("aaaa-first") });
  for (const vm of ["W-1", "W-2", "W-3"]) expect(unattend(vm)).toContain("aaaa-first");
});

test("the last pool removed from a stack takes its files along while another stack of the app has pools", () => {
  const both = (withPool: boolean) => {
    const app = new App({ outdir });
    const a = new TerraformStack(app, "a");
    if (withPool) new VmPool(a, "A", validProps({ size: 1 }));
    new VmPool(new TerraformStack(app, "b"), "B", validProps({ name: "B-?", size: 1 }));
    app.synth();
  };
  both(true);
  expect(existsSync(join(outdir, "stacks/a/A.vmpools.tf.json"))).toBe(true);
  both(false);
  expect(readdirSync(join(outdir, "stacks/a")).filter((f) => f.includes("vmpools"))).toEqual([]);
  expect(existsSync(join(outdir, "stacks/a/assets/vmpools.uploads"))).toBe(false);
  expect(existsSync(join(outdir, "stacks/b/B.vmpools.tf.json"))).toBe(true);
});

test("media folders are 0700 even when they existed with other modes; earlier releases' media folders go", () => {
  synth({ Win: windows("p") });
  const dir = join(stackDir(), "assets/vmpools.uploads/Win");
  chmodSync(dir, 0o755);
  const legacy = join(stackDir(), "assets/Win_W-1_sysprep-media_0A1B2C3D");
  mkdirSync(legacy, { recursive: true });
  writeFileSync(join(legacy, "W-1-sysprep.iso"), "old image with a password");
  synth({ Win: windows("p") });
  expect(statSync(dir).mode & 0o777).toBe(0o700);
  expect(statSync(join(stackDir(), "assets/vmpools.uploads")).mode & 0o777).toBe(0o700);
  expect(existsSync(legacy)).toBe(false);
  expect(existsSync(join(stackDir(), "assets/vmpools-host-probe"))).toBe(true);
});
