import { createHash } from "node:crypto";
import type { HostRef } from "./spec";

/**
 * Home host of a member by rendezvous (highest-random-weight) hashing: every member picks the
 * allowed host with the highest hash of (member, host). It depends only on the member's name
 * and the set of hosts, so raising `size` never moves existing members and the host order does
 * not matter. It is only the first pick: once placed, a member keeps its host through the
 * placement record (see `PoolPlacement`), so adding a host moves no member.
 */
export function homeHost(memberName: string, hosts: readonly HostRef[]): HostRef {
  let best: HostRef | undefined;
  let bestScore = -1n;
  for (const host of hosts) {
    const digest = createHash("sha256").update(`${memberName}\u0000${host.name}`).digest();
    const score = digest.readBigUInt64BE(0);
    if (score > bestScore || (score === bestScore && best !== undefined && host.name < best.name)) {
      best = host;
      bestScore = score;
    }
  }
  if (!best) throw new Error("homeHost needs at least one host");
  return best;
}

/**
 * Where one pool's members were placed when they were first planned: member name → host name.
 * The engines keep it in the app's placement record (`vmpools.placement.json`), so a member
 * keeps its host for good, whatever hosts are added later.
 */
export type PoolPlacement = Readonly<Record<string, string>>;

/**
 * Member indices as compact ranges, e.g. `1-5,9,12` (sorted, duplicates dropped): how the host
 * probe is told which members the plan puts on a host.
 */
export function indexRanges(indices: Iterable<number>): string {
  const sorted = [...new Set(indices)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}
