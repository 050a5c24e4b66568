import { createHash } from "node:crypto";
import type { HostRef } from "./spec";

/**
 * Home host of a member by rendezvous (highest-random-weight) hashing: every member picks the
 * allowed host with the highest hash of (member, host). It depends only on the member's name
 * and the set of hosts, so raising `size` never moves existing members, the host order does not
 * matter, and adding a host re-homes only the ~1/n members that now prefer it.
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
