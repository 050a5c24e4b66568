// `vmpools init [DIR]`: a minimal cdktf app with one pool, depending on the installed vmpools.
// Writes files only; loads no cdktf, so it runs before anything else is installed.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { ownPackage, type OwnPackage } from "./own-package";

const MAIN_TS = `// A cdktf app with one vmpools pool. Synthesize: npx cdktf synth; type-check: npm run typecheck.
import { App, TerraformStack } from "cdktf";
import type { Construct } from "constructs";
import { VmPool } from "vmpools/cdktf";

class PoolsStack extends TerraformStack {
  constructor(scope: Construct, id: string) {
    super(scope, id);
    // Three Debian desktops, desk-1 … desk-3, one kept started for the next user. Every setting
    // and its default: the VmPoolProps documentation (README, "Settings").
    new VmPool(this, "Desktops", {
      name: "desk-?",
      size: 3,
      prestarted: 1,
      template: {
        name: "debian-12",
        version: 1,
        baseImagePath: "/var/lib/libvirt/images/debian-12.qcow2",
        diskSizeGiB: 10,
        memoryMiB: 2048,
        vcpus: 2,
      },
    });
  }
}

const app = new App();
new PoolsStack(app, "pools");
app.synth();
`;

const CDKTF_JSON = {
  language: "typescript",
  // tsx only strips this app's types (vmpools is compiled JavaScript): ~0.1 s, against ~0.3 s
  // for ts-node, which loads the TypeScript compiler. Type-check with `npm run typecheck`.
  app: "node --require tsx/cjs main.ts",
  projectId: "",
  sendCrashReports: "false",
  terraformProviders: [],
  terraformModules: [],
  context: {},
};

const TSCONFIG = {
  compilerOptions: {
    target: "ES2022",
    module: "Node16",
    moduleResolution: "Node16",
    lib: ["ES2022"],
    types: ["node"],
    strict: true,
    noEmit: true,
    skipLibCheck: true,
  },
  include: ["main.ts"],
};

const GITIGNORE = "node_modules/\ncdktf.out/\n*.tfstate*\n.terraform/\n";

/** Versions of the app's other dependencies: the ones vmpools is built and tested with. */
function dependencyVersions(own: OwnPackage) {
  const dev = own.devDependencies;
  return {
    dependencies: { vmpools: `^${own.version}`, cdktf: dev.cdktf!, constructs: dev.constructs! },
    devDependencies: {
      typescript: dev.typescript!,
      tsx: dev.tsx!,
      // `npx cdktf` resolves to the cdktf library (no executable) unless the CLI is local.
      "cdktf-cli": dev["cdktf-cli"]!,
      "@types/node": dev["@types/node"]!,
    },
  };
}

export interface InitResult {
  readonly dir: string;
  readonly written: readonly string[];
}

export class InitError extends Error {}

/**
 * Writes main.ts, cdktf.json, tsconfig.json and .gitignore into `dir`, and a package.json, or
 * adds what is missing to an existing one (an existing `vmpools` dependency, such as a tarball
 * path, is kept). Refuses to overwrite an existing app file unless `force`.
 */
export function initProject(dir: string, opts: { readonly force?: boolean } = {}): InitResult {
  const target = resolve(dir);
  const files: [string, string][] = [
    ["main.ts", MAIN_TS],
    ["cdktf.json", JSON.stringify({ ...CDKTF_JSON, projectId: `vmpools-${basename(target)}` }, null, 2) + "\n"],
    ["tsconfig.json", JSON.stringify(TSCONFIG, null, 2) + "\n"],
  ];
  const existing = files.filter(([name]) => existsSync(join(target, name))).map(([name]) => name);
  if (existing.length > 0 && !opts.force) {
    throw new InitError(
      `vmpools init: ${existing.join(", ")} already exist in ${target}; pass --force to overwrite them, or choose an empty DIR`,
    );
  }
  mkdirSync(target, { recursive: true });
  const own = ownPackage();
  const versions = dependencyVersions(own);
  const pkgFile = join(target, "package.json");
  const pkg = existsSync(pkgFile)
    ? JSON.parse(readFileSync(pkgFile, "utf8"))
    : { name: packageName(basename(target)), version: "0.1.0", private: true };
  pkg.scripts = { synth: "cdktf synth", typecheck: "tsc --noEmit", ...pkg.scripts };
  for (const kind of ["dependencies", "devDependencies"] as const) {
    pkg[kind] = { ...versions[kind], ...pkg[kind] };
  }
  const written: string[] = [];
  for (const [name, content] of [...files, ["package.json", JSON.stringify(pkg, null, 2) + "\n"]] as const) {
    writeFileSync(join(target, name), content);
    written.push(name);
  }
  if (!existsSync(join(target, ".gitignore"))) {
    writeFileSync(join(target, ".gitignore"), GITIGNORE);
    written.push(".gitignore");
  }
  return { dir: target, written };
}

/** An npm package name from a folder name: lower case, no leading `.` or `_`. */
function packageName(folder: string): string {
  return (
    folder
      .toLowerCase()
      .replace(/[^a-z0-9._-]/g, "-")
      .replace(/^[._]+/, "") || "vmpools-app"
  );
}
