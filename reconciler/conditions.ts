// What keeps a member out of service, kept in the store so that a restart never hands out a
// member whose revert did not finish, nor prestarts one whose starts kept failing.
import type { StateStoreApi } from "./store/api";
import type { MemberConditionKind } from "./store/store";

export class MemberConditions {
  private readonly reasons = new Map<MemberConditionKind, Map<string, string>>([
    ["revert-needed", new Map()],
    ["prestart-gave-up", new Map()],
  ]);

  constructor(private readonly store: StateStoreApi) {}

  /** Loads what the store holds for the pools this reconciler manages. */
  load(manages: (pool: string) => boolean): void {
    for (const c of this.store.conditions()) if (manages(c.pool)) this.map(c.condition).set(c.vm, c.reason);
  }

  /** Persists first: the member must stay out of service across a crash. */
  set(pool: string | undefined, vm: string, kind: MemberConditionKind, reason: string): void {
    if (pool !== undefined) this.store.setCondition(pool, vm, kind, reason);
    this.map(kind).set(vm, reason);
  }

  clear(pool: string | undefined, vm: string, kind: MemberConditionKind): void {
    if (!this.map(kind).delete(vm)) return;
    if (pool !== undefined) this.store.clearCondition(pool, vm, kind);
  }

  /** Forgets the member's conditions in memory (the store forgets them with the member). */
  forget(vm: string): void {
    for (const m of this.reasons.values()) m.delete(vm);
  }

  reason(kind: MemberConditionKind, vm: string): string | undefined {
    return this.map(kind).get(vm);
  }

  has(kind: MemberConditionKind, vm: string): boolean {
    return this.map(kind).has(vm);
  }

  members(kind: MemberConditionKind): ReadonlySet<string> {
    return new Set(this.map(kind).keys());
  }

  private map(kind: MemberConditionKind): Map<string, string> {
    return this.reasons.get(kind)!;
  }
}
