import { App } from "cdktf";
import type { Construct } from "constructs";
import { isAbsolute, join, relative, resolve } from "node:path";
import type { PoolPlacement } from "../../core";
import {
  PLACEMENT_RECORD_FILE,
  mergePlacementRecord,
  readPlacementRecord,
  writePlacementRecord,
  type PlacementRecord,
} from "../libvirt-provider/placement-record";

/** A pool of the app and the placement its plan gives it. */
interface RecordedPool {
  readonly constructPath: string;
  placement?: PoolPlacement;
}

/** One record file as this app uses it: what it held when read, and the app's pools in it. */
interface AppRecord {
  readonly previous: PlacementRecord;
  readonly pools: Map<string, RecordedPool>;
}

const records = new WeakMap<App, Map<string, AppRecord>>();
const written = new WeakSet<object>();

/**
 * The record file a pool of this app uses: `placementRecordPath`, else `vmpools.placement.json`
 * in the working directory when the app synthesizes into it (`cdktf.out`, as `cdktf synth`
 * does), else none: an app synthesizing elsewhere (a unit test's temporary folder) places by
 * hashing alone, and never writes into the working directory.
 */
export function placementRecordPath(scope: Construct, configured: string | undefined): string | undefined {
  if (configured !== undefined) return resolve(configured);
  const cwd = process.cwd();
  const out = relative(cwd, resolve(App.of(scope).outdir));
  return out !== "" && !out.startsWith("..") && !isAbsolute(out) ? join(cwd, PLACEMENT_RECORD_FILE) : undefined;
}

/**
 * The recorded placement of pool `poolName` (read once per app and file), and a claim of the
 * name in that file: two pools of one app with the same name would overwrite each other's entry.
 */
export function claimRecordedPlacement(scope: Construct, file: string, poolName: string): PoolPlacement {
  const app = App.of(scope);
  const files = records.get(app) ?? new Map<string, AppRecord>();
  records.set(app, files);
  const record = files.get(file) ?? { previous: readPlacementRecord(file), pools: new Map() };
  files.set(file, record);
  const other = record.pools.get(poolName);
  if (other) {
    throw new Error(
      `VmPool ${scope.node.path}: pool name "${poolName}" is also used by VmPool ${other.constructPath}, and both ` +
        `record their placement in ${file}; give one of them a placementRecordPath of its own (e.g. one per stack)`,
    );
  }
  record.pools.set(poolName, { constructPath: scope.node.path });
  return record.previous[poolName] ?? {};
}

/** The placement a pool's plan gives its members, to be written at synth. */
export function notePlacement(scope: Construct, file: string, poolName: string, placement: PoolPlacement): void {
  records.get(App.of(scope))!.get(file)!.pools.get(poolName)!.placement = placement;
}

/**
 * Writes every record file of the app once per synth (`once` is the synth's manifest): each
 * pool's entry is its plan's placement, and entries of pools no stack of the app has any more
 * are dropped (`app.synth()` constructs and synthesizes every stack of the app).
 */
export function writeAppPlacementRecords(app: App, once: object): void {
  if (written.has(once)) return;
  written.add(once);
  for (const [file, record] of records.get(app) ?? []) {
    const pools = new Map<string, PoolPlacement>();
    for (const [name, pool] of record.pools) if (pool.placement) pools.set(name, pool.placement);
    // A claimed pool without a plan (its planning threw and the app went on) keeps its entry.
    writePlacementRecord(
      file,
      mergePlacementRecord(record.previous, pools, (name) => record.pools.has(name)),
    );
  }
}
