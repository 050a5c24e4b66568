import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import {
  HOLDER_NAMESPACE,
  HOLDER_PREFIX,
  METADATA_NAMESPACE,
  parseHolderXml,
  parseMetadataXml,
  renderHolderXml,
} from "../core/metadata";
import { renderVvFile, ticketedGraphicsXml, validateConsoleOptions } from "./console";
import type { DomainEvents, LifecycleEvent } from "./driver/events";
import type { DomainState, LibvirtDriver } from "./driver/libvirt-driver";
import { VirshError } from "./driver/virsh-session";
import {
  AdminRequiredError,
  NoFreeVmError,
  NotDownError,
  NotHeldError,
  NotHolderError,
  NotActiveError,
  NotRunningError,
  UnknownPoolError,
  UnknownVmError,
  UserLimitError,
  VmStartError,
} from "./errors";
import { overlayFactsOf, spiceDisplayOf, systemVolumeOf, type OverlayFacts, type VolumeRef } from "./libvirt-xml";
import { HypervisorLease, type LeaseOptions } from "./lease";
import { isAlternateVolumeName, otherVolumeName, planRevert, switchDiskVolume, type RevertPlan } from "./revert";
import {
  freeMembers,
  groupPools,
  holdingsByUser,
  isDown,
  isPaused,
  isUp,
  planMemberDown,
  planPrestart,
  policyDocumentsByPool,
  revertsOnReturn,
  type MemberActivity,
  type MemberRecord,
  type Pool,
  type PoolPolicy,
} from "./pools";
import type { AssignedHow, ConsoleOptions, Intent, IntentKind, MemberConditionKind, StateStore } from "./store/store";

export interface RetryPolicy {
  /** Attempts per side effect (a prestart start, a revert) before giving up on it. */
  readonly maxAttempts: number;
  /** Delay before the second attempt; doubles for each further one. */
  readonly baseDelayMs: number;
}

export interface ReconcilerOptions {
  readonly driver: LibvirtDriver;
  readonly store: StateStore;
  /** Lifecycle events make returns and replenishment immediate; without them the resync notices. */
  readonly events?: DomainEvents;
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
    | "rolled-back";
  readonly pool: string;
  readonly vm: string;
  readonly user?: string;
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
}

export interface MemberStatus {
  readonly name: string;
  readonly index: number;
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

export interface ReconcilerStatus {
  readonly pools: readonly PoolStatus[];
  /** Each user's VMs across pools. */
  readonly users: Readonly<Record<string, readonly { readonly pool: string; readonly vm: string }[]>>;
  readonly pendingIntents: number;
}

/** The revert payload of intents written before reverts switched overlays (redone the new way). */
interface LegacyRevertPayload extends VolumeRef, OverlayFacts {}

const revertPlanOf = (payload: string): RevertPlan => {
  const p = JSON.parse(payload) as RevertPlan | LegacyRevertPayload;
  if ("from" in p) return p;
  const { volume, ...facts } = p;
  return { ...facts, from: volume, to: otherVolumeName(volume) };
};

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));
const asError = (e: unknown) => (e instanceof Error ? e : new Error(String(e)));
const notFound = (e: unknown) => e instanceof VirshError && e.notFound;
const PRUNE_EVERY_MS = 3600_000;
/** How soon after a listing of libvirt a take naming an unknown pool may cause another. */
const RELIST_AFTER_MS = 1000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Metadata block of a full domain XML, so that device elements cannot be mistaken for ours. */
const metadataBlock = (domainXml: string) => /<metadata>[\s\S]*?<\/metadata>/.exec(domainXml)?.[0];

/**
 * Runs VM pools on one libvirt connection: take, return, revert, prestart, detach, consoles.
 *
 * libvirt is the source of truth for which members exist and their power state; the store holds
 * who holds what and the intent of every side effect, written before the effect, so that a
 * restart finishes or rolls back what a crash interrupted. Work on one member is serialized;
 * members are independent. Events make reactions immediate; a periodic resync compares the
 * whole picture and fixes whatever events missed (level-triggered).
 */
export class Reconciler extends EventEmitter<ReconcilerEventMap> {
  private readonly driver: LibvirtDriver;
  private readonly store: StateStore;
  private readonly events?: DomainEvents;
  private readonly clock: () => number;
  private readonly retry: RetryPolicy;
  private readonly resyncIntervalMs: number;
  private readonly shutdownTimeoutMs: number;
  private readonly consoleTicketTtlMs: number;
  private readonly consoleHost: string;
  private readonly onlyPools?: ReadonlySet<string>;
  private readonly keepFinishedIntentsMs: number;
  private readonly lease: HypervisorLease;
  private leaseLost?: Error;
  private prunedAt = -Infinity;

  /** Pool members by domain name. */
  private readonly members = new Map<string, MemberRecord>();
  private poolCache?: Map<string, Pool>;
  /** Parsed metadata by domain UUID (null: not ours), so a resync fetches only new domains'. */
  private readonly metadataByUuid = new Map<string, MemberRecord["metadata"] | null>();
  private readonly systemVolumes = new Map<string, VolumeRef>();
  /** Per member: the activities queued on it (the first one runs) and the tail of its queue. */
  private readonly activities = new Map<string, MemberActivity[]>();
  private readonly queues = new Map<string, Promise<void>>();
  /**
   * Members whose revert began and has not finished (failed, or cut short): never handed out
   * until a revert succeeds. Persisted as the store's member conditions, like the next one.
   */
  private readonly quarantined = new Map<string, string>();
  /** Members whose prestart start failed every attempt; not prestarted until a start of them succeeds. */
  private readonly prestartGaveUp = new Map<string, string>();
  /** Per member: the remaking of its previous overlay after a revert, which the next revert awaits. */
  private readonly spareWork = new Map<string, Promise<void>>();
  private readonly prestartKicks = new Set<string>();
  private readonly tasks = new Set<Promise<void>>();
  private resyncRun?: Promise<void>;
  /** Holder marks as they are in libvirt (null: none), by member name (see syncHolderMark). */
  private readonly holderMarks = new Map<string, string | null>();
  /** The newest policy document read for each pool (see refreshPolicies). */
  private readonly policyDocuments = new Map<string, MemberRecord["metadata"]>();
  private resyncTimer?: NodeJS.Timeout;
  private running = false;
  private listing?: Promise<void>;
  /** When the last listing of libvirt's domains finished (clock time). */
  private listedAt = -Infinity;

  constructor(options: ReconcilerOptions) {
    super();
    this.driver = options.driver;
    this.store = options.store;
    this.events = options.events;
    this.clock = options.clock ?? Date.now;
    this.retry = options.retry;
    this.resyncIntervalMs = options.resyncIntervalMs ?? 30_000;
    this.shutdownTimeoutMs = options.shutdownTimeoutMs ?? 60_000;
    this.consoleTicketTtlMs = options.consoleTicketTtlMs ?? 120_000;
    this.consoleHost = options.consoleHost ?? hostname();
    this.onlyPools = options.onlyPools && new Set(options.onlyPools);
    this.keepFinishedIntentsMs = options.keepFinishedIntentsMs ?? 7 * 24 * 3600_000;
    this.lease = new HypervisorLease(this.driver, {
      ...(options.onlyPools ? { pools: options.onlyPools } : {}),
      ...(this.driver.domainType ? { domainType: this.driver.domainType } : {}),
      ...options.lease,
    });
    this.lease.on("lost", (e) => {
      this.leaseLost = e;
      this.emit("failure", { context: "lease", error: e });
      void this.stop().then(() => this.emit("leaseLost", e));
    });
    if (!(Number.isInteger(this.retry.maxAttempts) && this.retry.maxAttempts >= 1)) {
      throw new RangeError(`retry.maxAttempts must be an integer ≥ 1, got ${this.retry.maxAttempts}`);
    }
  }

  /**
   * Subscribes to events, learns the members, finishes or rolls back what a previous run left
   * pending, applies the pools' rules once, and resyncs periodically from then on.
   */
  async start(): Promise<void> {
    // Before anything else: a second reconciler of the same pools must not act at all.
    await this.lease.acquire();
    if (this.events) {
      this.events.on("lifecycle", this.onLifecycle);
      this.events.on("ready", this.onEventsReady);
      // Subscribed before the first listing, so no change falls between the two.
      await this.events.ready();
    }
    // The pools' current policy before anything acts on it (recovery redoes returns, which revert
    // or not by the policy): the last documents read, then libvirt's.
    for (const [pool, policy] of this.store.policyDocuments()) {
      if (this.manages(pool)) this.policyDocuments.set(pool, policy);
    }
    for (const c of this.store.conditions()) {
      if (this.manages(c.pool)) this.conditionMap(c.condition).set(c.vm, c.reason);
    }
    await this.listMembers();
    await this.refreshPolicies();
    await this.recover();
    this.pruneIntents();
    this.running = true;
    await this.resync();
    this.resyncTimer = setInterval(() => this.track("resync", this.resync()), this.resyncIntervalMs);
  }

  /** Stops reacting and waits for work in progress; the driver and store stay open (the caller owns them). */
  async stop(): Promise<void> {
    this.running = false;
    clearInterval(this.resyncTimer);
    this.events?.off("lifecycle", this.onLifecycle);
    this.events?.off("ready", this.onEventsReady);
    await this.idle();
    await this.lease.release();
  }

  /** Resolves once no work is queued or running (events already received included). */
  async idle(): Promise<void> {
    while (this.tasks.size > 0 || this.queues.size > 0 || this.prestartKicks.size > 0) {
      await Promise.allSettled([...this.tasks, ...this.queues.values(), sleep(0)]);
    }
  }

  /**
   * Gives `user` a free member of `pool`, preferring a prestarted one, and starts it if it is
   * down. The claim is atomic and persisted (with its intent) before the start; a failed start
   * releases it. Replenishing the prestarted members begins at once.
   */
  async take(poolName: string, user: string): Promise<TakeResult> {
    if (user.trim() === "") throw new RangeError("user must be a non-empty name");
    const pool = await this.requirePool(poolName);
    // A holder lost between claim and start (an admin return or detach got there first) means claiming again.
    for (;;) {
      const claim = this.store.claim(
        poolName,
        user,
        freeMembers(this.pools().get(poolName)!, this.store.assignments(poolName), this.busy()),
        pool.policy.maxVmsPerUser,
      );
      if ("refused" in claim) {
        if (claim.refused === "limit") {
          const held = this.store.heldBy(user, poolName).map((a) => a.vm);
          throw new UserLimitError(poolName, user, pool.policy.maxVmsPerUser, held);
        }
        throw new NoFreeVmError(poolName, pool.members.length);
      }
      this.kickPrestart(poolName);
      const started = await this.withMember(claim.vm, "take", async () => {
        if (this.store.holder(poolName, claim.vm)?.user !== user) {
          this.store.failIntent(claim.intentId, "lost to a concurrent return or detach before it started", null);
          return undefined;
        }
        try {
          await this.syncHolderMark(poolName, claim.vm);
          const didStart = await this.startIfDown(claim.vm);
          this.store.completeIntent(claim.intentId);
          return didStart;
        } catch (e) {
          this.store.release(poolName, claim.vm, user);
          this.store.failIntent(claim.intentId, message(e), null);
          await this.syncHolderMark(poolName, claim.vm).catch(() => undefined);
          this.kickPrestart(poolName);
          throw new VmStartError(poolName, claim.vm, message(e));
        }
      });
      if (started === undefined) continue;
      this.emit("activity", { kind: "taken", pool: poolName, vm: claim.vm, user });
      return { pool: poolName, vm: claim.vm, started };
    }
  }

  /**
   * Gives a VM back: shuts it down (ACPI, then destroy after the shutdown timeout), recreates its
   * overlay unless the pool is stateful or an admin accessed it, and frees it. A user returns
   * only their own VMs, and only in automatic pools; in manual pools only an admin returns.
   */
  async return(poolName: string, vm: string, by: Requester): Promise<ReturnResult> {
    const pool = await this.requirePool(poolName);
    this.requireMember(pool, vm);
    const holder = this.store.holder(poolName, vm);
    if (!holder) throw new NotHeldError(poolName, vm);
    if ("user" in by) {
      if (pool.policy.type === "manual") throw new AdminRequiredError(poolName, vm, "return");
      if (holder.user !== by.user) throw new NotHolderError(poolName, vm, holder.user, by.user);
    }
    return this.withMember(vm, "return", async () => {
      const current = this.store.holder(poolName, vm);
      if (!current || current.user !== holder.user || current.since !== holder.since)
        throw new NotHeldError(poolName, vm);
      const revert = revertsOnReturn(pool.policy, current);
      const intentId = this.store.beginIntent("return", poolName, vm, current.user);
      await this.finishReturn(poolName, vm, intentId, revert, "user" in by ? "user" : "admin");
      return { pool: poolName, vm, reverted: revert };
    });
  }

  /**
   * Detaches a Down member from its pool: our metadata is removed from the domain, which lives
   * on as an independent VM, and the store forgets it (including a holder, if any).
   */
  async detach(poolName: string, vm: string): Promise<void> {
    const pool = await this.requirePool(poolName);
    this.requireMember(pool, vm);
    await this.withMember(vm, "detach", async () => {
      const state = await this.driver.domainState(vm);
      this.setState(vm, state);
      if (!isDown(state)) throw new NotDownError(poolName, vm, state);
      const intentId = this.store.beginIntent("detach", poolName, vm);
      await this.finishDetach(poolName, vm, intentId);
    });
  }

  /**
   * A virt-viewer file for the holder's VM with a fresh SPICE ticket (valid for the ticket TTL)
   * and the pool's SPICE proxy. `options` (virt-viewer settings) replace the user's defaults for
   * the pool; without them the remembered defaults apply.
   */
  async consoleFile(poolName: string, vm: string, user: string, options?: ConsoleOptions): Promise<string> {
    const pool = await this.requirePool(poolName);
    this.requireMember(pool, vm);
    const holder = this.store.holder(poolName, vm);
    if (!holder) throw new NotHeldError(poolName, vm);
    if (holder.user !== user) throw new NotHolderError(poolName, vm, holder.user, user);
    if (options) validateConsoleOptions(options);
    const state = await this.driver.domainState(vm);
    if (state !== "running") throw new NotRunningError(poolName, vm, state);
    const display = spiceDisplayOf(await this.driver.domainXml(vm));
    if (!display) throw new Error(`${vm} has no SPICE display; its domain needs <graphics type='spice'>`);
    const password = randomBytes(18).toString("base64url");
    const graphics = ticketedGraphicsXml(display.element, password, this.clock() + this.consoleTicketTtlMs);
    await this.driver.updateDeviceLive(vm, graphics).catch((e: unknown) => {
      // qemu takes tickets only when SPICE started with a password: the constructs lock it with an expired one.
      throw new Error(
        `${vm}: could not set a SPICE ticket (${message(e)}); its <graphics type='spice'> must be defined ` +
          `with a passwd (e.g. a random one with passwdValidTo in the past), and the VM restarted`,
      );
    });
    if (options) this.store.setConsoleOptions(poolName, user, options);
    const wildcard = display.listen === undefined || display.listen === "0.0.0.0" || display.listen === "::";
    return renderVvFile({
      host: wildcard ? this.consoleHost : display.listen!,
      ...(display.port === undefined ? {} : { port: display.port }),
      ...(display.tlsPort === undefined ? {} : { tlsPort: display.tlsPort }),
      password,
      ...(pool.policy.spiceProxy === undefined ? {} : { proxy: pool.policy.spiceProxy }),
      title: `${vm} (${poolName})`,
      options: options ?? this.store.consoleOptions(poolName, user) ?? {},
    });
  }

  /** Pools, members (state, holder, role, activity) and each user's VMs, from the cached picture. */
  status(): ReconcilerStatus {
    const assignments = this.store.assignments();
    const holders = new Map(assignments.map((a) => [`${a.pool}\u0000${a.vm}`, a]));
    const pools = [...this.pools().values()].map((pool): PoolStatus => {
      const members = pool.members.map((m): MemberStatus => {
        const a = holders.get(`${pool.name}\u0000${m.name}`);
        const activity = this.busy().get(m.name);
        const problem =
          this.quarantined.get(m.name) ??
          this.prestartGaveUp.get(m.name) ??
          (m.persistent ? undefined : "undefined while running: it leaves the pool when it stops");
        return {
          name: m.name,
          index: m.index,
          state: m.state,
          templateVersion: m.templateVersion,
          role: a ? "held" : m.state === "running" && !this.isBusy(m.name) ? "prestarted" : "free",
          ...(a ? { holder: { user: a.user, since: a.since, how: a.how, adminAccess: a.adminAccess } } : {}),
          ...(activity ? { activity } : {}),
          ...(problem ? { problem } : {}),
        };
      });
      const count = (role: MemberStatus["role"]) => members.filter((m) => m.role === role).length;
      return {
        name: pool.name,
        policy: pool.policy,
        counts: { members: members.length, held: count("held"), prestarted: count("prestarted"), free: count("free") },
        members,
      };
    });
    return {
      pools,
      users: Object.fromEntries(holdingsByUser(assignments)),
      pendingIntents: this.store.pendingIntents().length,
    };
  }

  /** Re-reads libvirt and applies every pool's rules; runs periodically and after event reconnects. */
  resync(): Promise<void> {
    this.resyncRun ??= (async () => {
      try {
        await this.listMembers();
        await this.refreshPolicies();
        await this.syncHolderMarks();
        this.applyLevelRules();
        this.pruneIntents();
      } finally {
        this.resyncRun = undefined;
      }
    })();
    return this.resyncRun;
  }

  /** Finished intents are history: kept for a while for inspection, pruned at most hourly (D13). */
  private pruneIntents(): void {
    const now = this.clock();
    if (now - this.prunedAt < PRUNE_EVERY_MS) return;
    this.prunedAt = now;
    this.store.pruneIntents(Date.now() - this.keepFinishedIntentsMs);
  }

  // ---- members and pools -------------------------------------------------------------------

  private pools(): Map<string, Pool> {
    this.poolCache ??= groupPools(this.members.values(), this.policyDocuments);
    return this.poolCache;
  }

  private async requirePool(name: string): Promise<Pool> {
    if (this.leaseLost) throw new NotActiveError(`it lost its lease: ${this.leaseLost.message}`);
    // A pool deployed since the last listing is found by looking once more; one listing serves
    // every take that asks meanwhile, and none is made for a second after the last (D6: a burst
    // of takes naming a pool that does not exist must not stall everyone's takes).
    if (!this.pools().has(name) && this.clock() - this.listedAt >= RELIST_AFTER_MS) await this.listMembers();
    const pool = this.pools().get(name);
    if (!pool) throw new UnknownPoolError(name, [...this.pools().keys()]);
    return pool;
  }

  /** Parsed member metadata when it belongs to a pool this reconciler manages, else null. */
  private ownMetadata(xml: string | undefined): MemberRecord["metadata"] | null {
    const metadata = xml === undefined ? undefined : parseMetadataXml(xml);
    return metadata && this.manages(metadata.pool) ? metadata : null;
  }

  private manages(pool: string): boolean {
    return !this.onlyPools || this.onlyPools.has(pool);
  }

  private requireMember(pool: Pool, vm: string): void {
    if (!pool.members.some((m) => m.name === vm)) throw new UnknownVmError(pool.name, vm);
  }

  private setMember(record: MemberRecord): void {
    this.members.set(record.name, record);
    this.poolCache = undefined;
  }

  private setState(vm: string, state: DomainState): void {
    const record = this.members.get(vm);
    if (record && record.state !== state) this.setMember({ ...record, state });
  }

  /**
   * The member left libvirt (`gone`: undefined, or a transient one stopped) or left the pool
   * (metadata gone): forget its runtime facts. A gone member's alternate overlay goes with it:
   * the engines know only their own volume.
   */
  private dropMember(vm: string, gone = true): void {
    const record = this.members.get(vm);
    if (!record) return;
    const volume = this.systemVolumes.get(record.uuid);
    if (gone && volume) {
      const alternate = isAlternateVolumeName(volume.volume) ? volume.volume : otherVolumeName(volume.volume);
      this.store.dropSpareVolume(volume.storagePool, alternate);
      this.track(
        "alternate overlay",
        this.driver.deleteVolume(volume.storagePool, alternate).catch((e: unknown) => {
          if (!notFound(e)) throw e;
        }),
      );
    }
    this.members.delete(vm);
    this.poolCache = undefined;
    this.holderMarks.delete(vm);
    this.systemVolumes.delete(record.uuid);
    this.metadataByUuid.delete(record.uuid);
    this.quarantined.delete(vm);
    this.prestartGaveUp.delete(vm);
    this.store.forgetVm(record.metadata.pool, vm);
    this.kickPrestart(record.metadata.pool);
  }

  /**
   * Makes the member's holder mark in libvirt say what the store says. Reads the mark the first
   * time it meets a member (after a start or a crash libvirt may say otherwise), then remembers
   * what it wrote.
   */
  private async syncHolderMark(poolName: string, vm: string): Promise<void> {
    const wanted = this.store.holder(poolName, vm)?.user ?? null;
    if (!this.holderMarks.has(vm)) {
      const xml = await this.driver.getMetadata(vm, HOLDER_NAMESPACE);
      this.holderMarks.set(vm, parseHolderXml(xml) ?? null);
    }
    if (this.holderMarks.get(vm) === wanted) return;
    if (wanted === null) await this.driver.removeMetadata(vm, HOLDER_NAMESPACE);
    else await this.driver.setMetadata(vm, HOLDER_NAMESPACE, renderHolderXml(wanted), HOLDER_PREFIX);
    this.holderMarks.set(vm, wanted);
  }

  /** Level-triggered: every idle member's mark follows the store (busy ones set their own). */
  private async syncHolderMarks(): Promise<void> {
    await Promise.all(
      [...this.members.values()]
        .filter((r) => !this.isBusy(r.name))
        .map((r) =>
          this.syncHolderMark(r.metadata.pool, r.name).catch((e: unknown) => {
            if (!notFound(e))
              this.emit("failure", { context: "holder mark", pool: r.metadata.pool, vm: r.name, error: asError(e) });
          }),
        ),
    );
  }

  /**
   * Re-reads the pools' policy documents. A pool whose document is missing keeps the last one
   * read: the engines replace a document by deleting and recreating it, and in between the pool
   * must not fall back to its members' older creation-time policy (e.g. stop prestarted VMs).
   */
  private async refreshPolicies(): Promise<void> {
    const read = policyDocumentsByPool(await this.driver.readPolicyDocuments());
    let changed = false;
    for (const [pool, policy] of read) {
      if (!this.manages(pool)) continue;
      const before = this.policyDocuments.get(pool);
      if (!before || JSON.stringify(before) !== JSON.stringify(policy)) {
        this.policyDocuments.set(pool, policy);
        this.store.savePolicyDocument(pool, policy);
        changed = true;
      }
    }
    if (changed) this.poolCache = undefined;
  }

  /** `refreshMembers`, shared by everyone who asks while it runs. */
  private listMembers(): Promise<void> {
    this.listing ??= this.refreshMembers().finally(() => {
      this.listing = undefined;
      this.listedAt = this.clock();
    });
    return this.listing;
  }

  /** Lists domains (metadata only for ones not seen before) and updates the cached picture. */
  private async refreshMembers(): Promise<void> {
    const listed = await this.driver.listDomains({ metadata: false });
    const fresh = listed.filter((d) => !this.metadataByUuid.has(d.uuid));
    const xmls = await Promise.all(
      fresh.map((d) =>
        this.driver.getMetadata(d.uuid, METADATA_NAMESPACE).catch((e: unknown) => {
          if (notFound(e)) return undefined;
          throw e;
        }),
      ),
    );
    fresh.forEach((d, i) => this.metadataByUuid.set(d.uuid, this.ownMetadata(xmls[i])));
    const seen = new Set<string>();
    for (const d of listed) {
      const metadata = this.metadataByUuid.get(d.uuid);
      if (!metadata) continue;
      seen.add(d.name);
      this.observe({ name: d.name, uuid: d.uuid, state: d.state, metadata, persistent: d.persistent !== false });
    }
    const uuids = new Set(listed.map((d) => d.uuid));
    for (const uuid of this.metadataByUuid.keys()) if (!uuids.has(uuid)) this.metadataByUuid.delete(uuid);
    for (const name of [...this.members.keys()]) if (!seen.has(name) && !this.isBusy(name)) this.dropMember(name);
  }

  /** Takes in a listed member. A stop that no event reported is handled as the event would have been. */
  private observe(record: MemberRecord): void {
    const previous = this.members.get(record.name);
    // Work in progress on the member sets its state itself.
    if (previous && this.isBusy(record.name)) {
      this.setMember({ ...record, state: previous.state });
    } else if (this.running && previous && isUp(previous.state) && isDown(record.state)) {
      this.setMember({ ...record, state: previous.state });
      this.track("settle", this.settle(record.name), record.name);
    } else {
      this.setMember(record);
    }
  }

  /** What events cannot be trusted to have said: held members found down, quarantined ones, prestart counts. */
  private applyLevelRules(): void {
    const held = new Map(this.store.assignments().map((a) => [`${a.pool}\u0000${a.vm}`, a]));
    for (const a of held.values()) {
      // Its domain is gone (or left the pool): nobody can use it any more.
      if (this.manages(a.pool) && this.members.get(a.vm)?.metadata.pool !== a.pool) this.store.forgetVm(a.pool, a.vm);
    }
    for (const pool of this.pools().values()) {
      for (const m of pool.members) {
        if (this.isBusy(m.name)) continue;
        if (isPaused(m.state) && !held.has(`${pool.name}\u0000${m.name}`)) {
          this.track("stop paused", this.stopPaused(pool.name, m.name), m.name);
          continue;
        }
        if (!isDown(m.state)) continue;
        const holder = held.get(`${pool.name}\u0000${m.name}`);
        if ((holder && pool.policy.type === "automatic") || this.quarantined.has(m.name)) {
          this.track("settle", this.settle(m.name), m.name);
        }
      }
      this.kickPrestart(pool.name);
    }
  }

  // ---- events --------------------------------------------------------------------------------

  private readonly onLifecycle = (e: LifecycleEvent): void => {
    const known = this.members.has(e.domain);
    switch (e.event) {
      case "Defined":
        this.track("refresh", this.refreshDomain(e.domain), e.domain);
        return;
      case "Undefined":
        // Undefined while running, a domain lives on (transient) until it stops: its holder
        // keeps it, nobody else gets it (D1). The listing tells which it is.
        if (known) this.track("refresh", this.refreshMembers());
        return;
      case "Stopped":
      case "Shutdown":
      case "Crashed":
        if (known) this.track("settle", this.settle(e.domain), e.domain);
        return;
      case "Started":
      case "Resumed":
      case "Suspended":
      case "PMSuspended":
        if (known && !this.isBusy(e.domain)) {
          const state = e.event === "Suspended" ? "paused" : e.event === "PMSuspended" ? "pmsuspended" : "running";
          this.setState(e.domain, state);
          const pool = this.members.get(e.domain)!.metadata.pool;
          if (isPaused(state) && !this.store.holder(pool, e.domain)) {
            this.track("stop paused", this.stopPaused(pool, e.domain), e.domain);
          }
          this.kickPrestart(pool);
        }
        return;
    }
  };

  // Events may have been missed while the stream was down.
  private readonly onEventsReady = (): void => {
    if (this.running) this.track("resync", this.resync());
  };

  /** A domain was (re)defined: it may be a new member, changed policy, or no longer ours. */
  private refreshDomain(name: string): Promise<void> {
    return this.withMember(name, "refresh", async () => {
      let xml: string;
      let state: DomainState;
      try {
        [xml, state] = await Promise.all([
          this.driver.domainXml(name, { inactive: true }),
          this.driver.domainState(name),
        ]);
      } catch (e) {
        if (!notFound(e)) throw e;
        this.dropMember(name);
        return;
      }
      const uuid = /<uuid>([^<]+)<\/uuid>/.exec(xml)?.[1] ?? "";
      const metadata = this.ownMetadata(metadataBlock(xml));
      this.metadataByUuid.set(uuid, metadata);
      if (!metadata) {
        this.dropMember(name, false);
        return;
      }
      const volume = systemVolumeOf(xml);
      if (volume) this.systemVolumes.set(uuid, volume);
      this.observe({ name, uuid, state, metadata });
      this.kickPrestart(metadata.pool);
    });
  }

  /** The member may have gone down: find out, and act as its pool says. */
  private settle(vm: string): Promise<void> {
    return this.withMember(vm, "settle", async () => {
      const record = this.members.get(vm);
      if (!record) return;
      let state: DomainState;
      try {
        state = await this.driver.domainState(vm);
      } catch (e) {
        if (!notFound(e)) throw e;
        this.dropMember(vm);
        return;
      }
      const wasUp = isUp(record.state) || this.quarantined.has(vm);
      this.setState(vm, state);
      if (isDown(state)) await this.handleDown(record.metadata.pool, vm, wasUp);
    });
  }

  /** Under the member's lock, with the member down. */
  private async handleDown(poolName: string, vm: string, wasUp: boolean): Promise<void> {
    const pool = this.pools().get(poolName)!;
    const holder = this.store.holder(poolName, vm);
    const action = planMemberDown(pool.policy, holder, wasUp);
    if (action === "revert") {
      await this.revertMember(poolName, vm);
      this.kickPrestart(poolName);
    } else if (action === "release" || action === "revert-and-release") {
      const intentId = this.store.beginIntent("return", poolName, vm, holder!.user);
      await this.finishReturn(poolName, vm, intentId, action === "revert-and-release", "shutdown");
    }
  }

  // ---- side effects (each under its member's lock) ------------------------------------------

  /** Power off (if up), revert (if asked), free; the return intent is already persisted. */
  private async finishReturn(
    poolName: string,
    vm: string,
    intentId: string,
    revert: boolean,
    by: string,
  ): Promise<void> {
    try {
      if (!(await this.powerOff(vm))) {
        // Undefined while it ran: it vanished as it stopped, and with it the pool's claim on it.
        const user = this.store.holder(poolName, vm)?.user;
        this.store.completeIntent(intentId);
        this.dropMember(vm);
        this.emit("activity", { kind: "returned", pool: poolName, vm, ...(user ? { user } : {}), by });
        return;
      }
      if (revert) await this.revertMember(poolName, vm);
    } catch (e) {
      // Still held: an automatic pool retries at the next resync, an admin sees the error.
      this.store.failIntent(intentId, message(e), null);
      throw e;
    }
    const user = this.store.holder(poolName, vm)?.user;
    this.store.release(poolName, vm);
    this.store.completeIntent(intentId);
    // A stale mark only makes a shrink refuse more; the next resync retries it.
    await this.syncHolderMark(poolName, vm).catch(() => undefined);
    this.emit("activity", { kind: "returned", pool: poolName, vm, ...(user ? { user } : {}), by });
    this.kickPrestart(poolName);
  }

  private async finishDetach(poolName: string, vm: string, intentId: string): Promise<void> {
    await this.driver.removeMetadata(vm, HOLDER_NAMESPACE);
    await this.driver.removeMetadata(vm, METADATA_NAMESPACE);
    this.store.forgetVm(poolName, vm);
    this.store.completeIntent(intentId);
    this.dropMember(vm, false);
    this.emit("activity", { kind: "detached", pool: poolName, vm });
  }

  /** Resolves with whether it had to start the domain. */
  private async startIfDown(vm: string): Promise<boolean> {
    const state = await this.driver.domainState(vm);
    this.setState(vm, state);
    if (state === "running") return false;
    if (!isDown(state)) throw new Error(`${vm} is ${state}, neither running nor down`);
    await this.driver.start(vm);
    this.setState(vm, "running");
    this.clearCondition(vm, "prestart-gave-up");
    return true;
  }

  /** Graceful shutdown first; the plug is pulled once the shutdown timeout has passed. */
  /**
   * Resolves with false when the domain no longer exists: a transient one (undefined while it
   * ran) vanishes as it stops.
   */
  private async powerOff(vm: string): Promise<boolean> {
    const stateOrGone = () =>
      this.driver.domainState(vm).catch((e: unknown): DomainState | "gone" => {
        if (notFound(e)) return "gone";
        throw e;
      });
    const tolerate = (e: unknown) => {
      if (!/not running/i.test(message(e)) && !notFound(e)) throw e;
    };
    let state = await stateOrGone();
    if (state !== "gone" && isUp(state)) {
      await this.driver.shutdown(vm).catch(tolerate);
      const deadline = this.clock() + this.shutdownTimeoutMs;
      let pollMs = 10;
      state = await stateOrGone();
      while (state !== "gone" && isUp(state) && this.clock() < deadline) {
        await sleep(pollMs);
        pollMs = Math.min(pollMs * 2, 500);
        state = await stateOrGone();
      }
      if (state !== "gone" && isUp(state)) {
        await this.driver.destroy(vm).catch(tolerate);
        state = await stateOrGone();
      }
    }
    if (state === "gone") return false;
    this.setState(vm, state);
    return true;
  }

  /**
   * Puts the member back on a fresh overlay of its base image, in O(1) whatever the guest wrote
   * (see revert.ts). The plan is persisted with the intent, and the member marked as needing a
   * revert, before anything changes: a crash or a failure at any step is redone, and nothing is
   * handed out meanwhile.
   */
  private async revertMember(poolName: string, vm: string): Promise<void> {
    const current = await this.systemVolume(vm);
    const plan = planRevert(current, await this.overlayFacts(vm, current));
    const intentId = this.store.beginIntent("revert", poolName, vm, undefined, JSON.stringify(plan));
    this.setCondition(vm, "revert-needed", "a revert began and has not finished");
    await this.redoRevert(poolName, vm, intentId, plan);
  }

  /** Capacity, format and backing of the member's overlay; from its other overlay if this one is gone. */
  private async overlayFacts(vm: string, current: VolumeRef): Promise<OverlayFacts> {
    for (const volume of [current.volume, otherVolumeName(current.volume)]) {
      const xml = await this.driver.volumeXml(current.storagePool, volume).catch((e: unknown) => {
        if (notFound(e)) return undefined;
        throw e;
      });
      if (xml === undefined) continue;
      const facts = overlayFactsOf(xml);
      if (facts) return facts;
      throw new Error(
        `${vm}: system volume ${current.storagePool}/${volume} has no backing file, so it cannot be ` +
          `reverted by switching to a fresh overlay (raw full-copy disks are not supported for stateless pools)`,
      );
    }
    throw new Error(
      `${vm}: neither ${current.volume} nor ${otherVolumeName(current.volume)} exists in storage pool ` +
        `${current.storagePool}, so the base image it reverts to is unknown; redeploy the member`,
    );
  }

  /**
   * Switches the member to a fresh `p.to`, then (in the background) makes `p.from` the next
   * fresh one; the intent is done when both are.
   */
  private async redoRevert(poolName: string, vm: string, intentId: string, p: RevertPlan): Promise<void> {
    await this.spareWork.get(vm);
    try {
      await this.withRetries(intentId, { complete: false }, async () => {
        await this.makeFreshOverlay(p.storagePool, p.to, p);
        // With secrets: the redefined domain keeps its console lock.
        const xml = await this.driver.domainXml(vm, { inactive: true, securityInfo: true });
        const switched = switchDiskVolume(xml, p.storagePool, p.from, p.to);
        if (switched !== undefined) await this.driver.defineDomain(switched);
        else if (systemVolumeOf(xml)?.volume !== p.to) {
          throw new Error(`${vm}: its system disk reads neither ${p.from} nor ${p.to}; it changed during the revert`);
        }
        this.store.dropSpareVolume(p.storagePool, p.to);
      });
    } catch (e) {
      this.setCondition(vm, "revert-needed", `revert failed: ${message(e)}`);
      throw e;
    }
    this.setSystemVolume(vm, { storagePool: p.storagePool, volume: p.to });
    this.clearCondition(vm, "revert-needed");
    this.emit("activity", { kind: "reverted", pool: poolName, vm });
    this.remakeSpare(vm, intentId, p);
  }

  /**
   * Makes `volume` a fresh overlay, unless it is one already (made by us and never attached
   * since). Deleting a written one is the slow part, which is why spares are made in advance.
   */
  private async makeFreshOverlay(storagePool: string, volume: string, facts: OverlayFacts): Promise<void> {
    if (this.store.spareVolume(storagePool, volume) === facts.backingPath) {
      const exists = await this.driver.volumeXml(storagePool, volume).then(
        () => true,
        (e: unknown) => {
          if (notFound(e)) return false;
          throw e;
        },
      );
      if (exists) return;
    }
    this.store.dropSpareVolume(storagePool, volume);
    await this.driver.deleteVolume(storagePool, volume).catch((e: unknown) => {
      if (!notFound(e)) throw e;
    });
    await this.driver.createOverlayVolume(storagePool, volume, {
      backingPath: facts.backingPath,
      backingFormat: facts.backingFormat,
      capacityBytes: facts.capacityBytes,
      format: facts.format,
    });
    this.store.addSpareVolume(storagePool, volume, facts.backingPath);
  }

  /**
   * In the background: `p.from`, the overlay the guest wrote to, becomes the next revert's fresh
   * one. Deleting it is what takes time, and only that next revert waits for it. A failure costs
   * only speed: the next revert makes the overlay itself.
   */
  private remakeSpare(vm: string, intentId: string, p: RevertPlan): void {
    const work = this.makeFreshOverlay(p.storagePool, p.from, p).then(
      () => void this.store.completeIntent(intentId),
      (e: unknown) => {
        this.store.failIntent(intentId, `reverted; remaking ${p.from} as the next spare failed: ${message(e)}`, null);
        throw e;
      },
    );
    const settled = work.catch(() => undefined);
    this.spareWork.set(vm, settled);
    void settled.then(() => {
      if (this.spareWork.get(vm) === settled) this.spareWork.delete(vm);
    });
    this.track("spare overlay", work, vm);
  }

  private async systemVolume(vm: string): Promise<VolumeRef> {
    const uuid = this.members.get(vm)?.uuid ?? "";
    const cached = this.systemVolumes.get(uuid);
    if (cached) return cached;
    const volume = systemVolumeOf(await this.driver.domainXml(vm, { inactive: true }));
    if (!volume) {
      throw new Error(
        `${vm}: its boot disk is not a storage-pool volume (<disk type='volume'>), so it cannot be reverted`,
      );
    }
    this.systemVolumes.set(uuid, volume);
    return volume;
  }

  private setSystemVolume(vm: string, volume: VolumeRef): void {
    const uuid = this.members.get(vm)?.uuid;
    if (uuid !== undefined) this.systemVolumes.set(uuid, volume);
  }

  private conditionMap(kind: MemberConditionKind): Map<string, string> {
    return kind === "revert-needed" ? this.quarantined : this.prestartGaveUp;
  }

  /** Persists the condition first: a member must stay out of service across a crash. */
  private setCondition(vm: string, kind: MemberConditionKind, reason: string): void {
    const pool = this.members.get(vm)?.metadata.pool;
    if (pool !== undefined) this.store.setCondition(pool, vm, kind, reason);
    this.conditionMap(kind).set(vm, reason);
  }

  private clearCondition(vm: string, kind: MemberConditionKind): void {
    if (!this.conditionMap(kind).delete(vm)) return;
    const pool = this.members.get(vm)?.metadata.pool;
    if (pool !== undefined) this.store.clearCondition(pool, vm, kind);
  }

  /**
   * Runs `effect` until it succeeds or the attempts run out, recording each failure on the
   * intent, and completing it on success unless told not to (more follows).
   */
  private async withRetries(
    intentId: string,
    options: { readonly complete: boolean },
    effect: () => Promise<void>,
  ): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await effect();
        if (options.complete) this.store.completeIntent(intentId);
        return;
      } catch (e) {
        const delay = this.retry.baseDelayMs * 2 ** (attempt - 1);
        const giveUp = attempt >= this.retry.maxAttempts;
        this.store.failIntent(intentId, message(e), giveUp ? null : this.clock() + delay);
        if (giveUp) throw e;
        await sleep(delay);
      }
    }
  }

  // ---- prestart ------------------------------------------------------------------------------

  /** Plans prestarts for the pool on the next turn of the event loop (coalescing bursts of triggers). */
  private kickPrestart(poolName: string): void {
    if (!this.running || this.prestartKicks.has(poolName)) return;
    this.prestartKicks.add(poolName);
    setImmediate(() => {
      this.prestartKicks.delete(poolName);
      const pool = this.pools().get(poolName);
      if (!pool || !this.running) return;
      const plan = planPrestart(
        pool,
        this.store.assignments(poolName),
        this.busy(),
        new Set(this.prestartGaveUp.keys()),
      );
      for (const vm of plan.start) this.track("prestart", this.prestart(poolName, vm), vm);
      for (const vm of plan.stop) this.track("stop surplus", this.stopSurplus(poolName, vm), vm);
    });
  }

  private prestart(poolName: string, vm: string): Promise<void> {
    return this.withMember(vm, "prestart", async () => {
      const intentId = this.store.beginIntent("prestart", poolName, vm);
      try {
        await this.withRetries(intentId, { complete: true }, async () => void (await this.startIfDown(vm)));
      } catch (e) {
        this.setCondition(vm, "prestart-gave-up", `prestart failed ${this.retry.maxAttempts} times: ${message(e)}`);
        this.kickPrestart(poolName);
        throw e;
      }
      this.emit("activity", { kind: "prestarted", pool: poolName, vm });
    });
  }

  /** More free members up than the pool asks for: shut one down and restore it. */
  private stopSurplus(poolName: string, vm: string): Promise<void> {
    return this.withMember(vm, "stop", async () => {
      if (this.store.holder(poolName, vm) || this.members.get(vm)?.state !== "running") return;
      await this.powerOff(vm);
      this.emit("activity", { kind: "surplus-stopped", pool: poolName, vm });
      await this.handleDown(poolName, vm, true);
    });
  }

  /**
   * A free member that is paused (suspended by hand, or by qemu on an I/O error) can be neither
   * handed out nor prestarted; nobody uses it, so it is powered off and restored like any free
   * member that went down (D9).
   */
  private stopPaused(poolName: string, vm: string): Promise<void> {
    return this.withMember(vm, "stop", async () => {
      const state = await this.driver.domainState(vm);
      this.setState(vm, state);
      if (this.store.holder(poolName, vm) || !isPaused(state)) return;
      await this.driver.destroy(vm).catch((e: unknown) => {
        if (!/not running/i.test(message(e))) throw e;
      });
      this.setState(vm, "shut off");
      this.emit("activity", { kind: "paused-stopped", pool: poolName, vm });
      await this.handleDown(poolName, vm, true);
    });
  }

  // ---- crash recovery ------------------------------------------------------------------------

  /**
   * Finishes or rolls back the intents a previous run left pending. Reverts are queued first on
   * their member (queues are FIFO), so an overlay a crash left deleted exists again before the
   * return that wrapped the revert is redone.
   */
  private async recover(): Promise<void> {
    const pending = this.store.pendingIntents().filter((i) => this.manages(i.pool));
    const ordered = [...pending.filter((i) => i.kind === "revert"), ...pending.filter((i) => i.kind !== "revert")];
    // A return that wrapped a revert redone here must not revert the member a second time.
    const reverted = new Set<string>();
    const results = await Promise.allSettled(ordered.map((i) => this.recoverIntent(i, reverted)));
    for (const r of results) {
      if (r.status === "rejected") this.emit("failure", { context: "recovery", error: asError(r.reason) });
    }
  }

  private recoverIntent(intent: Intent, revertedVms: Set<string>): Promise<void> {
    const { pool: poolName, vm } = intent;
    const activity: Record<IntentKind, MemberActivity> = {
      take: "take",
      return: "return",
      revert: "revert",
      prestart: "prestart",
      detach: "detach",
    };
    return this.withMember(vm, activity[intent.kind], async () => {
      switch (intent.kind) {
        case "take": {
          // The caller never heard back: undo the claim rather than leave a VM nobody knows they hold.
          if (intent.user !== undefined && this.store.holder(poolName, vm)?.user === intent.user) {
            this.store.release(poolName, vm, intent.user);
          }
          this.store.failIntent(intent.id, "rolled back: the reconciler stopped before the take finished", null);
          this.emit("activity", {
            kind: "rolled-back",
            pool: poolName,
            vm,
            ...(intent.user ? { user: intent.user } : {}),
          });
          return;
        }
        case "revert": {
          const plan = revertPlanOf(intent.payload!);
          const current = systemVolumeOf(await this.driver.domainXml(vm, { inactive: true }));
          if (current?.storagePool === plan.storagePool && current.volume === plan.to) {
            // Switched before the crash: only the spare is left to make.
            this.clearCondition(vm, "revert-needed");
            this.remakeSpare(vm, intent.id, plan);
            revertedVms.add(vm);
            return;
          }
          // Never pull the disk from under a running guest, whoever started it meanwhile.
          const state = await this.driver.domainState(vm);
          if (isUp(state)) {
            this.store.failIntent(intent.id, `not redone: ${vm} is ${state} now`, null);
            return;
          }
          await this.redoRevert(poolName, vm, intent.id, plan);
          revertedVms.add(vm);
          return;
        }
        case "return": {
          const pool = this.pools().get(poolName);
          const holder = this.store.holder(poolName, vm);
          if (!pool || !this.members.has(vm) || !holder) {
            this.store.release(poolName, vm);
            this.store.completeIntent(intent.id);
            return;
          }
          const revert = revertsOnReturn(pool.policy, holder) && !revertedVms.has(vm);
          await this.finishReturn(poolName, vm, intent.id, revert, "recovery");
          return;
        }
        case "prestart":
          this.store.failIntent(intent.id, "superseded: prestart is planned afresh after a restart", null);
          return;
        case "detach": {
          if (!this.members.has(vm)) {
            this.store.forgetVm(poolName, vm);
            this.store.completeIntent(intent.id);
            return;
          }
          const state = await this.driver.domainState(vm);
          if (!isDown(state)) {
            this.store.failIntent(intent.id, `not redone: ${vm} is ${state} now`, null);
            return;
          }
          await this.finishDetach(poolName, vm, intent.id);
          return;
        }
      }
    });
  }

  // ---- plumbing ------------------------------------------------------------------------------

  /** Whether work other than a refresh is queued on the member: that work keeps its state up to date. */
  private isBusy(vm: string): boolean {
    return this.activities.get(vm)?.some((a) => a !== "refresh") ?? false;
  }

  /** Runs `work` after every earlier piece of work on the member; members do not wait for each other. */
  private withMember<T>(vm: string, activity: MemberActivity, work: () => Promise<T>): Promise<T> {
    const queued = this.activities.get(vm) ?? [];
    queued.push(activity);
    this.activities.set(vm, queued);
    const result = (this.queues.get(vm) ?? Promise.resolve()).then(work);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.queues.set(vm, tail);
    void tail.then(() => {
      queued.splice(queued.indexOf(activity), 1);
      if (this.queues.get(vm) === tail) this.queues.delete(vm);
      if (queued.length > 0) return;
      this.activities.delete(vm);
      // A member planners skipped while it was busy may be the one the pool needs now (D4).
      const pool = this.members.get(vm)?.metadata.pool;
      if (pool !== undefined) this.kickPrestart(pool);
    });
    return result;
  }

  /**
   * What planners must not touch: members with queued work (a refresh counts only when nothing
   * else is queued), and quarantined ones (as if reverting).
   */
  private busy(): Map<string, MemberActivity> {
    const busy = new Map<string, MemberActivity>();
    for (const [vm, queued] of this.activities) busy.set(vm, queued.find((a) => a !== "refresh") ?? "refresh");
    for (const vm of this.quarantined.keys()) if (!busy.has(vm)) busy.set(vm, "revert");
    return busy;
  }

  /** Background work: failures become `failure` events, and `idle()` waits for it. */
  private track(context: string, work: Promise<void>, vm?: string): void {
    const tracked = work.catch((e: unknown) => {
      const pool = vm === undefined ? undefined : this.members.get(vm)?.metadata.pool;
      this.emit("failure", { context, ...(pool ? { pool } : {}), ...(vm ? { vm } : {}), error: asError(e) });
    });
    this.tasks.add(tracked);
    void tracked.then(() => this.tasks.delete(tracked));
  }
}
