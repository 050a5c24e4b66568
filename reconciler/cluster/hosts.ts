// The hosts of a cluster as the reconciler sees them, and what their state allows. Pure: the
// facts come from the connections (reachable, lease held) and the store (maintenance); the
// planners ask `available` before they hand out, start or place anything on a host.
import type { DomainEventSource } from "../driver/events";
import type { LibvirtDriver } from "../driver/libvirt-driver";

/**
 * oVirt's host states, as far as pools care:
 * - `up`: members are handed out, prestarted and migrated to it;
 * - `maintenance`: an admin took it out of service: nothing new starts there, free members are
 *   stopped, held ones are live-migrated away where their pool allows (see migration.ts);
 * - `non-operational`: reachable but not fit (another reconciler holds its lease; an untrusted
 *   host of a trusted cluster): nothing is handed out or started there;
 * - `unreachable`: its libvirt does not answer: its members' states are unknown, so none is
 *   handed out (a "free" one may be running a user's session for all we know) until it answers.
 */
export const HOST_STATES = ["up", "maintenance", "non-operational", "unreachable"] as const;
export type HostState = (typeof HOST_STATES)[number];

/** One libvirt host of the cluster: its name (as in the pools' `cluster.hosts`) and connection. */
export interface HostConnection {
  readonly name: string;
  /** The libvirt URI, as other hosts reach it (the destination of migrations). */
  readonly uri: string;
  readonly driver: LibvirtDriver;
  /** Lifecycle events of this host; without them the resync notices changes. @default none */
  readonly events?: DomainEventSource;
  /**
   * Where migration streams to this host go (`tcp://ADDRESS`), when its host name does not lead
   * there (libvirt's default is the destination's host name). @default libvirt's choice
   */
  readonly migrateUri?: string;
  /**
   * Migrations to this host pass `--unsafe`: the disks are on storage both hosts share, but on
   * a file system libvirt does not know as shared (it knows NFS, Ceph, GlusterFS, GFS2, OCFS2…).
   * @default false
   */
  readonly unsafeMigration?: boolean;
}

/** What the host's state is decided from. */
export interface HostFacts {
  /** Its last listing (or event stream) answered, and no call since failed for want of a connection. */
  readonly reachable: boolean;
  /** This reconciler holds the host's lease (hypervisor lease, see lease.ts). */
  readonly leaseHeld: boolean;
  /** Set by an admin (`vmpools host maintenance`), kept in the store. */
  readonly maintenance: boolean;
  /** Why the host is unfit, when something said so (the lease held by another, attestation). */
  readonly unfitReason?: string;
  /** Why it is unreachable: the last connection error. */
  readonly unreachableReason?: string;
}

export interface HostView {
  readonly name: string;
  readonly state: HostState;
  /** Why the host is not up (empty when it is). */
  readonly reason?: string;
}

/** Unreachable wins over everything (nothing is known); then unfit; then the admin's maintenance. */
export function hostState(name: string, f: HostFacts): HostView {
  if (!f.reachable) return { name, state: "unreachable", reason: f.unreachableReason ?? "libvirt does not answer" };
  if (!f.leaseHeld)
    return { name, state: "non-operational", reason: f.unfitReason ?? "this reconciler does not hold its lease" };
  if (f.unfitReason !== undefined) return { name, state: "non-operational", reason: f.unfitReason };
  if (f.maintenance) return { name, state: "maintenance", reason: "put in maintenance by an admin" };
  return { name, state: "up" };
}

/** Whether members on a host in this state may be handed out or started there. */
export const usable = (state: HostState | undefined): boolean => state === "up";

/** What a host offers for placing a start (a take of a down member, a prestart, a migration). */
export interface HostLoad {
  /** Free memory as libvirt last reported it, in MiB; undefined when never read. */
  readonly freeMemoryMiB?: number;
  /** Running domains of our pools on it. */
  readonly running: number;
}

/**
 * Orders hosts by headroom, best first: most free memory, then fewest running members, then name
 * (deterministic). A host whose memory was never read sorts after those read.
 */
export function byHeadroom(loads: ReadonlyMap<string, HostLoad>): (a: string, b: string) => number {
  return (a, b) => {
    const la = loads.get(a);
    const lb = loads.get(b);
    const ma = la?.freeMemoryMiB ?? -1;
    const mb = lb?.freeMemoryMiB ?? -1;
    if (ma !== mb) return mb - ma;
    const ra = la?.running ?? 0;
    const rb = lb?.running ?? 0;
    if (ra !== rb) return ra - rb;
    return a.localeCompare(b);
  };
}
