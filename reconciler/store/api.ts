// What the reconciler needs of a state store, whichever database holds it: the SQLite file
// (StateStore, the embedded default) or PostgreSQL (PostgresStateStore, for several reconcilers
// of which one is active). Every call is synchronous: a claim (count the user's VMs, claim a
// free one, record the intent) runs with no other work interleaved, and the answer path calls
// the store without awaiting.
import type { MemberMetadata } from "../../core/metadata";
import type {
  AssignedHow,
  Assignment,
  ClaimRequest,
  ClaimResult,
  ConsoleOptions,
  Intent,
  IntentKind,
  IntentState,
  MemberCondition,
  MemberConditionKind,
} from "./store";

export interface StateStoreApi {
  close(): void;

  /**
   * Atomically gives `user` the first of `candidates` nobody holds and records a pending "take"
   * intent; refuses with "limit" at `maxPerUser` VMs in the pool, "none-free" when all are held.
   */
  claim(pool: string, user: string, candidates: readonly string[], maxPerUser: number, how?: AssignedHow): ClaimResult;
  /** {@link claim} for many takes in one transaction; results as if claimed one by one, in order. */
  claimMany(requests: readonly ClaimRequest[], candidates: (pool: string) => readonly string[]): ClaimResult[];
  /** Frees the VM; with `byUser` only that user's own (NotHolderError otherwise). Whether it was held. */
  release(pool: string, vm: string, byUser?: string): boolean;
  markAdminAccess(pool: string, vm: string): boolean;
  holder(pool: string, vm: string): Assignment | undefined;
  /** Sorted by pool, then VM name (byte order). */
  assignments(pool?: string): readonly Assignment[];
  /** Sorted by pool, then VM name (byte order). */
  heldBy(user: string, pool?: string): readonly Assignment[];

  beginIntent(kind: IntentKind, pool: string, vm: string, user?: string, payload?: string): string;
  beginIntents(
    requests: readonly { readonly kind: IntentKind; readonly pool: string; readonly vm: string }[],
  ): string[];
  intent(id: string): Intent | undefined;
  completeIntent(id: string): boolean;
  completeIntents(ids: readonly string[]): boolean[];
  failIntent(id: string, error: string, retryAt: number | null): Intent;
  /** Oldest first. */
  pendingIntents(dueBy?: number): readonly Intent[];
  pruneIntents(before: number): number;
  intentCounts(): Record<IntentState, number>;

  setCondition(pool: string, vm: string, condition: MemberConditionKind, reason: string): void;
  clearCondition(pool: string, vm: string, condition: MemberConditionKind): void;
  /** Sorted by pool, VM, condition. */
  conditions(): readonly MemberCondition[];

  /** Puts a cluster host in maintenance, or takes it out; whether that changed anything. */
  setHostMaintenance(host: string, on: boolean): boolean;
  /** Hosts in maintenance, with when (epoch ms) each went in. */
  hostsInMaintenance(): Map<string, number>;

  addSpareVolume(storagePool: string, volume: string, backingPath: string, allocationBytes: number): void;
  spareVolume(storagePool: string, volume: string): { backingPath: string; allocationBytes: number } | undefined;
  dropSpareVolume(storagePool: string, volume: string): void;

  setConsoleOptions(pool: string, user: string, opts: ConsoleOptions): void;
  consoleOptions(pool: string, user: string): ConsoleOptions | undefined;
  savePolicyDocument(pool: string, policy: MemberMetadata): void;
  policyDocuments(): Map<string, MemberMetadata>;

  forgetVm(pool: string, vm: string): boolean;
  detachPool(pool: string): number;
}
