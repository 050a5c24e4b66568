// The reconciler's public shapes: options, results, events and status.
import type { StateStoreApi } from "./store/api";
import type { AttestationClientFactory } from "./cluster/attestation";
import type { TrustLevel } from "./cluster/trust";
import type { HostConnection, HostView } from "./cluster/hosts";
import type { DomainEventSource } from "./driver/events";
import type { DomainState, LibvirtDriver } from "./driver/libvirt-driver";
import type { LeaseOptions } from "./lease";
import type { MemberActivity, PoolPolicy } from "./pools";
import type { AssignedHow } from "./store/store";

export interface RetryPolicy {
  /** Attempts per side effect (a prestart start, a revert) before giving up on it. */
  readonly maxAttempts: number;
  /** Delay before the second attempt; doubles for each further one. */
  readonly baseDelayMs: number;
}

export interface ReconcilerOptions {
  /**
   * The cluster's hosts, one connection each (names as in the pools' `cluster.hosts`). Give
   * either this or `driver`.
   * @default one host: `driver` (with `events`), named `hostName`
   */
  readonly hosts?: readonly HostConnection[];
  /** The one libvirt connection of a single-host reconciler. @default none: `hosts` is required */
  readonly driver?: LibvirtDriver;
  /** The single host's name. @default "localhost" (the pools' default cluster host) */
  readonly hostName?: string;
  readonly store: StateStoreApi;
  /** The single host's lifecycle events: they make returns and replenishment immediate; without them the resync notices. @default none */
  readonly events?: DomainEventSource;
  /** Epoch milliseconds, for retry times and console ticket expiry. @default Date.now */
  readonly clock?: () => number;
  /** Level-triggered resync period, catching whatever events missed. @default 30000 */
  readonly resyncIntervalMs?: number;
  readonly retry: RetryPolicy;
  /** How long a return waits for a graceful (ACPI) shutdown before pulling the plug. @default 60000 */
  readonly shutdownTimeoutMs?: number;
  /** Lifetime of a console ticket. @default 120000 */
  readonly consoleTicketTtlMs?: number;
  /** Host name written into console files when the display listens on every address. @default os.hostname() */
  readonly consoleHost?: string;
  /**
   * Manage only these pools; members of others are left alone (e.g. another reconciler's).
   * @default every pool whose members are on the connection
   */
  readonly onlyPools?: readonly string[];
  /** How long finished intents are kept (for inspection) before they are pruned. @default 7 days */
  readonly keepFinishedIntentsMs?: number;
  /**
   * The lease that keeps a second reconciler of the same pools on this hypervisor from acting
   * (see lease.ts); `start()` refuses with a LeaseHeldError while another holds it.
   * @default a lease for `onlyPools` (or every pool), 15 s
   */
  readonly lease?: Omit<LeaseOptions, "pools">;
  /**
   * Trusted clusters: Keylime client keys (PEM) by cluster name (their other settings come with
   * the pools' policy documents), and the client to use (tests). @default no keys, the protocol's client
   */
  readonly attestation?: {
    readonly clientKeys?: ReadonlyMap<string, string>;
    readonly createClient?: AttestationClientFactory;
  };
}

/** Who asks: a user acts on their own VMs only; an admin on any. */
export type Requester = { readonly user: string } | { readonly admin: true };

export interface TakeResult {
  readonly pool: string;
  readonly vm: string;
  /** false when the VM was already up (prestarted). */
  readonly started: boolean;
}

export interface ReturnResult {
  readonly pool: string;
  readonly vm: string;
  /** Whether the overlay was recreated from the base image (not in stateful pools, nor after admin access). */
  readonly reverted: boolean;
}

/** Something the reconciler did; for logs, metrics and tests that wait for background work. */
export interface Activity {
  readonly kind:
    | "taken"
    | "prestarted"
    | "surplus-stopped"
    | "paused-stopped"
    | "reverted"
    | "returned"
    | "detached"
    | "rolled-back"
    | "migrated"
    | "moved-home"
    | "untrusted-stopped";
  readonly pool: string;
  readonly vm: string;
  readonly user?: string;
  /** For migrations and moves home: the hosts. */
  readonly from?: string;
  readonly to?: string;
  /** For returns: "shutdown" (guest powered off), "user", "admin", or "recovery" (redone after a restart). */
  readonly by?: string;
}

/** Background work that failed; it is retried as its intent allows, or at the next resync. */
export interface Failure {
  readonly context: string;
  readonly pool?: string;
  readonly vm?: string;
  readonly error: Error;
}

export interface ReconcilerEventMap {
  activity: [Activity];
  failure: [Failure];
  /** The lease was lost (another reconciler may act now): this one has stopped acting. */
  leaseLost: [Error];
  /** Something that works but should not be so (e.g. attestation without certificate checks). */
  warning: [string];
}

export interface MemberStatus {
  readonly name: string;
  readonly index: number;
  /** The host it is defined on now. */
  readonly host: string;
  readonly state: DomainState;
  readonly templateVersion: number;
  readonly role: "held" | "prestarted" | "free";
  readonly holder?: {
    readonly user: string;
    readonly since: number;
    readonly how: AssignedHow;
    readonly adminAccess: boolean;
  };
  /** What the reconciler is doing with the member right now. */
  readonly activity?: MemberActivity;
  /** Why the member is kept out of service (a revert or prestart that kept failing). */
  readonly problem?: string;
}

export interface PoolStatus {
  readonly name: string;
  readonly policy: PoolPolicy;
  readonly counts: {
    readonly members: number;
    readonly held: number;
    readonly prestarted: number;
    readonly free: number;
  };
  readonly members: readonly MemberStatus[];
}

/** A cluster host: its state (and why it is not up), and what it runs. */
export interface HostStatus extends HostView {
  /** For a host of a trusted cluster: its attestation, as last heard. */
  readonly trust?: {
    readonly cluster: string;
    /** Absent while the cluster's attestation settings are unknown. */
    readonly service?: "openattestation" | "keylime";
    readonly level: TrustLevel;
    readonly reason: string;
    /** ISO 8601: when this reconciler last heard a verdict; absent before the first. */
    readonly checkedAt?: string;
    /** ISO 8601: when the service says it attested the host. */
    readonly attestedAt?: string;
    /** ISO 8601: since when the host has been at this level. */
    readonly since: string;
  };
  /** Pool members defined there. */
  readonly members: number;
  /** Of those, running. */
  readonly running: number;
  /** Free memory as last read (clusters only). */
  readonly freeMemoryMiB?: number;
}

export interface ReconcilerStatus {
  readonly hosts: readonly HostStatus[];
  readonly pools: readonly PoolStatus[];
  /** Each user's VMs across pools. */
  readonly users: Readonly<Record<string, readonly { readonly pool: string; readonly vm: string }[]>>;
  readonly pendingIntents: number;
}
