import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import type { PoolPlacement } from "../../core";

/** File name of the placement record in the app's folder (kept in version control). */
export const PLACEMENT_RECORD_FILE = "vmpools.placement.json";

/** The whole record: pool name (its mask, e.g. `MyPool-???`) → member name → host name. */
export type PlacementRecord = Readonly<Record<string, PoolPlacement>>;

/**
 * Reads a placement record; a missing file is an empty record (every member then placed by
 * hashing, as before records existed). A file that is not a record is an error naming it.
 */
export function readPlacementRecord(file: string): PlacementRecord {
  if (!existsSync(file)) return {};
  const text = readFileSync(file, "utf8");
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new Error(`placement record ${file} is not JSON (${(e as Error).message}); restore it from version control`);
  }
  const problem = recordProblem(parsed);
  if (problem) throw new Error(`placement record ${file}: ${problem}; restore it from version control`);
  return parsed as PlacementRecord;
}

function recordProblem(value: unknown): string | undefined {
  const isMap = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
  if (!isMap(value)) return 'must be an object of pools, e.g. { "MyPool-???": { "MyPool-001": "h1" } }';
  for (const [pool, members] of Object.entries(value)) {
    if (!isMap(members)) return `pool "${pool}" must map member names to host names`;
    for (const [vm, host] of Object.entries(members)) {
      if (typeof host !== "string" || host === "") return `member "${vm}" of pool "${pool}" must have a host name`;
    }
  }
  return undefined;
}

/**
 * The record as written: pools and members in natural order (`MyPool-2` before `MyPool-10`),
 * two-space JSON with one member per line and a trailing newline, so the same placement is the
 * same bytes and a change shows as the lines of the members it adds or drops.
 */
export function renderPlacementRecord(record: PlacementRecord): string {
  const sorted = Object.fromEntries(
    Object.keys(record)
      .sort(naturalOrder)
      .map((pool) => [
        pool,
        Object.fromEntries(
          Object.keys(record[pool]!)
            .sort(naturalOrder)
            .map((vm) => [vm, record[pool]![vm]!]),
        ),
      ]),
  );
  return `${JSON.stringify(sorted, null, 2)}\n`;
}

/**
 * The record after a synth or program run: `pools` replace their own entries (a pool with no
 * member left drops out); every other pool is kept unless `keep` says it is gone.
 */
export function mergePlacementRecord(
  previous: PlacementRecord,
  pools: ReadonlyMap<string, PoolPlacement>,
  keep: (pool: string) => boolean = () => true,
): PlacementRecord {
  const next: Record<string, PoolPlacement> = {};
  for (const [pool, members] of Object.entries(previous)) if (!pools.has(pool) && keep(pool)) next[pool] = members;
  for (const [pool, members] of pools) if (Object.keys(members).length > 0) next[pool] = members;
  return next;
}

/**
 * Writes the record when its content changed (a synth that places nobody new leaves the file
 * untouched); through a temporary file, so an interrupted write never leaves half a record.
 * Returns whether it wrote.
 */
export function writePlacementRecord(file: string, record: PlacementRecord): boolean {
  const text = renderPlacementRecord(record);
  if (existsSync(file) && readFileSync(file, "utf8") === text) return false;
  if (!existsSync(file) && Object.keys(record).length === 0) return false;
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, text, { mode: 0o644 });
  renameSync(temporary, file);
  return true;
}

/** Names with their numbers compared as numbers, independent of the locale. */
function naturalOrder(a: string, b: string): number {
  const split = (s: string) => s.split(/(\d+)/);
  const x = split(a);
  const y = split(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const [p, q] = [x[i]!, y[i]!];
    if (p === q) continue;
    if (i % 2 === 1) {
      const d = Number(p) - Number(q);
      if (d !== 0) return d;
    }
    return p < q ? -1 : 1;
  }
  return x.length - y.length || (a < b ? -1 : a > b ? 1 : 0);
}
