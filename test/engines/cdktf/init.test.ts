// `vmpools init` on its own (the packed package runs it for real in test/package).
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InitError, initProject } from "../../../engines/cdktf/init";

let dir: string;
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), "vmpools-init-"))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

test("a new folder gets a package.json with a valid npm name and every dependency the app needs", () => {
  const target = join(dir, ".My Pools_");
  const r = initProject(target);
  expect(r.written).toEqual(["main.ts", "cdktf.json", "tsconfig.json", "package.json", ".gitignore"]);
  const pkg = JSON.parse(readFileSync(join(target, "package.json"), "utf8"));
  expect(pkg.name).toBe("my-pools_");
  expect(Object.keys(pkg.dependencies).sort()).toEqual(["cdktf", "constructs", "vmpools"]);
  expect(Object.keys(pkg.devDependencies).sort()).toEqual(["@types/node", "cdktf-cli", "tsx", "typescript"]);
  expect(pkg.scripts).toMatchObject({ synth: "cdktf synth", typecheck: "tsc --noEmit" });
});

test("an existing package.json keeps its own entries (a tarball vmpools, its scripts)", () => {
  writeFileSync(
    join(dir, "package.json"),
    JSON.stringify({ name: "mine", dependencies: { vmpools: "file:../vmpools-0.1.0.tgz" }, scripts: { synth: "x" } }),
  );
  initProject(dir);
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  expect(pkg.name).toBe("mine");
  expect(pkg.dependencies.vmpools).toBe("file:../vmpools-0.1.0.tgz");
  expect(pkg.scripts.synth).toBe("x");
  expect(pkg.dependencies.cdktf).toMatch(/^\^?~?0\.21/);
});

test("refuses to overwrite app files unless forced, and writes nothing when it refuses", () => {
  mkdirSync(join(dir, "app"));
  writeFileSync(join(dir, "app/main.ts"), "// mine\n");
  expect(() => initProject(join(dir, "app"))).toThrow(InitError);
  expect(() => initProject(join(dir, "app"))).toThrow(/main\.ts already exist in .*; pass --force/);
  expect(readFileSync(join(dir, "app/main.ts"), "utf8")).toBe("// mine\n");
  initProject(join(dir, "app"), { force: true });
  expect(readFileSync(join(dir, "app/main.ts"), "utf8")).toContain('from "vmpools/cdktf"');
});
