// The pools' own files across synths into the same folder, as `cdktf synth` does on every run.
import { App, TerraformStack, Testing } from "cdktf";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync } from "node:fs";
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
    ["-J", "-x", "/Unattend.xml", "-i", join(stackDir(), `assets/vmpools/Win/${vm}-sysprep.iso`)],
    { encoding: "utf8" },
  );

test("a re-synth with a new password rebuilds every image (nothing built earlier is reused)", () => {
  synth({ Win: windows("first-password-1") });
  expect(unattend("W-2")).toContain("first-password-1");
  synth({ Win: windows("second-password-2") });
  for (const vm of ["W-1", "W-2", "W-3"]) {
    expect(unattend(vm)).toContain("second-password-2");
    expect(unattend(vm)).not.toContain("first-password-1");
    expect(statSync(join(stackDir(), `assets/vmpools/Win/${vm}-sysprep.iso`)).mode & 0o777).toBe(0o600);
  }
});

test("a re-synth rebuilds an image that was deleted, and leaves the others byte-identical", () => {
  synth({ Win: windows("same-password") });
  const dir = join(stackDir(), "assets/vmpools/Win");
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
  expect(readdirSync(join(stackDir(), "assets/vmpools")).filter((f) => !f.startsWith("."))).toEqual(["Renamed"]);
  // Terraform sees exactly the renamed pool's members.
  expect(Object.keys(readStackDir(stackDir()).resource as object)).toContain("libvirt_domain");
  expect(Object.keys((readStackDir(stackDir()).resource as Record<string, object>).libvirt_domain!).sort()).toEqual([
    "Renamed_MyPool-001_domain",
    "Renamed_MyPool-002_domain",
  ]);
  expect(existsSync(join(stackDir(), "assets/vmpools/A"))).toBe(false);
});

test("a smaller pool leaves no image of a member that is gone", () => {
  synth({ A: validProps({ size: 3 }) });
  synth({ A: validProps({ size: 2, allowShrink: true }) });
  expect(readdirSync(join(stackDir(), "assets/vmpools/A")).sort()).toEqual([
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
