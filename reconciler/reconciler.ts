import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import { Actuator } from "./actuator";
import { claimQueueOf } from "./claims";
import { MemberConditions } from "./conditions";
import { renderVvFile, validateConsoleOptions } from "./console";
import type { DomainEventSource, LifecycleEvent } from "./driver/events";
import type { LibvirtDriver } from "./driver/libvirt-driver";
import {
  AdminRequiredError,
  NoFreeVmError,
  NotActiveError,
  NotHeldError,
  NotHolderError,
  UnknownPoolError,
  UnknownVmError,
  UserLimitError,
} from "./errors";
import { Inventory } from "./inventory";
import { HypervisorLease } from "./lease";
import {
  freeMembers,
  holdingsByUser,
  planEvent,
  planLevelRules,
  planListed,
  planPrestart,
  type MemberActivity,
  type MemberRecord,
  type Pool,
} from "./pools";
import { recover } from "./recovery";
import type { ConsoleOptions, StateStore } from "./store/store";
import type {
  MemberStatus,
  PoolStatus,
  ReconcilerEventMap,
  ReconcilerOptions,
  ReconcilerStatus,
  Requester,
  ReturnResult,
  TakeResult,
} from "./types";
import { notFound, sleep, unlessGone } from "./util";
import { MemberWorkQueue } from "./work-queue";

export type * from "./types";

const PRUNE_EVERY_MS = 3600_000;
/** How long a free member may stay paused before it is taken for stuck (see onLifecycle). */
const PAUSED_GRACE_MS = 2000;
/** How soon after a listing of libvirt a take naming an unknown pool may cause another. */
const RELIST_AFTER_MS = 1000;

/**
 * Runs VM pools on one libvirt connection: take, return, revert, prestart, detach, consoles.
 *
 * libvirt is the source of truth for which members exist and their power state (the
 * inventory); the store holds who holds what and the intent of every side effect, written
 * before the effect, so that a restart finishes or rolls back what a crash interrupted (the
 * recovery). Work on one member is serialized by the work queue; members are independent.
 * Events make reactions immediate; a periodic resync compares the whole picture and fixes
 * whatever events missed (level-triggered). Decisions are pure functions (pools.ts,
 * recovery.ts); the actuator alone changes anything. This class is the facade that wires them.
 */
export class Reconciler extends EventEmitter<ReconcilerEventMap> {
  private readonly driver: LibvirtDriver;
  private readonly store: StateStore;
  private readonly events?: DomainEventSource;
  private readonly clock: () => number;
  private readonly resyncIntervalMs: number;
  private readonly consoleTicketTtlMs: number;
  private readonly consoleHost: string;
  private readonly onlyPools?: ReadonlySet<string>;
  private readonly keepFinishedIntentsMs: number;
  private readonly lease: HypervisorLease;
  private readonly inventory: Inventory;
  private readonly conditions: MemberConditions;
  private readonly work: MemberWorkQueue;
  private readonly actuator: Actuator;
  private leaseLost?: Error;
  private prunedAt = -Infinity;
  private readonly prestartKicks = new Set<string>();
  private readonly pauseChecks = new Set<NodeJS.Timeout>();
  private resyncRun?: Promise<void>;
  private resyncTimer?: NodeJS.Timeout;
  /** Acting on what it sees (after start-up recovery, until stop). */
  private running = false;
  /** Times the event stream ended (states are not vouched for across one). */
  private eventStreamsLost = 0;

  constructor(options: ReconcilerOptions) {
    super();
    this.driver = options.driver;
    this.store = options.store;
    this.events = options.events;
    this.clock = options.clock ?? Date.now;
    this.resyncIntervalMs = options.resyncIntervalMs ?? 30_000;
    this.consoleTicketTtlMs = options.consoleTicketTtlMs ?? 120_000;
    this.consoleHost = options.consoleHost ?? hostname();
    this.onlyPools = options.onlyPools && new Set(options.onlyPools);
    this.keepFinishedIntentsMs = options.keepFinishedIntentsMs ?? 7 * 24 * 3600_000;
    const retry = options.retry;
    if (!(Number.isInteger(retry.maxAttempts) && retry.maxAttempts >= 1)) {
      throw new RangeError(`retry.maxAttempts must be an integer ≥ 1, got ${retry.maxAttempts}`);
    }
    const manages = (pool: string) => this.manages(pool);
    this.inventory = new Inventory(this.driver, this.store, manages, this.clock);
    this.conditions = new MemberConditions(this.store);
    this.work = new MemberWorkQueue({
      onMemberIdle: (vm, last) => {
        const pool = this.inventory.poolOf(vm);
        if (pool === undefined) return;
        // A member planners skipped while it was busy may be the one its pool needs now (D4).
        this.kickPrestart(pool);
        // Takes and returns leave the mark to this (off their answer's path), as does work that
        // changed who holds it otherwise (a rolled-back claim, say); the periodic resync would
        // only get there up to 30 s later. (Not after a mark: a sync that failed must not be
        // retried in a loop; the resync retries it.)
        if (this.running && last !== "mark" && this.actuator.holderMarkMayBeStale(pool, vm)) {
          const sync = this.work.run(vm, "mark", () => unlessGone(this.actuator.syncHolderMark(pool, vm)));
          this.work.track("holder mark", sync, vm);
        }
      },
      onFailure: (context, error, vm) => {
        // Background work on a member an engine destroyed meanwhile: nothing failed.
        if (error instanceof UnknownVmError) return;
        const pool = vm === undefined ? undefined : this.inventory.poolOf(vm);
        this.emit("failure", { context, ...(pool ? { pool } : {}), ...(vm ? { vm } : {}), error });
      },
    });
    this.actuator = new Actuator({
      driver: this.driver,
      store: this.store,
      inventory: this.inventory,
      conditions: this.conditions,
      work: this.work,
      retry,
      clock: this.clock,
      shutdownTimeoutMs: options.shutdownTimeoutMs ?? 60_000,
      emit: (a) => this.emit("activity", a),
      replan: (pool) => this.kickPrestart(pool),
    });
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
  }

  /**
   * Takes the lease, subscribes to events, learns the members, finishes or rolls back what a
   * previous run left pending, applies the pools' rules once, and resyncs periodically from then on.
   */
  async start(): Promise<void> {
    // Before anything else: a second reconciler of the same pools must not act at all.
    await this.lease.acquire();
    if (this.events) {
      this.events.on("lifecycle", this.onLifecycle);
      this.events.on("ready", this.onEventsReady);
      this.events.on("disconnected", this.onEventsLost);
      // Subscribed before the first listing, so no change falls between the two.
      await this.events.ready();
    }
    // The pools' current policy before anything acts on it (recovery redoes returns, which revert
    // or not by the policy): the last documents read, then libvirt's.
    this.inventory.loadPolicyDocuments();
    this.conditions.load((pool) => this.manages(pool));
    const lostBefore = this.eventStreamsLost;
    await this.listMembers();
    if (this.events && this.eventStreamsLost === lostBefore) this.inventory.setEventsFlowing(true);
    await this.inventory.refreshPolicies();
    await recover({
      driver: this.driver,
      store: this.store,
      inventory: this.inventory,
      actuator: this.actuator,
      work: this.work,
      manages: (pool) => this.manages(pool),
      onFailure: (error) => this.emit("failure", { context: "recovery", error }),
    });
    this.pruneIntents();
    this.running = true;
    await this.resync();
    this.resyncTimer = setInterval(() => this.work.track("resync", this.resync()), this.resyncIntervalMs);
  }

  /** Stops reacting, waits for work in progress and gives the lease back; the driver and store stay open (the caller owns them). */
  async stop(): Promise<void> {
    this.running = false;
    clearInterval(this.resyncTimer);
    for (const t of this.pauseChecks) clearTimeout(t);
    this.pauseChecks.clear();
    this.events?.off("lifecycle", this.onLifecycle);
    this.events?.off("ready", this.onEventsReady);
    this.events?.off("disconnected", this.onEventsLost);
    this.inventory.setEventsFlowing(false);
    await this.idle();
    await this.lease.release();
  }

  /** Resolves once no work is queued or running (events already received included). */
  async idle(): Promise<void> {
    while (this.work.busy || this.prestartKicks.size > 0) {
      await Promise.allSettled([this.work.drain(), sleep(0)]);
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
      // With the other takes of this turn, in one transaction (claims.ts); candidates as of then.
      const claim = await claimQueueOf(this.store).claim(
        { pool: poolName, user, maxPerUser: pool.policy.maxVmsPerUser },
        (p) =>
          freeMembers(
            this.inventory.pools().get(p) ?? { ...pool, members: [] },
            this.store.assignments(p),
            this.busy(),
          ),
      );
      if ("refused" in claim) {
        if (claim.refused === "limit") {
          const held = this.store.heldBy(user, poolName).map((a) => a.vm);
          throw new UserLimitError(poolName, user, pool.policy.maxVmsPerUser, held);
        }
        throw new NoFreeVmError(poolName, pool.members.length);
      }
      this.kickPrestart(poolName);
      const started = await this.actuator.startClaimed(poolName, claim.vm, user, claim.intentId);
      if (started === undefined) continue;
      this.emit("activity", { kind: "taken", pool: poolName, vm: claim.vm, user });
      return { pool: poolName, vm: claim.vm, started };
    }
  }

  /**
   * Gives a VM back: shuts it down (ACPI, then destroy after the shutdown timeout), reverts it
   * to its base image unless the pool is stateful or an admin accessed it, and frees it. A user
   * returns only their own VMs, and only in automatic pools; in manual pools only an admin returns.
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
    const { reverted } = await this.actuator.returnHeld(poolName, vm, holder, "user" in by ? "user" : "admin");
    return { pool: poolName, vm, reverted };
  }

  /**
   * Detaches a Down member from its pool: our metadata is removed from the domain, which lives
   * on as an independent VM, and the store forgets it (including a holder, if any).
   */
  async detach(poolName: string, vm: string): Promise<void> {
    this.requireMember(await this.requirePool(poolName), vm);
    await this.actuator.detachDown(poolName, vm);
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
    if (holder.user !== user) throw new NotHolderError(poolName, vm, holder.user, user, "open a console of");
    if (options) validateConsoleOptions(options);
    const password = randomBytes(18).toString("base64url");
    const display = await this.actuator.ticketConsole(poolName, vm, password, this.clock() + this.consoleTicketTtlMs);
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
    const busy = this.busy();
    const pools = [...this.inventory.pools().values()].map((pool): PoolStatus => {
      const members = pool.members.map((m): MemberStatus => {
        const a = holders.get(`${pool.name}\u0000${m.name}`);
        const activity = busy.get(m.name);
        const problem =
          this.conditions.reason("revert-needed", m.name) ??
          this.conditions.reason("prestart-gave-up", m.name) ??
          (m.persistent ? undefined : "undefined while running: it leaves the pool when it stops");
        return {
          name: m.name,
          index: m.index,
          state: m.state,
          templateVersion: m.templateVersion,
          role: a ? "held" : m.state === "running" && !this.work.isBusy(m.name) ? "prestarted" : "free",
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
        await this.inventory.refreshPolicies();
        await this.syncHolderMarks();
        this.applyLevelRules();
        this.pruneIntents();
      } finally {
        this.resyncRun = undefined;
      }
    })();
    return this.resyncRun;
  }

  // ---- the picture ---------------------------------------------------------------------------

  private async requirePool(name: string): Promise<Pool> {
    if (this.leaseLost) throw new NotActiveError(`it lost its lease: ${this.leaseLost.message}`);
    // A pool deployed since the last listing is found by looking once more; one listing serves
    // every take that asks meanwhile, and none is made for a second after the last (D6: a burst
    // of takes naming a pool that does not exist must not stall everyone's takes).
    if (!this.inventory.pools().has(name) && this.inventory.sinceListing() >= RELIST_AFTER_MS) {
      await this.listMembers();
    }
    const pool = this.inventory.pools().get(name);
    if (!pool) throw new UnknownPoolError(name, [...this.inventory.pools().keys()]);
    return pool;
  }

  private requireMember(pool: Pool, vm: string): void {
    if (!pool.members.some((m) => m.name === vm)) throw new UnknownVmError(pool.name, vm);
  }

  private manages(pool: string): boolean {
    return !this.onlyPools || this.onlyPools.has(pool);
  }

  /** Lists libvirt's domains and takes the listing in. */
  private async listMembers(options: { readonly fresh?: boolean } = {}): Promise<void> {
    const { listed, missing, changedMeanwhile } = await this.inventory.list(options);
    for (const record of listed) this.observe(record, changedMeanwhile.has(record.name));
    for (const name of missing) if (!this.work.isBusy(name)) this.actuator.forget(name);
  }

  /** Takes in a listed or re-read member; a stop no event reported is handled as the event would have been. */
  private observe(record: MemberRecord, changedMeanwhile = false): void {
    const previous = this.inventory.member(record.name);
    const action = planListed(previous, record, {
      busy: this.work.isBusy(record.name),
      acting: this.running,
      changedMeanwhile,
    });
    this.inventory.set(action === "adopt" ? record : { ...record, state: previous!.state });
    if (action === "settle") this.work.track("settle", this.actuator.settle(record.name), record.name);
  }

  /** What planners must not touch: members with queued work, and ones needing a revert (as if reverting). */
  private busy(): Map<string, MemberActivity> {
    const busy = this.work.activities();
    for (const vm of this.conditions.members("revert-needed")) if (!busy.has(vm)) busy.set(vm, "revert");
    return busy;
  }

  /** Finished intents are history: kept for a while for inspection, pruned at most hourly (D13). */
  private pruneIntents(): void {
    const now = this.clock();
    if (now - this.prunedAt < PRUNE_EVERY_MS) return;
    this.prunedAt = now;
    this.store.pruneIntents(Date.now() - this.keepFinishedIntentsMs);
  }

  // ---- level-triggered rules -----------------------------------------------------------------

  /** Level-triggered: every idle member's holder mark follows the store (busy ones set their own). */
  private async syncHolderMarks(): Promise<void> {
    await Promise.all(
      [...this.inventory.all()]
        .filter((r) => !this.work.isBusy(r.name))
        .map((r) =>
          this.actuator.syncHolderMark(r.metadata.pool, r.name).catch((e: unknown) => {
            if (!notFound(e)) {
              const error = e instanceof Error ? e : new Error(String(e));
              this.emit("failure", { context: "holder mark", pool: r.metadata.pool, vm: r.name, error });
            }
          }),
        ),
    );
  }

  /** What events cannot be trusted to have said: held members found down, reverts to finish, prestart counts. */
  private applyLevelRules(): void {
    const actions = planLevelRules({
      pools: this.inventory.pools().values(),
      assignments: this.store.assignments(),
      busy: (vm) => this.work.isBusy(vm),
      revertNeeded: this.conditions.members("revert-needed"),
      poolOf: (vm) => this.inventory.poolOf(vm),
      manages: (pool) => this.manages(pool),
    });
    for (const a of actions.forget) this.store.forgetVm(a.pool, a.vm);
    for (const vm of actions.settle) this.work.track("settle", this.actuator.settle(vm), vm);
    for (const { pool, vm } of actions.stopPaused)
      this.work.track("stop paused", this.actuator.stopPaused(pool, vm), vm);
    for (const pool of actions.plan) this.kickPrestart(pool);
  }

  /** Plans prestarts for the pool on the next turn of the event loop (coalescing bursts of triggers). */
  private kickPrestart(poolName: string): void {
    if (!this.running || this.prestartKicks.has(poolName)) return;
    this.prestartKicks.add(poolName);
    setImmediate(() => {
      this.prestartKicks.delete(poolName);
      const pool = this.inventory.pools().get(poolName);
      if (!pool || !this.running) return;
      const plan = planPrestart(
        pool,
        this.store.assignments(poolName),
        this.busy(),
        this.conditions.members("prestart-gave-up"),
      );
      for (const vm of plan.start) this.work.track("prestart", this.actuator.prestart(poolName, vm), vm);
      for (const vm of plan.stop) this.work.track("stop surplus", this.actuator.stopSurplus(poolName, vm), vm);
    });
  }

  // ---- events --------------------------------------------------------------------------------

  private readonly onLifecycle = (e: LifecycleEvent): void => {
    const pool = this.inventory.poolOf(e.domain);
    if (e.event === "Stopped" || e.event === "Shutdown" || e.event === "Crashed") this.inventory.doubt(e.domain);
    const action = planEvent(e.event, {
      known: pool !== undefined,
      busy: this.work.isBusy(e.domain),
      held: pool !== undefined && this.store.holder(pool, e.domain) !== undefined,
    });
    switch (action.kind) {
      case "read":
        this.work.track(
          "refresh",
          this.actuator.reread(e.domain, (record) => this.observe(record)),
          e.domain,
        );
        return;
      case "list":
        // Undefined while running, a domain lives on (transient) until it stops: its holder
        // keeps it, nobody else gets it (D1). The listing tells which it is.
        this.work.track("refresh", this.listMembers({ fresh: true }));
        return;
      case "settle":
        this.work.track("settle", this.actuator.settle(e.domain), e.domain);
        return;
      case "state":
        this.inventory.setState(e.domain, action.state);
        if (action.stopPaused) {
          // Not at once: qemu domains pass through "paused" while they start (libvirt starts
          // qemu stopped, then resumes it). Still paused after the grace, it is stuck.
          const timer = setTimeout(() => {
            this.pauseChecks.delete(timer);
            if (this.running) this.work.track("stop paused", this.actuator.stopPaused(pool!, e.domain), e.domain);
          }, PAUSED_GRACE_MS);
          this.pauseChecks.add(timer);
        }
        this.kickPrestart(pool!);
        return;
      case "none":
        return;
    }
  };

  // Events may have been missed while the stream was down: states are vouched for again only
  // after a listing begun since.
  private readonly onEventsReady = (): void => {
    if (!this.running) return;
    this.work.track(
      "resync",
      (async () => {
        await this.listMembers({ fresh: true });
        this.inventory.setEventsFlowing(true);
        await this.resync();
      })(),
    );
  };

  private readonly onEventsLost = (): void => {
    this.eventStreamsLost++;
    this.inventory.setEventsFlowing(false);
  };
}
