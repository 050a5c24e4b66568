// What the benchmark apps share: their size, the pool they build, and the in-process timing
// (construct + app.synth() to disk, after module load).
import { writeFileSync } from "node:fs";
import type { VmPoolProps } from "vmpools/core";

export function timed(build: () => { synth(): void }): void {
  const started = performance.now();
  build().synth();
  const synthMs = performance.now() - started;
  if (process.env.BENCH_TIMING) writeFileSync(process.env.BENCH_TIMING, JSON.stringify({ synthMs }));
}

export const SIZE = Number(process.env.BENCH_SIZE ?? 1000);
export const BASE = "/var/lib/libvirt/images/debian-12.qcow2";

/** The benchmark pool: SIZE Linux members named Bench-0001 …. */
export const benchPool = (overrides: Partial<VmPoolProps> = {}): VmPoolProps => ({
  name: "Bench-????",
  size: SIZE,
  maxVmsInPool: Math.max(SIZE, 1000),
  template: { name: "debian-12", version: 1, baseImagePath: BASE, diskSizeGiB: 10, memoryMiB: 1024, vcpus: 2 },
  ...overrides,
});
