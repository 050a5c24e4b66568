// An in-memory LibvirtDriver that behaves as VirshDriver does on libvirt's test hypervisor
// (test/reconciler/fake-driver-contract.test.ts runs one scenario against both), plus what the
// test hypervisor cannot do (volume contents, live device updates, disks that must exist to
// start) done as qemu does, and the hooks only a fake can offer: failure injection, call counts,
// calls held at a gate, guests that ignore a shutdown.
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { performance } from "node:perf_hooks";
import { XMLBuilder, XMLParser, XMLValidator } from "fast-xml-parser";
import { METADATA_NAMESPACE, METADATA_PREFIX, POLICY_VOLUME_SUFFIX } from "../../core/metadata";
import { escapeXml } from "../../core/xml";
import {
  waitForLifecycle,
  type DomainEventMap,
  type DomainEventSource,
  type LifecycleEvent,
  type LifecycleEventName,
} from "../../reconciler/driver/events";
import type {
  DomainInfo,
  DomainState,
  DomainXmlOptions,
  LibvirtDriver,
  ListDomainsOptions,
  MigrateOptions,
  OverlayVolumeSpec,
  ShutdownMode,
} from "../../reconciler/driver/libvirt-driver";
import { VirshError } from "../../reconciler/driver/virsh-session";

/** The LibvirtDriver methods, for failure injection and call counts. */
export type DriverMethod = Exclude<keyof LibvirtDriver, "close">;

export interface FailureSpec {
  /** How many of the next matching calls fail. @default 1 (Infinity: until `heal`) */
  readonly times?: number;
  /** Only calls about this domain (name or UUID) or volume (its name). @default every call */
  readonly target?: string;
  /** @default a VirshError naming the method and "injected failure" */
  readonly error?: Error | (() => Error);
  /**
   * Fail after the call took effect, as when virsh dies between doing and answering ("the
   * command may or may not have taken effect"). @default false
   */
  readonly afterEffect?: boolean;
}

export interface Gate {
  /** Resolves when a matching call arrives and waits at the gate. */
  readonly reached: Promise<void>;
  /** Lets the waiting call (or the next one to arrive) go on. */
  release(): void;
}

export interface FakeCall {
  readonly method: DriverMethod;
  /** The domain (as the caller named it) or volume the call is about. */
  readonly subject?: string;
  /** performance.now() when the call was made. */
  readonly at: number;
}

export interface FakeStoragePool {
  readonly name: string;
  /** Where its volumes' paths point. */
  readonly path: string;
  /** Inactive pools are not listed (their policy documents are not read). @default true */
  readonly active?: boolean;
}

export interface FakeDriverOptions {
  /** Only for messages. @default "fake:///default" */
  readonly uri?: string;
  /** @default [{ name: "default-pool", path: "/default-pool" }], as the test hypervisor has */
  readonly storagePools?: readonly FakeStoragePool[];
  /** Delay of every call; 0 still answers on a later turn of the event loop, as a real call does. @default 0 */
  readonly latencyMs?: number;
  /**
   * Refuse to start a domain whose volume disks do not exist, as qemu does (the test hypervisor
   * starts anything). @default true
   */
  readonly requireDiskVolumes?: boolean;
  /** Timestamps of lifecycle events. @default Date.now */
  readonly clock?: () => number;
  /** What `freeMemoryMiB` answers (changeable with `setFreeMemoryMiB`). @default 8192 */
  readonly freeMemoryMiB?: number;
  /**
   * Other fakes by URI, the hosts of a cluster: `migrate` moves a running domain to the one its
   * destination URI names, as libvirt does between hosts. @default none (migrate is refused, as
   * on the test hypervisor)
   */
  readonly peers?: ReadonlyMap<string, FakeDriver>;
  /**
   * Storage shared with other fakes (pass the same map to each): a volume made on one host is
   * there on the others, as with shared storage live migration needs. @default this fake's own
   */
  readonly sharedStorage?: Map<string, unknown>;
}

/** What a guest does when asked to shut down; the test hypervisor's guests stop at once. */
export interface GuestBehaviour {
  /** The guest never reacts to a shutdown request (hung, or no ACPI): only destroy stops it. */
  readonly ignoresShutdown?: boolean;
  /** The guest takes this long to power off after a shutdown request. @default 0 (at once) */
  readonly shutdownDelayMs?: number;
}

export interface FakeVolume {
  readonly name: string;
  readonly path: string;
  readonly capacityBytes: number;
  /** Bytes written: 0 for a fresh overlay. */
  readonly allocationBytes: number;
  readonly format: string;
  readonly backing?: { readonly path: string; readonly format: string };
  /** Contents uploaded with `uploadVolume` (the test hypervisor cannot download volumes). */
  readonly content?: string;
}

export interface FakeDomainFacts {
  readonly name: string;
  readonly uuid: string;
  readonly state: DomainState;
  /** false once undefined while running: it vanishes when it stops. */
  readonly persistent: boolean;
  readonly id?: number;
}

// ---- XML trees (fast-xml-parser's ordered form: [{ tag: children, ":@": attributes }]) --------

type XmlNode = { [tag: string]: XmlNode[] | Record<string, string> | string };

const XML_OPTIONS = {
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: "",
  parseAttributeValue: false,
  parseTagValue: false,
  trimValues: true,
  ignoreDeclaration: true,
} as const;
const parser = new XMLParser(XML_OPTIONS);
// Escaped as libxml2 writes what libvirt returns (answers are compared verbatim): the builder
// quotes attribute values itself, writing ' as &apos;, which render() turns back.
const escapeText = (_name: string, value: unknown) =>
  String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const builder = new XMLBuilder({
  ...XML_OPTIONS,
  format: true,
  indentBy: "  ",
  suppressEmptyNode: true,
  processEntities: false,
  tagValueProcessor: escapeText,
  attributeValueProcessor: escapeText,
});

const oneLine = new XMLBuilder({
  ...XML_OPTIONS,
  suppressEmptyNode: true,
  processEntities: false,
  tagValueProcessor: escapeText,
  attributeValueProcessor: escapeText,
});

const tagOf = (n: XmlNode) => Object.keys(n).find((k) => k !== ":@")!;
const isText = (n: XmlNode) => tagOf(n) === "#text";
const childrenOf = (n: XmlNode) => n[tagOf(n)] as XmlNode[];
const attrsOf = (n: XmlNode) => (n[":@"] as Record<string, string> | undefined) ?? {};
const element = (tag: string, attrs: Record<string, string>, children: XmlNode[] = []): XmlNode =>
  Object.keys(attrs).length > 0 ? { [tag]: children, ":@": attrs } : { [tag]: children };
const textOf = (n: XmlNode | undefined) =>
  n === undefined ? undefined : childrenOf(n).find(isText)?.["#text"]?.toString();
const child = (n: XmlNode, tag: string) => childrenOf(n).find((c) => tagOf(c) === tag);
// Any "&apos;" in the output is the builder's: a literal one in a value is written "&amp;apos;".
const render = (nodes: XmlNode[]) => (builder.build(nodes) as string).trim().replace(/&apos;/g, "'");

/** The XML's nodes, or the libvirt-style parse error ("(label):line: message"). */
function parse(xml: string, label: string): XmlNode[] | string {
  const valid = XMLValidator.validate(xml);
  if (valid !== true) return `(${label}):${valid.err.line}: ${valid.err.msg}`;
  return (parser.parse(xml) as XmlNode[]).filter((n) => !isText(n));
}

/** Renames `prefix:tag` to `tag` throughout (or `tag` to `prefix:tag` with `add`). */
function retag(n: XmlNode, prefix: string, add: boolean): XmlNode {
  if (isText(n) || prefix === "") return n;
  const tag = tagOf(n);
  const name = add ? `${prefix}:${tag}` : tag.startsWith(`${prefix}:`) ? tag.slice(prefix.length + 1) : tag;
  return element(
    name,
    attrsOf(n),
    childrenOf(n).map((c) => retag(c, prefix, add)),
  );
}

/** One metadata element as libvirt keeps it: unprefixed, its namespace and key aside. */
interface MetadataEntry {
  readonly key: string;
  readonly node: XmlNode;
}

/**
 * Splits a metadata element into its namespace and its unprefixed form, as libvirt does with
 * what `metadata --set` or a define gives it. undefined when it names no namespace.
 */
function metadataEntry(n: XmlNode): { uri: string; entry: MetadataEntry } | undefined {
  const tag = tagOf(n);
  const prefix = tag.includes(":") ? tag.slice(0, tag.indexOf(":")) : "";
  const attrs = { ...attrsOf(n) };
  const nsAttr = prefix ? `xmlns:${prefix}` : "xmlns";
  const uri = attrs[nsAttr];
  if (uri === undefined) return undefined;
  delete attrs[nsAttr];
  const stripped = retag(n, prefix, false);
  return { uri, entry: { key: prefix, node: element(tagOf(stripped), attrs, childrenOf(stripped)) } };
}

interface DomainDef {
  /** The `<domain>` element without `<uuid>` and `<metadata>`, which are kept apart. */
  readonly root: XmlNode;
  readonly metadata: Map<string, MetadataEntry>;
}

const cloneDef = (d: DomainDef): DomainDef => ({ root: structuredClone(d.root), metadata: new Map(d.metadata) });

interface Domain {
  name: string;
  uuid: string;
  state: DomainState;
  persistent: boolean;
  id?: number;
  config: DomainDef;
  live?: DomainDef;
  guest: GuestBehaviour;
  shutdownTimer?: NodeJS.Timeout;
}

interface Pool {
  readonly name: string;
  readonly path: string;
  active: boolean;
  readonly volumes: Map<string, FakeVolume>;
}

interface Failure extends FailureSpec {
  readonly method: DriverMethod;
  remaining: number;
}

interface PendingGate {
  readonly method: DriverMethod;
  readonly target?: string;
  readonly arrive: () => void;
  readonly released: Promise<void>;
}

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
const normalUuid = (u: string) =>
  u
    .toLowerCase()
    .replace(/-/g, "")
    .replace(/^(.{8})(.{4})(.{4})(.{4})/, "$1-$2-$3-$4-");
const isActive = (s: DomainState) => s !== "shut off" && s !== "crashed";

/**
 * Lifecycle events as {@link DomainEvents} emits them (same names, payloads and `ready` /
 * `disconnected` signals), raised by a {@link FakeDriver}. `disconnect()` and `reconnect()`
 * play a lost event stream: events in between are dropped, as they would be.
 */
export class FakeDomainEvents extends EventEmitter<DomainEventMap> implements DomainEventSource {
  private connected = true;
  private closed = false;

  /** No child process behind the fake. */
  readonly pid: number | undefined = undefined;

  ready(timeoutMs = 10_000): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off("ready", onReady);
        reject(new Error(`fake event stream not subscribed after ${timeoutMs} ms`));
      }, timeoutMs);
      const onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      this.once("ready", onReady);
    });
  }

  waitFor(predicate: (e: LifecycleEvent) => boolean, timeoutMs: number): Promise<LifecycleEvent> {
    return waitForLifecycle(this, predicate, timeoutMs);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.connected = false;
  }

  /** The stream ends (libvirtd restarted): `disconnected` now, events dropped until `reconnect`. */
  disconnect(reason = "virsh event exited (code 1)"): void {
    if (!this.connected || this.closed) return;
    this.connected = false;
    this.emit("disconnected", reason);
  }

  reconnect(): void {
    if (this.connected || this.closed) return;
    this.connected = true;
    this.emit("ready");
  }

  /** @internal The driver raises events through this. */
  deliver(e: LifecycleEvent): void {
    if (this.connected) this.emit("lifecycle", e);
  }
}

/**
 * {@link LibvirtDriver} in memory. Domains, their states and metadata, storage pools and volumes
 * behave, answer and fail as VirshDriver does on libvirt's test hypervisor (same VirshError
 * commands and details, `notFound` where it is set), and `events` raises the same lifecycle
 * events. Every call answers on a later turn of the event loop, as a real one would.
 */
export class FakeDriver implements LibvirtDriver {
  readonly events = new FakeDomainEvents();
  readonly uri: string;
  private readonly domains = new Map<string, Domain>();
  private readonly pools: Map<string, Pool>;
  private freeMemory: number;
  private readonly peers?: ReadonlyMap<string, FakeDriver>;
  private readonly failures: Failure[] = [];
  private readonly gates: PendingGate[] = [];
  private readonly log: FakeCall[] = [];
  private readonly latencyMs: number;
  private readonly requireDiskVolumes: boolean;
  private readonly clock: () => number;
  private nextId = 1;
  private down = false;
  private closed = false;

  constructor(options: FakeDriverOptions = {}) {
    this.uri = options.uri ?? "fake:///default";
    this.latencyMs = options.latencyMs ?? 0;
    this.requireDiskVolumes = options.requireDiskVolumes ?? true;
    this.clock = options.clock ?? Date.now;
    this.freeMemory = options.freeMemoryMiB ?? 8192;
    this.peers = options.peers;
    this.pools = (options.sharedStorage as Map<string, Pool> | undefined) ?? new Map<string, Pool>();
    for (const p of options.storagePools ?? [{ name: "default-pool", path: "/default-pool" }]) {
      if (!this.pools.has(p.name)) this.addStoragePool(p);
    }
  }

  // ---- test hooks ------------------------------------------------------------------------------

  /** The next `times` calls of `method` (about `target`, if given) fail with `error`. */
  failNext(method: DriverMethod, spec: FailureSpec = {}): void {
    const times = spec.times ?? 1;
    if (!(times >= 1)) throw new RangeError(`failNext(${method}): times must be ≥ 1, got ${times}`);
    this.failures.push({ ...spec, method, remaining: times });
  }

  /** Drops injected failures (of `method` only, if given) that have not fired yet. */
  heal(method?: DriverMethod): void {
    for (let i = this.failures.length - 1; i >= 0; i--) {
      if (method === undefined || this.failures[i]!.method === method) this.failures.splice(i, 1);
    }
  }

  /** Holds the next call of `method` (about `target`, if given) until the gate is released. */
  pauseNext(method: DriverMethod, target?: string): Gate {
    let arrive!: () => void;
    let release!: () => void;
    const reached = new Promise<void>((r) => (arrive = r));
    const released = new Promise<void>((r) => (release = r));
    this.gates.push({ method, ...(target === undefined ? {} : { target }), arrive, released });
    return { reached, release };
  }

  /** Calls made so far, of `method` (about `target`) or all. */
  calls(method?: DriverMethod, target?: string): number {
    return this.callLog(method, target).length;
  }

  callLog(method?: DriverMethod, target?: string): readonly FakeCall[] {
    return this.log.filter(
      (c) => (method === undefined || c.method === method) && (target === undefined || this.matches(target, c.subject)),
    );
  }

  /** libvirtd unreachable: every call fails as virsh does when it cannot connect. */
  setLibvirtdDown(down: boolean): void {
    this.down = down;
  }

  /** How the guest of `name` reacts to shutdown requests from now on. */
  setGuest(name: string, behaviour: GuestBehaviour): void {
    this.requireDomain(name, ["domstate", "--domain", name]).guest = behaviour;
  }

  /** The guest pauses (`virsh suspend`). */
  suspend(name: string): void {
    const d = this.requireDomain(name, ["suspend", "--domain", name]);
    if (d.state !== "running") {
      throw new VirshError(
        ["suspend", "--domain", name],
        `Failed to suspend domain '${name}'\ninternal error: domain '${d.name}' not running`,
      );
    }
    d.state = "paused";
    this.emitLifecycle(d.name, "Suspended", "Paused");
  }

  /** `virsh resume`. */
  resume(name: string): void {
    const d = this.requireDomain(name, ["resume", "--domain", name]);
    if (d.state !== "paused") {
      throw new VirshError(
        ["resume", "--domain", name],
        `Failed to resume domain '${name}'\ninternal error: domain '${d.name}' not paused`,
      );
    }
    d.state = "running";
    this.emitLifecycle(d.name, "Resumed", "Unpaused");
  }

  /** The guest powers itself off (as after `poweroff` inside it). */
  guestPowersOff(name: string): void {
    const d = this.requireDomain(name, ["domstate", "--domain", name]);
    if (!isActive(d.state)) throw new Error(`guestPowersOff(${name}): the domain is ${d.state}`);
    this.stop(d, "Shutdown");
  }

  /** Facts of one domain, or undefined when there is none of that name or UUID. */
  domain(nameOrUuid: string): FakeDomainFacts | undefined {
    const d = this.lookup(nameOrUuid);
    return d && { name: d.name, uuid: d.uuid, state: d.state, persistent: d.persistent, ...(d.id ? { id: d.id } : {}) };
  }

  volume(pool: string, name: string): FakeVolume | undefined {
    return this.pools.get(pool)?.volumes.get(name);
  }

  addStoragePool(p: FakeStoragePool): void {
    this.pools.set(p.name, { name: p.name, path: p.path, active: p.active ?? true, volumes: new Map() });
  }

  /** Creates or replaces a raw volume with these contents (e.g. a pool's policy document). */
  uploadVolume(pool: string, name: string, content: string): void {
    const p = this.requirePool(pool, ["vol-upload", "--pool", pool, "--vol", name]);
    const bytes = Buffer.byteLength(content);
    p.volumes.set(name, {
      name,
      path: `${p.path}/${name}`,
      capacityBytes: bytes,
      allocationBytes: bytes,
      format: "raw",
      content,
    });
  }

  /** The guest writes `bytes` to its overlay (a fresh overlay has allocated nothing). */
  writeToVolume(pool: string, name: string, bytes: number): void {
    const v = this.requireVolume(pool, name, ["vol-info", "--pool", pool, "--vol", name]);
    this.pools.get(pool)!.volumes.set(name, { ...v, allocationBytes: v.allocationBytes + bytes });
  }

  // ---- LibvirtDriver ---------------------------------------------------------------------------

  listDomains(options: ListDomainsOptions = {}): Promise<readonly DomainInfo[]> {
    const uri = options.metadataUri ?? METADATA_NAMESPACE;
    return this.call("listDomains", undefined, () => {
      // virsh lists running domains by id, then the others by name.
      const all = [...this.domains.values()].sort((a, b) =>
        a.id !== undefined || b.id !== undefined ? (a.id ?? Infinity) - (b.id ?? Infinity) : a.name < b.name ? -1 : 1,
      );
      return all.map((d): DomainInfo => {
        const metadataXml = options.metadata === false ? undefined : this.metadataOf(d, uri);
        const info = { name: d.name, uuid: d.uuid, state: d.state, persistent: d.persistent };
        return metadataXml === undefined ? info : { ...info, metadataXml };
      });
    });
  }

  domainState(name: string): Promise<DomainState> {
    return this.call("domainState", name, () => this.requireDomain(name, ["domstate", "--domain", name]).state);
  }

  defineDomain(xml: string): Promise<void> {
    return this.call("defineDomain", undefined, () => {
      const file = tempFile();
      const fail = (why: string) =>
        new VirshError(["define", "--file", file], `Failed to define domain from ${file}\n${why}`);
      const nodes = parse(xml, "domain_definition");
      if (typeof nodes === "string") throw fail(nodes);
      const root = nodes[0];
      if (!root || tagOf(root) !== "domain") throw fail("XML error: unexpected root element, expecting <domain>");
      const name = textOf(child(root, "name"));
      if (!name) throw fail("missing name information");
      const uuidText = textOf(child(root, "uuid"));
      if (uuidText !== undefined && !UUID.test(uuidText)) throw fail("XML error: malformed uuid element");
      const uuid = uuidText === undefined ? randomUUID() : normalUuid(uuidText);

      const byName = this.domains.get(name);
      // libvirt matches a definition to a domain by UUID: one without UUID is a new domain.
      if (byName && byName.uuid !== uuid) {
        throw fail(`operation failed: domain '${name}' already exists with uuid ${byName.uuid}`);
      }
      let byUuid: Domain | undefined;
      for (const d of this.domains.values()) if (d.uuid === uuid) byUuid = d;
      if (byUuid && byUuid.name !== name) {
        throw fail(`operation failed: domain '${byUuid.name}' is already defined with uuid ${uuid}`);
      }
      const def = toDef(root);
      if (byName) {
        // The running domain keeps its live definition until it next starts.
        byName.config = def;
        byName.persistent = true;
        this.emitLifecycle(name, "Defined", "Updated");
        return;
      }
      this.domains.set(name, { name, uuid, state: "shut off", persistent: true, config: def, guest: {} });
      this.emitLifecycle(name, "Defined", "Added");
    });
  }

  undefineDomain(name: string): Promise<void> {
    const args = ["undefine", "--domain", name, "--managed-save", "--snapshots-metadata", "--checkpoints-metadata"];
    return this.call("undefineDomain", name, () => {
      const d = this.requireDomain(name, args);
      // A running domain lives on, transient, until it stops.
      if (isActive(d.state)) d.persistent = false;
      else this.domains.delete(d.name);
      this.emitLifecycle(d.name, "Undefined", "Removed");
    });
  }

  start(name: string): Promise<void> {
    return this.call("start", name, () => {
      const args = ["start", "--domain", name];
      const d = this.requireDomain(name, args);
      if (isActive(d.state)) throw new VirshError(args, "Domain is already active");
      const missing = this.requireDiskVolumes ? this.missingVolume(d.config) : undefined;
      if (missing) throw new VirshError(args, `Failed to start domain '${name}'\n${missing}`);
      d.id = this.nextId++;
      d.state = "running";
      d.live = cloneDef(d.config);
      assignSpicePorts(d.live, d.id);
      this.emitLifecycle(d.name, "Started", "Booted");
    });
  }

  shutdown(name: string, mode: ShutdownMode = "acpi"): Promise<void> {
    return this.call("shutdown", name, () => {
      const d = this.requireDomain(name, ["shutdown", "--domain", name, "--mode", mode]);
      // The test hypervisor knows no modes: VirshDriver retries without one, and that is what fails.
      if (!isActive(d.state)) {
        throw new VirshError(
          ["shutdown", "--domain", name],
          `Failed to shutdown domain '${name}'\ninternal error: domain '${d.name}' not running`,
        );
      }
      if (d.guest.ignoresShutdown) return;
      if (d.guest.shutdownDelayMs) {
        clearTimeout(d.shutdownTimer);
        d.shutdownTimer = setTimeout(() => isActive(d.state) && this.stop(d, "Shutdown"), d.guest.shutdownDelayMs);
        return;
      }
      this.stop(d, "Shutdown");
    });
  }

  destroy(name: string): Promise<void> {
    return this.call("destroy", name, () => {
      const args = ["destroy", "--domain", name];
      const d = this.requireDomain(name, args);
      if (!isActive(d.state)) {
        throw new VirshError(
          args,
          `Failed to destroy domain '${name}'\nRequested operation is not valid: domain is not running`,
        );
      }
      this.stop(d, "Destroyed");
    });
  }

  setMetadata(name: string, uri: string, xml: string, key: string = METADATA_PREFIX): Promise<void> {
    return this.call("setMetadata", name, () => {
      const nodes = parse(xml, "metadata_xml");
      const root = typeof nodes === "string" ? undefined : nodes[0];
      const entry = root && unqualified(root, uri, key);
      // VirshDriver sends the element without our namespace, on one line.
      const sent = entry ? oneLine.build([entry.node]) : xml.trim().replace(/[\t\r\n]+/g, " ");
      const base = ["metadata", "--domain", name, "--uri", uri, "--key", key, "--set", sent];
      const d = this.requireDomain(name, [...base, "--live", "--config"]);
      const args = isActive(d.state) ? [...base, "--live", "--config"] : [...base, "--config"];
      if (typeof nodes === "string") throw new VirshError(args, nodes);
      if (!entry) throw new VirshError(args, "(metadata_xml):1: Document is empty");
      this.editMetadata(d, args, (m) => m.set(uri, entry));
    });
  }

  getMetadata(name: string, uri: string): Promise<string | undefined> {
    return this.call("getMetadata", name, () => {
      const d = this.requireDomain(name, ["metadata", "--domain", name, "--uri", uri]);
      return this.metadataOf(d, uri);
    });
  }

  removeMetadata(name: string, uri: string): Promise<void> {
    return this.call("removeMetadata", name, () => {
      const base = ["metadata", "--domain", name, "--uri", uri, "--remove"];
      const d = this.requireDomain(name, [...base, "--live", "--config"]);
      const args = isActive(d.state) ? [...base, "--live", "--config"] : [...base, "--config"];
      this.editMetadata(d, args, (m) => m.delete(uri));
    });
  }

  domainXml(name: string, options: DomainXmlOptions = {}): Promise<string> {
    return this.call("domainXml", name, () => {
      const flags = [...(options.inactive ? ["--inactive"] : []), ...(options.securityInfo ? ["--security-info"] : [])];
      const d = this.requireDomain(name, ["dumpxml", "--domain", name, ...flags]);
      // A transient domain has no inactive definition: libvirt shows the live one.
      const live = d.live !== undefined && (!options.inactive || !d.persistent);
      return renderDomain(d, live ? d.live! : d.config, live ? d.id : undefined, options.securityInfo ?? false);
    });
  }

  updateDeviceLive(name: string, deviceXml: string): Promise<void> {
    return this.call("updateDeviceLive", name, () => {
      const file = tempFile();
      const args = ["update-device", "--domain", name, "--file", file, "--live"];
      const fail = (why: string) => new VirshError(args, `Failed to update device from ${file}\n${why}`);
      const d = this.requireDomain(name, args);
      if (!d.live) throw fail("Requested operation is not valid: domain is not running");
      const nodes = parse(deviceXml, "device_definition");
      if (typeof nodes === "string") throw fail(nodes);
      const device = nodes[0]!;
      const devices = child(d.live.root, "devices");
      const tag = tagOf(device);
      const type = attrsOf(device).type;
      const existing = devices && childrenOf(devices).find((c) => tagOf(c) === tag && attrsOf(c).type === type);
      if (!devices || !existing) {
        throw fail(`operation failed: cannot find existing ${tag} device to modify`);
      }
      // As qemu: a graphics update changes the password and its expiry, not the assigned ports.
      const replacement =
        tag === "graphics"
          ? element(
              tag,
              { ...attrsOf(existing), ...pick(attrsOf(device), "passwd", "passwdValidTo", "connected") },
              childrenOf(existing),
            )
          : device;
      const list = childrenOf(devices);
      list[list.indexOf(existing)] = replacement;
    });
  }

  volumePath(pool: string, name: string): Promise<string> {
    return this.call(
      "volumePath",
      name,
      () => this.requireVolume(pool, name, ["vol-path", "--pool", pool, "--vol", name]).path,
    );
  }

  volumeXml(pool: string, name: string): Promise<string> {
    return this.call("volumeXml", name, () =>
      renderVolume(this.requireVolume(pool, name, ["vol-dumpxml", "--pool", pool, "--vol", name])),
    );
  }

  deleteVolume(pool: string, name: string): Promise<void> {
    return this.call("deleteVolume", name, () => {
      this.requireVolume(pool, name, ["vol-delete", "--pool", pool, "--vol", name]);
      this.pools.get(pool)!.volumes.delete(name);
    });
  }

  createOverlayVolume(pool: string, name: string, spec: OverlayVolumeSpec): Promise<string> {
    return this.call("createOverlayVolume", name, () => {
      if (!Number.isSafeInteger(spec.capacityBytes) || spec.capacityBytes <= 0) {
        throw new Error(`overlay ${name}: capacityBytes must be a positive integer, got ${spec.capacityBytes}`);
      }
      const file = tempFile();
      const p = this.requirePool(pool, ["vol-create", "--pool", pool, "--file", file]);
      if (p.volumes.has(name)) {
        throw new VirshError(
          ["vol-create", "--pool", pool, "--file", file],
          `Failed to create vol from ${file}\noperation failed: storage vol already exists`,
        );
      }
      const path = `${p.path}/${name}`;
      p.volumes.set(name, {
        name,
        path,
        capacityBytes: spec.capacityBytes,
        allocationBytes: 0,
        format: spec.format ?? "qcow2",
        backing: { path: spec.backingPath, format: spec.backingFormat },
      });
      return path;
    });
  }

  /** Every migration this fake made, with its options, for tests of what the reconciler asked for. */
  readonly migrations: { readonly name: string; readonly destinationUri: string; readonly options: MigrateOptions }[] =
    [];

  migrate(name: string, destinationUri: string, options: MigrateOptions = {}): Promise<void> {
    return this.call("migrate", name, () => {
      const args = ["migrate", name, destinationUri];
      const peer = this.peers?.get(destinationUri);
      if (!this.peers) {
        throw new VirshError(args, "this function is not supported by the connection driver: virDomainMigrate3");
      }
      if (!peer)
        throw new VirshError(args, `failed to connect to the hypervisor\nunable to connect to ${destinationUri}`);
      if (peer === this) throw new VirshError(args, "internal error: Attempt to migrate guest to the same host");
      const d = this.requireDomain(name, args);
      if (d.state !== "running") throw new VirshError(args, "Requested operation is not valid: domain is not running");
      this.migrations.push({ name: d.name, destinationUri, options });
      peer.receiveMigrated(d);
      this.domains.delete(d.name);
      this.emitLifecycle(d.name, "Suspended", "Migrated");
      this.emitLifecycle(d.name, "Stopped", "Migrated");
      this.emitLifecycle(d.name, "Undefined", "Removed");
    });
  }

  /** @internal The destination side of {@link migrate}: the domain runs here now, persistent. */
  receiveMigrated(d: Readonly<Domain>): void {
    if (this.domains.has(d.name)) throw new VirshError(["migrate"], `domain '${d.name}' already exists`);
    this.domains.set(d.name, { ...d, persistent: true, id: this.nextId++, guest: { ...d.guest } });
    this.emitLifecycle(d.name, "Defined", "Added");
    this.emitLifecycle(d.name, "Started", "Migrated");
    this.emitLifecycle(d.name, "Resumed", "Migrated");
  }

  /** Storage is shared among fakes at once, so a refresh only counts as a call (and may fail on cue). */
  refreshStoragePool(pool: string): Promise<void> {
    return this.call("refreshStoragePool", pool, () => {
      if (!this.pools.has(pool)) {
        throw new VirshError(
          ["pool-refresh", "--pool", pool],
          `failed to get pool '${pool}'\nStorage pool not found: no storage pool with matching name '${pool}'`,
        );
      }
    });
  }

  freeMemoryMiB(): Promise<number> {
    return this.call("freeMemoryMiB", undefined, () => this.freeMemory);
  }

  /** What freeMemoryMiB answers from now on. */
  setFreeMemoryMiB(mib: number): void {
    this.freeMemory = mib;
  }

  readPolicyDocuments(): Promise<readonly string[]> {
    return this.call("readPolicyDocuments", undefined, () =>
      [...this.pools.values()]
        .filter((p) => p.active)
        .flatMap((p) => [...p.volumes.values()])
        .filter((v) => v.name.endsWith(POLICY_VOLUME_SUFFIX) && v.content !== undefined)
        .map((v) => v.content!),
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const d of this.domains.values()) clearTimeout(d.shutdownTimer);
    await this.events.close();
  }

  // ---- plumbing --------------------------------------------------------------------------------

  /** Logs the call, answers on a later turn, and applies gates and injected failures around `effect`. */
  private async call<T>(method: DriverMethod, subject: string | undefined, effect: () => T): Promise<T> {
    this.log.push({ method, ...(subject === undefined ? {} : { subject }), at: performance.now() });
    if (this.closed) throw new Error(`virsh session for ${this.uri} is closed`);
    await (this.latencyMs > 0
      ? new Promise((r) => setTimeout(r, this.latencyMs))
      : new Promise((r) => setImmediate(r)));
    const gate = this.gates.find(
      (g) => g.method === method && (g.target === undefined || this.matches(g.target, subject)),
    );
    if (gate) {
      this.gates.splice(this.gates.indexOf(gate), 1);
      gate.arrive();
      await gate.released;
    }
    if (this.down) {
      throw new VirshError(
        [method],
        "failed to connect to the hypervisor\nFailed to connect socket to '/var/run/libvirt/libvirt-sock': Connection refused",
      );
    }
    const failure = this.failures.find(
      (f) => f.method === method && (f.target === undefined || this.matches(f.target, subject)),
    );
    if (failure && --failure.remaining <= 0) this.failures.splice(this.failures.indexOf(failure), 1);
    const injected = () =>
      typeof failure!.error === "function"
        ? failure!.error()
        : (failure!.error ??
          new VirshError([method, ...(subject ? [subject] : [])], "injected failure (FakeDriver.failNext)"));
    if (failure && !failure.afterEffect) throw injected();
    const result = effect();
    if (failure) throw injected();
    return result;
  }

  private matches(target: string, subject: string | undefined): boolean {
    if (subject === undefined) return false;
    if (target === subject) return true;
    const d = this.lookup(subject);
    return d !== undefined && (d.name === target || d.uuid === target);
  }

  /** As virsh resolves a domain argument: id, then UUID, then name. */
  private lookup(nameOrUuid: string): Domain | undefined {
    // One pass, the needle normalised once: benchmarks look up thousands of domains by UUID.
    if (/^\d+$/.test(nameOrUuid)) {
      const id = Number(nameOrUuid);
      for (const d of this.domains.values()) if (d.id === id) return d;
    }
    if (UUID.test(nameOrUuid)) {
      const uuid = normalUuid(nameOrUuid);
      for (const d of this.domains.values()) if (d.uuid === uuid) return d;
    }
    return this.domains.get(nameOrUuid);
  }

  private requireDomain(nameOrUuid: string, args: readonly string[]): Domain {
    const d = this.lookup(nameOrUuid);
    if (!d) throw new VirshError(args, `failed to get domain '${nameOrUuid}'`);
    return d;
  }

  private requirePool(pool: string, args: readonly string[]): Pool {
    const p = this.pools.get(pool);
    if (!p || !p.active) {
      throw new VirshError(
        args,
        `failed to get pool '${pool}'\nStorage pool not found: no storage pool with matching name '${pool}'`,
      );
    }
    return p;
  }

  private requireVolume(pool: string, name: string, args: readonly string[]): FakeVolume {
    const v = this.requirePool(pool, args).volumes.get(name);
    if (!v) {
      throw new VirshError(
        args,
        `failed to get vol '${name}'\nStorage volume not found: no storage vol with matching path '${name}'`,
      );
    }
    return v;
  }

  /** Current metadata (live when running) in libvirt's answer's form, with the namespace put back. */
  private metadataOf(d: Domain, uri: string): string | undefined {
    const entry = (d.live ?? d.config).metadata.get(uri);
    if (!entry) return undefined;
    const n = entry.node;
    return render([element(tagOf(n), { xmlns: uri, ...attrsOf(n) }, childrenOf(n))]);
  }

  /**
   * Edits the live (when running) and persistent metadata; a transient domain has only the live
   * one (libvirt refuses `--config` for it, and the driver then edits `--live` alone).
   */
  private editMetadata(d: Domain, _args: readonly string[], edit: (m: Map<string, MetadataEntry>) => void): void {
    if (d.persistent) edit(d.config.metadata);
    if (d.live) edit(d.live.metadata);
  }

  /** qemu's refusal to start with a volume disk that does not exist; undefined when all exist. */
  private missingVolume(def: DomainDef): string | undefined {
    const devices = child(def.root, "devices");
    for (const disk of devices ? childrenOf(devices).filter((c) => tagOf(c) === "disk") : []) {
      if (attrsOf(disk).type !== "volume") continue;
      const source = child(disk, "source");
      const { pool, volume } = source ? attrsOf(source) : {};
      if (!pool || !volume) continue;
      const p = this.pools.get(pool);
      if (!p || !p.active) return `Storage pool not found: no storage pool with matching name '${pool}'`;
      if (!p.volumes.has(volume)) return `Storage volume not found: no storage vol with matching name '${volume}'`;
    }
    return undefined;
  }

  private stop(d: Domain, detail: "Shutdown" | "Destroyed"): void {
    clearTimeout(d.shutdownTimer);
    d.state = "shut off";
    d.live = undefined;
    d.id = undefined;
    // A transient domain ends with its run (libvirt raises no Undefined event for it then).
    if (!d.persistent) this.domains.delete(d.name);
    this.emitLifecycle(d.name, "Stopped", detail);
  }

  /** Raised after the call that caused it has answered, as libvirt's events arrive. */
  private emitLifecycle(domain: string, event: LifecycleEventName, detail: string): void {
    const timestamp = new Date(this.clock());
    setImmediate(() => this.events.deliver({ domain, event, detail, timestamp }));
  }
}

/** The definition as stored: `<uuid>` dropped (kept on the domain), `<metadata>` split by namespace. */
function toDef(root: XmlNode): DomainDef {
  const metadata = new Map<string, MetadataEntry>();
  const kept: XmlNode[] = [];
  for (const c of childrenOf(root)) {
    const tag = tagOf(c);
    if (tag === "uuid") continue;
    if (tag !== "metadata") {
      kept.push(c);
      continue;
    }
    for (const m of childrenOf(c)) {
      const split = isText(m) ? undefined : metadataEntry(m);
      if (split) metadata.set(split.uri, split.entry);
    }
  }
  return { root: element("domain", attrsOf(root), kept), metadata };
}

/**
 * What `metadata --set` stores: VirshDriver sends the element without our namespace (prefixed or
 * default), and libvirt files it under `uri` with `key` as its prefix.
 */
function unqualified(root: XmlNode, uri: string, key: string): MetadataEntry {
  const tag = tagOf(root);
  const attrs = { ...attrsOf(root) };
  let prefix = "";
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== uri) continue;
    if (name === "xmlns") delete attrs[name];
    else if (name.startsWith("xmlns:")) {
      prefix = name.slice(6);
      delete attrs[name];
    }
  }
  const stripped = retag(root, prefix, false);
  return { key, node: element(prefix ? tagOf(stripped) : tag, attrs, childrenOf(stripped)) };
}

function renderDomain(d: Domain, def: DomainDef, id: number | undefined, securityInfo: boolean): string {
  const { type, ...rest } = attrsOf(def.root);
  const rootAttrs: Record<string, string> = {
    ...(type === undefined ? {} : { type }),
    ...(id === undefined ? {} : { id: String(id) }),
    ...rest,
  };
  const metadata = [...def.metadata].map(([uri, e]) => {
    const n = retag(e.node, e.key, true);
    return element(tagOf(n), { [e.key ? `xmlns:${e.key}` : "xmlns"]: uri, ...attrsOf(n) }, childrenOf(n));
  });
  const out: XmlNode[] = [];
  const kids = childrenOf(def.root).map((c) => (securityInfo ? c : withoutPasswords(c)));
  // libvirt's order: name, uuid, title/description, metadata, the rest.
  const headEnd = Math.max(
    0,
    ...["name", "title", "description"].map((t) => kids.findIndex((c) => tagOf(c) === t) + 1),
  );
  kids.forEach((c, i) => {
    out.push(c);
    if (tagOf(c) === "name") out.push(element("uuid", {}, [{ "#text": d.uuid }]));
    if (i === headEnd - 1 && metadata.length > 0) out.push(element("metadata", {}, metadata));
  });
  return `${render([element("domain", rootAttrs, out)])}\n`;
}

/** libvirt leaves graphics passwords out of domain XML unless asked for them (`--security-info`). */
function withoutPasswords(n: XmlNode): XmlNode {
  if (isText(n)) return n;
  const tag = tagOf(n);
  const attrs = { ...attrsOf(n) };
  if (tag === "graphics") delete attrs.passwd;
  return element(tag, attrs, childrenOf(n).map(withoutPasswords));
}

/** Ports libvirt assigns to `autoport` SPICE displays at start. */
function assignSpicePorts(def: DomainDef, id: number): void {
  const devices = child(def.root, "devices");
  if (!devices) return;
  const list = childrenOf(devices);
  list.forEach((c, i) => {
    const a = attrsOf(c);
    if (tagOf(c) === "graphics" && a.type === "spice" && a.autoport === "yes") {
      list[i] = element("graphics", { ...a, port: String(5900 + id) }, childrenOf(c));
    }
  });
}

/** `vol-dumpxml` as the test hypervisor prints it. */
function renderVolume(v: FakeVolume): string {
  const backing = v.backing
    ? `  <backingStore>\n    <path>${escapeXml(v.backing.path)}</path>\n    <format type='${escapeXml(v.backing.format)}'/>\n  </backingStore>\n`
    : "";
  return (
    `<volume type='file'>\n` +
    `  <name>${escapeXml(v.name)}</name>\n` +
    `  <key>${escapeXml(v.path)}</key>\n` +
    `  <capacity unit='bytes'>${v.capacityBytes}</capacity>\n` +
    `  <allocation unit='bytes'>${v.allocationBytes}</allocation>\n` +
    `  <target>\n    <path>${escapeXml(v.path)}</path>\n    <format type='${escapeXml(v.format)}'/>\n  </target>\n` +
    backing +
    `</volume>\n`
  );
}

function pick(attrs: Record<string, string>, ...names: string[]): Record<string, string> {
  return Object.fromEntries(names.filter((n) => attrs[n] !== undefined).map((n) => [n, attrs[n]!]));
}

/** The temp file VirshDriver would have written the XML to (only for messages). */
const tempFile = () => `/tmp/vmpools-virsh-fake/${randomUUID()}.xml`;
