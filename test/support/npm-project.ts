// A fresh npm project that installs vmpools from its packed tarball, as a user's project does,
// without network: its lockfile takes every other package at the version and integrity this
// repository's lockfile has, so `npm ci --offline` finds them all in the npm cache that
// installing this repository filled.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";

export const ROOT = join(__dirname, "../..");

type LockEntry = Record<string, unknown> & {
  version?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  link?: boolean;
};

const repoLock = (): Record<string, LockEntry> =>
  JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")).packages;

/** Where Node would find `name` from the package at `from` (a lockfile path; "" is the root). */
function resolveIn(lock: Record<string, LockEntry>, from: string, name: string): string | undefined {
  let base = from;
  for (;;) {
    const candidate = base ? `${base}/node_modules/${name}` : `node_modules/${name}`;
    if (lock[candidate]) return candidate;
    if (!base) return undefined;
    const up = base.lastIndexOf("/node_modules/");
    base = up === -1 ? "" : base.slice(0, up);
  }
}

let registryUrl: string | undefined;
const registry = (): string =>
  (registryUrl ??= execFileSync("npm", ["config", "get", "registry"], { encoding: "utf8" })
    .trim()
    .replace(/\/?$/, "/"));

/** The registry's tarball URL of the package at lockfile path `path`. */
function tarballUrl(path: string, version: string): string {
  const name = path.slice(path.lastIndexOf("node_modules/") + "node_modules/".length);
  return `${registry()}${name}/-/${name.split("/").pop()}-${version}.tgz`;
}

/** The lockfile entries of `names` and everything they need, at the repository's paths. */
function closure(names: readonly string[]): Record<string, LockEntry> {
  const lock = repoLock();
  const out: Record<string, LockEntry> = {};
  const visit = (from: string, name: string, required: boolean) => {
    const path = resolveIn(lock, from, name);
    if (!path) {
      if (required) throw new Error(`package-lock.json has no ${name} (needed from "${from || "the root"}")`);
      return;
    }
    if (out[path]) return;
    const entry = lock[path]!;
    // The repository's dev/peer flags describe its own tree, not this project's.
    const kept: LockEntry = { ...entry };
    for (const flag of ["dev", "devOptional", "peer"]) delete kept[flag];
    // Its lockfile omits registry URLs (omit-lockfile-registry-resolved); without one npm asks
    // the registry for the package's metadata, which is not cached. The tarball URL is.
    if (!kept.resolved && !kept.inBundle && !kept.link) kept.resolved = tarballUrl(path, entry.version!);
    out[path] = kept;
    for (const dep of Object.keys(entry.dependencies ?? {})) visit(path, dep, true);
    for (const dep of Object.keys(entry.optionalDependencies ?? {})) visit(path, dep, false);
    for (const dep of Object.keys(entry.peerDependencies ?? {}))
      visit(path, dep, entry.peerDependenciesMeta?.[dep]?.optional !== true);
  };
  for (const name of names) visit("", name, true);
  return out;
}

/** `npm pack` of this repository (its prepack builds dist/); returns the tarball's path. */
export function packVmpools(destination: string): string {
  mkdirSync(destination, { recursive: true });
  const out = execFileSync("npm", ["pack", "--json", "--pack-destination", destination], {
    cwd: ROOT,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    maxBuffer: 64 << 20,
  });
  const [info] = JSON.parse(out.slice(out.indexOf("["))) as { filename: string }[];
  return join(destination, basename(info!.filename));
}

/**
 * Installs the project's package.json in `dir` offline, with `tarball` as its vmpools. Install
 * scripts are skipped: the only one, better-sqlite3's native build, serves the reconciler, not a
 * cdktf app, and npm versions differ on running it (11.19 skips it unless allowed).
 */
export function installOffline(dir: string, tarball: string): void {
  const local = join(dir, basename(tarball));
  copyFileSync(tarball, local);
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  pkg.dependencies = { ...pkg.dependencies, vmpools: `file:${basename(tarball)}` };
  writeFileSync(join(dir, "package.json"), JSON.stringify(pkg, null, 2) + "\n");

  const own = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
  const others = [...Object.keys(pkg.dependencies), ...Object.keys(pkg.devDependencies ?? {})].filter(
    (n) => n !== "vmpools",
  );
  const entries = closure([...others, ...Object.keys(own.dependencies)]);
  const data = readFileSync(local);
  const packages = {
    "": {
      name: pkg.name,
      version: pkg.version,
      dependencies: pkg.dependencies,
      devDependencies: pkg.devDependencies,
    },
    "node_modules/vmpools": {
      version: own.version,
      resolved: `file:${basename(tarball)}`,
      integrity: `sha512-${createHash("sha512").update(data).digest("base64")}`,
      license: own.license,
      dependencies: own.dependencies,
      bin: own.bin,
      engines: own.engines,
      peerDependencies: own.peerDependencies,
      peerDependenciesMeta: own.peerDependenciesMeta,
    },
    ...entries,
  };
  writeFileSync(
    join(dir, "package-lock.json"),
    JSON.stringify({ name: pkg.name, version: pkg.version, lockfileVersion: 3, requires: true, packages }, null, 2),
  );
  execFileSync("npm", ["ci", "--offline", "--ignore-scripts", "--no-audit", "--no-fund"], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/**
 * A user's new app in `dir`, as the README's "Use it in your own stack" makes it: an empty
 * package.json, the tarball installed, the installed `vmpools init`, then what init added.
 */
export function newAppFromTarball(dir: string, tarball: string): void {
  mkdirSync(dir, { recursive: true });
  const name = basename(dir).toLowerCase();
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name, version: "1.0.0", private: true }));
  installOffline(dir, tarball);
  execFileSync(join(dir, "node_modules/.bin/vmpools"), ["init"], { cwd: dir, stdio: "ignore" });
  // init added cdktf, constructs, the cdktf CLI, TypeScript and tsx to package.json.
  installOffline(dir, tarball);
}
