// Work keyed by member: one piece at a time per member, members independent of each other, and
// level-triggered de-duplication as in controller-runtime's work queue: a check queued for a
// member that has not started yet is not queued again, because when it runs it reads the
// member's state as it is then.
import { PASSIVE_ACTIVITIES, type MemberActivity } from "./pools";
import { asError } from "./util";

/** Activities that only look and then act on what they find: queuing a second one adds nothing. */
const LEVEL_TRIGGERED: ReadonlySet<MemberActivity> = new Set(["settle", "refresh", "mark"]);

interface Queued {
  readonly activity: MemberActivity;
  started: boolean;
  readonly result: Promise<unknown>;
}

export interface WorkQueueHooks {
  /** A member's queue ran empty after `last` (a planner that skipped it while busy may want it now). */
  readonly onMemberIdle: (vm: string, last: MemberActivity) => void;
  /** Background work failed. */
  readonly onFailure: (context: string, error: Error, vm?: string) => void;
}

export class MemberWorkQueue {
  /** Per member: what is queued on it, in order (the first one runs). */
  private readonly queued = new Map<string, Queued[]>();
  private readonly tails = new Map<string, Promise<void>>();
  /** Background work not bound to one member's queue (resyncs, spares), awaited by `idle()`. */
  private readonly tasks = new Set<Promise<void>>();

  constructor(private readonly hooks: WorkQueueHooks) {}

  /** Runs `work` after every earlier piece of work on the member. */
  run<T>(vm: string, activity: MemberActivity, work: () => Promise<T>): Promise<T> {
    const list = this.queued.get(vm) ?? [];
    if (LEVEL_TRIGGERED.has(activity)) {
      const waiting = list.find((q) => q.activity === activity && !q.started);
      if (waiting) return waiting.result as Promise<T>;
    }
    const entry: { activity: MemberActivity; started: boolean; result?: Promise<T> } = { activity, started: false };
    const result = (this.tails.get(vm) ?? Promise.resolve()).then(() => {
      entry.started = true;
      return work();
    });
    entry.result = result;
    list.push(entry as Queued);
    this.queued.set(vm, list);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(vm, tail);
    void tail.then(() => {
      list.splice(list.indexOf(entry as Queued), 1);
      if (this.tails.get(vm) === tail) this.tails.delete(vm);
      if (list.length > 0) return;
      this.queued.delete(vm);
      this.hooks.onMemberIdle(vm, activity);
    });
    return result;
  }

  /** Whether work other than passive work is queued on the member: that work keeps its state up to date. */
  isBusy(vm: string): boolean {
    return this.queued.get(vm)?.some((q) => !PASSIVE_ACTIVITIES.has(q.activity)) ?? false;
  }

  /** Per member with queued work: what occupies it (passive work only when nothing else is queued). */
  activities(): Map<string, MemberActivity> {
    const out = new Map<string, MemberActivity>();
    for (const [vm, list] of this.queued) {
      out.set(vm, list.find((q) => !PASSIVE_ACTIVITIES.has(q.activity))?.activity ?? list[0]!.activity);
    }
    return out;
  }

  /** Background work: a failure goes to `onFailure`, and `idle()` waits for it. */
  track(context: string, work: Promise<unknown>, vm?: string): void {
    const tracked = work.then(
      () => undefined,
      (e: unknown) => this.hooks.onFailure(context, asError(e), vm),
    );
    this.tasks.add(tracked);
    void tracked.then(() => this.tasks.delete(tracked));
  }

  /** Whether anything is queued or running. */
  get busy(): boolean {
    return this.tasks.size > 0 || this.tails.size > 0;
  }

  /** Settles once everything queued or running now has. */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.tasks, ...this.tails.values()]);
  }
}
