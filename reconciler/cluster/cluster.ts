// The cluster's connections and what is known of each host: reachable or not, lease held,
// maintenance, load. It decides nothing (hosts.ts does, purely); the inventory and the
// reconciler report facts into it and planners read its picture.
import type { LibvirtDriver } from "../driver/libvirt-driver";
import { UnknownHostError } from "../errors";
import type { HostPicture } from "../pools";
import {
  byHeadroom,
  hostState,
  usable,
  type HostConnection,
  type HostFacts,
  type HostLoad,
  type HostView,
} from "./hosts";

interface MutableFacts {
  reachable: boolean;
  leaseHeld: boolean;
  maintenance: boolean;
  unfitReason?: string;
  unreachableReason?: string;
  /** Why the lease is not ours (another reconciler holds it, it was lost). */
  leaseReason?: string;
  load: HostLoad;
}

export class Cluster {
  private readonly byName = new Map<string, HostConnection>();
  private readonly facts = new Map<string, MutableFacts>();
  private cachedPicture?: HostPicture;

  constructor(readonly connections: readonly HostConnection[]) {
    if (connections.length === 0) throw new RangeError("a cluster needs at least one host");
    for (const c of connections) {
      if (this.byName.has(c.name)) throw new RangeError(`host ${c.name} is given twice`);
      this.byName.set(c.name, c);
      this.facts.set(c.name, { reachable: true, leaseHeld: false, maintenance: false, load: { running: 0 } });
    }
  }

  /** Host names, in the order given. */
  names(): readonly string[] {
    return this.connections.map((c) => c.name);
  }

  /** The only host, when there is one (a single-connection reconciler). */
  get single(): string | undefined {
    return this.connections.length === 1 ? this.connections[0]!.name : undefined;
  }

  connection(host: string): HostConnection {
    const c = this.byName.get(host);
    if (!c) throw new UnknownHostError(host, this.names());
    return c;
  }

  driver(host: string): LibvirtDriver {
    return this.connection(host).driver;
  }

  has(host: string): boolean {
    return this.byName.has(host);
  }

  /** It answers and its lease is ours: this reconciler may act on it (whatever its state). */
  actsOn(host: string): boolean {
    const f = this.factsOf(host);
    return f.reachable && f.leaseHeld;
  }

  leaseHeld(host: string): boolean {
    return this.factsOf(host).leaseHeld;
  }

  view(host: string): HostView {
    const f = this.factsOf(host);
    return hostState(host, { ...f, ...(f.leaseHeld ? {} : { unfitReason: f.leaseReason ?? f.unfitReason }) });
  }

  views(): readonly HostView[] {
    return this.names().map((h) => this.view(h));
  }

  load(host: string): HostLoad {
    return this.factsOf(host).load;
  }

  /** What the planners see: usable and visible hosts, headroom order. Rebuilt after every change. */
  picture(): HostPicture {
    if (this.cachedPicture) return this.cachedPicture;
    const states = new Map(this.names().map((h) => [h, this.view(h).state]));
    const acts = new Map(this.names().map((h) => [h, this.actsOn(h)]));
    const loads = new Map(this.names().map((h) => [h, this.factsOf(h).load]));
    this.cachedPicture = {
      usable: (h) => usable(states.get(h)) && acts.get(h) === true,
      visible: (h) => acts.get(h) === true,
      byHeadroom: byHeadroom(loads),
    };
    return this.cachedPicture;
  }

  /** Reports whether the host answered; returns true when that changed. */
  setReachable(host: string, reachable: boolean, reason?: string): boolean {
    const f = this.factsOf(host);
    const changed = f.reachable !== reachable;
    f.reachable = reachable;
    f.unreachableReason = reachable ? undefined : reason;
    this.changed();
    return changed;
  }

  setLeaseHeld(host: string, held: boolean, reason?: string): void {
    const f = this.factsOf(host);
    f.leaseHeld = held;
    f.leaseReason = held ? undefined : reason;
    this.changed();
  }

  /** The host is unfit for members (e.g. an attestation verdict), or fit again (undefined). */
  setUnfit(host: string, reason: string | undefined): void {
    this.factsOf(host).unfitReason = reason;
    this.changed();
  }

  setMaintenance(host: string, on: boolean): void {
    this.factsOf(host).maintenance = on;
    this.changed();
  }

  setLoad(host: string, load: HostLoad): void {
    this.factsOf(host).load = load;
    this.changed();
  }

  private factsOf(host: string): MutableFacts & HostFacts {
    const f = this.facts.get(host);
    if (!f) throw new UnknownHostError(host, this.names());
    return f;
  }

  private changed(): void {
    this.cachedPicture = undefined;
  }
}
