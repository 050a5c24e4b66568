import type { StateStoreApi } from "./store/api";
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import { Actuator } from "./actuator";
import { AttestationMonitor } from "./cluster/attestation";
import { Cluster } from "./cluster/cluster";
import { planMigration } from "./cluster/migration";
import { pickDestination } from "./cluster/placement";
import type { HostConnection, HostState, HostView } from "./cluster/hosts";
import {
  nextTrust,
  notAttestedYet,
  trustedClusters,
  untrustedReason,
  type HostTrust,
  type PoolTrustFacts,
  type Verdict,
} from "./cluster/trust";
import type { AttestationSettings } from "../core/trust";
import { claimQueueOf } from "./claims";
import { MemberConditions } from "./conditions";
import { renderVvFile, validateConsoleOptions } from "./console";
import type { LifecycleEvent } from "./driver/events";
import {
  AdminRequiredError,
  HostUnavailableError,
  MigrationRefusedError,
  NoFreeVmError,
  NotActiveError,
  NotHeldError,
  NotHolderError,
  UnknownHostError,
  UnknownPoolError,
  UnknownVmError,
  UserLimitError,
} from "./errors";
import { Inventory } from "./inventory";
import { HypervisorLease, LeaseHeldError } from "./lease";
import {
  freeMembers,
  holdingsByUser,
  isUp,
  planEvent,
  planLevelRules,
  planListed,
  planPrestart,
  type HostPicture,
  type MemberActivity,
  type MemberRecord,
  type Pool,
} from "./pools";
import { recover } from "./recovery";
import type { ConsoleOptions } from "./store/store";
import type {
  HostStatus,
  MemberStatus,
  PoolStatus,
  ReconcilerEventMap,
  ReconcilerOptions,
  ReconcilerStatus,
  Requester,
  ReturnResult,
  TakeResult,
} from "./types";
import { message, notFound, sleep, unlessGone } from "./util";
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
  private readonly cluster: Cluster;
  private readonly store: StateStoreApi;
  private readonly clock: () => number;
  private readonly resyncIntervalMs: number;
  private readonly consoleTicketTtlMs: number;
  private readonly consoleHost: string;
  private readonly onlyPools?: ReadonlySet<string>;
  private readonly keepFinishedIntentsMs: number;
  /** One lease per host (lease.ts): a second reconciler never acts on a host this one manages. */
  private readonly leases = new Map<string, HypervisorLease>();
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
  /** Per host: times its event stream ended (states are not vouched for across one). */
  private readonly eventStreamsLost = new Map<string, number>();
  /** Held members a maintenance could not migrate away, and why (shown in status until it ends). */
  private readonly stayReasons = new Map<string, string>();
  /** Held members a maintenance found no destination for yet (looked for again at each resync). */
  private readonly noDestination = new Map<string, string>();
  /** Hosts being taken back into service (lease, recovery) after they answered again. */
  private readonly returning = new Map<string, Promise<void>>();
  /** Hosts of trusted clusters: their attestation as last heard. */
  private readonly trust = new Map<string, HostTrust>();
  /** Members shut down or migrated away because their host lost its trust: why. */
  private readonly untrustedMoves = new Map<string, string>();
  private readonly attestation: AttestationMonitor;

  constructor(options: ReconcilerOptions) {
    super();
    this.cluster = new Cluster(connectionsOf(options));
    this.store = options.store;
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
    this.inventory = new Inventory(this.cluster, this.store, manages, this.clock);
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
        if (this.running && last !== "mark" && this.actsOn(vm) && this.actuator.holderMarkMayBeStale(pool, vm)) {
          const sync = this.work.run(vm, "mark", () => unlessGone(this.actuator.syncHolderMark(pool, vm)));
          this.work.track("holder mark", sync, vm);
        }
        // A member a maintenance migrated away goes home once it is down and free again.
        if (this.running && last !== "migrate") this.moveHomeIfAway(vm);
        // Its host lost trust while it was busy (a take's start, a migration onto it): handled now.
        if (this.running) this.leaveIfUntrusted(vm);
      },
      onFailure: (context, error, vm) => {
        // Background work on a member an engine destroyed meanwhile: nothing failed.
        if (error instanceof UnknownVmError) return;
        const pool = vm === undefined ? undefined : this.inventory.poolOf(vm);
        this.emit("failure", { context, ...(pool ? { pool } : {}), ...(vm ? { vm } : {}), error });
      },
    });
    this.actuator = new Actuator({
      cluster: this.cluster,
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
    this.attestation = new AttestationMonitor({
      onVerdicts: (settings, verdicts) => this.onVerdicts(settings, verdicts),
      onError: (error) => this.emit("failure", { context: "attestation", error }),
      onWarning: (message) => this.emit("warning", message),
      ...(options.attestation?.clientKeys ? { clientKeys: options.attestation.clientKeys } : {}),
      ...(options.attestation?.createClient ? { createClient: options.attestation.createClient } : {}),
    });
    for (const c of this.cluster.connections) {
      const lease = new HypervisorLease(c.driver, {
        ...(options.onlyPools ? { pools: options.onlyPools } : {}),
        ...(c.driver.domainType ? { domainType: c.driver.domainType } : {}),
        ...options.lease,
      });
      lease.on("lost", (e) => this.onLeaseLost(c.name, e));
      this.leases.set(c.name, lease);
    }
  }

  /**
   * Takes the lease, subscribes to events, learns the members, finishes or rolls back what a
   * previous run left pending, applies the pools' rules once, and resyncs periodically from then on.
   */
  async start(): Promise<void> {
    // Before anything else: a second reconciler of the same pools must not act at all.
    await this.acquireLeases();
    for (const c of this.cluster.connections) {
      if (!c.events) continue;
      c.events.on("lifecycle", this.handlersOf(c.name).lifecycle);
      c.events.on("ready", this.handlersOf(c.name).ready);
      c.events.on("disconnected", this.handlersOf(c.name).disconnected);
    }
    // Subscribed before the first listing, so no change falls between the two (hosts that do not
    // answer are subscribed when they do).
    await Promise.all(
      this.cluster.connections.filter((c) => c.events && this.actsOnHost(c.name)).map((c) => c.events!.ready()),
    );
    // The pools' current policy before anything acts on it (recovery redoes returns, which revert
    // or not by the policy): the last documents read, then libvirt's.
    this.inventory.loadPolicyDocuments();
    this.conditions.load((pool) => this.manages(pool));
    for (const host of this.store.hostsInMaintenance().keys()) {
      if (this.cluster.has(host)) this.cluster.setMaintenance(host, true);
    }
    const lostBefore = new Map(this.eventStreamsLost);
    await this.listMembers();
    for (const c of this.cluster.connections) {
      if (c.events && this.actsOnHost(c.name) && this.eventStreamsLost.get(c.name) === lostBefore.get(c.name)) {
        this.inventory.setEventsFlowing(c.name, true);
      }
    }
    await this.inventory.refreshPolicies();
    // Trusted clusters' hosts are out of service until attested: the first verdicts come before
    // anything is decided, or the first resync would stop prestarted members on trusted hosts.
    this.updateAttestation();
    await this.attestation.settled();
    await this.recoverOn((host) => this.actsOnHost(host));
    this.pruneIntents();
    this.running = true;
    await this.resync();
    this.resyncTimer = setInterval(() => this.work.track("resync", this.resync()), this.resyncIntervalMs);
  }

  /** Stops reacting, waits for work in progress and gives the leases back; drivers and store stay open (the caller owns them). */
  async stop(): Promise<void> {
    this.running = false;
    clearInterval(this.resyncTimer);
    this.attestation.stop();
    for (const t of this.pauseChecks) clearTimeout(t);
    this.pauseChecks.clear();
    for (const c of this.cluster.connections) {
      c.events?.off("lifecycle", this.handlersOf(c.name).lifecycle);
      c.events?.off("ready", this.handlersOf(c.name).ready);
      c.events?.off("disconnected", this.handlersOf(c.name).disconnected);
      this.inventory.setEventsFlowing(c.name, false);
    }
    await this.idle();
    await Promise.all(this.returning.values());
    await Promise.all([...this.leases.values()].map((l) => l.release().catch(() => undefined)));
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
            this.cluster.picture(),
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
    this.requireActsOn(vm);
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
    this.requireActsOn(vm);
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
    this.requireActsOn(vm);
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
    const picture = this.cluster.picture();
    const pools = [...this.inventory.pools().values()].map((pool): PoolStatus => {
      const members = pool.members.map((m): MemberStatus => {
        const a = holders.get(`${pool.name}\u0000${m.name}`);
        const activity = busy.get(m.name);
        const problem =
          this.conditions.reason("revert-needed", m.name) ??
          this.conditions.reason("prestart-gave-up", m.name) ??
          this.stayReasons.get(m.name) ??
          this.noDestination.get(m.name) ??
          this.untrustedMoves.get(m.name) ??
          (picture.usable(m.host)
            ? undefined
            : `its host ${m.host} is ${HOST_STATE_WORDS[this.cluster.view(m.host).state]}`) ??
          (m.persistent ? undefined : "undefined while running: it leaves the pool when it stops");
        return {
          name: m.name,
          index: m.index,
          host: m.host,
          state: m.state,
          templateVersion: m.templateVersion,
          role: a
            ? "held"
            : m.state === "running" && !this.work.isBusy(m.name) && picture.usable(m.host)
              ? "prestarted"
              : "free",
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
      hosts: this.hostStatus(),
      pools,
      users: Object.fromEntries(holdingsByUser(assignments)),
      pendingIntents: this.store.pendingIntents().length,
    };
  }

  /** Re-reads libvirt and applies every pool's rules; runs periodically and after event reconnects. */
  resync(): Promise<void> {
    this.resyncRun ??= (async () => {
      try {
        await this.acquireLeases();
        await this.listMembers();
        await this.inventory.refreshPolicies();
        this.updateAttestation();
        await this.readLoads();
        await this.syncHolderMarks();
        this.applyLevelRules();
        this.evacuate();
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

  /** Lists every host's domains and takes the listing in; notes which hosts answered. */
  private async listMembers(options: { readonly fresh?: boolean } = {}): Promise<void> {
    const { listed, missing, changedMeanwhile, unreachable, answered } = await this.inventory.list(options);
    for (const [host, error] of unreachable) {
      if (this.cluster.setReachable(host, false, message(error))) {
        this.inventory.setEventsFlowing(host, false);
        this.emit("failure", { context: `host ${host}`, error });
      }
    }
    for (const host of answered) {
      // Back after it did not answer: its lease first, then what was left pending there.
      if (this.cluster.setReachable(host, true) && this.running) this.hostBack(host);
    }
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
        .filter((r) => !this.work.isBusy(r.name) && this.actsOnHost(r.host))
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
      // Members on a host this reconciler cannot act on are left as they are (as if busy).
      busy: (vm) => this.work.isBusy(vm) || !this.actsOn(vm),
      revertNeeded: this.conditions.members("revert-needed"),
      poolOf: (vm) => this.inventory.poolOf(vm),
      manages: (pool) => this.manages(pool),
    });
    for (const a of actions.forget) this.store.forgetVm(a.pool, a.vm);
    for (const vm of actions.settle) this.work.track("settle", this.actuator.settle(vm), vm);
    for (const { pool, vm } of actions.stopPaused)
      this.work.track("stop paused", this.actuator.stopPaused(pool, vm), vm);
    for (const pool of actions.plan) this.kickPrestart(pool);
    for (const r of this.inventory.all()) this.moveHomeIfAway(r.name);
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
        this.cluster.picture(),
      );
      for (const vm of plan.start) this.work.track("prestart", this.actuator.prestart(poolName, vm), vm);
      for (const vm of plan.stop) this.work.track("stop surplus", this.actuator.stopSurplus(poolName, vm), vm);
    });
  }

  // ---- events --------------------------------------------------------------------------------

  /** Per host, its event handlers (the same functions each time, so `off` finds them). */
  private readonly handlers = new Map<string, HostHandlers>();

  private handlersOf(host: string): HostHandlers {
    let h = this.handlers.get(host);
    if (!h) {
      h = {
        lifecycle: (e) => this.onLifecycle(host, e),
        ready: () => this.onEventsReady(host),
        disconnected: () => this.onEventsLost(host),
      };
      this.handlers.set(host, h);
    }
    return h;
  }

  private onLifecycle(host: string, e: LifecycleEvent): void {
    if (!this.actsOnHost(host)) return;
    const record = this.inventory.member(e.domain);
    // About a member defined on another host: the source of a migration letting go, or a copy
    // defined by hand. The listing tells where it is now.
    if (record && record.host !== host) {
      if (e.event === "Defined" || e.event === "Started") this.work.track("refresh", this.listMembers({ fresh: true }));
      return;
    }
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
          this.actuator.reread(e.domain, host, (r) => this.observe(r)),
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
          // qemu stopped, then resumes it), and while a migration finishes. Still paused after
          // the grace, it is stuck.
          const timer = setTimeout(() => {
            this.pauseChecks.delete(timer);
            if (this.running && !this.work.isBusy(e.domain)) {
              this.work.track("stop paused", this.actuator.stopPaused(pool!, e.domain), e.domain);
            }
          }, PAUSED_GRACE_MS);
          this.pauseChecks.add(timer);
        }
        this.kickPrestart(pool!);
        return;
      case "none":
        return;
    }
  }

  // Events may have been missed while the stream was down: states are vouched for again only
  // after a listing begun since.
  private onEventsReady(host: string): void {
    if (!this.running) return;
    this.work.track(
      "resync",
      (async () => {
        await this.listMembers({ fresh: true });
        if (this.actsOnHost(host)) this.inventory.setEventsFlowing(host, true);
        await this.resync();
      })(),
    );
  }

  private onEventsLost(host: string): void {
    this.eventStreamsLost.set(host, (this.eventStreamsLost.get(host) ?? 0) + 1);
    this.inventory.setEventsFlowing(host, false);
  }

  // ---- the cluster ---------------------------------------------------------------------------

  /** The hosts and their states, and what a maintenance could not move. */
  private hostStatus(): readonly HostStatus[] {
    // One pass over the members for all hosts (status is asked often; clusters are large).
    const counts = new Map<string, { members: number; running: number }>();
    for (const r of this.inventory.all()) {
      const c = counts.get(r.host) ?? { members: 0, running: 0 };
      c.members++;
      if (r.state === "running") c.running++;
      counts.set(r.host, c);
    }
    const iso = (ms: number) => new Date(ms).toISOString();
    return this.cluster.views().map((v) => {
      const { freeMemoryMiB } = this.cluster.load(v.name);
      const t = this.trust.get(v.name);
      return {
        ...v,
        ...(counts.get(v.name) ?? { members: 0, running: 0 }),
        ...(freeMemoryMiB === undefined ? {} : { freeMemoryMiB }),
        ...(t
          ? {
              trust: {
                cluster: t.cluster,
                ...(t.service ? { service: t.service } : {}),
                level: t.level,
                reason: t.reason,
                ...(t.checkedAtMs === undefined ? {} : { checkedAt: iso(t.checkedAtMs) }),
                ...(t.attestedAt === undefined ? {} : { attestedAt: t.attestedAt }),
                since: iso(t.sinceMs),
              },
            }
          : {}),
      };
    });
  }

  /** Whether this reconciler may act on the member's host now (it answers and the lease is ours). */
  private actsOn(vm: string): boolean {
    const record = this.inventory.member(vm);
    return record === undefined || this.actsOnHost(record.host);
  }

  private actsOnHost(host: string): boolean {
    return this.cluster.actsOn(host);
  }

  private requireActsOn(vm: string): void {
    const record = this.inventory.member(vm);
    if (!record || this.actsOnHost(record.host)) return;
    const v = this.cluster.view(record.host);
    throw new HostUnavailableError(vm, record.host, v.state, v.reason ?? "");
  }

  /**
   * Takes the lease of every host not held yet. At start a host whose lease another reconciler
   * holds refuses the start (as on one host); later it leaves that host non-operational. A host
   * that does not answer is unreachable until a listing reaches it.
   */
  private async acquireLeases(): Promise<void> {
    const starting = !this.running;
    const results = await Promise.allSettled(
      this.cluster.connections
        .filter((c) => !this.cluster.leaseHeld(c.name))
        .map(async (c) => {
          try {
            await this.leases.get(c.name)!.acquire();
            this.cluster.setLeaseHeld(c.name, true);
          } catch (e) {
            if (e instanceof LeaseHeldError) {
              this.cluster.setLeaseHeld(c.name, false, e.message);
              throw e;
            }
            this.cluster.setReachable(c.name, false, message(e));
            throw e;
          }
        }),
    );
    if (!starting) return;
    const refused = results.find((r) => r.status === "rejected" && r.reason instanceof LeaseHeldError);
    const failed = results.filter((r) => r.status === "rejected");
    // One host (or none reachable): nothing to run on, as before a cluster.
    const fatal = refused ?? (this.cluster.names().every((h) => !this.cluster.leaseHeld(h)) ? failed[0] : undefined);
    if (fatal && fatal.status === "rejected") {
      await Promise.all([...this.leases.values()].map((l) => l.release().catch(() => undefined)));
      for (const h of this.cluster.names()) this.cluster.setLeaseHeld(h, false);
      throw fatal.reason;
    }
  }

  private onLeaseLost(host: string, e: Error): void {
    this.cluster.setLeaseHeld(host, false, `its lease was lost: ${e.message}`);
    this.inventory.setEventsFlowing(host, false);
    const single = this.cluster.single !== undefined;
    this.emit("failure", { context: single ? "lease" : `lease of host ${host}`, error: e });
    // A reconciler of one host has nothing left to act on (another may act now): it stops.
    if (single) {
      this.leaseLost = e;
      void this.stop().then(() => this.emit("leaseLost", e));
    }
  }

  /** A host answers again: take its lease, finish what was left pending there, then resync. */
  private hostBack(host: string): void {
    if (this.returning.has(host)) return;
    const back = (async () => {
      await this.acquireLeases();
      if (!this.cluster.leaseHeld(host)) return;
      await this.connectionOf(host).events?.ready();
      await this.listMembers({ fresh: true });
      if (this.connectionOf(host).events) this.inventory.setEventsFlowing(host, true);
      await this.recoverOn((h) => h === host);
      this.applyLevelRules();
    })().finally(() => this.returning.delete(host));
    this.returning.set(host, back);
    this.work.track(`host ${host} back`, back);
  }

  private connectionOf(host: string): HostConnection {
    return this.cluster.connection(host);
  }

  /** Finishes or rolls back the intents left pending on members of the hosts `on` selects. */
  private recoverOn(on: (host: string) => boolean): Promise<void> {
    return recover({
      store: this.store,
      inventory: this.inventory,
      actuator: this.actuator,
      work: this.work,
      manages: (pool) => this.manages(pool),
      onHost: (vm) => {
        const record = this.inventory.member(vm);
        // Members no host lists any more are recovered with the first pass (nothing to act on).
        return record === undefined ? on(this.cluster.names()[0]!) : on(record.host);
      },
      onFailure: (error) => this.emit("failure", { context: "recovery", error }),
    });
  }

  /** Free memory and running members per host, for placing starts by headroom. */
  private async readLoads(): Promise<void> {
    if (this.cluster.single !== undefined) return;
    const running = new Map<string, number>();
    for (const r of this.inventory.all())
      if (r.state === "running") running.set(r.host, (running.get(r.host) ?? 0) + 1);
    await Promise.all(
      this.cluster.names().map(async (h) => {
        if (!this.actsOnHost(h)) return;
        const freeMemoryMiB = await this.cluster
          .driver(h)
          .freeMemoryMiB()
          .catch(() => undefined);
        this.cluster.setLoad(h, {
          running: running.get(h) ?? 0,
          ...(freeMemoryMiB === undefined ? {} : { freeMemoryMiB }),
        });
      }),
    );
  }

  /**
   * Hosts in maintenance: held running members are live-migrated to the up host with the most
   * headroom where their pool allows automatic migration; the others stay, with the reason in
   * status. (Free running members are stopped by the prestart plan.)
   */
  private evacuate(): void {
    if (!this.running) return;
    const inMaintenance = new Set(
      this.cluster
        .views()
        .filter((v) => v.state === "maintenance")
        .map((v) => v.name),
    );
    const untrusted = this.untrustedHosts();
    // Every resync comes here: with no host in maintenance or untrusted there is nothing to look at.
    if (inMaintenance.size === 0 && untrusted.size === 0) return;
    const picture = this.cluster.picture();
    for (const r of this.inventory.all()) {
      const notTrusted = untrusted.get(r.host);
      if (notTrusted) {
        this.leaveUntrusted(r, notTrusted, picture);
        continue;
      }
      if (!inMaintenance.has(r.host)) continue;
      if (r.state !== "running" || this.work.isBusy(r.name) || this.stayReasons.has(r.name)) continue;
      this.noDestination.delete(r.name);
      this.migrateAway(r, picture, "maintenance migration", (kind, detail) => {
        const stays = `stays on ${r.host} in maintenance`;
        // Tried again at the next resync: a host may come up meanwhile.
        if (kind === "no-destination") this.noDestination.set(r.name, `${stays}: no other host it may run on is up`);
        else if (kind === "forbidden") this.stayReasons.set(r.name, `${stays}: not migrated, ${detail}`);
      });
    }
  }

  /**
   * Live-migrates a held running member off its host, to the up host with the most headroom
   * among those its pool may run on, where the pool allows automatic migration. `cannot` hears
   * why not: the pool (or the guest's CPU) forbids it, no host to go to, or the migration failed.
   */
  private migrateAway(
    r: MemberRecord,
    picture: HostPicture,
    label: string,
    cannot: (kind: "forbidden" | "no-destination" | "failed", detail: string) => void,
  ): void {
    const pool = r.metadata.pool;
    if (!this.store.holder(pool, r.name)) return;
    const policy = this.inventory.pools().get(pool)?.policy;
    if (!policy) return;
    // The pool's mode alone may forbid it (the guest's CPU is checked by the actuator).
    const allowed = planMigration(policy, { trigger: "automatic", hostCpuPassthrough: false });
    if (!allowed.allowed) return cannot("forbidden", allowed.reason);
    const to = pickDestination(policy.allowedHosts, r.host, this.cluster.names(), picture);
    if (to === undefined) return cannot("no-destination", "");
    const migration = this.actuator
      .migrate(pool, r.name, to, "automatic")
      .then(() => undefined)
      .catch((e: unknown) => {
        if (e instanceof MigrationRefusedError) return cannot("forbidden", e.reason);
        cannot("failed", `its migration to ${to} failed (${message(e)})`);
        throw e;
      });
    this.work.track(label, migration, r.name);
  }

  // ---- trusted clusters ----------------------------------------------------------------------

  /**
   * Follows the pools' trusted clusters: their hosts get a trust (out of service until the first
   * trusted verdict), the monitor polls their services; a trusted pool whose cluster's settings
   * are unknown keeps its hosts out of service.
   */
  private updateAttestation(): void {
    const { settings, pinned } = trustedClusters(this.poolTrustFacts());
    const now = this.clock();
    const wanted = new Set<string>();
    for (const [host, p] of pinned) {
      if (!this.cluster.has(host)) continue;
      wanted.add(host);
      const t = this.trust.get(host);
      if (t?.pinned && t.reason === p.reason) continue;
      this.setTrust(host, {
        cluster: p.cluster,
        level: "unknown",
        reason: p.reason,
        sinceMs: t?.sinceMs ?? now,
        pinned: true,
      });
    }
    for (const s of settings.values()) {
      for (const h of s.hosts) {
        if (!this.cluster.has(h.name) || pinned.has(h.name)) continue;
        wanted.add(h.name);
        const t = this.trust.get(h.name);
        if (!t || t.pinned || t.cluster !== s.cluster || t.service !== s.type)
          this.setTrust(h.name, notAttestedYet(s, now));
      }
    }
    for (const host of [...this.trust.keys()]) {
      if (wanted.has(host)) continue;
      this.trust.delete(host);
      this.cluster.setUnfit(host, undefined);
    }
    this.attestation.update(settings);
  }

  /**
   * Every pool with members: whether anything marks it trusted (its members' metadata or its
   * document), the hosts it may run on and those its members are on, and its document's settings.
   */
  private poolTrustFacts(): PoolTrustFacts[] {
    const flagged = new Set<string>();
    const memberHosts = new Map<string, Set<string>>();
    for (const r of this.inventory.all()) {
      if (r.metadata.trusted) flagged.add(r.metadata.pool);
      const hosts = memberHosts.get(r.metadata.pool) ?? new Set<string>();
      hosts.add(r.host);
      memberHosts.set(r.metadata.pool, hosts);
    }
    return [...this.inventory.pools().values()].map((p) => {
      const attestation = this.inventory.attestationOf(p.name);
      return {
        pool: p.name,
        cluster: p.policy.cluster,
        trusted: flagged.has(p.name) || p.policy.trusted === true || attestation !== undefined,
        hosts: [...new Set([...p.policy.allowedHosts, ...(memberHosts.get(p.name) ?? [])])],
        ...(attestation ? { attestation } : {}),
      };
    });
  }

  /**
   * A poll's verdicts: hosts that lose trust leave service at once, hosts that gain it return.
   * Acted on only at a new level (a stale host's reason changes every poll, its handling not).
   */
  private onVerdicts(settings: AttestationSettings, verdicts: readonly Verdict[]): void {
    const now = this.clock();
    const changed = new Set<string>();
    for (const v of verdicts) {
      const prev = this.trust.get(v.host);
      if (!prev || prev.pinned || prev.cluster !== settings.cluster) continue;
      const next = nextTrust(prev, v, now);
      this.setTrust(v.host, next);
      if (prev.level !== next.level) changed.add(v.host);
    }
    if (changed.size === 0) return;
    // The reasons of what stayed or was shut down there no longer hold (one pass for all hosts).
    for (const r of this.inventory.all()) if (changed.has(r.host)) this.untrustedMoves.delete(r.name);
    if (this.running) {
      this.applyLevelRules();
      this.evacuate();
    }
  }

  private setTrust(host: string, t: HostTrust): void {
    this.trust.set(host, t);
    this.cluster.setUnfit(host, untrustedReason(t));
  }

  /** A member on a host that is not trusted now: what leaveUntrusted does with it. */
  private leaveIfUntrusted(vm: string): void {
    const record = this.inventory.member(vm);
    const t = record && this.trust.get(record.host);
    const why = t && untrustedReason(t);
    if (!record || !t || why === undefined || !this.actsOnHost(record.host)) return;
    this.leaveUntrusted(record, { trust: t, why }, this.cluster.picture());
  }

  /** Hosts of trusted clusters that are not trusted now, with their trust and why. */
  private untrustedHosts(): Map<string, { readonly trust: HostTrust; readonly why: string }> {
    const out = new Map<string, { readonly trust: HostTrust; readonly why: string }>();
    for (const [host, trust] of this.trust) {
      const why = untrustedReason(trust);
      if (why !== undefined && this.actsOnHost(host)) out.set(host, { trust, why });
    }
    return out;
  }

  /**
   * A held running member on a host that is not trusted: live-migrated to a trusted host where its
   * pool allows automatic migration. Where it cannot move, what the service said decides: a host
   * it found untrusted (failed attestation) has the member shut down, as a workload that needs a
   * trusted host must not go on there; a host whose trust is only unconfirmed (unknown, stale,
   * the service unreachable) keeps it running, reported, so an attestation outage does not stop
   * every user's VM. Free running members are stopped by the prestart plan either way.
   */
  private leaveUntrusted(
    r: MemberRecord,
    host: { readonly trust: HostTrust; readonly why: string },
    picture: HostPicture,
  ): void {
    if (!isUp(r.state) || this.work.isBusy(r.name)) return;
    const pool = r.metadata.pool;
    this.migrateAway(r, picture, "untrusted migration", (kind, detail) => {
      const because =
        kind === "no-destination"
          ? "no trusted host it may run on is up"
          : kind === "forbidden"
            ? `not migrated, ${detail}`
            : detail;
      const where = `on ${r.host}, ${because}: host ${r.host} is ${host.why}`;
      if (host.trust.level !== "untrusted") {
        this.untrustedMoves.set(r.name, `stays ${where}`);
        return;
      }
      this.untrustedMoves.set(r.name, `shut down ${where}`);
      this.work.track("untrusted stop", this.actuator.stopUntrusted(pool, r.name), r.name);
    });
  }

  /** A down, free member away from its home host goes back there when home is up. */
  private moveHomeIfAway(vm: string): void {
    const record = this.inventory.member(vm);
    if (!record || !this.running || this.work.isBusy(vm)) return;
    const home = record.metadata.homeHost;
    if (home === undefined || home === record.host || !this.cluster.has(home)) return;
    if (record.state !== "shut off" || this.store.holder(record.metadata.pool, vm)) return;
    if (!this.cluster.picture().usable(home) || !this.actsOnHost(record.host)) return;
    this.work.track("move home", this.actuator.moveHome(record.metadata.pool, vm, home), vm);
  }

  // ---- admin verbs for hosts -----------------------------------------------------------------

  /**
   * Puts a host in maintenance (nothing new starts there, free members stop, held ones migrate
   * where their pool allows) or takes it out; kept in the store across restarts.
   */
  async setMaintenance(host: string, on: boolean): Promise<HostView> {
    this.requireActive();
    if (!this.cluster.has(host)) throw new UnknownHostError(host, this.cluster.names());
    this.store.setHostMaintenance(host, on);
    this.cluster.setMaintenance(host, on);
    for (const r of this.inventory.all()) {
      if (r.host !== host) continue;
      this.stayReasons.delete(r.name);
      this.noDestination.delete(r.name);
    }
    this.applyLevelRules();
    this.evacuate();
    return this.cluster.view(host);
  }

  /**
   * Live-migrates a running member (an admin's manual migration): to `to`, or to the up host
   * with the most headroom among those its pool may run on.
   */
  async migrate(
    poolName: string,
    vm: string,
    to?: string,
  ): Promise<{ pool: string; vm: string; from: string; to: string }> {
    const pool = await this.requirePool(poolName);
    this.requireMember(pool, vm);
    this.requireActsOn(vm);
    const from = this.inventory.hostOf(vm);
    if (to !== undefined && !this.cluster.has(to)) throw new UnknownHostError(to, this.cluster.names());
    const allowed = pool.policy.allowedHosts;
    const destination = to ?? pickDestination(allowed, from, this.cluster.names(), this.cluster.picture());
    if (destination === undefined) throw new MigrationRefusedError(poolName, vm, "no other host it may run on is up");
    if (to !== undefined && allowed.length > 0 && !allowed.includes(to)) {
      throw new MigrationRefusedError(poolName, vm, `its pool runs only on ${allowed.join(", ")} (startRunningOn)`);
    }
    if (!this.cluster.picture().usable(destination)) {
      const v = this.cluster.view(destination);
      throw new MigrationRefusedError(poolName, vm, `host ${destination} is ${v.state} (${v.reason ?? ""})`);
    }
    const moved = await this.actuator.migrate(poolName, vm, destination, "manual");
    return { pool: poolName, vm, ...moved };
  }

  private requireActive(): void {
    if (this.leaseLost) throw new NotActiveError(`it lost its lease: ${this.leaseLost.message}`);
  }
}

const HOST_STATE_WORDS: Readonly<Record<HostState, string>> = {
  up: "up",
  maintenance: "in maintenance",
  "non-operational": "non-operational",
  unreachable: "unreachable",
};

interface HostHandlers {
  readonly lifecycle: (e: LifecycleEvent) => void;
  readonly ready: () => void;
  readonly disconnected: () => void;
}

/** The hosts from the options: `hosts`, or the one connection `driver` (+ `events`). */
function connectionsOf(options: ReconcilerOptions): HostConnection[] {
  if (options.hosts && options.driver) throw new RangeError("give either hosts or driver, not both");
  if (options.hosts) return [...options.hosts];
  if (!options.driver) throw new RangeError("a reconciler needs hosts (or one driver)");
  return [
    {
      name: options.hostName ?? "localhost",
      uri: "",
      driver: options.driver,
      ...(options.events ? { events: options.events } : {}),
    },
  ];
}
