// Issue 9 D5: one active reconciler per pool on a hypervisor, through the lease on the hypervisor
// (reconciler/lease.ts), on libvirtd's test hypervisor.
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { LEASE_DOMAIN, LeaseHeldError } from "../../reconciler/lease";
import { Reconciler } from "../../reconciler/reconciler";
import { StateStore } from "../../reconciler/store/store";
import { useTestHypervisor, type Setup } from "./harness";
import { NotActiveError } from "../../reconciler/errors";
import { FakeDriver } from "../support/fake-driver";

const h = useTestHypervisor();

/** A second reconciler of `pools` on the same hypervisor, with its own store, counting its libvirt calls. */
function second(pools: readonly string[] | undefined, lease = {}) {
  const calls: string[] = [];
  const driver = new Proxy(h.driver, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== "function" || typeof prop !== "string") return value;
      return (...args: unknown[]) => {
        calls.push(prop);
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  const store = StateStore.open(":memory:");
  const reconciler = new Reconciler({
    driver,
    store,
    retry: { maxAttempts: 1, baseDelayMs: 10 },
    ...(pools ? { onlyPools: pools } : {}),
    lease,
  });
  return { reconciler, store, calls };
}

/** libvirt calls that change something other than the lease itself. */
const actingCalls = (calls: readonly string[]) =>
  calls.filter((c) => !["defineDomain", "domainXml", "undefineDomain", "listDomains"].includes(c));

const leaseName = (s: Setup) => `${LEASE_DOMAIN}.${s.pool}`;

describe("a second reconciler of the same pool", () => {
  it("refuses at start, naming the holder and the fix, having acted on nothing", async () => {
    const s = await h.setup("Lease", { size: 3, prestarted: 1 });
    const other = second([s.pool]);
    const refused = other.reconciler.start();
    await expect(refused).rejects.toBeInstanceOf(LeaseHeldError);
    await expect(refused).rejects.toThrow(
      new RegExp(
        `active for pool ${s.pool.replace(/[?]/g, "\\?")} .*pid ${process.pid} on ${hostname()}.*serve --pools`,
      ),
    );
    expect(actingCalls(other.calls)).toEqual([]);
    // The first one's lease is intact, and it still works.
    expect(await h.driver.domainState(leaseName(s))).toBe("shut off");
    expect((await s.reconciler.take(s.pool, "alice")).pool).toBe(s.pool);
    other.store.close();
  });

  it("starts at once when the first stops (the lease is given back)", async () => {
    const s = await h.setup("Handover", { size: 1 });
    await s.reconciler.stop();
    await expect(h.driver.domainState(leaseName(s))).rejects.toThrow(/failed to get domain/);
    const other = second([s.pool]);
    await other.reconciler.start();
    await other.reconciler.stop();
    other.store.close();
  });

  it("takes over a lease whose holder is gone, or which expired, without waiting", async () => {
    const s = await h.setup("Takeover", { size: 1 });
    await s.reconciler.stop();
    // A holder on this host whose process is gone (kill -9), and one elsewhere that stopped renewing.
    for (const holder of [
      { host: hostname(), pid: 2 ** 22 + 17, renewedAt: Date.now() },
      { host: "elsewhere.example", pid: 1, renewedAt: Date.now() - 60_000 },
    ]) {
      await h.driver.defineDomain(
        `<domain type='test'><name>${leaseName(s)}</name><uuid>${randomUUID()}</uuid><memory>1024</memory>` +
          `<os><type>hvm</type></os><metadata><l:lease xmlns:l='https://vmpools.dev/xmlns/lease/1' id='x' ` +
          `host='${holder.host}' pid='${holder.pid}' renewedAt='${holder.renewedAt}' ttlMs='15000'/></metadata></domain>`,
      );
      const other = second([s.pool]);
      await other.reconciler.start();
      await other.reconciler.stop();
      other.store.close();
    }
  });
});

describe("a new leader of the same state store", () => {
  it("takes over the lease of the store's earlier leader at once, but not another store's, nor a later term's", async () => {
    const s = await h.setup("Term", { size: 1 });
    await s.reconciler.stop();
    const lease = (store: string, term: number) =>
      h.driver.defineDomain(
        `<domain type='test'><name>${leaseName(s)}</name><uuid>${randomUUID()}</uuid><memory>1024</memory>` +
          `<os><type>hvm</type></os><metadata><l:lease xmlns:l='https://vmpools.dev/xmlns/lease/1' id='x' ` +
          `host='elsewhere.example' pid='1' renewedAt='${Date.now()}' ttlMs='60000' store='${store}' term='${term}'/>` +
          `</metadata></domain>`,
      );
    // Renewed just now on another machine, so by time alone it would hold for a minute.
    await lease("db-1", 4);
    const next = second([s.pool], { leadership: () => ({ store: "db-1", term: 5 }) });
    await next.reconciler.start();
    await next.reconciler.stop();
    next.store.close();
    for (const [store, term] of [
      ["db-2", 4],
      ["db-1", 6],
    ] as const) {
      await lease(store, term);
      const other = second([s.pool], { leadership: () => ({ store: "db-1", term: 5 }) });
      await expect(other.reconciler.start()).rejects.toBeInstanceOf(LeaseHeldError);
      other.store.close();
      await h.driver.undefineDomain(leaseName(s));
    }
  });
});

describe("a reconciler of every pool", () => {
  it("refuses while a reconciler of some pools runs", async () => {
    const s = await h.setup("Wide", { size: 1 });
    const wide = second(undefined);
    // Its own pool's lease is held at least (other test files' reconcilers may hold theirs too).
    expect(await h.driver.domainState(leaseName(s))).toBe("shut off");
    await expect(wide.reconciler.start()).rejects.toThrow(/active for pool .* serve --pools/);
    expect(actingCalls(wide.calls)).toEqual([]);
    // Refused, it holds nothing: the pool-wide placeholder is gone again.
    await expect(h.driver.domainState(LEASE_DOMAIN)).rejects.toThrow(/failed to get domain/);
    wide.store.close();
  });

  // On the fake driver: a pool-wide lease on the shared test hypervisor would stop every other
  // test file's reconcilers from starting.
  it("keeps any reconciler of some pools from starting while it runs", async () => {
    const fake = new FakeDriver();
    const make = (onlyPools?: readonly string[]) =>
      new Reconciler({
        driver: fake,
        store: StateStore.open(":memory:"),
        retry: { maxAttempts: 1, baseDelayMs: 10 },
        ...(onlyPools ? { onlyPools } : {}),
      });
    const wide = make();
    await wide.start();
    await expect(make(["Some"]).start()).rejects.toThrow(/active for every pool .*serve --pools/);
    await expect(make().start()).rejects.toBeInstanceOf(LeaseHeldError);
    await wide.stop();
    const narrow = make(["Some"]);
    await narrow.start();
    await narrow.stop();
  });
});

describe("a reconciler that loses its lease", () => {
  it("stops acting and says so", async () => {
    const s = await h.setup("Lost", { size: 2, prestarted: 1 }, { lease: { ttlMs: 300 }, expectFailures: true });
    const lost = new Promise<Error>((resolve) => s.reconciler.once("leaseLost", resolve));
    await h.driver.undefineDomain(leaseName(s)); // as a successor would after the lease expired
    expect((await lost).message).toMatch(/failed to get domain|not found/);
    expect(s.failures.map((f) => f.context)).toContain("lease");
    // Users are told to go to the active one (the API answers 503).
    await expect(s.reconciler.take(s.pool, "alice")).rejects.toBeInstanceOf(NotActiveError);
    expect(s.store.assignments()).toEqual([]);
    // Stopped: the prestarted member powering off is no longer acted on (no revert, no new prestart).
    await h.driver.destroy(s.nameOf(1));
    await new Promise((r) => setTimeout(r, 300));
    await s.reconciler.idle();
    expect(await Promise.all([1, 2].map((i) => h.driver.domainState(s.nameOf(i))))).toEqual(["shut off", "shut off"]);
  });
});
