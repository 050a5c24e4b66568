// One active reconciler per pool on a hypervisor (issue 9 D5): two reconcilers acting on the same
// members undo each other's work (a second `serve` shut down and reverted a VM the first had
// handed out). The lease lives on the hypervisor itself, so it holds whichever machine a
// reconciler runs on: an inactive placeholder domain, never started, whose metadata names the
// holder. libvirt defines a name only once (a second define with another UUID is refused), which
// makes taking the lease atomic; renewing it rewrites the metadata by the holder's own UUID, so a
// holder that lost the lease cannot renew someone else's.
import { RefusalError } from "./refusal";
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import { buildXml, childElements, el, elementsInNamespace, parseXml } from "../core/xml";
import type { LibvirtDriver } from "./driver/libvirt-driver";
import { VirshError } from "./driver/virsh-session";

export const LEASE_NAMESPACE = "https://vmpools.dev/xmlns/lease/1";
const LEASE_PREFIX = "vmpoolslease";
/** Placeholder domains are named `vmpools-reconciler` (every pool) or `vmpools-reconciler.<pool>`. */
export const LEASE_DOMAIN = "vmpools-reconciler";

/** Who holds a lease, as its placeholder's metadata says. */
export interface LeaseHolder {
  readonly id: string;
  readonly host: string;
  readonly pid: number;
  /** Epoch ms of the last renewal; the lease is void `ttlMs` after it. */
  readonly renewedAt: number;
  readonly ttlMs: number;
  /** The state store the holder leads, and its leader term there (see store/leader.ts). */
  readonly store?: string;
  readonly term?: number;
}

/** Another reconciler holds a lease this one needs. */
export class LeaseHeldError extends RefusalError {
  readonly code = "lease-held" as const;
  constructor(
    readonly scope: string,
    readonly holder: LeaseHolder,
  ) {
    super(
      `another vmpools reconciler is active for ${scope} on this hypervisor (pid ${holder.pid} on ` +
        `${holder.host}, renewed ${new Date(holder.renewedAt).toISOString()}); stop it, or give each ` +
        `reconciler its own pools with serve --pools`,
    );
    this.name = "LeaseHeldError";
  }
}

export interface LeaseOptions {
  /** Pools this reconciler manages; undefined: every pool, which conflicts with any other reconciler. */
  readonly pools?: readonly string[];
  /** How long a lease lasts without renewal (it is renewed every third of it). @default 15000 */
  readonly ttlMs?: number;
  /** The libvirt domain type the placeholder is defined with (`test` on the test hypervisor). @default "qemu" */
  readonly domainType?: string;
  /** Whether a holder on this host is still running. @default signal 0 to its pid */
  readonly isAlive?: (holder: LeaseHolder) => boolean;
  /**
   * The state store this reconciler leads and its term: a lease held by an earlier leader of the
   * same store is void at once (that leader's term is over and the store refuses its writes), so
   * a standby taking over need not wait out the lease. @default none (leases expire by time only)
   */
  readonly leadership?: () => { readonly store: string; readonly term: number } | undefined;
}

const notFound = (e: unknown) => e instanceof VirshError && e.notFound;
const exists = (e: unknown) => e instanceof VirshError && /already exists/.test(e.detail);

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function renderHolder(h: LeaseHolder) {
  return el(`${LEASE_PREFIX}:lease`, {
    [`xmlns:${LEASE_PREFIX}`]: LEASE_NAMESPACE,
    id: h.id,
    host: h.host,
    pid: h.pid,
    renewedAt: h.renewedAt,
    ttlMs: h.ttlMs,
    ...(h.store === undefined ? {} : { store: h.store, term: h.term }),
  });
}

export function parseLeaseHolder(xml: string | undefined): LeaseHolder | undefined {
  const root = xml === undefined ? undefined : parseXml(xml);
  const e = root && elementsInNamespace(root, LEASE_NAMESPACE, "lease")[0];
  if (!e) return undefined;
  const { id, host, pid, renewedAt, ttlMs, store, term } = e.attrs;
  if (!id || !host || !pid || !renewedAt || !ttlMs) return undefined;
  const holder = { id, host, pid: Number(pid), renewedAt: Number(renewedAt), ttlMs: Number(ttlMs) };
  return store && term ? { ...holder, store, term: Number(term) } : holder;
}

/**
 * Every lease a reconciler needs for its pools: the pool-wide one, or one per pool. A
 * reconciler of every pool also checks no pool lease is held, and one of some pools that the
 * pool-wide one is not; each takes its own first and then looks, so two that start together
 * cannot both miss each other.
 */
export class HypervisorLease extends EventEmitter<{ lost: [Error] }> {
  private readonly ttlMs: number;
  private readonly domainType: string;
  private readonly isAlive: (holder: LeaseHolder) => boolean;
  private readonly me: Omit<LeaseHolder, "renewedAt" | "store" | "term">;
  /** Our placeholders: name → UUID. */
  private readonly held = new Map<string, string>();
  private timer?: NodeJS.Timeout;
  private renewedAt = 0;

  constructor(
    private readonly driver: LibvirtDriver,
    private readonly options: LeaseOptions = {},
  ) {
    super();
    this.ttlMs = options.ttlMs ?? 15_000;
    this.domainType = options.domainType ?? "qemu";
    this.isAlive = options.isAlive ?? ((h) => pidAlive(h.pid));
    this.me = {
      id: randomUUID(),
      host: hostname(),
      pid: process.pid,
      ttlMs: this.ttlMs,
    };
  }

  /** Takes the leases or throws LeaseHeldError (holding none then); renews them from then on. */
  async acquire(): Promise<void> {
    const names = this.options.pools ? this.options.pools.map((p) => `${LEASE_DOMAIN}.${p}`) : [LEASE_DOMAIN];
    try {
      for (const name of names) await this.take(name);
      await this.checkOthers();
    } catch (e) {
      await this.release();
      throw e;
    }
    this.renewedAt = Date.now();
    clearInterval(this.timer);
    this.timer = setInterval(() => void this.renew(), Math.max(10, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
  }

  /** Gives the leases back (undefines our placeholders); a successor need not wait for expiry. */
  async release(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await Promise.all(
      [...this.held.values()].map((uuid) =>
        this.driver.undefineDomain(uuid).catch((e: unknown) => {
          if (!notFound(e)) throw e;
        }),
      ),
    );
    this.held.clear();
  }

  private holder(): LeaseHolder {
    const leads = this.options.leadership?.();
    return { ...this.me, ...(leads ? { store: leads.store, term: leads.term } : {}), renewedAt: Date.now() };
  }

  private placeholderXml(name: string, uuid: string): string {
    return buildXml(
      el(
        "domain",
        { type: this.domainType },
        el("name", {}, name),
        el("uuid", {}, uuid),
        el("title", {}, "vmpools reconciler lease (never started; do not remove while a reconciler runs)"),
        el("metadata", {}, renderHolder(this.holder())),
        el("memory", { unit: "KiB" }, "1024"),
        el("os", {}, el("type", this.domainType === "test" ? {} : { arch: "x86_64" }, "hvm")),
      ),
    );
  }

  /** Whether a holder's lease is void: expired, or its process is gone (same host only). */
  private void(h: LeaseHolder): boolean {
    if (h.id === this.me.id) return false;
    if (Date.now() > h.renewedAt + h.ttlMs) return true;
    // An earlier leader of the store this reconciler leads now: its term is over.
    const mine = this.options.leadership?.();
    if (mine && h.store === mine.store && h.term !== undefined && h.term < mine.term) return true;
    return h.host === this.me.host && !this.isAlive(h);
  }

  private async take(name: string): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const uuid = randomUUID();
      try {
        await this.driver.defineDomain(this.placeholderXml(name, uuid));
        this.held.set(name, uuid);
        return;
      } catch (e) {
        if (!exists(e)) throw e;
      }
      const current = await this.current(name);
      if (!current) continue; // released meanwhile
      // Ours already: taken again after it was lost while the host was unreachable.
      if (current.holder.id === this.me.id) {
        this.held.set(name, current.uuid);
        return;
      }
      if (!this.void(current.holder)) throw new LeaseHeldError(this.scopeOf(name), current.holder);
      // By its UUID: if another reconciler replaced the void lease meanwhile, this undefines nothing.
      await this.driver.undefineDomain(current.uuid).catch((e: unknown) => {
        if (!notFound(e)) throw e;
      });
    }
    throw new Error(`could not take the lease ${name}: it changed hands three times while trying`);
  }

  private async current(name: string): Promise<{ uuid: string; holder: LeaseHolder } | undefined> {
    try {
      const xml = await this.driver.domainXml(name, { inactive: true });
      const root = parseXml(xml);
      const uuid = root && childElements(root, "uuid")[0]?.children[0];
      const holder = parseLeaseHolder(xml);
      if (typeof uuid !== "string") return undefined;
      // A placeholder without a readable holder is void (e.g. defined by hand).
      return { uuid, holder: holder ?? { id: "", host: "", pid: 0, renewedAt: 0, ttlMs: 0 } };
    } catch (e) {
      if (notFound(e)) return undefined;
      throw e;
    }
  }

  private scopeOf(name: string): string {
    return name === LEASE_DOMAIN ? "every pool" : `pool ${name.slice(LEASE_DOMAIN.length + 1)}`;
  }

  /** The other kind of lease, taken by someone else and still valid, conflicts with ours. */
  private async checkOthers(): Promise<void> {
    const others = this.options.pools
      ? [LEASE_DOMAIN]
      : (await this.driver.listDomains({ metadata: false }))
          .map((d) => d.name)
          .filter((n) => n.startsWith(`${LEASE_DOMAIN}.`));
    for (const name of others) {
      const current = await this.current(name);
      if (current && !this.void(current.holder)) throw new LeaseHeldError(this.scopeOf(name), current.holder);
    }
  }

  private async renew(): Promise<void> {
    const holder = this.holder();
    const xml = buildXml(renderHolder(holder));
    try {
      await Promise.all(
        [...this.held.values()].map((uuid) => this.driver.setMetadata(uuid, LEASE_NAMESPACE, xml, LEASE_PREFIX)),
      );
      this.renewedAt = holder.renewedAt;
    } catch (e) {
      // Gone (someone took it over), or unrenewable for longer than it lasts: another may act now.
      if (notFound(e) || Date.now() > this.renewedAt + this.ttlMs) {
        clearInterval(this.timer);
        this.emit("lost", e instanceof Error ? e : new Error(String(e)));
      }
    }
  }
}
