import { execFileSync } from "node:child_process";
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

const SETUP_HINT = "run `bash scripts/setup-system.sh` (installs genisoimage, xorriso and mtools)";
// blkid lives in sbin, which a non-root PATH may lack.
const SEARCH_PATH = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/sbin"];

/**
 * Real Debian tools that read disk images back, for a test file. Missing tools fail the suite
 * (a skipped check proves nothing). Images go to a private folder made up front, so none lands
 * in the working tree even when the tool check fails; both are set up by jest hooks.
 */
export function imageTools(
  tools: readonly string[],
  opts: { readonly suffix: string; readonly env?: NodeJS.ProcessEnv },
) {
  const paths = new Map<string, string>();
  const workDir = mkdtempSync(join(tmpdir(), `vmpools-${opts.suffix}-`));
  let count = 0;

  beforeAll(() => {
    for (const tool of tools) {
      const found = SEARCH_PATH.map((dir) => join(dir, tool)).find((p) => {
        try {
          accessSync(p, constants.X_OK);
          return true;
        } catch {
          return false;
        }
      });
      if (!found) throw new Error(`${tool} not found: ${SETUP_HINT}`);
      paths.set(tool, found);
    }
  });
  afterAll(() => rmSync(workDir, { recursive: true, force: true }));

  return {
    workDir,
    run(tool: string, args: readonly string[]): Buffer {
      return execFileSync(paths.get(tool)!, args, {
        env: { ...process.env, LC_ALL: "C.UTF-8", ...opts.env },
        maxBuffer: 64 << 20,
        stdio: ["ignore", "pipe", "pipe"],
      });
    },
    writeImage(image: Buffer): string {
      const path = join(workDir, `image-${++count}.${opts.suffix}`);
      writeFileSync(path, image);
      return path;
    },
  };
}
