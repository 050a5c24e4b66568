// What a pool looks like to its three witnesses at once: `GET /v1/status` (admin), the SQLite
// store (opened read-only, beside the running serve) and libvirt. `auditPool` lists every way
// they disagree or break a rule; an empty list means the pool is settled and sound.
import Database from "better-sqlite3";
import { HOLDER_NAMESPACE, parseHolderXml } from "../../core/metadata";
import type { VirshDriver } from "../../reconciler/driver/libvirt-driver";
import { systemVolumeOf } from "../../reconciler/libvirt-xml";
import type { ReconcilerStatus } from "../../reconciler/reconciler";

export interface PoolRules {
  readonly pool: string;
  readonly members: readonly string[];
  readonly storagePool: string;
  readonly maxVmsPerUser: number;
  readonly prestarted: number;
}

export interface StoreView {
  /** vm → user. */
  readonly holders: ReadonlyMap<string, string>;
  readonly pendingIntents: number;
  readonly spareVolumes: readonly string[];
}

/** The store as a separate reader sees it (WAL: it never blocks the serve writing it). */
export function readStore(dbPath: string, pool: string, storagePool: string): StoreView {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare("SELECT vm, user FROM assignments WHERE pool = ?").all(pool) as {
      vm: string;
      user: string;
    }[];
    const pending = db.prepare("SELECT count(*) AS n FROM intents WHERE pool = ? AND state = 'pending'").get(pool) as {
      n: number;
    };
    const spares = db.prepare("SELECT volume FROM spare_volumes WHERE storage_pool = ?").all(storagePool) as {
      volume: string;
    }[];
    return {
      holders: new Map(rows.map((r) => [r.vm, r.user])),
      pendingIntents: pending.n,
      spareVolumes: spares.map((s) => s.volume),
    };
  } finally {
    db.close();
  }
}

/** A member's intents, newest first, for a failure message: what a run left of its work. */
export function intentHistory(dbPath: string, pool: string, vm: string): string[] {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const rows = db
      .prepare(
        "SELECT kind, state, user, last_error, created_at, updated_at FROM intents WHERE pool = ? AND vm = ? ORDER BY created_at DESC, rowid DESC LIMIT 6",
      )
      .all(pool, vm) as {
      kind: string;
      state: string;
      user: string | null;
      last_error: string | null;
      created_at: number;
      updated_at: number;
    }[];
    return rows.map(
      (r) =>
        `${r.kind}${r.user ? ` (${r.user})` : ""} ${r.state} at ${new Date(r.updated_at).toISOString()}` +
        (r.last_error ? `: ${r.last_error}` : ""),
    );
  } finally {
    db.close();
  }
}

/** Problems visible in status alone: cheap enough to poll while waiting for a pool to settle. */
export function statusProblems(status: ReconcilerStatus, rules: PoolRules): string[] {
  const problems: string[] = [];
  const pool = status.pools.find((p) => p.name === rules.pool);
  if (!pool) return [`status lists no pool ${rules.pool}`];
  if (status.pendingIntents !== 0) problems.push(`status: ${status.pendingIntents} pending intents`);
  if (pool.members.length !== rules.members.length)
    problems.push(`status: ${pool.members.length} members, not ${rules.members.length}`);
  for (const m of pool.members) {
    if (m.activity) problems.push(`status: ${m.name} is busy (${m.activity})`);
    if (m.problem) problems.push(`status: ${m.name} has a problem: ${m.problem}`);
  }
  const perUser = new Map<string, number>();
  for (const m of pool.members) if (m.holder) perUser.set(m.holder.user, (perUser.get(m.holder.user) ?? 0) + 1);
  for (const [user, n] of perUser)
    if (n > rules.maxVmsPerUser) problems.push(`status: ${user} holds ${n} > ${rules.maxVmsPerUser}`);
  const free = pool.members.length - pool.counts.held;
  const wanted = Math.min(rules.prestarted, free);
  if (pool.counts.prestarted !== wanted)
    problems.push(
      `status: ${pool.counts.prestarted} prestarted, want min(${rules.prestarted}, ${free} free) = ${wanted}`,
    );
  return problems;
}

/** Holdings in status' `users` map and in its members agree, each VM under one user. */
export function statusHolders(
  status: ReconcilerStatus,
  pool: string,
): { holders: Map<string, string>; problems: string[] } {
  const problems: string[] = [];
  const holders = new Map<string, string>();
  for (const m of status.pools.find((p) => p.name === pool)?.members ?? [])
    if (m.holder) holders.set(m.name, m.holder.user);
  const fromUsers = new Map<string, string>();
  for (const [user, vms] of Object.entries(status.users)) {
    for (const { pool: p, vm } of vms) {
      if (p !== pool) continue;
      const other = fromUsers.get(vm);
      if (other !== undefined) problems.push(`status: ${vm} listed under both ${other} and ${user}`);
      fromUsers.set(vm, user);
    }
  }
  if (!sameMap(holders, fromUsers))
    problems.push(`status: members say ${describe(holders, fromUsers)}, users say ${describe(fromUsers, holders)}`);
  return { holders, problems };
}

/** Every rule and every agreement between status, store and libvirt; [] when all hold. */
export async function auditPool(
  status: ReconcilerStatus,
  dbPath: string,
  driver: VirshDriver,
  rules: PoolRules,
): Promise<string[]> {
  const problems = statusProblems(status, rules);
  const fromStatus = statusHolders(status, rules.pool);
  problems.push(...fromStatus.problems);
  const store = readStore(dbPath, rules.pool, rules.storagePool);
  if (store.pendingIntents !== 0) problems.push(`store: ${store.pendingIntents} pending intents`);
  if (!sameMap(store.holders, fromStatus.holders))
    problems.push(
      `store says ${describe(store.holders, fromStatus.holders)}, status ${describe(fromStatus.holders, store.holders)}`,
    );
  const perUser = new Map<string, number>();
  for (const user of store.holders.values()) perUser.set(user, (perUser.get(user) ?? 0) + 1);
  for (const [user, n] of perUser)
    if (n > rules.maxVmsPerUser) problems.push(`store: ${user} holds ${n} > ${rules.maxVmsPerUser}`);

  const domains = new Map(
    (await driver.listDomains({ metadataUri: HOLDER_NAMESPACE })).map((d) => [d.name, d] as const),
  );
  const volumes = new Set(
    (await driver.session.run(["vol-list", "--pool", rules.storagePool]))
      .split("\n")
      .map((l) => l.trim().split(/\s+/)[0]!)
      .filter(Boolean),
  );
  const overlays = await Promise.all(
    rules.members.map(async (vm) =>
      domains.has(vm) ? systemVolumeOf(await driver.domainXml(vm, { inactive: true }))?.volume : undefined,
    ),
  );
  let freeRunning = 0;
  rules.members.forEach((vm, i) => {
    const d = domains.get(vm);
    if (!d) return void problems.push(`libvirt: ${vm} is not defined`);
    if (d.persistent === false) problems.push(`libvirt: ${vm} is transient (undefined while running)`);
    const holder = store.holders.get(vm);
    const mark = parseHolderXml(d.metadataXml);
    if (mark !== holder)
      problems.push(`libvirt: ${vm} is marked held by ${mark ?? "nobody"}, the store says ${holder ?? "nobody"}`);
    if (holder !== undefined && d.state !== "running")
      problems.push(`libvirt: ${vm}, held by ${holder}, is ${d.state}`);
    if (holder === undefined && d.state === "running") freeRunning++;
    const overlay = overlays[i];
    if (overlay === undefined) problems.push(`libvirt: ${vm} has no system volume`);
    else if (!volumes.has(overlay)) problems.push(`libvirt: ${vm} boots from ${overlay}, which does not exist`);
  });
  const wanted = Math.min(rules.prestarted, rules.members.length - store.holders.size);
  if (freeRunning !== wanted) problems.push(`libvirt: ${freeRunning} free members running, want ${wanted}`);
  for (const spare of store.spareVolumes)
    if (!volumes.has(spare)) problems.push(`store lists spare overlay ${spare}, which does not exist`);
  return problems;
}

function sameMap(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  return a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
}

/** The entries of `a` that `b` lacks or says otherwise, for a message. */
function describe(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): string {
  const diff = [...a].filter(([k, v]) => b.get(k) !== v).map(([k, v]) => `${k}=${v}`);
  return diff.length === 0 ? "nothing else" : diff.slice(0, 10).join(", ") + (diff.length > 10 ? ", …" : "");
}
