// Synth on the user's path (issue #8): a fresh project that installed the packed tarball,
// `npx cdktf synth` through the app's cdktf CLI with the app command `vmpools init` writes, against the
// `for_each` baseline (bench/apps/foreach.ts) in the same run. Per cell: CLI wall time and the
// app's own construct + app.synth() time (module load excluded), min / median of BENCH_REPEATS,
// for a first synth (empty output folder) and a re-synth (the folder of the previous run).
// `npm run bench` (or `npx ts-node --transpile-only bench/synth.ts`).
import { execFileSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { newAppFromTarball, packVmpools, ROOT } from "../test/support/npm-project";

const sizes = (process.env.BENCH_SIZES ?? "10,100,1000").split(",").map(Number);
const repeats = Number(process.env.BENCH_REPEATS ?? 5);
// empty: a stack with nothing in it, the cost of the CLI and of loading cdktf alone.
const variants = ["empty", "foreach", "vmpool", "windows"] as const;
type Variant = (typeof variants)[number];

interface Cell {
  readonly cliMs: number[];
  readonly synthMs: number[];
}

const work = mkdtempSync(join(tmpdir(), "vmpools-bench-synth-"));
const trash = join(work, "trash");
mkdirSync(trash);
let trashed = 0;
const project = join(work, "bench-app");
newAppFromTarball(project, packVmpools(join(work, "pack")));
for (const f of readdirSync(join(__dirname, "apps"))) copyFileSync(join(__dirname, "apps", f), join(project, f));
// The apps are what users would write: they must type-check against the installed package.
writeFileSync(
  join(project, "tsconfig.json"),
  JSON.stringify({
    ...JSON.parse(readFileSync(join(project, "tsconfig.json"), "utf8")),
    include: [...variants.map((v) => `${v}.ts`), "timing.ts"],
  }),
);
execFileSync("npx", ["--no-install", "tsc", "--noEmit", "-p", "."], { cwd: project, stdio: "inherit" });
const app = JSON.parse(readFileSync(join(project, "cdktf.json"), "utf8")).app as string;

function once(variant: Variant, size: number, first: boolean): { cliMs: number; synthMs: number } {
  const timing = join(work, "timing.json");
  rmSync(timing, { force: true });
  // One output folder per variant, so a re-synth finds its own previous output.
  const output = join(project, `cdktf.out-${variant}`);
  // A first synth starts from no folder, as in a fresh clone. The old one is moved aside and
  // deleted only when the benchmark ends: deleting thousands of files right before a run slows
  // the run's own file creation on disks that discard freed blocks, which no user's synth pays.
  if (first && existsSync(output)) renameSync(output, join(trash, `${variant}-${trashed++}`));
  const started = performance.now();
  execFileSync(
    "npx",
    ["--offline", "cdktf", "synth", "--app", app.replace("main.ts", `${variant}.ts`), "--output", output],
    {
      cwd: project,
      env: { ...process.env, CHECKPOINT_DISABLE: "1", BENCH_SIZE: String(size), BENCH_TIMING: timing },
      stdio: "ignore",
    },
  );
  const cliMs = performance.now() - started;
  return { cliMs, synthMs: JSON.parse(readFileSync(timing, "utf8")).synthMs };
}

const min = (xs: number[]) => Math.min(...xs);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const s = (ms: number) => (ms / 1000).toFixed(2);

console.log(
  `machine: ${cpus().length} x ${cpus()[0]?.model}, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}`,
);
const cliVersion = execFileSync("npx", ["--offline", "cdktf", "--version"], {
  cwd: project,
  encoding: "utf8",
  stdio: ["ignore", "pipe", "ignore"],
});
console.log(`app command: ${app} (cdktf CLI ${cliVersion.trim()})`);
// What the toolchain costs before any app: Node itself, npx, the cdktf CLI binary.
const floor = (label: string, cmd: string, args: string[]) => {
  const runs = Array.from({ length: repeats }, () => {
    const started = performance.now();
    execFileSync(cmd, args, { cwd: project, stdio: "ignore", env: { ...process.env, CHECKPOINT_DISABLE: "1" } });
    return performance.now() - started;
  });
  console.log(`floor: ${label}: ${s(min(runs))} / ${s(median(runs))} s`);
};
floor("node -e 0", "node", ["-e", "0"]);
floor("npx --offline cdktf --version", "npx", ["--offline", "cdktf", "--version"]);
floor("node_modules/.bin/cdktf --version", join(project, "node_modules/.bin/cdktf"), ["--version"]);
floor("node_modules/.bin/cdktf synth (empty app)", join(project, "node_modules/.bin/cdktf"), [
  "synth",
  "--app",
  app.replace("main.ts", "empty.ts"),
  "--output",
  join(project, "cdktf.out-floor"),
]);
// The vmpools CLI as installed (compiled) and from a checkout (sources through ts-node).
floor("vmpools token x (installed package)", join(project, "node_modules/.bin/vmpools"), ["token", "x"]);
floor("vmpools token x (checkout, ts-node)", join(ROOT, "bin/vmpools"), ["token", "x"]);
console.log(`${repeats} runs per cell, variants interleaved; min / median in seconds`);
console.log("");
console.log(
  "| members | synth | variant | `cdktf synth` (CLI) | in-process synth | CLI vs for_each (median) | in-process vs for_each (median) |",
);
console.log("|---:|---|---|---:|---:|---:|---:|");
for (const size of sizes) {
  for (const first of [true, false]) {
    const cells = Object.fromEntries(variants.map((v) => [v, { cliMs: [], synthMs: [] } as Cell])) as Record<
      Variant,
      Cell
    >;
    if (!first) for (const v of variants) once(v, size, true); // the folder a re-synth finds
    for (let r = 0; r < repeats; r++) {
      for (const v of variants) {
        const { cliMs, synthMs } = once(v, size, first);
        cells[v].cliMs.push(cliMs);
        cells[v].synthMs.push(synthMs);
      }
    }
    const base = cells.foreach;
    const kind = first ? "first" : "re-synth";
    for (const v of variants) {
      const c = cells[v];
      console.log(
        `| ${size} | ${kind} | ${v} | ${s(min(c.cliMs))} / ${s(median(c.cliMs))} | ${s(min(c.synthMs))} / ${s(median(c.synthMs))} | ` +
          `${(median(c.cliMs) / median(base.cliMs)).toFixed(2)}x | ${(median(c.synthMs) / median(base.synthMs)).toFixed(2)}x |`,
      );
    }
    console.log(
      `| ${size} | ${kind} | sysprep media extra (windows − vmpool, median) | ${s(median(cells.windows.cliMs) - median(cells.vmpool.cliMs))} | ` +
        `${s(median(cells.windows.synthMs) - median(cells.vmpool.synthMs))} | | |`,
    );
  }
}
rmSync(work, { recursive: true, force: true });
