// The cdktf CLI as a pipeline runs it: `cdktf deploy`, then `cdktf diff` for review after an edit,
// then `cdktf destroy`, over a cdktf app (test/deploy/fixtures/cdktf-app.ts) on qemu:///system,
// with the provider stand-ins (see test/support/terraform.ts). Offline, `providers lock` cannot
// reach a registry, so the pipeline passes --skip-provider-lock (the filesystem mirror installs).
import { execFile, execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import type { VmPoolProps } from "../../core";
import { ensureLibvirt, virsh } from "../guest/guest";
import { terraformTools } from "../support/terraform";
import { makeSite, prefixOf, siteProps, type Site } from "./support";

const ROOT = path.join(__dirname, "../..");
const ADMIN_PASSWORD = `Cli-${process.pid}-admin-secret`;
let site: Site;
let projectDir: string;

function cdktf(args: readonly string[], pools: readonly unknown[]): Promise<{ code: number; output: string }> {
  const { terraform, cliConfig } = terraformTools();
  return new Promise((resolve) => {
    execFile(
      path.join(ROOT, "node_modules/.bin/cdktf"),
      [...args],
      {
        cwd: projectDir,
        maxBuffer: 64 << 20,
        env: {
          ...process.env,
          PATH: `${path.dirname(terraform)}:${process.env.PATH}`,
          TF_CLI_CONFIG_FILE: cliConfig,
          CHECKPOINT_DISABLE: "1",
          CI: "1",
          FORCE_COLOR: "0",
          VMPOOLS_TEST_POOLS: JSON.stringify(pools),
          VMPOOLS_TEST_STATE: path.join(projectDir, "pool.tfstate"),
          VMPOOLS_TEST_ADMIN_PASSWORD: ADMIN_PASSWORD,
        },
      },
      (error, stdout, stderr) => {
        // The CLI draws spinners with escape sequences; keep the text.
        const output = `${stdout}\n${stderr}`.replace(/\x1b\[[0-9;]*[A-Za-z]/g, ""); // eslint-disable-line no-control-regex
        resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, output });
      },
    );
  });
}

const linux = (o: Partial<VmPoolProps> = {}): VmPoolProps => siteProps(site, `${prefixOf(site.id)}-?`, o);

beforeAll(() => {
  ensureLibvirt();
  terraformTools();
  site = makeSite("cli");
  projectDir = path.join(site.dir, "project");
  fs.mkdirSync(projectDir);
  const app = [
    path.join(ROOT, "node_modules/.bin/ts-node"),
    "--transpile-only",
    "--project",
    path.join(ROOT, "tsconfig.json"),
    path.join(__dirname, "fixtures/cdktf-app.ts"),
  ].join(" ");
  fs.writeFileSync(
    path.join(projectDir, "cdktf.json"),
    JSON.stringify({ language: "typescript", app, projectId: "vmpools-test", sendCrashReports: "false" }),
  );
}, 300_000);

afterAll(() => site?.remove());

test("cdktf deploy, then cdktf diff shows a reviewer only the policy volume's replacement, then cdktf destroy", async () => {
  const deployed = await cdktf(["deploy", "pool", "--auto-approve", "--skip-provider-lock"], [linux()]);
  expect(deployed.output).toContain("Apply complete! Resources: 5 added, 0 changed, 0 destroyed.");
  expect(deployed.code).toBe(0);
  const vm = `${prefixOf(site.id)}-1`;
  expect(virsh("domstate", vm)).toBe("shut off");

  const diff = await cdktf(["diff", "pool", "--skip-provider-lock"], [linux({ prestarted: 1, description: "edited" })]);
  expect(diff.code).toBe(0);
  expect(diff.output).toMatch(
    /libvirt_volume\.Pool1_policy_host_localhost will be replaced due to changes in\s+replace_triggered_by/,
  );
  expect(diff.output).toContain("Plan: 1 to add, 1 to change, 1 to destroy.");
  // No change is shown for any member resource ("# <address> …" heads each change).
  expect(diff.output).not.toMatch(new RegExp(`# libvirt_(domain|volume)\\.Pool1_${vm}_`));

  const destroyed = await cdktf(["destroy", "pool", "--auto-approve", "--skip-provider-lock"], [linux()]);
  expect(destroyed.output).toContain("Destroy complete! Resources: 5 destroyed.");
  expect(virsh("list", "--all", "--name")).not.toContain(vm);
}, 300_000);

test("a Windows pool's secrets never appear in cdktf diff or deploy output", async () => {
  const windows = {
    ...linux(),
    name: `${prefixOf(site.id)}W-?`,
    operatingSystem: "windows-11",
    // The app reads the password from the environment, as a pipeline's secret store would give it.
    initialRun: { sysprep: { fromEnv: "VMPOOLS_TEST_ADMIN_PASSWORD" } },
  };
  const diff = await cdktf(["diff", "pool", "--skip-provider-lock"], [windows]);
  expect(diff.code).toBe(0);
  expect(diff.output).toContain(`${prefixOf(site.id)}W-1-sysprep.iso`);
  expect(diff.output).not.toContain(ADMIN_PASSWORD);
  const deployed = await cdktf(["deploy", "pool", "--auto-approve", "--skip-provider-lock"], [windows]);
  expect(deployed.code).toBe(0);
  expect(deployed.output).not.toContain(ADMIN_PASSWORD);
  expect(fs.readFileSync(path.join(projectDir, "pool.tfstate"), "utf8")).not.toContain(ADMIN_PASSWORD);
  // The secret did reach the member, and only there: on its sysprep media.
  const iso = path.join(site.dir, "sysprep.iso");
  virsh("vol-download", "--pool", site.storagePool, "--vol", `${prefixOf(site.id)}W-1-sysprep.iso`, "--file", iso);
  const unattend = execFileSync("isoinfo", ["-J", "-i", iso, "-x", "/Unattend.xml"], { encoding: "utf8" });
  expect(unattend).toContain(ADMIN_PASSWORD);
  const destroyed = await cdktf(["destroy", "pool", "--auto-approve", "--skip-provider-lock"], [windows]);
  expect(destroyed.code).toBe(0);
}, 300_000);
