// After a restart: what to do with each intent a previous run left pending. The decision is a
// pure function of the intent and the facts read for it; the actuator carries it out.
import type { StateStoreApi } from "./store/api";
import type { Actuator } from "./actuator";
import type { DomainState } from "./driver/libvirt-driver";
import type { Inventory } from "./inventory";
import { systemVolumeOf, type OverlayFacts, type VolumeRef } from "./libvirt-xml";
import { isDown, isUp, revertsOnReturn, type MemberActivity, type PoolPolicy } from "./pools";
import { otherVolumeName, type RevertPlan } from "./revert";
import type { Assignment, Intent, IntentKind } from "./store/store";
import { asError } from "./util";
import type { MemberWorkQueue } from "./work-queue";

/** The revert payload of intents written before reverts switched overlays (redone the new way). */
interface LegacyRevertPayload extends VolumeRef, OverlayFacts {}

export function revertPlanOf(payload: string): RevertPlan {
  const p = JSON.parse(payload) as RevertPlan | LegacyRevertPayload;
  if ("from" in p) return p;
  const { volume, ...facts } = p;
  return { ...facts, from: volume, to: otherVolumeName(volume) };
}

/** What recovery knows when it decides. */
export interface RecoveryFacts {
  /** The member's pool policy; undefined when the pool has no members any more. */
  readonly policy?: PoolPolicy;
  readonly memberExists: boolean;
  readonly holder?: Pick<Assignment, "user" | "adminAccess">;
  /** The domain's state, when the decision needs it. */
  readonly state?: DomainState;
  /** The volume the member's system disk reads now, when the decision needs it. */
  readonly systemVolume?: VolumeRef;
  /** Whether a revert of this member was redone in this recovery (a return must not revert again). */
  readonly revertedNow: boolean;
}

export type RecoveryAction =
  | { readonly kind: "roll-back-take" }
  | { readonly kind: "finish-switched-revert"; readonly plan: RevertPlan }
  | { readonly kind: "redo-revert"; readonly plan: RevertPlan }
  | { readonly kind: "finish-return"; readonly revert: boolean }
  | { readonly kind: "finish-detach" }
  /** The member or its holder is gone: the intent's work has nothing left to act on. */
  | { readonly kind: "forget"; readonly release: boolean }
  | { readonly kind: "give-up"; readonly reason: string };

/** Which facts each kind of intent needs read (reads cost libvirt calls). */
export function factsNeeded(kind: IntentKind): { readonly state: boolean; readonly systemVolume: boolean } {
  return { state: kind === "revert" || kind === "detach", systemVolume: kind === "revert" };
}

export function decideRecovery(intent: Intent, f: RecoveryFacts): RecoveryAction {
  switch (intent.kind) {
    case "take":
      // The caller never heard back: undo the claim rather than leave a VM nobody knows they hold.
      return { kind: "roll-back-take" };
    case "revert": {
      const plan = revertPlanOf(intent.payload!);
      const v = f.systemVolume;
      if (v?.storagePool === plan.storagePool && v.volume === plan.to) return { kind: "finish-switched-revert", plan };
      // Never pull the disk from under a running guest, whoever started it meanwhile.
      if (f.state !== undefined && isUp(f.state))
        return { kind: "give-up", reason: `not redone: it is ${f.state} now` };
      return { kind: "redo-revert", plan };
    }
    case "return":
      if (!f.policy || !f.memberExists || !f.holder) return { kind: "forget", release: true };
      return { kind: "finish-return", revert: revertsOnReturn(f.policy, f.holder) && !f.revertedNow };
    case "prestart":
      return { kind: "give-up", reason: "superseded: prestart is planned afresh after a restart" };
    case "detach":
      if (!f.memberExists) return { kind: "forget", release: false };
      if (f.state === undefined || !isDown(f.state))
        return { kind: "give-up", reason: `not redone: it is ${f.state} now` };
      return { kind: "finish-detach" };
  }
}

const ACTIVITY: Record<IntentKind, MemberActivity> = {
  take: "take",
  return: "return",
  revert: "revert",
  prestart: "prestart",
  detach: "detach",
};

export interface RecoveryContext {
  readonly store: StateStoreApi;
  readonly inventory: Inventory;
  readonly actuator: Actuator;
  readonly work: MemberWorkQueue;
  readonly manages: (pool: string) => boolean;
  /** Whether to recover this member's intents now (its host answers); the others wait for their host. */
  readonly onHost: (vm: string) => boolean;
  readonly onFailure: (error: Error) => void;
}

/**
 * Finishes or rolls back the intents a previous run left pending. Reverts are queued first on
 * their member (queues are FIFO), so a revert a crash cut short is finished before the return
 * that wrapped it is redone.
 */
export async function recover(c: RecoveryContext): Promise<void> {
  const pending = c.store.pendingIntents().filter((i) => c.manages(i.pool) && c.onHost(i.vm));
  const ordered = [...pending.filter((i) => i.kind === "revert"), ...pending.filter((i) => i.kind !== "revert")];
  const reverted = new Set<string>();
  const results = await Promise.allSettled(
    ordered.map((intent) =>
      c.work.run(intent.vm, ACTIVITY[intent.kind], async () => {
        const action = decideRecovery(intent, await readFacts(c, intent, reverted));
        await act(c, intent, action);
        if (action.kind === "redo-revert" || action.kind === "finish-switched-revert") reverted.add(intent.vm);
      }),
    ),
  );
  for (const r of results) if (r.status === "rejected") c.onFailure(asError(r.reason));
}

async function readFacts(c: RecoveryContext, intent: Intent, reverted: ReadonlySet<string>): Promise<RecoveryFacts> {
  const need = factsNeeded(intent.kind);
  const memberExists = c.inventory.member(intent.vm) !== undefined;
  const holder = c.store.holder(intent.pool, intent.vm);
  const policy = c.inventory.pools().get(intent.pool)?.policy;
  return {
    memberExists,
    revertedNow: reverted.has(intent.vm),
    ...(policy ? { policy } : {}),
    ...(holder ? { holder } : {}),
    ...(need.systemVolume && memberExists
      ? { systemVolume: systemVolumeOf(await c.inventory.driverOf(intent.vm).domainXml(intent.vm, { inactive: true })) }
      : {}),
    ...(need.state && memberExists ? { state: await c.inventory.driverOf(intent.vm).domainState(intent.vm) } : {}),
  };
}

async function act(c: RecoveryContext, intent: Intent, action: RecoveryAction): Promise<void> {
  const { pool, vm } = intent;
  switch (action.kind) {
    case "roll-back-take":
      return c.actuator.rollBackTake(pool, vm, intent.id, intent.user);
    case "finish-switched-revert":
      return c.actuator.finishSwitchedRevert(pool, vm, intent.id, action.plan);
    case "redo-revert":
      return c.actuator.switchOverlay(pool, vm, intent.id, action.plan);
    case "finish-return":
      return c.actuator.finishReturn(pool, vm, intent.id, action.revert, "recovery");
    case "finish-detach":
      return c.actuator.finishDetach(pool, vm, intent.id);
    case "forget":
      if (action.release) c.store.release(pool, vm);
      else c.store.forgetVm(pool, vm);
      c.store.completeIntent(intent.id);
      return;
    case "give-up":
      c.store.failIntent(intent.id, action.reason, null);
      return;
  }
}
