// vmpools as users get it: `npm pack`, installed into a fresh project offline, `vmpools init`
// from the installed bin, type-checked and synthesized with the cdktf CLI.
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { newAppFromTarball, packVmpools } from "../support/npm-project";

let work: string;
let tarball: string;
let app: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "vmpools-package-"));
  tarball = packVmpools(join(work, "pack"));
  app = join(work, "my-pools");
  newAppFromTarball(app, tarball);
}, 240_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

const run = (cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = {}) =>
  new Promise<{ code: number; out: string }>((resolve) =>
    execFile(
      cmd,
      [...args],
      { cwd: app, env: { ...process.env, CHECKPOINT_DISABLE: "1", ...env }, maxBuffer: 64 << 20 },
      (error, stdout, stderr) =>
        resolve({ code: error ? ((error.code as number | undefined) ?? 1) : 0, out: stdout + stderr }),
    ),
  );

test("the tarball holds compiled code with type declarations and no tests, benchmarks or sources", () => {
  const files = execFileSync("tar", ["-tzf", tarball], { encoding: "utf8" }).split("\n").filter(Boolean);
  for (const entry of ["index", "core/index", "engines/cdktf/index", "engines/pulumi/index", "reconciler/index"]) {
    expect(files).toContain(`package/dist/${entry}.js`);
    expect(files).toContain(`package/dist/${entry}.d.ts`);
  }
  expect(files).toContain("package/dist/engines/libvirt-provider/host-probe.cjs");
  expect(files).toContain("package/dist/providers/gen/providers/libvirt/domain/index.js");
  expect(files.filter((f) => /(^|\/)(test|bench|examples|stacks|scripts)\//.test(f.replace("package/", "")))).toEqual(
    [],
  );
  expect(files.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))).toEqual([]);
});

test("vmpools init writes an app that depends on the installed package", () => {
  const pkg = JSON.parse(readFileSync(join(app, "package.json"), "utf8"));
  expect(pkg.dependencies.vmpools).toMatch(/^file:vmpools-\d+\.\d+\.\d+\.tgz$/);
  expect(Object.keys(pkg.dependencies).sort()).toEqual(["cdktf", "constructs", "vmpools"]);
  expect(JSON.parse(readFileSync(join(app, "cdktf.json"), "utf8")).app).toBe("node --require tsx/cjs main.ts");
  expect(readFileSync(join(app, "main.ts"), "utf8")).toContain('from "vmpools/cdktf"');
});

test("init refuses to overwrite an app, naming the files and --force", async () => {
  const again = await run(join(app, "node_modules/.bin/vmpools"), ["init"]);
  expect(again.code).toBe(1);
  expect(again.out).toMatch(/main\.ts, cdktf\.json, tsconfig\.json already exist in .*; pass --force/);
  const typo = await run(join(app, "node_modules/.bin/vmpools"), ["init", "--forse", "x"]);
  expect(typo.code).toBe(2);
  expect(typo.out).toContain("init: unknown option --forse");
});

test("an app importing vmpools, vmpools/core and vmpools/cdktf type-checks; a wrong prop does not", async () => {
  writeFileSync(
    join(app, "entries.ts"),
    [
      'import { VmPool as RootPool, planPool } from "vmpools";',
      'import { describePlan, type VmPoolProps } from "vmpools/core";',
      'import { VmPool, synthStack } from "vmpools/cdktf";',
      'import type { Reconciler } from "vmpools/reconciler";',
      "const props: VmPoolProps = {",
      '  name: "t-?", size: 2,',
      '  template: { name: "t", version: 1, baseImagePath: "/b.qcow2", diskSizeGiB: 1, memoryMiB: 64, vcpus: 1 },',
      "};",
      "export const summary: string = describePlan(planPool(props));",
      "export const same: boolean = RootPool === VmPool;",
      "export type R = Reconciler;",
      "export const synth: typeof synthStack = synthStack;",
      "",
    ].join("\n"),
  );
  const tsconfig = JSON.parse(readFileSync(join(app, "tsconfig.json"), "utf8"));
  writeFileSync(join(app, "tsconfig.json"), JSON.stringify({ ...tsconfig, include: ["main.ts", "entries.ts"] }));
  const ok = await run("npx", ["--no-install", "tsc", "--noEmit", "-p", "."]);
  expect(ok.out).toBe("");
  expect(ok.code).toBe(0);

  writeFileSync(
    join(app, "wrong.ts"),
    'import type { VmPoolProps } from "vmpools/core";\nexport const p: Pick<VmPoolProps, "size"> = { size: "3" };\n',
  );
  writeFileSync(join(app, "tsconfig.json"), JSON.stringify({ ...tsconfig, include: ["wrong.ts"] }));
  const wrong = await run("npx", ["--no-install", "tsc", "--noEmit", "-p", "."]);
  expect(wrong.code).not.toBe(0);
  expect(wrong.out).toMatch(/wrong\.ts.*Type 'string' is not assignable to type 'number'/);
  writeFileSync(join(app, "tsconfig.json"), JSON.stringify(tsconfig));
}, 120_000);

test("npx cdktf synth of the init app (the app's own cdktf CLI) writes the stack and the pool's own file", async () => {
  const synth = await run("npx", ["--offline", "cdktf", "synth"]);
  expect(synth.out).toContain("Generated Terraform code for the stacks: pools");
  expect(synth.code).toBe(0);
  const stackDir = join(app, "cdktf.out/stacks/pools");
  const pool = JSON.parse(readFileSync(join(stackDir, "Desktops.vmpools.tf.json"), "utf8"));
  expect(Object.keys(pool.resource.libvirt_domain)).toEqual([
    "Desktops_desk-1_domain",
    "Desktops_desk-2_domain",
    "Desktops_desk-3_domain",
  ]);
  const stack = JSON.parse(readFileSync(join(stackDir, "cdk.tf.json"), "utf8"));
  expect(stack.provider.libvirt[0].alias).toBe("host_localhost");
  expect(existsSync(join(stackDir, "assets/vmpools.uploads/Desktops/desk-2-cloud-init.iso"))).toBe(true);
}, 120_000);

test("vmpools/core and vmpools/reconciler load without cdktf; vmpools/cdktf with the one the app installed", async () => {
  const loaded = (entry: string) =>
    run("node", [
      "-e",
      `require(${JSON.stringify(entry)}); console.log(JSON.stringify(Object.keys(require.cache).filter((f) => /node_modules\\/(cdktf|constructs)\\//.test(f)).length))`,
    ]);
  expect((await loaded("vmpools/core")).out.trim()).toBe("0");
  expect((await loaded("vmpools/reconciler")).out.trim()).toBe("0");
  const cdktf = await run("node", [
    "-e",
    'require("vmpools/cdktf"); console.log([...new Set(Object.keys(require.cache).filter((f) => f.includes("/node_modules/cdktf/")).map((f) => f.slice(0, f.indexOf("/node_modules/cdktf/"))))].join())',
  ]);
  // One cdktf, the app's own (a peer dependency): constructs from two copies would not mix.
  expect(cdktf.out.trim()).toBe(app);
});

test("the installed bin runs compiled code, and names the fix when the state store's native module is missing", async () => {
  const bin = join(app, "node_modules/vmpools/bin/vmpools");
  const token = await run(bin, ["token", "alice"]);
  expect(token.code).toBe(0);
  expect(token.out).toMatch(/tokens-file entry: \{"user":"alice"/);
  // Installed with install scripts skipped (npm >= 11.19 does so unless allowed): no native build.
  writeFileSync(join(app, "tokens.json"), JSON.stringify({ tokens: [] }));
  const serve = await run(bin, [
    "serve",
    "--uri",
    "test:///default",
    "--db",
    join(app, "s.db"),
    "--tokens",
    join(app, "tokens.json"),
  ]);
  expect(serve.code).toBe(1);
  expect(serve.out).toContain("npm install-scripts approve better-sqlite3 && npm rebuild better-sqlite3");
});
