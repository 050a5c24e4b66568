// In-process synth time of a benchmark app: construct + app.synth() to disk, after module load.
import { writeFileSync } from "node:fs";

export function timed(build: () => { synth(): void }): void {
  const started = performance.now();
  build().synth();
  const synthMs = performance.now() - started;
  if (process.env.BENCH_TIMING) writeFileSync(process.env.BENCH_TIMING, JSON.stringify({ synthMs }));
}

export const SIZE = Number(process.env.BENCH_SIZE ?? 1000);
export const BASE = "/var/lib/libvirt/images/debian-12.qcow2";
