import type { StateStoreApi } from "./store/api";
import { checkMaxPerUser, type ClaimRequest, type ClaimResult, type IntentKind } from "./store/store";

/** What a claim queue needs of the store. */
export type ClaimStore = Pick<StateStoreApi, "claimMany" | "completeIntents" | "beginIntents">;

interface Waiting {
  readonly request: ClaimRequest;
  readonly candidates: (pool: string) => readonly string[];
  readonly resolve: (r: ClaimResult) => void;
  readonly reject: (e: unknown) => void;
}

/**
 * Group commit for takes: claims asked for in the same turn of the event loop are made in one
 * store transaction on the next turn (`setImmediate`), so a burst of N takes costs a few commits
 * (fsyncs) instead of N, and the free members are worked out once per pool per batch instead of
 * once per take. Measured in docs/benchmarks.md (reconciler): a burst of 1000 takes went from
 * about a second of such work to a few milliseconds.
 *
 * The candidates are read when the batch runs, not when the take asked: a member that turned
 * busy (reverting, stopping) in between is not handed out. Each claim is still atomic and checked
 * against the user's limit, in arrival order (see StateStoreApi.claimMany).
 */
export class ClaimQueue {
  private waiting: Waiting[] = [];
  private completions: { id: string; resolve: (done: boolean) => void; reject: (e: unknown) => void }[] = [];
  private begins: {
    request: { kind: IntentKind; pool: string; vm: string };
    resolve: (id: string) => void;
    reject: (e: unknown) => void;
  }[] = [];

  constructor(private readonly store: ClaimStore) {}

  /**
   * Resolves with the claim's result once its batch committed. `candidates(pool)` gives the
   * pool's free members in preference order as of the batch; of the takes for one pool in a
   * batch, the first one's function is used (they are all the same question).
   */
  claim(request: ClaimRequest, candidates: (pool: string) => readonly string[]): Promise<ClaimResult> {
    // A bad limit fails its own take, not the batch it would have joined.
    checkMaxPerUser(request.maxPerUser);
    return new Promise((resolve, reject) => {
      if (this.waiting.length === 0) setImmediate(() => this.flush());
      this.waiting.push({ request, candidates, resolve, reject });
    });
  }

  /**
   * Marks a take's intent done, in one transaction with the others of this turn; resolves once
   * committed, with whether it was still pending (StateStoreApi.completeIntent).
   */
  complete(intentId: string): Promise<boolean> {
    return new Promise((resolve, reject) => {
      if (this.completions.length === 0) setImmediate(() => this.flushCompletions());
      this.completions.push({ id: intentId, resolve, reject });
    });
  }

  /**
   * Records a pending intent without a user (the replacement prestarts a burst of takes begins),
   * in one transaction with the others of this turn; resolves with its id once committed.
   */
  begin(kind: IntentKind, pool: string, vm: string): Promise<string> {
    return new Promise((resolve, reject) => {
      if (this.begins.length === 0) setImmediate(() => this.flushBegins());
      this.begins.push({ request: { kind, pool, vm }, resolve, reject });
    });
  }

  private flushBegins(): void {
    const batch = this.begins;
    this.begins = [];
    try {
      const ids = this.store.beginIntents(batch.map((b) => b.request));
      batch.forEach((b, i) => b.resolve(ids[i]!));
    } catch (e) {
      for (const b of batch) b.reject(e);
    }
  }

  private flushCompletions(): void {
    const batch = this.completions;
    this.completions = [];
    let done: boolean[];
    try {
      done = this.store.completeIntents(batch.map((c) => c.id));
    } catch {
      // Rolled back (an unknown id, say): complete the others one by one, each with its own answer.
      for (const c of batch) {
        try {
          c.resolve(this.store.completeIntents([c.id])[0]!);
        } catch (one) {
          c.reject(one);
        }
      }
      return;
    }
    batch.forEach((c, i) => c.resolve(done[i]!));
  }

  private flush(): void {
    const batch = this.waiting;
    this.waiting = [];
    const byPool = new Map<string, (pool: string) => readonly string[]>();
    for (const w of batch) if (!byPool.has(w.request.pool)) byPool.set(w.request.pool, w.candidates);
    let results: ClaimResult[];
    try {
      results = this.store.claimMany(
        batch.map((w) => w.request),
        (pool) => byPool.get(pool)!(pool),
      );
    } catch (e) {
      // The transaction rolled back: nothing of the batch was claimed.
      for (const w of batch) w.reject(e);
      return;
    }
    batch.forEach((w, i) => w.resolve(results[i]!));
  }
}

const queues = new WeakMap<ClaimStore, ClaimQueue>();

/** The claim queue of a store (one per store, made on first use). */
export function claimQueueOf(store: ClaimStore): ClaimQueue {
  let queue = queues.get(store);
  if (!queue) queues.set(store, (queue = new ClaimQueue(store)));
  return queue;
}
