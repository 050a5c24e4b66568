// The runtime (`vmpools/reconciler`, the CLI, the local demo) must load without the IaC layer:
// users who only run the reconciler install neither cdktf, constructs nor Pulumi, and the
// examples are not part of the package; Pulumi users need no cdktf either. Checked in a fresh process by what require() actually loaded.
import { execFileSync } from "node:child_process";
import { join } from "node:path";

const ROOT = join(__dirname, "../../..");

/** Every file a fresh Node process has loaded after requiring `modules` (paths from the root). */
function loadedBy(...modules: string[]): string[] {
  const script = `
    require("ts-node").register({ transpileOnly: true, project: ${JSON.stringify(join(ROOT, "tsconfig.json"))} });
    for (const m of ${JSON.stringify(modules.map((m) => join(ROOT, m)))}) require(m);
    process.stdout.write(JSON.stringify(Object.keys(require.cache)));
    process.exit(0);`;
  const out = execFileSync(process.execPath, ["-e", script], { cwd: ROOT, encoding: "utf8" });
  return (JSON.parse(out) as string[]).map((f) => f.slice(ROOT.length + 1));
}

const iac = (files: string[]) =>
  files.filter(
    (f) =>
      f.startsWith("node_modules/cdktf/") ||
      f.startsWith("node_modules/constructs/") ||
      f.startsWith("node_modules/@pulumi/") ||
      // An example's props file is plain data; the example itself is a cdktf stack.
      (f.startsWith("examples/") && !f.endsWith(".props.ts")) ||
      f.startsWith("engines/"),
  );

test("the reconciler's index, its CLI and the local demo load no cdktf, constructs, Pulumi, engine or example", () => {
  const files = loadedBy("reconciler/index.ts", "reconciler/cli.ts", "reconciler/local/demo.ts");
  expect(files).toEqual(
    expect.arrayContaining([
      "reconciler/cli.ts",
      "reconciler/local/demo.ts",
      "core/domain.ts",
      "examples/linux-desktop-pool.props.ts",
    ]),
  );
  expect(iac(files)).toEqual([]);
});

test("the check sees cdktf and the examples when they are loaded", () => {
  const files = iac(loadedBy("examples/linux-desktop-pool.ts"));
  expect(files).toEqual(expect.arrayContaining(["examples/linux-desktop-pool.ts", "engines/cdktf/index.ts"]));
  expect(files.some((f) => f.startsWith("node_modules/cdktf/"))).toBe(true);
});

test("the check sees Pulumi when the Pulumi engine is loaded, and the Pulumi engine loads no cdktf", () => {
  const files = iac(loadedBy("engines/pulumi/index.ts"));
  expect(files.some((f) => f.startsWith("node_modules/@pulumi/pulumi/"))).toBe(true);
  expect(files.filter((f) => f.startsWith("node_modules/cdktf/") || f.startsWith("engines/cdktf/"))).toEqual([]);
});
