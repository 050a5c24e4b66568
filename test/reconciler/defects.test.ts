// Failures hostile testing found in the reconciler (issue 9, D1–D14), each reproduced on libvirtd's
// test hypervisor; every test here failed before its fix.
import { performance } from "node:perf_hooks";
import type { LibvirtDriver, VirshDriver } from "../../reconciler/driver/libvirt-driver";
import { useTestHypervisor } from "./harness";

const h = useTestHypervisor();

describe("D4: prestart after a burst of returns", () => {
  it("refills the prestarted members as soon as the returned members' checks finish, not at the next resync", async () => {
    const s = await h.setup("Burst", { size: 4, prestarted: 2 }, { resyncIntervalMs: 600_000 });
    const users = ["alice", "bob", "carol", "dave"];
    const taken = await Promise.all(users.map((u) => s.reconciler.take(s.pool, u)));
    await s.reconciler.idle();
    expect(s.reconciler.status().pools[0]!.counts).toMatchObject({ held: 4, prestarted: 0 });

    await Promise.all(taken.map((t, i) => s.reconciler.return(s.pool, t.vm, { user: users[i]! })));
    await s.reconciler.idle();
    expect(s.reconciler.status().pools[0]!.counts).toEqual({ members: 4, held: 0, prestarted: 2, free: 2 });
  });
});

/** The driver with a count of calls per method. */
function counting(driver: VirshDriver): { driver: LibvirtDriver; calls: Map<string, number> } {
  const calls = new Map<string, number>();
  const proxy = new Proxy(driver, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== "function" || typeof prop !== "string") return value;
      return (...args: unknown[]) => {
        calls.set(prop, (calls.get(prop) ?? 0) + 1);
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { driver: proxy, calls };
}

describe("D6: takes naming an unknown pool", () => {
  it("share one listing of libvirt and do not slow down a normal take", async () => {
    let counted: ReturnType<typeof counting> | undefined;
    const s = await h.setup("Unknown", { size: 2 }, { driver: (d) => (counted = counting(d)).driver });
    counted!.calls.clear();
    const bogus = Array.from({ length: 200 }, (_, i) =>
      s.reconciler.take(`NoSuchPool${i % 7}`, `user${i}`).then(
        () => "taken",
        (e: Error) => e.name,
      ),
    );
    const t0 = performance.now();
    const normal = await s.reconciler.take(s.pool, "alice");
    const normalMs = performance.now() - t0;
    expect(new Set(await Promise.all(bogus))).toEqual(new Set(["UnknownPoolError"]));
    expect(normal.pool).toBe(s.pool);
    expect(counted!.calls.get("listDomains") ?? 0).toBeLessThanOrEqual(1);
    expect(normalMs).toBeLessThan(500);
    // Within a second of that listing, refusals cost no libvirt call at all.
    counted!.calls.clear();
    await expect(s.reconciler.take("NoSuchPool", "bob")).rejects.toThrow(/NoSuchPool/);
    expect([...counted!.calls.keys()]).toEqual([]);
  });
});
