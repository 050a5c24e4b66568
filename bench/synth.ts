// Synth benchmark (issue #2: 1000 members < 10 s, within 1.5x of a plain cdktf loop, linear cost;
// issue #3: sysprep media for 1000 Windows members < 2 s extra).
// Each measurement runs in a fresh process so peak memory is its own. `npm run bench`.
import { execFileSync } from "node:child_process";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";

interface Sample {
  variant: string;
  size: number;
  synthMs: number;
  maxRssMiB: number;
}

const sizes = (process.env.BENCH_SIZES ?? "10,100,1000").split(",").map(Number);
const repeats = Number(process.env.BENCH_REPEATS ?? 3);

function measure(variant: string, size: number): Sample {
  const runs: Sample[] = [];
  for (let r = 0; r < repeats; r++) {
    // Compiled JS (scripts/bench.sh builds it), as a deployed app runs: under ts-node every
    // captured stack trace is also source-mapped, which costs the plain loop ~3x more.
    const out = execFileSync("node", [join(__dirname, "synth-one.js"), variant, String(size)], { encoding: "utf8" });
    runs.push(JSON.parse(out.trim().split("\n").pop()!));
  }
  runs.sort((a, b) => a.synthMs - b.synthMs);
  return runs[Math.floor(runs.length / 2)]!; // median
}

console.log(
  `machine: ${cpus().length} x ${cpus()[0]?.model}, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}`,
);
console.log(`median of ${repeats} runs per cell; synth = construct + app.synth() to disk, excluding module load`);
console.log(
  "| members | VmPool synth | plain loop synth | ratio | VmPool peak RSS | plain peak RSS | VmPool ms/member | Windows pool synth | media extra |",
);
console.log("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const size of sizes) {
  const pool = measure("vmpool", size);
  const plain = measure("plain", size);
  const windows = measure("windows", size);
  console.log(
    `| ${size} | ${pool.synthMs} ms | ${plain.synthMs} ms | ${(pool.synthMs / plain.synthMs).toFixed(2)}x | ${pool.maxRssMiB} MiB | ${plain.maxRssMiB} MiB | ${(pool.synthMs / size).toFixed(2)} | ${windows.synthMs} ms | ${windows.synthMs - pool.synthMs} ms |`,
  );
}
