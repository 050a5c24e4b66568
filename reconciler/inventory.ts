// What exists, as libvirt says: the members of the managed pools (name, UUID, power state,
// persistence, metadata), their system volumes, and the pools' policy documents. Reads only;
// the reconciler decides what the differences mean.
import type { StateStoreApi } from "./store/api";
import type { AttestationSettings } from "../core/trust";
import { METADATA_NAMESPACE, parseMetadataXml, type MemberMetadata } from "../core/metadata";
import { childElement, parseXml, textOf } from "../core/xml";
import type { Cluster } from "./cluster/cluster";
import type { DomainInfo, DomainState } from "./driver/libvirt-driver";
import { systemVolumeOf, type VolumeRef } from "./libvirt-xml";
import { groupPools, isUp, policyDocumentsByPool, type MemberRecord, type Pool } from "./pools";
import { unlessGone } from "./util";

/** One listing's view of the managed members, and the ones it no longer found. */
export interface Listing {
  readonly listed: readonly MemberRecord[];
  /** Members whose state changed here (by the reconciler's own work) after the listing began: it may predate that. */
  readonly changedMeanwhile: ReadonlySet<string>;
  /** Known members the listing did not find (undefined, or no longer carrying our metadata). */
  readonly missing: readonly string[];
  /** Hosts that did not answer: their members are kept as they were (neither listed nor missing). */
  readonly unreachable: ReadonlyMap<string, Error>;
  /** Hosts that answered. */
  readonly answered: readonly string[];
}

/** A domain read on its own (after a define event): ours, not ours, or gone. */
export type DomainRead =
  | { readonly kind: "member"; readonly record: MemberRecord }
  | { readonly kind: "not-ours" }
  | { readonly kind: "gone" };

export class Inventory {
  /** Pool members by domain name. */
  private readonly members = new Map<string, MemberRecord>();
  private poolCache?: Map<string, Pool>;
  /** Parsed metadata by domain UUID (null: not ours), so a listing fetches only new domains'. */
  private readonly metadataByUuid = new Map<string, MemberMetadata | null>();
  private readonly systemVolumes = new Map<string, VolumeRef>();
  /** The newest policy document read for each pool. */
  private readonly policyDocuments = new Map<string, MemberMetadata>();
  private listing?: Promise<Listing>;
  /** Bumped on every state change; each member's value at its last change. */
  private stateVersion = 0;
  private readonly changedAt = new Map<string, number>();
  /** When the last listing finished (clock time). */
  private listedAt = -Infinity;
  /** Hosts whose lifecycle events keep states current (subscribed, and listed since). */
  private readonly eventsFlowing = new Set<string>();
  /** Members a down event was seen for whose state has not been read since. */
  private readonly doubted = new Set<string>();

  constructor(
    private readonly cluster: Cluster,
    private readonly store: StateStoreApi,
    private readonly manages: (pool: string) => boolean,
    private readonly clock: () => number,
  ) {}

  pools(): Map<string, Pool> {
    this.poolCache ??= groupPools(this.members.values(), this.policyDocuments);
    return this.poolCache;
  }

  member(vm: string): MemberRecord | undefined {
    return this.members.get(vm);
  }

  all(): IterableIterator<MemberRecord> {
    return this.members.values();
  }

  names(): string[] {
    return [...this.members.keys()];
  }

  poolOf(vm: string): string | undefined {
    return this.members.get(vm)?.metadata.pool;
  }

  set(record: MemberRecord): void {
    this.members.set(record.name, record);
    this.poolCache = undefined;
  }

  /**
   * The member's state when it is as good as a `domstate` answer now: events flow and none since
   * the last read said it may have changed. A take of a prestarted member then needs no libvirt
   * call (a domstate answer is no fresher by the time the user connects anyway).
   */
  vouchedState(vm: string): DomainState | undefined {
    const record = this.members.get(vm);
    return record && this.eventsFlowing.has(record.host) && !this.doubted.has(vm) ? record.state : undefined;
  }

  /** The host's events flow (a listing begun after subscribing has been taken in), or stopped flowing. */
  setEventsFlowing(host: string, flowing: boolean): void {
    if (flowing) this.eventsFlowing.add(host);
    else this.eventsFlowing.delete(host);
  }

  /** A stop, shutdown or crash was reported: the state is unknown until read (setState). */
  doubt(vm: string): void {
    if (this.members.has(vm)) this.doubted.add(vm);
  }

  /** The member's state as just read or reported by an event (clears a doubt). */
  setState(vm: string, state: DomainState): void {
    this.doubted.delete(vm);
    const record = this.members.get(vm);
    if (record && record.state !== state) {
      this.set({ ...record, state });
      this.changedAt.set(vm, ++this.stateVersion);
    }
  }

  /** The member is defined on `host` now (migrated, or moved home), in `state`. */
  moveTo(vm: string, host: string, state: DomainState): void {
    const record = this.members.get(vm);
    if (!record) return;
    this.listedUuids.set(record.uuid, host);
    this.set({ ...record, host, state });
    this.changedAt.set(vm, ++this.stateVersion);
    this.doubted.delete(vm);
  }

  /** Forgets the member's runtime facts; returns its record and system volume as they were. */
  drop(vm: string): { record: MemberRecord; volume?: VolumeRef } | undefined {
    const record = this.members.get(vm);
    if (!record) return undefined;
    const volume = this.systemVolumes.get(record.uuid);
    this.members.delete(vm);
    this.changedAt.delete(vm);
    this.doubted.delete(vm);
    this.poolCache = undefined;
    this.systemVolumes.delete(record.uuid);
    this.metadataByUuid.delete(record.uuid);
    return { record, ...(volume ? { volume } : {}) };
  }

  /** How long ago (clock time) the last listing finished. */
  sinceListing(): number {
    return this.clock() - this.listedAt;
  }

  /**
   * Lists libvirt's domains (metadata only for ones not seen before); shared by all who ask
   * meanwhile. `fresh`: a listing that began after this call (one under way may predate a change
   * the caller just learnt of).
   */
  list(options: { readonly fresh?: boolean } = {}): Promise<Listing> {
    if (options.fresh && this.listing) return this.listing.catch(() => undefined).then(() => this.list());
    this.listing ??= this.readListing().finally(() => {
      this.listing = undefined;
      this.listedAt = this.clock();
    });
    return this.listing;
  }

  private async readListing(): Promise<Listing> {
    const began = this.stateVersion;
    const hosts = this.cluster.names();
    const unreachable = new Map<string, Error>();
    const perHost = await Promise.all(
      hosts.map(async (host) => {
        try {
          return await this.listHost(host);
        } catch (e) {
          unreachable.set(host, e instanceof Error ? e : new Error(String(e)));
          return [];
        }
      }),
    );
    const listed = new Map<string, MemberRecord>();
    perHost.forEach((records) => {
      for (const r of records) {
        const other = listed.get(r.name);
        // The same member on two hosts: the instant of a migration or a move home, when the
        // destination has it and the source has not yet let go. The one that runs is the member.
        if (!other || (isUp(r.state) && !isUp(other.state))) listed.set(r.name, r);
      }
    });
    const uuids = new Set(perHost.flat().map((r) => r.uuid));
    const seenUuids = new Set([...this.listedUuids.entries()].filter(([, h]) => !unreachable.has(h)).map(([u]) => u));
    for (const uuid of seenUuids) if (!uuids.has(uuid)) this.metadataByUuid.delete(uuid);
    const changedMeanwhile = new Set([...this.changedAt].filter(([, v]) => v > began).map(([vm]) => vm));
    const missing = this.names().filter((n) => !listed.has(n) && !unreachable.has(this.members.get(n)!.host));
    return {
      listed: [...listed.values()],
      changedMeanwhile,
      missing,
      unreachable,
      answered: hosts.filter((h) => !unreachable.has(h)),
    };
  }

  /** Host → the UUIDs its last listing found (so an unreachable host's cached metadata stays). */
  private readonly listedUuids = new Map<string, string>();

  private async listHost(host: string): Promise<MemberRecord[]> {
    const driver = this.cluster.driver(host);
    const domains: readonly DomainInfo[] = await driver.listDomains({ metadata: false });
    const fresh = domains.filter((d) => !this.metadataByUuid.has(d.uuid));
    const xmls = await Promise.all(fresh.map((d) => unlessGone(driver.getMetadata(d.uuid, METADATA_NAMESPACE))));
    fresh.forEach((d, i) => this.metadataByUuid.set(d.uuid, this.ownMetadata(xmls[i])));
    const records: MemberRecord[] = [];
    for (const d of domains) {
      this.listedUuids.set(d.uuid, host);
      const metadata = this.metadataByUuid.get(d.uuid);
      if (metadata) {
        records.push({
          name: d.name,
          uuid: d.uuid,
          host,
          state: d.state,
          metadata,
          persistent: d.persistent !== false,
        });
      }
    }
    return records;
  }

  /** Reads one domain on `host` (a define event: a new member, changed metadata, or no longer ours). */
  async read(name: string, host = this.hostOf(name)): Promise<DomainRead> {
    const driver = this.cluster.driver(host);
    const read = await unlessGone(Promise.all([driver.domainXml(name, { inactive: true }), driver.domainState(name)]));
    if (!read) return { kind: "gone" };
    const [xml, state] = read;
    const uuid = textOf(childElement(parseXml(xml) ?? { name: "", attrs: {}, children: [] }, "uuid")) ?? "";
    const metadata = this.ownMetadata(xml);
    this.metadataByUuid.set(uuid, metadata);
    this.listedUuids.set(uuid, host);
    if (!metadata) return { kind: "not-ours" };
    const volume = systemVolumeOf(xml);
    if (volume) this.systemVolumes.set(uuid, volume);
    return { kind: "member", record: { name, uuid, host, state, metadata } };
  }

  /**
   * The host a member is defined on now; for a name not (yet) known, the only host of a
   * single-host reconciler. Throws for an unknown member of a cluster.
   */
  hostOf(vm: string): string {
    const host = this.members.get(vm)?.host ?? this.cluster.single;
    if (host === undefined) throw new Error(`${vm} is on no known host of the cluster`);
    return host;
  }

  /** The member's driver: its host's. */
  driverOf(vm: string) {
    return this.cluster.driver(this.hostOf(vm));
  }

  /** The member's system volume (the disk a revert switches), read once and then kept up to date. */
  async systemVolume(vm: string): Promise<VolumeRef> {
    const uuid = this.members.get(vm)?.uuid ?? "";
    const cached = this.systemVolumes.get(uuid);
    if (cached) return cached;
    const volume = systemVolumeOf(await this.driverOf(vm).domainXml(vm, { inactive: true }));
    if (!volume) {
      throw new Error(
        `${vm}: its boot disk is not a storage-pool volume (<disk type='volume'>), so it cannot be reverted`,
      );
    }
    this.systemVolumes.set(uuid, volume);
    return volume;
  }

  setSystemVolume(vm: string, volume: VolumeRef): void {
    const uuid = this.members.get(vm)?.uuid;
    if (uuid !== undefined) this.systemVolumes.set(uuid, volume);
  }

  /** The attestation settings of a pool's policy document (a pool on a trusted cluster). */
  attestationOf(pool: string): AttestationSettings | undefined {
    return this.policyDocuments.get(pool)?.attestation;
  }

  /** The last policy documents read, from the store: the policy before anything acts on it. */
  loadPolicyDocuments(): void {
    for (const [pool, policy] of this.store.policyDocuments()) {
      if (this.manages(pool)) this.policyDocuments.set(pool, policy);
    }
    this.poolCache = undefined;
  }

  /**
   * Re-reads the pools' policy documents. A pool whose document is missing keeps the last one
   * read: the engines replace a document by deleting and recreating it, and in between the pool
   * must not fall back to its members' older creation-time policy (e.g. stop prestarted VMs).
   */
  async refreshPolicies(): Promise<void> {
    // Every host that answers has the documents of the pools on it; one that does not keeps none.
    const documents = await Promise.all(
      this.cluster.names().map((h) =>
        this.cluster
          .driver(h)
          .readPolicyDocuments()
          .catch(() => [] as string[]),
      ),
    );
    const read = policyDocumentsByPool(documents.flat());
    let changed = false;
    for (const [pool, policy] of read) {
      if (!this.manages(pool)) continue;
      const before = this.policyDocuments.get(pool);
      if (!before || JSON.stringify(before) !== JSON.stringify(policy)) {
        this.policyDocuments.set(pool, policy);
        this.store.savePolicyDocument(pool, policy);
        changed = true;
      }
    }
    if (changed) this.poolCache = undefined;
  }

  /** Parsed member metadata when it belongs to a pool this reconciler manages, else null. */
  private ownMetadata(xml: string | undefined): MemberMetadata | null {
    const metadata = xml === undefined ? undefined : parseMetadataXml(xml);
    return metadata && this.manages(metadata.pool) ? metadata : null;
  }
}
