import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { METADATA_NAMESPACE, METADATA_PREFIX, POLICY_VOLUME_SUFFIX } from "../../core/metadata";
import { escapeXml } from "../../core/xml";
import { VirshError, VirshSession, type RunOptions, type VirshSessionOptions } from "./virsh-session";

/** Sessions (virsh processes) a driver may run commands on at once, volume deletes aside. */
const PARALLEL_SESSIONS = 3;

/** Domain states as virsh names them (`virsh domstate`). */
export const DOMAIN_STATES = [
  "no state",
  "running",
  "idle",
  "paused",
  "in shutdown",
  "shut off",
  "crashed",
  "pmsuspended",
] as const;
export type DomainState = (typeof DOMAIN_STATES)[number];

export interface DomainInfo {
  readonly name: string;
  readonly uuid: string;
  readonly state: DomainState;
  /**
   * false for a transient domain: one undefined while running, which vanishes when it stops.
   * @default true
   */
  readonly persistent?: boolean;
  /** The domain's element in the metadata namespace asked for, with `xmlns` set; absent when it has none. */
  readonly metadataXml?: string;
}

export interface ListDomainsOptions {
  /**
   * Fetch each domain's metadata element: one libvirt call per domain. Without it a listing
   * costs four calls, e.g. for a frequent resync that fetches metadata only for new UUIDs.
   * @default true
   */
  readonly metadata?: boolean;
  /** @default METADATA_NAMESPACE (the pool member metadata) */
  readonly metadataUri?: string;
}

export interface OverlayVolumeSpec {
  /** Absolute path of the base image the overlay reads through to. */
  readonly backingPath: string;
  /** Format of the base image, e.g. `qcow2` or `raw`. */
  readonly backingFormat: string;
  readonly capacityBytes: number;
  /** @default "qcow2" */
  readonly format?: string;
}

export interface DomainXmlOptions {
  /** The persistent config rather than the running one. @default false */
  readonly inactive?: boolean;
  /** Include passwords (e.g. graphics `passwd`). @default false */
  readonly securityInfo?: boolean;
}

/** `acpi` presses the power button; `agent` asks the guest agent. */
export type ShutdownMode = "acpi" | "agent" | "initctl" | "signal" | "paravirt";

export interface MigrateOptions {
  /** @default true */
  readonly live?: boolean;
  /** Define the domain on the destination. @default true */
  readonly persistent?: boolean;
  /** Remove the definition from the source once migrated. @default true */
  readonly undefineSource?: boolean;
  /** @default false */
  readonly autoConverge?: boolean;
  /** @default false */
  readonly compressed?: boolean;
  /** Maximum tolerable pause at the end of a live migration. @default libvirt's (300 ms) */
  readonly maxDowntimeMs?: number;
  /** Bandwidth cap in MiB/s. @default unlimited */
  readonly bandwidthMiBs?: number;
  /**
   * How long the migration may take: past it, `onTimeout` applies (the default gives up,
   * killing virsh). @default 3600000
   */
  readonly timeoutMs?: number;
  /**
   * Past `timeoutMs`: "abort" the migration (the guest runs on at the source), or "suspend" the
   * guest so that the migration finishes with it paused. @default "abort"
   */
  readonly onTimeout?: "abort" | "suspend";
  /**
   * Migrate even though libvirt cannot tell that the disks are on shared storage (it knows
   * network and cluster file systems; a folder both hosts share otherwise, as in the tests'
   * hosts on one machine, looks local to it). @default false
   */
  readonly unsafe?: boolean;
  /**
   * Where the migration stream goes, e.g. `tcp://10.0.0.2`, when the destination's host name
   * (libvirt's default) does not lead there. @default libvirt's choice
   */
  readonly migrateUri?: string;
}

/** What the reconciler needs from libvirt; one instance talks to one connection URI. */
export interface LibvirtDriver {
  /** The domain type this connection defines domains with (`test` on the test hypervisor). @default "qemu" */
  readonly domainType?: string;
  /**
   * The same connection for work no answer waits for (holder marks, prestarts): its commands
   * never queue ahead of a take's start or a return's revert.
   * @default this driver
   */
  readonly background?: LibvirtDriver;
  /** Every defined or running domain with its state and, when present, its metadata element. */
  listDomains(options?: ListDomainsOptions): Promise<readonly DomainInfo[]>;
  domainState(name: string): Promise<DomainState>;
  /** Defines (or redefines) a persistent domain from its XML. */
  defineDomain(xml: string): Promise<void>;
  undefineDomain(name: string): Promise<void>;
  start(name: string): Promise<void>;
  /** Asks the guest to power off (ACPI by default); returns before the guest is down. */
  shutdown(name: string, mode?: ShutdownMode): Promise<void>;
  /** Powers the domain off at once, like pulling the plug. */
  destroy(name: string): Promise<void>;
  /** Replaces the domain's element in namespace `uri`, in its persistent config and, if running, live. */
  setMetadata(name: string, uri: string, xml: string, key?: string): Promise<void>;
  /** The domain's element in namespace `uri` (with `xmlns` set), or undefined when it has none. */
  getMetadata(name: string, uri: string): Promise<string | undefined>;
  /** Removes the domain's element in namespace `uri` (persistent config and, if running, live); no-op when absent. */
  removeMetadata(name: string, uri: string): Promise<void>;
  /** The domain's XML: live when running unless `inactive`; passwords only with `securityInfo`. */
  domainXml(name: string, options?: DomainXmlOptions): Promise<string>;
  /** Changes a device of the running domain in place (e.g. a graphics password), live only. */
  updateDeviceLive(name: string, deviceXml: string): Promise<void>;
  volumePath(pool: string, name: string): Promise<string>;
  volumeXml(pool: string, name: string): Promise<string>;
  deleteVolume(pool: string, name: string): Promise<void>;
  /** Creates a copy-on-write volume over a base image; resolves with the new volume's path. */
  createOverlayVolume(pool: string, name: string, spec: OverlayVolumeSpec): Promise<string>;
  migrate(name: string, destinationUri: string, options?: MigrateOptions): Promise<void>;
  /** The host's free memory in MiB, for placing starts by headroom. */
  freeMemoryMiB(): Promise<number>;
  /** Re-reads a storage pool's volumes (ones another host of shared storage made are then known here). */
  refreshStoragePool(pool: string): Promise<void>;
  /**
   * The contents of every pool policy volume (`*.vmpools-policy.xml`) in the active storage pools.
   * Volumes that cannot be read (e.g. drivers without volume download) are left out.
   */
  readPolicyDocuments(): Promise<readonly string[]>;
  close(): Promise<void>;
}

/** {@link LibvirtDriver} over one persistent virsh session (plus one-off virsh processes for migrations). */
export class VirshDriver implements LibvirtDriver {
  readonly session: VirshSession;
  /** For volume deletes only (see deleteVolume); started on first use. */
  private volumeSession?: VirshSession;
  /** Further sessions, started as the load asks for them (see run). */
  private readonly moreSessions: VirshSession[] = [];
  private backgroundDriver?: VirshDriver;
  private tempDir?: Promise<string>;

  constructor(
    private readonly options: VirshSessionOptions,
    /** Sessions `run` may spread commands over. */
    private readonly maxSessions = PARALLEL_SESSIONS,
  ) {
    this.session = new VirshSession(options);
  }

  /**
   * One session of its own, started on first use. In a burst of 1000 takes the 200 holder marks
   * written after the answers queued ahead of later takes' starts on the shared sessions.
   */
  get background(): VirshDriver {
    this.backgroundDriver ??= new VirshDriver(this.options, 1);
    return this.backgroundDriver;
  }

  get domainType(): string {
    return /^test(\+|:)/.test(this.options.uri) ? "test" : "qemu";
  }

  async listDomains(options: ListDomainsOptions = {}): Promise<readonly DomainInfo[]> {
    const uri = options.metadataUri ?? METADATA_NAMESPACE;
    // Five list calls instead of one state query per domain; the metadata queries below are
    // pipelined on the session, so 1000 domains cost 1000 RPCs but no round trips between them.
    const [all, running, paused, shutOff, transient] = await Promise.all([
      this.run(["list", "--all", "--uuid", "--name"]),
      this.run(["list", "--all", "--state-running", "--uuid"]),
      this.run(["list", "--all", "--state-paused", "--uuid"]),
      this.run(["list", "--all", "--state-shutoff", "--uuid"]),
      this.run(["list", "--all", "--transient", "--uuid"]),
    ]);
    const transientUuids = new Set(lines(transient));
    const states = new Map<string, DomainState | "ambiguous">();
    for (const [state, text] of [
      ["running", running],
      ["paused", paused],
      ["shut off", shutOff],
    ] as const) {
      for (const uuid of lines(text)) states.set(uuid, states.has(uuid) ? "ambiguous" : state);
    }
    const domains = lines(all).map((l) => ({ uuid: l.slice(0, 36), name: l.slice(37) }));
    const found = await Promise.all(
      domains.map(async ({ uuid, name }): Promise<DomainInfo | undefined> => {
        try {
          const known = states.get(uuid);
          // Other states, and domains that changed state between the list calls, are asked for.
          const [state, metadataXml] = await Promise.all([
            known === undefined || known === "ambiguous" ? this.domainState(uuid) : known,
            options.metadata === false ? undefined : this.getMetadata(uuid, uri),
          ]);
          const persistent = !transientUuids.has(uuid);
          return metadataXml === undefined
            ? { name, uuid, state, persistent }
            : { name, uuid, state, persistent, metadataXml };
        } catch (e) {
          // Undefined since the list call.
          if (e instanceof VirshError && e.notFound) return undefined;
          throw e;
        }
      }),
    );
    return found.filter((d): d is DomainInfo => d !== undefined);
  }

  async domainState(name: string): Promise<DomainState> {
    const text = (await this.run(["domstate", "--domain", name])).trim();
    const state = DOMAIN_STATES.find((s) => s === text);
    if (!state) throw new Error(`virsh domstate ${name}: unexpected state '${text}'`);
    return state;
  }

  async defineDomain(xml: string): Promise<void> {
    await this.withTempFile(xml, (file) => this.run(["define", "--file", file]));
  }

  async undefineDomain(name: string): Promise<void> {
    // Metadata of snapshots, checkpoints and managed saves would otherwise block the undefine.
    const args = ["undefine", "--domain", name, "--managed-save", "--snapshots-metadata", "--checkpoints-metadata"];
    try {
      await this.run(args);
    } catch (e) {
      // UEFI guests refuse to undefine while they own an NVRAM file; not every driver knows --nvram.
      if (!(e instanceof VirshError && /nvram/i.test(e.detail))) throw e;
      await this.run([...args, "--nvram"]);
    }
  }

  async start(name: string): Promise<void> {
    await this.run(["start", "--domain", name]);
  }

  async shutdown(name: string, mode: ShutdownMode = "acpi"): Promise<void> {
    try {
      await this.run(["shutdown", "--domain", name, "--mode", mode]);
    } catch (e) {
      // Drivers without shutdown modes (e.g. the test driver) only know their default method.
      if (!(e instanceof VirshError && /unsupported flags/.test(e.detail))) throw e;
      await this.run(["shutdown", "--domain", name]);
    }
  }

  async destroy(name: string): Promise<void> {
    await this.run(["destroy", "--domain", name]);
  }

  async setMetadata(name: string, uri: string, xml: string, key: string = METADATA_PREFIX): Promise<void> {
    const args = ["metadata", "--domain", name, "--uri", uri, "--key", key, "--set", toVirshMetadata(xml, uri)];
    await this.liveAndConfig(args);
  }

  async getMetadata(name: string, uri: string): Promise<string | undefined> {
    let xml: string;
    try {
      xml = (await this.run(["metadata", "--domain", name, "--uri", uri])).trim();
    } catch (e) {
      if (e instanceof VirshError && /metadata not found/i.test(e.detail)) return undefined;
      throw e;
    }
    if (xml === "") return undefined;
    // libvirt returns the element without its namespace; put it back so the XML says what it is.
    return /^<[^>]*\sxmlns=/.test(xml) ? xml : xml.replace(/^<([A-Za-z_][\w.-]*)/, `<$1 xmlns="${escapeXml(uri)}"`);
  }

  async removeMetadata(name: string, uri: string): Promise<void> {
    const args = ["metadata", "--domain", name, "--uri", uri, "--remove"];
    await this.liveAndConfig(args);
  }

  /** Changes both the running domain and its saved config; only the one of them that exists otherwise. */
  private async liveAndConfig(args: readonly string[]): Promise<void> {
    try {
      await this.run([...args, "--live", "--config"]);
    } catch (e) {
      if (!(e instanceof VirshError)) throw e;
      if (/domain is not running/.test(e.detail)) await this.run([...args, "--config"]);
      // Undefined while running: only the live domain is left.
      else if (/transient domains do not have any persistent config/.test(e.detail))
        await this.run([...args, "--live"]);
      else throw e;
    }
  }

  async domainXml(name: string, options: DomainXmlOptions = {}): Promise<string> {
    const flag = (on: boolean | undefined, f: string) => (on ? [f] : []);
    return this.run([
      "dumpxml",
      "--domain",
      name,
      ...flag(options.inactive, "--inactive"),
      ...flag(options.securityInfo, "--security-info"),
    ]);
  }

  async updateDeviceLive(name: string, deviceXml: string): Promise<void> {
    await this.withTempFile(deviceXml, (file) =>
      this.run(["update-device", "--domain", name, "--file", file, "--live"]),
    );
  }

  async volumePath(pool: string, name: string): Promise<string> {
    return (await this.run(["vol-path", "--pool", pool, "--vol", name])).trim();
  }

  async volumeXml(pool: string, name: string): Promise<string> {
    return this.run(["vol-dumpxml", "--pool", pool, "--vol", name]);
  }

  async deleteVolume(pool: string, name: string): Promise<void> {
    // On a session of its own: deleting a written overlay takes time in proportion to what was
    // written (1 GiB: ~0.2-0.5 s), and one session runs one command at a time, so on the main
    // session it would hold up every take and return behind it.
    this.volumeSession ??= new VirshSession(this.options);
    await this.volumeSession.run(["vol-delete", "--pool", pool, "--vol", name]);
  }

  async readPolicyDocuments(): Promise<readonly string[]> {
    const pools = lines(await this.run(["pool-list", "--name"])).map((l) => l.trim());
    const volumes = await Promise.all(
      pools.map(async (pool) => {
        const listing = await this.run(["vol-list", "--pool", pool]).catch(() => "");
        // Table rows are "name path"; policy volume names never contain spaces.
        return lines(listing)
          .map((l) => l.trim().split(/\s+/)[0]!)
          .filter((name) => name.endsWith(POLICY_VOLUME_SUFFIX))
          .map((name) => ({ pool, name }));
      }),
    );
    const docs = await Promise.all(
      volumes.flat().map(async ({ pool, name }) => {
        const file = await this.tempPath();
        try {
          await this.run(["vol-download", "--pool", pool, "--vol", name, "--file", file]);
          return await readFile(file, "utf8");
        } catch {
          return undefined;
        } finally {
          await rm(file, { force: true });
        }
      }),
    );
    return docs.filter((d): d is string => d !== undefined);
  }

  async createOverlayVolume(pool: string, name: string, spec: OverlayVolumeSpec): Promise<string> {
    if (!Number.isSafeInteger(spec.capacityBytes) || spec.capacityBytes <= 0) {
      throw new Error(`overlay ${name}: capacityBytes must be a positive integer, got ${spec.capacityBytes}`);
    }
    // XML rather than vol-create-as: --backing-vol must be a volume libvirt knows, while base
    // images may live outside any storage pool. Allocation 0: a fresh overlay is thin (without
    // it libvirt books the whole capacity, and pools with a fixed size fill up).
    const xml =
      `<volume><name>${escapeXml(name)}</name><capacity unit="bytes">${spec.capacityBytes}</capacity>` +
      `<allocation unit="bytes">0</allocation>` +
      `<target><format type="${escapeXml(spec.format ?? "qcow2")}"/></target>` +
      `<backingStore><path>${escapeXml(spec.backingPath)}</path><format type="${escapeXml(spec.backingFormat)}"/></backingStore>` +
      `</volume>`;
    await this.withTempFile(xml, (file) => this.run(["vol-create", "--pool", pool, "--file", file]));
    return this.volumePath(pool, name);
  }

  async migrate(name: string, destinationUri: string, options: MigrateOptions = {}): Promise<void> {
    const flag = (on: boolean | undefined, f: string) => (on ? [f] : []);
    const timeoutMs = options.timeoutMs ?? 3_600_000;
    const suspend = options.onTimeout === "suspend";
    const args = [
      "-q",
      "-c",
      this.options.uri,
      "migrate",
      "--domain",
      name,
      "--desturi",
      destinationUri,
      ...flag(options.live ?? true, "--live"),
      ...flag(options.persistent ?? true, "--persistent"),
      ...flag(options.undefineSource ?? true, "--undefinesource"),
      ...flag(options.autoConverge, "--auto-converge"),
      ...flag(options.compressed, "--compressed"),
      ...(options.bandwidthMiBs === undefined ? [] : ["--bandwidth", String(options.bandwidthMiBs)]),
      ...(options.migrateUri === undefined ? [] : ["--migrateuri", options.migrateUri]),
      ...flag(options.unsafe, "--unsafe"),
      // virsh pauses the guest itself once the timeout passes (its default --timeout action).
      ...(suspend ? ["--timeout", String(Math.max(1, Math.ceil(timeoutMs / 1000))), "--timeout-suspend"] : []),
    ];
    // A migration takes seconds to minutes: it gets its own virsh process so the session keeps
    // serving everything else meanwhile.
    const migration = new Promise<void>((resolve, reject) => {
      execFile(
        this.options.virshPath ?? "virsh",
        args,
        // A suspended guest finishes soon after the timeout; give it the same again before giving up.
        { env: { ...process.env, LC_ALL: "C.UTF-8" }, timeout: suspend ? 2 * timeoutMs : 0 },
        (error, _stdout, stderr) => {
          if (!error) resolve();
          else
            reject(
              new VirshError(
                ["migrate", name, destinationUri],
                stderr.replace(/^error: /gm, "").trim() || error.message,
              ),
            );
        },
      );
    });
    // Aborting through libvirt (not by killing virsh) leaves the guest running at the source.
    const abort = suspend
      ? undefined
      : setTimeout(() => void this.run(["domjobabort", "--domain", name]).catch(() => undefined), timeoutMs);
    try {
      if (options.maxDowntimeMs !== undefined) {
        await this.setMaxDowntimeDuring(name, options.maxDowntimeMs, migration);
      }
      await migration;
    } finally {
      clearTimeout(abort);
    }
  }

  async refreshStoragePool(pool: string): Promise<void> {
    await this.run(["pool-refresh", "--pool", pool]);
  }

  /** Free memory of the host, in MiB (`virsh freecell --all`: every NUMA cell's together). */
  async freeMemoryMiB(): Promise<number> {
    const out = await this.run(["freecell", "--all"]);
    const total = /Total:\s+(\d+)\s*KiB/i.exec(out);
    if (!total) throw new Error(`unexpected freecell answer: ${out.trim()}`);
    return Math.floor(Number(total[1]) / 1024);
  }

  /**
   * Runs a command on the least busy session. virsh runs one command at a time, so a burst of
   * takes (a start and a metadata write each) queues behind one process; libvirtd serves several
   * connections at once. Up to PARALLEL_SESSIONS are opened, each only once the others are busy.
   * Work on one member stays in order: its queue awaits each call before making the next.
   */
  private run(args: readonly string[], options?: RunOptions): Promise<string> {
    let best = this.session;
    for (const s of this.moreSessions) if (s.outstanding < best.outstanding) best = s;
    if (best.outstanding > 0 && this.moreSessions.length < this.maxSessions - 1) {
      best = new VirshSession(this.options);
      this.moreSessions.push(best);
    }
    return best.run(args, options);
  }

  async close(): Promise<void> {
    await Promise.all([
      this.session.close(),
      this.volumeSession?.close(),
      this.backgroundDriver?.close(),
      ...this.moreSessions.map((s) => s.close()),
    ]);
    if (this.tempDir) await rm(await this.tempDir, { recursive: true, force: true });
  }

  // libvirt only accepts a downtime limit while the migration job runs, so wait for the job.
  private async setMaxDowntimeDuring(name: string, downtimeMs: number, migration: Promise<void>): Promise<void> {
    let done = false;
    migration.then(
      () => (done = true),
      () => (done = true),
    );
    while (!done) {
      const job = await this.run(["domjobinfo", "--domain", name]).catch(() => "");
      if (/^Job type:\s+(Unbounded|Bounded)/m.test(job)) {
        await this.run(["migrate-setmaxdowntime", "--domain", name, "--downtime", String(downtimeMs)]);
        return;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** A fresh file name in this driver's private temp folder (the caller removes the file). */
  private async tempPath(): Promise<string> {
    this.tempDir ??= mkdtemp(join(tmpdir(), "vmpools-virsh-"));
    return join(await this.tempDir, `${randomUUID()}.xml`);
  }

  private async withTempFile<T>(content: string, use: (file: string) => Promise<T>): Promise<T> {
    const file = await this.tempPath();
    await writeFile(file, content, { mode: 0o600 });
    try {
      return await use(file);
    } finally {
      await rm(file, { force: true });
    }
  }
}

function lines(text: string): string[] {
  return text.split("\n").filter((l) => l.trim() !== "");
}

/**
 * virsh's `metadata --set` wants the element without our namespace (libvirt adds it from
 * `--uri`/`--key` and refuses a second declaration) and on one line (one command per line).
 * Literal tabs and newlines become spaces, which XML treats alike between and inside attributes.
 */
function toVirshMetadata(xml: string, uri: string): string {
  let out = xml.trim().replace(/[\t\r\n]+/g, " ");
  const escaped = uri.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const prefixed = new RegExp(`\\sxmlns:([A-Za-z_][\\w.-]*)=(["'])${escaped}\\2`).exec(out);
  if (prefixed) {
    const p = prefixed[1]!;
    out = out.replace(prefixed[0], "").replace(new RegExp(`<(/?)${p}:`, "g"), "<$1");
  }
  return out.replace(new RegExp(`\\sxmlns=(["'])${escaped}\\1`), "");
}
