import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";

export interface OwnPackage {
  readonly version: string;
  readonly devDependencies: Record<string, string>;
}

let found: OwnPackage | undefined;

/** vmpools' own package.json, found upwards from this file (sources, or dist/ in the package). */
export function ownPackage(): OwnPackage {
  if (found) return found;
  for (let dir = __dirname; dir !== dirname(dir); dir = dirname(dir)) {
    const file = join(dir, "package.json");
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, "utf8"));
      if (pkg.name === "vmpools") return (found = pkg as OwnPackage);
    }
  }
  throw new Error(`cannot find vmpools' package.json above ${__dirname}`);
}
