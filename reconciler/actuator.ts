// The one place that changes members: starts, power-offs, reverts, returns, detaches, holder
// marks, and forgetting members that went away. Every public method queues its work on the
// member (one piece at a time per member) and persists its intent before the side effect, so a
// restart finishes or rolls back what a crash interrupted. What to do is decided elsewhere
// (pools.ts, recovery.ts); this module only does it.
import type { StateStoreApi } from "./store/api";
import { HOLDER_NAMESPACE, HOLDER_PREFIX, METADATA_NAMESPACE, parseHolderXml, renderHolderXml } from "../core/metadata";
import { claimQueueOf } from "./claims";
import type { Cluster } from "./cluster/cluster";
import type { MemberConditions } from "./conditions";
import type { DomainState, LibvirtDriver } from "./driver/libvirt-driver";
import { ticketedGraphicsXml } from "./console";
import {
  MigrationRefusedError,
  NotDownError,
  NotHeldError,
  NotRunningError,
  UnknownVmError,
  VmStartError,
} from "./errors";
import { planMigration, type MigrationTrigger } from "./cluster/migration";
import type { Inventory } from "./inventory";
import {
  allocationOf,
  overlayFactsOf,
  passesHostCpuThrough,
  volumePoolsOf,
  spiceDisplayOf,
  systemVolumeOf,
  withDiskVolume,
  type OverlayFacts,
  type SpiceDisplay,
  type VolumeRef,
} from "./libvirt-xml";
import { isDown, isPaused, isUp, planMemberDown, revertsOnReturn, type MemberRecord } from "./pools";
import { isAlternateVolumeName, otherVolumeName, planRevert, type RevertPlan } from "./revert";
import type { Activity, RetryPolicy } from "./types";
import { message, notFound, sleep, unlessGone } from "./util";
import type { MemberWorkQueue } from "./work-queue";

export interface ActuatorOptions {
  readonly cluster: Cluster;
  readonly store: StateStoreApi;
  readonly inventory: Inventory;
  readonly conditions: MemberConditions;
  readonly work: MemberWorkQueue;
  readonly retry: RetryPolicy;
  readonly clock: () => number;
  readonly shutdownTimeoutMs: number;
  /** Reports what was done. */
  readonly emit: (a: Activity) => void;
  /** The pool's prestart count may need attention. */
  readonly replan: (pool: string) => void;
}

/** How a return came about, for its activity. */
export type ReturnedBy = "user" | "admin" | "shutdown" | "recovery";

const notRunning = (e: unknown) => {
  if (!/not running/i.test(message(e)) && !notFound(e)) throw e;
};

export class Actuator {
  private readonly cluster: Cluster;
  private readonly store: StateStoreApi;
  private readonly inventory: Inventory;
  private readonly conditions: MemberConditions;
  private readonly work: MemberWorkQueue;
  /** Holder marks as they are in libvirt (null: none), by member name (see syncHolderMark). */
  private readonly holderMarks = new Map<string, string | null>();
  /** Per member: the remaking of its previous overlay after a revert, which the next revert awaits. */
  private readonly spareWork = new Map<string, Promise<void>>();

  constructor(private readonly o: ActuatorOptions) {
    this.cluster = o.cluster;
    this.store = o.store;
    this.inventory = o.inventory;
    this.conditions = o.conditions;
    this.work = o.work;
  }

  /** The member's host's driver (where it is defined now). */
  private on(vm: string): LibvirtDriver {
    return this.inventory.driverOf(vm);
  }

  /** The same host's connection for work no answer waits for. */
  private background(vm: string): LibvirtDriver {
    const driver = this.on(vm);
    return driver.background ?? driver;
  }

  // ---- what the facade asks for ---------------------------------------------------------------

  /**
   * Starts a member just claimed for `user` (if it is down). Resolves with whether it had to
   * start it, or undefined when the claim was lost before it ran (a concurrent return or detach).
   */
  startClaimed(pool: string, vm: string, user: string, intentId: string): Promise<boolean | undefined> {
    return this.work.run(vm, "take", async () => {
      if (this.store.holder(pool, vm)?.user !== user) {
        this.store.failIntent(intentId, "lost to a concurrent return or detach before it started", null);
        return undefined;
      }
      try {
        // The host may go out of service between the claim and the answer (an attestation
        // verdict, say): nothing is started or handed out there.
        this.requireUsableHost(vm, "before it started");
        const started = await this.startIfDown(vm);
        this.requireUsableHost(vm, "while it started");
        await claimQueueOf(this.store).complete(intentId);
        // The holder mark is written right after this, on the member's queue, when its queue
        // runs empty (see the reconciler's onMemberIdle): it is for plan-time tools, which can
        // never be sure of the moment between their plan and their apply anyway, and keeping it
        // off the answer halves the libvirt calls of a take. Marks converge at every resync.
        return started;
      } catch (e) {
        this.store.release(pool, vm, user);
        this.store.failIntent(intentId, message(e), null);
        await this.syncHolderMark(pool, vm).catch(() => undefined);
        this.o.replan(pool);
        throw new VmStartError(pool, vm, message(e));
      }
    });
  }

  private requireUsableHost(vm: string, when: string): void {
    const host = this.o.inventory.hostOf(vm);
    if (this.o.cluster.picture().usable(host)) return;
    const v = this.o.cluster.view(host);
    throw new Error(`its host ${host} went ${v.state} ${when} (${v.reason ?? ""}); take again`);
  }

  /** Returns a held member; `holder` is who held it when asked (someone else may have returned it since). */
  returnHeld(
    pool: string,
    vm: string,
    holder: { readonly user: string; readonly since: number },
    by: ReturnedBy,
  ): Promise<{ reverted: boolean }> {
    return this.work.run(vm, "return", async () => {
      const current = this.store.holder(pool, vm);
      if (!current || current.user !== holder.user || current.since !== holder.since) throw new NotHeldError(pool, vm);
      const revert = revertsOnReturn(this.policyOf(pool), current);
      const intentId = this.store.beginIntent("return", pool, vm, current.user);
      await this.finishReturn(pool, vm, intentId, revert, by);
      return { reverted: revert };
    });
  }

  /** Detaches a Down member: our metadata leaves the domain, which lives on as an independent VM. */
  detachDown(pool: string, vm: string): Promise<void> {
    return this.work.run(vm, "detach", async () => {
      const state = await this.on(vm).domainState(vm);
      this.inventory.setState(vm, state);
      if (!isDown(state)) throw new NotDownError(pool, vm, state);
      const intentId = this.store.beginIntent("detach", pool, vm);
      await this.finishDetach(pool, vm, intentId);
    });
  }

  /**
   * Sets a fresh SPICE ticket on the running member, valid until `validToMs`; resolves with its
   * display as the running domain reports it.
   */
  async ticketConsole(pool: string, vm: string, password: string, validToMs: number): Promise<SpiceDisplay> {
    const state = await this.on(vm).domainState(vm);
    if (state !== "running") throw new NotRunningError(pool, vm, state);
    const display = spiceDisplayOf(await this.on(vm).domainXml(vm));
    if (!display) throw new Error(`${vm} has no SPICE display; its domain needs <graphics type='spice'>`);
    await this.on(vm)
      .updateDeviceLive(vm, ticketedGraphicsXml(display.element, password, validToMs))
      .catch((e: unknown) => {
        // qemu takes tickets only when SPICE started with a password: the constructs lock it with an expired one.
        throw new Error(
          `${vm}: could not set a SPICE ticket (${message(e)}); its <graphics type='spice'> must be defined ` +
            `with a passwd (e.g. a random one with passwdValidTo in the past), and the VM restarted`,
        );
      });
    return display;
  }

  /**
   * Live-migrates the running member to host `to` as its pool's migration settings say
   * (cluster/migration.ts); the member's record follows it. No intent is written: libvirt's
   * migration hands the domain over atomically (the source keeps it until the destination runs
   * it), so after a crash the next listing finds it on exactly one host and nothing is left to
   * finish or roll back.
   */
  migrate(pool: string, vm: string, to: string, trigger: MigrationTrigger): Promise<{ from: string; to: string }> {
    return this.work.run(vm, "migrate", async () => {
      const from = this.inventory.hostOf(vm);
      if (from === to) throw new MigrationRefusedError(pool, vm, `it is on ${to} already`);
      const source = this.cluster.driver(from);
      // What the pool and the guest allow first: that answer holds whatever the power state.
      const xml = await source.domainXml(vm, { inactive: true });
      const decision = planMigration(this.policyOf(pool), { trigger, hostCpuPassthrough: passesHostCpuThrough(xml) });
      if (!decision.allowed) throw new MigrationRefusedError(pool, vm, decision.reason);
      const state = await source.domainState(vm);
      this.inventory.setState(vm, state);
      if (state !== "running")
        throw new MigrationRefusedError(pool, vm, `it is ${state}; only running members migrate`);
      const destination = this.cluster.connection(to);
      // The destination looks the member's volumes up by name: it must know ones made elsewhere.
      await this.refreshPools(destination.driver, xml);
      await source.migrate(vm, destination.uri, {
        ...decision.options,
        ...(destination.migrateUri === undefined ? {} : { migrateUri: destination.migrateUri }),
        ...(destination.unsafeMigration ? { unsafe: true } : {}),
      });
      this.inventory.moveTo(vm, to, await destination.driver.domainState(vm));
      this.o.emit({ kind: "migrated", pool, vm, from, to });
      return { from, to };
    });
  }

  /**
   * Moves a down member's definition back to its home host (where the engines created it and
   * look for it): defined there with the same XML, then undefined where it is. Its disks are on
   * storage both hosts share, as live migration needed.
   */
  moveHome(pool: string, vm: string, home: string): Promise<void> {
    return this.work.run(vm, "migrate", async () => {
      const from = this.inventory.hostOf(vm);
      if (from === home) return;
      const source = this.cluster.driver(from);
      const state = await source.domainState(vm);
      this.inventory.setState(vm, state);
      if (!isDown(state) || this.store.holder(pool, vm)) return;
      // With secrets: the console lock's password moves along.
      const xml = await source.domainXml(vm, { inactive: true, securityInfo: true });
      const target = this.cluster.driver(home);
      await this.refreshPools(target, xml);
      await target.defineDomain(xml);
      await source.undefineDomain(vm);
      this.inventory.moveTo(vm, home, "shut off");
      this.o.emit({ kind: "moved-home", pool, vm, from, to: home });
    });
  }

  private async refreshPools(driver: LibvirtDriver, domainXml: string): Promise<void> {
    for (const pool of volumePoolsOf(domainXml)) await driver.refreshStoragePool(pool);
  }

  // ---- what the reconciler's planners ask for ------------------------------------------------

  /** The member may have gone down: find out, and act as its pool says. */
  settle(vm: string): Promise<void> {
    return this.work.run(vm, "settle", async () => {
      const record = this.inventory.member(vm);
      if (!record) return;
      const state = await unlessGone(this.on(vm).domainState(vm));
      if (state === undefined) return this.forget(vm);
      const wasUp = isUp(record.state) || this.conditions.has("revert-needed", vm);
      this.inventory.setState(vm, state);
      if (isDown(state)) await this.handleDown(record.metadata.pool, vm, wasUp);
    });
  }

  prestart(pool: string, vm: string): Promise<void> {
    return this.work.run(vm, "prestart", async () => {
      // Batched with the other prestarts of this turn (a burst of takes begins many at once).
      const intentId = await claimQueueOf(this.store).begin("prestart", pool, vm);
      try {
        const driver = this.background(vm);
        await this.withRetries(intentId, { complete: true }, async () => void (await this.startIfDown(vm, driver)));
      } catch (e) {
        const reason = `prestart failed ${this.o.retry.maxAttempts} times: ${message(e)}`;
        this.conditions.set(pool, vm, "prestart-gave-up", reason);
        this.o.replan(pool);
        throw e;
      }
      this.o.emit({ kind: "prestarted", pool, vm });
    });
  }

  /** More free members up than the pool asks for: shut one down and restore it. */
  stopSurplus(pool: string, vm: string): Promise<void> {
    return this.work.run(vm, "stop", async () => {
      if (this.store.holder(pool, vm) || this.inventory.member(vm)?.state !== "running") return;
      await this.powerOff(vm);
      this.o.emit({ kind: "surplus-stopped", pool, vm });
      await this.handleDown(pool, vm, true);
    });
  }

  /**
   * A member (held or not) running on a host that lost its trust and could not be migrated away:
   * shut down (graceful, forced after the shutdown timeout), then handled as any member that went
   * down (an automatic pool takes a held one back and reverts it).
   */
  stopUntrusted(pool: string, vm: string): Promise<void> {
    return this.work.run(vm, "stop", async () => {
      if (!isUp(this.inventory.member(vm)?.state ?? "shut off")) return;
      const user = this.store.holder(pool, vm)?.user;
      await this.powerOff(vm);
      this.o.emit({ kind: "untrusted-stopped", pool, vm, ...(user ? { user } : {}) });
      await this.handleDown(pool, vm, true);
    });
  }

  /**
   * A free member that is paused (suspended by hand, or by qemu on an I/O error) can be neither
   * handed out nor prestarted; nobody uses it, so it is powered off and restored like any free
   * member that went down (D9).
   */
  stopPaused(pool: string, vm: string): Promise<void> {
    return this.work.run(vm, "stop", async () => {
      const state = await this.on(vm).domainState(vm);
      this.inventory.setState(vm, state);
      if (this.store.holder(pool, vm) || !isPaused(state)) return;
      await this.on(vm).destroy(vm).catch(notRunning);
      this.inventory.setState(vm, "shut off");
      this.o.emit({ kind: "paused-stopped", pool, vm });
      await this.handleDown(pool, vm, true);
    });
  }

  /** Re-reads a (re)defined domain: it may be a new member, changed metadata, or no longer ours. */
  reread(name: string, host: string, adopt: (record: MemberRecord) => void): Promise<void> {
    return this.work.run(name, "refresh", async () => {
      const read = await this.inventory.read(name, host);
      if (read.kind === "gone") this.forget(name);
      else if (read.kind === "not-ours") this.forget(name, { gone: false });
      else {
        adopt(read.record);
        this.o.replan(read.record.metadata.pool);
      }
    });
  }

  /**
   * The member left libvirt (`gone`: undefined, or a transient one stopped) or left the pool
   * (metadata gone): forget its runtime facts and its holder. A gone member's alternate overlay
   * goes with it: the engines know only their own volume.
   */
  forget(vm: string, options: { readonly gone: boolean } = { gone: true }): void {
    const dropped = this.inventory.drop(vm);
    if (!dropped) return;
    const { record, volume } = dropped;
    if (options.gone && volume) {
      const alternate = isAlternateVolumeName(volume.volume) ? volume.volume : otherVolumeName(volume.volume);
      this.store.dropSpareVolume(volume.storagePool, alternate);
      const driver = this.cluster.driver(record.host);
      this.work.track("alternate overlay", unlessGone(driver.deleteVolume(volume.storagePool, alternate)));
    }
    this.holderMarks.delete(vm);
    this.conditions.forget(vm);
    this.store.forgetVm(record.metadata.pool, vm);
    this.o.replan(record.metadata.pool);
  }

  /** Whether the member's holder mark may not say what the store says (unknown, or known to differ). */
  holderMarkMayBeStale(pool: string, vm: string): boolean {
    return !this.holderMarks.has(vm) || this.holderMarks.get(vm) !== (this.store.holder(pool, vm)?.user ?? null);
  }

  /**
   * Makes the member's holder mark in libvirt say what the store says. Reads the mark the first
   * time it meets a member (after a start or a crash libvirt may say otherwise), then remembers
   * what it wrote.
   */
  async syncHolderMark(pool: string, vm: string): Promise<void> {
    const wanted = this.store.holder(pool, vm)?.user ?? null;
    // Never on an answer's path (written after takes and returns answer), so in the background.
    const driver = this.background(vm);
    if (!this.holderMarks.has(vm)) {
      const xml = await driver.getMetadata(vm, HOLDER_NAMESPACE);
      this.holderMarks.set(vm, parseHolderXml(xml) ?? null);
    }
    if (this.holderMarks.get(vm) === wanted) return;
    if (wanted === null) await driver.removeMetadata(vm, HOLDER_NAMESPACE);
    else await driver.setMetadata(vm, HOLDER_NAMESPACE, renderHolderXml(wanted), HOLDER_PREFIX);
    this.holderMarks.set(vm, wanted);
  }

  // ---- what recovery asks for (it queues them on the member itself) --------------------------

  /** Rolls back a take the caller never heard back about: nobody is left holding a VM they do not know of. */
  async rollBackTake(pool: string, vm: string, intentId: string, user: string | undefined): Promise<void> {
    if (user !== undefined && this.store.holder(pool, vm)?.user === user) this.store.release(pool, vm, user);
    this.store.failIntent(intentId, "rolled back: the reconciler stopped before the take finished", null);
    // The mark goes with the claim (the crash may have come after it was written).
    await this.syncHolderMark(pool, vm).catch(() => undefined);
    this.o.emit({ kind: "rolled-back", pool, vm, ...(user ? { user } : {}) });
  }

  /** A revert that switched before a crash: only making the spare is left. */
  finishSwitchedRevert(pool: string, vm: string, intentId: string, plan: RevertPlan): void {
    this.conditions.clear(pool, vm, "revert-needed");
    this.remakeSpare(vm, intentId, plan);
  }

  // ---- the steps ---------------------------------------------------------------------------------

  /**
   * After a failure: if the domain is gone (an engine destroyed the member while we worked on
   * it), the member is forgotten and the work ends with UnknownVmError instead.
   */
  private async unlessGoneMeanwhile(pool: string, vm: string): Promise<void> {
    if ((await unlessGone(this.on(vm).domainState(vm)).catch(() => "unknown")) !== undefined) return;
    this.forget(vm);
    throw new UnknownVmError(pool, vm);
  }

  private policyOf(pool: string) {
    return this.inventory.pools().get(pool)!.policy;
  }

  /** Under the member's queue, with the member down. */
  private async handleDown(pool: string, vm: string, wasUp: boolean): Promise<void> {
    const holder = this.store.holder(pool, vm);
    const action = planMemberDown(this.policyOf(pool), holder, wasUp);
    if (action === "revert") {
      await this.revert(pool, vm);
      this.o.replan(pool);
    } else if (action === "release" || action === "revert-and-release") {
      const intentId = this.store.beginIntent("return", pool, vm, holder!.user);
      await this.finishReturn(pool, vm, intentId, action === "revert-and-release", "shutdown");
    }
  }

  /** Power off (if up), revert (if asked), free; the return intent is already persisted. */
  async finishReturn(pool: string, vm: string, intentId: string, revert: boolean, by: ReturnedBy): Promise<void> {
    const user = this.store.holder(pool, vm)?.user;
    const returned = () => this.o.emit({ kind: "returned", pool, vm, ...(user ? { user } : {}), by });
    try {
      if (!(await this.powerOff(vm))) {
        // Undefined while it ran: it vanished as it stopped, and with it the pool's claim on it.
        this.store.completeIntent(intentId);
        this.forget(vm);
        returned();
        return;
      }
      if (revert) await this.revert(pool, vm);
    } catch (e) {
      if (!(e instanceof UnknownVmError)) this.store.failIntent(intentId, message(e), null);
      await this.unlessGoneMeanwhile(pool, vm);
      // Still held: an automatic pool retries at the next resync, an admin sees the error.
      throw e;
    }
    this.store.release(pool, vm);
    this.store.completeIntent(intentId);
    // The holder mark's removal follows when the member's queue runs empty (the reconciler's
    // onMemberIdle), as after a take: off the answer's path. A stale mark only makes a shrink
    // refuse more for that moment; the periodic resync retries a removal that failed.
    returned();
    this.o.replan(pool);
  }

  async finishDetach(pool: string, vm: string, intentId: string): Promise<void> {
    await this.on(vm).removeMetadata(vm, HOLDER_NAMESPACE);
    await this.on(vm).removeMetadata(vm, METADATA_NAMESPACE);
    this.store.forgetVm(pool, vm);
    this.store.completeIntent(intentId);
    this.forget(vm, { gone: false });
    this.o.emit({ kind: "detached", pool, vm });
  }

  /** Resolves with whether it had to start the domain. */
  private async startIfDown(vm: string, driver: LibvirtDriver = this.on(vm)): Promise<boolean> {
    // A member known to be shut off is started straight away (one call fewer per cold take); if
    // it is up after all, the start says so and the state is read below. A running one the
    // events vouch for needs no call at all.
    const state =
      this.inventory.vouchedState(vm) === "running"
        ? "running"
        : this.inventory.member(vm)?.state === "shut off"
          ? "shut off"
          : await driver.domainState(vm);
    this.inventory.setState(vm, state);
    if (state === "running") return false;
    if (!isDown(state)) throw new Error(`${vm} is ${state}, neither running nor down`);
    try {
      await driver.start(vm);
    } catch (e) {
      // It was down and is up now: most likely this very start, sent again by the session after
      // a libvirtd restart cut off its answer (the first one went through).
      if (!/already active|already running/i.test(message(e)) || (await driver.domainState(vm)) !== "running") {
        throw e;
      }
    }
    this.inventory.setState(vm, "running");
    this.conditions.clear(this.inventory.poolOf(vm), vm, "prestart-gave-up");
    return true;
  }

  /**
   * Graceful shutdown first; the plug is pulled once the shutdown timeout has passed. Resolves
   * with false when the domain no longer exists: a transient one (undefined while it ran)
   * vanishes as it stops.
   */
  private async powerOff(vm: string): Promise<boolean> {
    const stateOrGone = async (): Promise<DomainState | "gone"> =>
      (await unlessGone(this.on(vm).domainState(vm))) ?? "gone";
    let state = await stateOrGone();
    if (state !== "gone" && isUp(state)) {
      await this.on(vm).shutdown(vm).catch(notRunning);
      const deadline = this.o.clock() + this.o.shutdownTimeoutMs;
      let pollMs = 10;
      state = await stateOrGone();
      while (state !== "gone" && isUp(state) && this.o.clock() < deadline) {
        await sleep(pollMs);
        pollMs = Math.min(pollMs * 2, 500);
        state = await stateOrGone();
      }
      if (state !== "gone" && isUp(state)) {
        await this.on(vm).destroy(vm).catch(notRunning);
        state = await stateOrGone();
      }
    }
    if (state === "gone") return false;
    this.inventory.setState(vm, state);
    return true;
  }

  /**
   * Puts the member back on a fresh overlay of its base image, in O(1) whatever the guest wrote
   * (see revert.ts). The plan is persisted with the intent, and the member marked as needing a
   * revert, before anything changes: a crash or a failure at any step is redone, and nothing is
   * handed out meanwhile.
   */
  private async revert(pool: string, vm: string): Promise<void> {
    const current = await this.inventory.systemVolume(vm);
    const plan = planRevert(current, await this.overlayFacts(vm, current));
    const intentId = this.store.beginIntent("revert", pool, vm, undefined, JSON.stringify(plan));
    this.conditions.set(pool, vm, "revert-needed", "a revert began and has not finished");
    await this.switchOverlay(pool, vm, intentId, plan);
  }

  /** Capacity, format and backing of the member's overlay; from its other overlay if this one is gone. */
  private async overlayFacts(vm: string, current: VolumeRef): Promise<OverlayFacts> {
    for (const volume of [current.volume, otherVolumeName(current.volume)]) {
      const xml = await unlessGone(this.on(vm).volumeXml(current.storagePool, volume));
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
  async switchOverlay(pool: string, vm: string, intentId: string, p: RevertPlan): Promise<void> {
    await this.spareWork.get(vm);
    try {
      await this.withRetries(intentId, { complete: false }, async () => {
        await this.makeFreshOverlay(vm, p.storagePool, p.to, p);
        // With secrets: the redefined domain keeps its console lock.
        const xml = await this.on(vm).domainXml(vm, { inactive: true, securityInfo: true });
        const switched = withDiskVolume(xml, p.storagePool, p.from, p.to);
        if (switched !== undefined) await this.on(vm).defineDomain(switched);
        else if (systemVolumeOf(xml)?.volume !== p.to) {
          throw new Error(`${vm}: its system disk reads neither ${p.from} nor ${p.to}; it changed during the revert`);
        }
        this.store.dropSpareVolume(p.storagePool, p.to);
      });
    } catch (e) {
      await this.unlessGoneMeanwhile(pool, vm);
      this.conditions.set(pool, vm, "revert-needed", `revert failed: ${message(e)}`);
      throw e;
    }
    this.inventory.setSystemVolume(vm, { storagePool: p.storagePool, volume: p.to });
    this.conditions.clear(pool, vm, "revert-needed");
    this.o.emit({ kind: "reverted", pool, vm });
    this.remakeSpare(vm, intentId, p);
  }

  /**
   * Makes `volume` a fresh overlay, unless it is one already (made by us and never attached
   * since). Deleting a written one is the slow part, which is why spares are made in advance.
   */
  private async makeFreshOverlay(vm: string, storagePool: string, volume: string, facts: OverlayFacts): Promise<void> {
    const spare = this.store.spareVolume(storagePool, volume);
    if (spare?.backingPath === facts.backingPath) {
      const xml = await unlessGone(this.on(vm).volumeXml(storagePool, volume));
      // Unchanged since it was made: nothing was written to it.
      if (xml !== undefined && allocationOf(xml) === spare.allocationBytes) return;
    }
    this.store.dropSpareVolume(storagePool, volume);
    await unlessGone(this.on(vm).deleteVolume(storagePool, volume));
    await this.on(vm).createOverlayVolume(storagePool, volume, {
      backingPath: facts.backingPath,
      backingFormat: facts.backingFormat,
      capacityBytes: facts.capacityBytes,
      format: facts.format,
    });
    const allocation = allocationOf(await this.on(vm).volumeXml(storagePool, volume));
    if (allocation !== undefined) this.store.addSpareVolume(storagePool, volume, facts.backingPath, allocation);
  }

  /**
   * In the background: `p.from`, the overlay the guest wrote to, becomes the next revert's fresh
   * one. Deleting it is what takes time, and only that next revert waits for it. A failure costs
   * only speed: the next revert makes the overlay itself.
   */
  private remakeSpare(vm: string, intentId: string, p: RevertPlan): void {
    const work = this.makeFreshOverlay(vm, p.storagePool, p.from, p).then(
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
    this.work.track("spare overlay", work, vm);
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
        if (options.complete) await claimQueueOf(this.store).complete(intentId);
        return;
      } catch (e) {
        const delay = this.o.retry.baseDelayMs * 2 ** (attempt - 1);
        const giveUp = attempt >= this.o.retry.maxAttempts;
        this.store.failIntent(intentId, message(e), giveUp ? null : this.o.clock() + delay);
        if (giveUp) throw e;
        await sleep(delay);
      }
    }
  }
}
