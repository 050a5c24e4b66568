// Group commit of takes: StateStore.claimMany / completeIntents and the ClaimQueue that batches
// one turn's takes into them, alone and under the reconciler on libvirt's test hypervisor.
import fc from "fast-check";
import { ClaimQueue } from "../../reconciler/claims";
import { StateStore, type ClaimRequest, type ClaimResult } from "../../reconciler/store/store";
import { useTestHypervisor } from "./harness";

const stores: StateStore[] = [];
const open = (): StateStore => {
  const s = StateStore.open(":memory:");
  stores.push(s);
  return s;
};
afterEach(() => {
  for (const s of stores.splice(0)) s.close();
});

/** The store with its batch calls counted. */
function counting(store: StateStore) {
  const counts = { claimMany: 0, completeIntents: 0, beginIntents: 0 };
  return {
    counts,
    claimMany: (r: readonly ClaimRequest[], c: (pool: string) => readonly string[]) => {
      counts.claimMany++;
      return store.claimMany(r, c);
    },
    completeIntents: (ids: readonly string[]) => {
      counts.completeIntents++;
      return store.completeIntents(ids);
    },
    beginIntents: (r: Parameters<StateStore["beginIntents"]>[0]) => {
      counts.beginIntents++;
      return store.beginIntents(r);
    },
  };
}

const vmOf = (r: ClaimResult): string => {
  if ("refused" in r) throw new Error(`claim refused: ${r.refused}`);
  return r.vm;
};

describe("StateStore.claimMany (property)", () => {
  const POOLS = ["a", "b"] as const;
  const USERS = ["u0", "u1", "u2", "u3", "u4"] as const;
  const vm = (i: number) => `vm-${i}`;
  type Step =
    | { readonly t: "batch"; readonly takes: readonly ClaimRequest[] }
    | { readonly t: "release"; readonly pool: string; readonly vm: number };
  const take: fc.Arbitrary<ClaimRequest> = fc.record({
    pool: fc.constantFrom(...POOLS),
    user: fc.constantFrom(...USERS),
    maxPerUser: fc.integer({ min: 1, max: 3 }),
  });
  const step: fc.Arbitrary<Step> = fc.oneof(
    { weight: 3, arbitrary: fc.record({ t: fc.constant("batch" as const), takes: fc.array(take, { maxLength: 12 }) }) },
    fc.record({
      t: fc.constant("release" as const),
      pool: fc.constantFrom(...POOLS),
      vm: fc.integer({ min: 0, max: 7 }),
    }),
  );
  // Each pool's free members in preference order, as the reconciler gives them: a permutation of
  // some of its members, held ones left out (claimMany must skip the ones its batch claims).
  const prefs = fc.record({
    a: fc.uniqueArray(fc.integer({ min: 0, max: 7 }), { maxLength: 8 }),
    b: fc.uniqueArray(fc.integer({ min: 0, max: 7 }), { maxLength: 8 }),
  });

  it("gives the results of one claim per request in order, never holds a VM twice nor breaks a limit", () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 25 }), prefs, (steps, order) => {
        const batched = StateStore.open(":memory:");
        const oneByOne = StateStore.open(":memory:");
        try {
          for (const s of steps) {
            if (s.t === "release") {
              expect(batched.release(s.pool, vm(s.vm))).toBe(oneByOne.release(s.pool, vm(s.vm)));
              continue;
            }
            const free = (store: StateStore, pool: string) => {
              const held = new Set(store.assignments(pool).map((x) => x.vm));
              return order[pool as "a" | "b"].map(vm).filter((v) => !held.has(v));
            };
            const heldBefore = new Map(
              USERS.flatMap((u) => POOLS.map((p) => [`${p}/${u}`, batched.heldBy(u, p).length])),
            );
            const asked: string[] = [];
            const got = batched.claimMany(s.takes, (pool) => {
              asked.push(pool);
              return free(batched, pool);
            });
            // The candidates are read at most once per pool of the batch (not for takes refused by their limit).
            expect(new Set(asked).size).toBe(asked.length);
            for (const pool of asked) expect(s.takes.map((t) => t.pool)).toContain(pool);
            const want = s.takes.map((t) => oneByOne.claim(t.pool, t.user, free(oneByOne, t.pool), t.maxPerUser));
            const strip = (r: ClaimResult) => ("refused" in r ? r : { vm: r.vm });
            expect(got.map(strip)).toEqual(want.map(strip));
            // Each granted take was within its own limit counting what the batch gave before it.
            const holding = new Map(heldBefore);
            got.forEach((r, i) => {
              const t = s.takes[i]!;
              if (!("vm" in r)) return;
              const key = `${t.pool}/${t.user}`;
              holding.set(key, holding.get(key)! + 1);
              expect(holding.get(key)).toBeLessThanOrEqual(t.maxPerUser);
              expect(batched.intent(r.intentId)).toMatchObject({
                kind: "take",
                vm: r.vm,
                user: t.user,
                state: "pending",
              });
            });
            const all = batched.assignments();
            expect(new Set(all.map((x) => `${x.pool}/${x.vm}`)).size).toBe(all.length);
          }
        } finally {
          batched.close();
          oneByOne.close();
        }
      }),
      { numRuns: 300 },
    );
  });

  it("rolls the whole batch back when it fails, so none of its takes holds anything", () => {
    const s = open();
    expect(() =>
      s.claimMany(
        [
          { pool: "a", user: "alice", maxPerUser: 1 },
          { pool: "b", user: "bob", maxPerUser: 1 },
        ],
        (pool) => {
          if (pool === "b") throw new Error("listing of b failed");
          return ["vm-1"];
        },
      ),
    ).toThrow("listing of b failed");
    expect(s.assignments()).toEqual([]);
    expect(s.pendingIntents()).toEqual([]);
  });

  it("checks every limit before it starts, naming the bad value", () => {
    const s = open();
    expect(() => s.claimMany([{ pool: "a", user: "alice", maxPerUser: 0 }], () => ["vm-1"])).toThrow(
      "maxPerUser must be an integer ≥ 1 (or Infinity), got 0",
    );
  });
});

describe("ClaimQueue", () => {
  it("makes the claims asked in one turn in one transaction, in the order asked", async () => {
    const store = open();
    const c = counting(store);
    const queue = new ClaimQueue(c);
    const names = Array.from({ length: 10 }, (_, i) => `vm-${i}`);
    let reads = 0;
    const candidates = () => {
      reads++;
      const held = new Set(store.assignments("p").map((a) => a.vm));
      return names.filter((n) => !held.has(n));
    };
    const users = ["u0", "u1", "u0", "u2", "u0", "u1"];
    const results = await Promise.all(users.map((user) => queue.claim({ pool: "p", user, maxPerUser: 2 }, candidates)));
    expect(c.counts.claimMany).toBe(1);
    expect(reads).toBe(1);
    // u0's third take is over its limit of 2; the others get the free members in preference order.
    expect(results.map((r) => ("refused" in r ? r.refused : r.vm))).toEqual([
      "vm-0",
      "vm-1",
      "vm-2",
      "vm-3",
      "limit",
      "vm-4",
    ]);
    expect(store.heldBy("u0", "p").map((a) => a.vm)).toEqual(["vm-0", "vm-2"]);
    // A later turn is a new batch.
    await queue.claim({ pool: "p", user: "u3", maxPerUser: 2 }, candidates);
    expect(c.counts.claimMany).toBe(2);
  });

  it("reads the candidates when the batch runs, not when the take asked", async () => {
    const queue = new ClaimQueue(open());
    let free = ["vm-1", "vm-2"];
    const claimed = queue.claim({ pool: "p", user: "alice", maxPerUser: 1 }, () => free);
    free = ["vm-2"]; // vm-1 turned busy (a revert began) before the batch ran
    expect(vmOf(await claimed)).toBe("vm-2");
  });

  it("fails a take with a bad limit at once, without spoiling the batch it would have joined", async () => {
    const queue = new ClaimQueue(open());
    const good = queue.claim({ pool: "p", user: "alice", maxPerUser: 1 }, () => ["vm-1"]);
    expect(() => queue.claim({ pool: "p", user: "bob", maxPerUser: 1.5 }, () => ["vm-1"])).toThrow(
      "maxPerUser must be an integer ≥ 1 (or Infinity), got 1.5",
    );
    expect(vmOf(await good)).toBe("vm-1");
  });

  it("rejects every take of a batch whose transaction failed", async () => {
    const store = open();
    const queue = new ClaimQueue(store);
    const a = queue.claim({ pool: "a", user: "alice", maxPerUser: 1 }, () => ["vm-1"]);
    const b = queue.claim({ pool: "b", user: "bob", maxPerUser: 1 }, () => {
      throw new Error("b's members are unknown");
    });
    await expect(a).rejects.toThrow("b's members are unknown");
    await expect(b).rejects.toThrow("b's members are unknown");
    expect(store.assignments()).toEqual([]);
  });

  it("completes the intents of one turn in one transaction; an unknown one fails alone", async () => {
    const store = open();
    const c = counting(store);
    const queue = new ClaimQueue(c);
    const ids = ["vm-1", "vm-2", "vm-3"].map((vm) => store.beginIntent("take", "p", vm, "alice"));
    const done = ids.map((id) => queue.complete(id));
    const again = queue.complete(ids[0]!);
    const unknown = queue.complete("no-such-intent");
    await expect(Promise.all(done)).resolves.toEqual([true, true, true]);
    await expect(again).resolves.toBe(false); // already done by the first completion
    await expect(unknown).rejects.toThrow("unknown intent no-such-intent");
    for (const id of ids) expect(store.intent(id)?.state).toBe("done");
    expect(c.counts.completeIntents).toBe(1 + 5); // the batch, then each of the five alone after it failed
  });

  it("begins the intents of one turn (a burst's replacement prestarts) in one transaction", async () => {
    const store = open();
    const c = counting(store);
    const queue = new ClaimQueue(c);
    const ids = await Promise.all(["vm-1", "vm-2", "vm-3"].map((vm) => queue.begin("prestart", "p", vm)));
    expect(c.counts.beginIntents).toBe(1);
    expect(ids.map((id) => [store.intent(id)?.kind, store.intent(id)?.vm, store.intent(id)?.state])).toEqual([
      ["prestart", "vm-1", "pending"],
      ["prestart", "vm-2", "pending"],
      ["prestart", "vm-3", "pending"],
    ]);
    // The next turn's begin is a transaction of its own.
    await queue.begin("prestart", "p", "vm-4");
    expect(c.counts.beginIntents).toBe(2);
  });
});

describe("takes through the reconciler on libvirt's test hypervisor", () => {
  const h = useTestHypervisor();

  it("claims a burst of takes in a few transactions, never twice and within every limit", async () => {
    const s = await h.setup("Burst", { size: 12, prestarted: 2, maxVmsPerUser: 2 });
    const claimMany = jest.spyOn(s.store, "claimMany");
    const claim = jest.spyOn(s.store, "claim");
    const users = Array.from({ length: 30 }, (_, i) => `user${i % 10}`);
    const answers = await Promise.allSettled(users.map((u) => s.reconciler.take(s.pool, u)));
    await s.reconciler.idle();
    const taken = answers.flatMap((a, i) => (a.status === "fulfilled" ? [{ user: users[i]!, vm: a.value.vm }] : []));
    const refused = answers.flatMap((a) => (a.status === "rejected" ? [(a.reason as { code?: string }).code] : []));
    expect(taken).toHaveLength(12);
    expect(new Set(taken.map((t) => t.vm)).size).toBe(12);
    // 10 users × 2 would be 20, the pool has 12: every other take is refused by limit or by nothing free.
    expect(refused).toHaveLength(18);
    for (const code of refused) expect(["user-limit", "no-free-vm"]).toContain(code);
    for (let u = 0; u < 10; u++) expect(s.store.heldBy(`user${u}`, s.pool).length).toBeLessThanOrEqual(2);
    expect(
      s.store
        .assignments(s.pool)
        .map((a) => `${a.user}:${a.vm}`)
        .sort(),
    ).toEqual(taken.map((t) => `${t.user}:${t.vm}`).sort());
    // One batch for the 30 takes asked in one turn (a take whose holder was lost claims again).
    expect(claimMany).toHaveBeenCalledTimes(1);
    expect(claimMany.mock.calls[0]![0]).toHaveLength(30);
    expect(claim).not.toHaveBeenCalled();
    expect(s.store.pendingIntents()).toEqual([]);
  });
});
