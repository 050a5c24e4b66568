// What a take's or a return's answer waits for, on FakeDriver: the libvirt calls made before
// the answer, counted exactly. A take of a prestarted member needs none while the event stream
// vouches for its state; holder marks are written after the answer, for takes and returns alike.
import { HOLDER_NAMESPACE, parseHolderXml } from "../../core/metadata";
import { Cluster } from "../../reconciler/cluster/cluster";
import { Inventory } from "../../reconciler/inventory";
import { StateStore } from "../../reconciler/store/store";
import { FakeDriver } from "../support/fake-driver";
import { closeFakePools, setupFakePool, type Setup } from "../support/fake-pool";
import { memberMetadataFixture } from "../support/fixtures";

afterEach(closeFakePools);

/**
 * Runs `act`; resolves with its result and the libvirt calls about its VM made until it resolved
 * (other members' calls, such as the replacement prestart a take begins, run alongside).
 */
async function callsBefore<T extends { readonly vm: string }>(
  fake: FakeDriver,
  act: () => Promise<T>,
): Promise<{ result: T; calls: string[] }> {
  const from = fake.callLog().length;
  // Read in the answer's own continuation: the work queued after it (holder marks) is not yet
  // running then.
  return act().then((result) => ({
    result,
    calls: fake
      .callLog()
      .slice(from)
      .filter((c) => c.subject === result.vm)
      .map((c) => c.method),
  }));
}

async function started(props: Parameters<typeof setupFakePool>[0]): Promise<Setup> {
  const s = await setupFakePool(props);
  await s.started;
  await s.reconciler.idle();
  return s;
}

const holderMark = async (s: Setup, vm: string) => parseHolderXml(await s.fake.getMetadata(vm, HOLDER_NAMESPACE));

describe("a take of a prestarted member", () => {
  it("makes no libvirt call before its answer while events flow; the holder mark follows", async () => {
    const s = await started({ size: 2, prestarted: 1 });
    const { result, calls } = await callsBefore(s.fake, () => s.reconciler.take(s.pool, "alice"));
    expect(result.started).toBe(false);
    expect(calls).toEqual([]);
    await s.reconciler.idle();
    expect(await holderMark(s, result.vm)).toBe("alice");
  });

  it("asks libvirt for the state while the event stream is down, and not again once a listing follows its return", async () => {
    const s = await started({ size: 3, prestarted: 2 });
    s.fake.events.disconnect();
    const first = await callsBefore(s.fake, () => s.reconciler.take(s.pool, "alice"));
    expect(first.result.started).toBe(false);
    expect(first.calls).toEqual(["domainState"]);
    await s.reconciler.idle();

    s.fake.events.reconnect();
    await s.reconciler.idle();
    const second = await callsBefore(s.fake, () => s.reconciler.take(s.pool, "bob"));
    expect(second.result.started).toBe(false);
    expect(second.calls).toEqual([]);
  });
});

describe("the states the inventory vouches for", () => {
  const record = {
    name: "m1",
    uuid: "00000000-0000-4000-8000-000000000001",
    host: "localhost",
    state: "running" as const,
  };
  const inventory = () => {
    const store = StateStore.open(":memory:");
    const cluster = new Cluster([{ name: "localhost", uri: "", driver: new FakeDriver() }]);
    const inv = new Inventory(cluster, store, () => true, Date.now);
    inv.set({ ...record, metadata: memberMetadataFixture() });
    return inv;
  };

  it("none before events flow, or after they stop", () => {
    const inv = inventory();
    expect(inv.vouchedState("m1")).toBeUndefined();
    inv.setEventsFlowing("localhost", true);
    expect(inv.vouchedState("m1")).toBe("running");
    inv.setEventsFlowing("localhost", false);
    expect(inv.vouchedState("m1")).toBeUndefined();
  });

  it("not a member's after a stop was reported, until its state is read or reported again", () => {
    const inv = inventory();
    inv.setEventsFlowing("localhost", true);
    inv.doubt("m1");
    expect(inv.vouchedState("m1")).toBeUndefined();
    // A listing's record is no read of the state now: it may predate the stop.
    inv.set({ ...record, metadata: memberMetadataFixture() });
    expect(inv.vouchedState("m1")).toBeUndefined();
    inv.setState("m1", "shut off");
    expect(inv.vouchedState("m1")).toBe("shut off");
  });
});

describe("a return", () => {
  it("answers before the holder mark's removal, which follows", async () => {
    const s = await started({ size: 1, prestarted: 0, type: "automatic", stateful: true });
    const taken = await s.reconciler.take(s.pool, "alice");
    await s.reconciler.idle();
    expect(await holderMark(s, taken.vm)).toBe("alice");

    const removal = s.fake.pauseNext("removeMetadata", taken.vm);
    const { result, calls } = await callsBefore(s.fake, () => s.reconciler.return(s.pool, taken.vm, { user: "alice" }));
    expect(result.reverted).toBe(false);
    expect(calls).not.toContain("removeMetadata");
    expect(s.store.holder(s.pool, taken.vm)).toBeUndefined();
    await removal.reached;
    removal.release();
    await s.reconciler.idle();
    expect(await holderMark(s, taken.vm)).toBeUndefined();
  });
});
