// Claims per second of the state store on one connection.
// Run: npx ts-node --transpile-only bench/store.ts [claims]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { StateStore } from "../reconciler/store/store";

const claims = Number(process.argv[2] ?? 3000);
const vms = Array.from({ length: claims }, (_, i) => `vm-${i}`);

const measure = (label: string, path: string): void => {
  const store = StateStore.open(path);
  const started = process.hrtime.bigint();
  // Each user takes the next free member; the candidate list starts at it so the cost measured
  // is the transaction (and its fsync), not a scan over held members.
  for (let i = 0; i < claims; i++) {
    if ("refused" in store.claim("bench", `user-${i}`, vms.slice(i, i + 8), 1)) throw new Error("refused");
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  store.close();
  console.log(`${label}: ${Math.round(claims / seconds)} claims/s (${((seconds / claims) * 1e3).toFixed(3)} ms each)`);
};

const dir = mkdtempSync(join(tmpdir(), "vmpools-bench-"));
try {
  measure("file (WAL, synchronous=FULL)", join(dir, "store.db"));
  measure(":memory:", ":memory:");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
