import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { EventEmitter } from "node:events";
import { spawnTiedToParent } from "./virsh-session";

/** libvirt's lifecycle event types, as `virsh event` names them. */
export type LifecycleEventName =
  "Defined" | "Undefined" | "Started" | "Suspended" | "Resumed" | "Stopped" | "Shutdown" | "PMSuspended" | "Crashed";

export interface LifecycleEvent {
  readonly domain: string;
  readonly event: LifecycleEventName;
  /** e.g. `Booted`, `Destroyed`, `Shutdown`, `Finished`, `From snapshot`. */
  readonly detail: string;
  readonly timestamp: Date;
}

export interface DomainEventsOptions {
  readonly uri: string;
  /** @default "virsh" */
  readonly virshPath?: string;
  /** First delay before re-subscribing after the stream ended; doubles up to `maxBackoffMs`. @default 250 */
  readonly minBackoffMs?: number;
  /** @default 10000 */
  readonly maxBackoffMs?: number;
}

export interface DomainEventMap {
  lifecycle: [LifecycleEvent];
  /** Subscribed (again). Events may have been missed before this: resync from libvirt now. */
  ready: [];
  /** The stream ended (e.g. libvirtd restarted); it is re-subscribed after a backoff. */
  disconnected: [reason: string];
}

/** What the reconciler needs of an event stream (DomainEvents, or a test's fake). */
export interface DomainEventSource {
  on<K extends keyof DomainEventMap>(event: K, listener: (...args: DomainEventMap[K]) => void): unknown;
  off<K extends keyof DomainEventMap>(event: K, listener: (...args: DomainEventMap[K]) => void): unknown;
  /** Resolves once subscribed. */
  ready(): Promise<void>;
}

/** The first lifecycle event of `source` matching `predicate`; register before causing the event. */
export function waitForLifecycle(
  source: DomainEventSource,
  predicate: (e: LifecycleEvent) => boolean,
  timeoutMs: number,
): Promise<LifecycleEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      source.off("lifecycle", onEvent);
      reject(new Error(`no matching lifecycle event within ${timeoutMs} ms`));
    }, timeoutMs);
    const onEvent = (e: LifecycleEvent) => {
      if (!predicate(e)) return;
      clearTimeout(timer);
      source.off("lifecycle", onEvent);
      resolve(e);
    };
    source.on("lifecycle", onEvent);
  });
}

const LIFECYCLE =
  /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d)(\d\d): event 'lifecycle' for domain '(.*)': (\w+)(?: (.*))?$/;
// libvirt logs each callback registration on entry; virsh registers lifecycle first, so the
// second registration proves the lifecycle one has returned.
const REGISTRATION = "virConnectDomainEventRegisterAny";

/**
 * Domain lifecycle events from a long-running `virsh event --all --loop --timestamp` child,
 * re-spawned with backoff whenever it exits (virsh ends the loop when libvirtd goes away).
 * For an async iterator use `events.on(domainEvents, "lifecycle")` from `node:events`.
 */
export class DomainEvents extends EventEmitter<DomainEventMap> implements DomainEventSource {
  private child?: ChildProcessWithoutNullStreams;
  private restartTimer?: NodeJS.Timeout;
  private backoffMs: number;
  private subscribed = false;
  private closed = false;
  private stderrTail = "";

  constructor(private readonly options: DomainEventsOptions) {
    super();
    this.backoffMs = options.minBackoffMs ?? 250;
    this.spawnChild();
  }

  /** Process id of the current `virsh event` child, if one is running. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Resolves once the subscription is in place, so that later domain changes are seen. */
  ready(timeoutMs = 10_000): Promise<void> {
    if (this.subscribed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off("ready", onReady);
        reject(new Error(`virsh event (${this.options.uri}) not subscribed after ${timeoutMs} ms${this.lastWords()}`));
      }, timeoutMs);
      const onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      this.once("ready", onReady);
    });
  }

  /** The first lifecycle event matching `predicate`; register before causing the event. */
  waitFor(predicate: (e: LifecycleEvent) => boolean, timeoutMs: number): Promise<LifecycleEvent> {
    return waitForLifecycle(this, predicate, timeoutMs);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.restartTimer);
    const child = this.child;
    if (!child) return;
    const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
    child.kill("SIGTERM");
    await exited;
  }

  private spawnChild(): void {
    // Tied to this process: `virsh event --loop` reads no stdin, so nothing else ends it when
    // serve is killed with -9.
    const child = spawnTiedToParent(
      this.options.virshPath ?? "virsh",
      ["-q", "-c", this.options.uri, "event", "--all", "--loop", "--timestamp"],
      {
        env: {
          ...process.env,
          LC_ALL: "C.UTF-8",
          LIBVIRT_LOG_FILTERS: "1:libvirt.domain",
          LIBVIRT_LOG_OUTPUTS: "1:stderr",
        },
        stdio: "pipe",
      },
    );
    this.child = child;
    this.stderrTail = "";
    let registrations = 0;
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    onLines(child.stdout, (line) => {
      const m = LIFECYCLE.exec(line);
      if (!m) return;
      this.markSubscribed();
      const [, date, time, tzHours, tzMinutes, domain, event, detail] = m;
      const timestamp = new Date(`${date}T${time}${tzHours}:${tzMinutes}`);
      this.emit("lifecycle", { domain: domain!, event: event as LifecycleEventName, detail: detail ?? "", timestamp });
    });
    onLines(child.stderr, (line) => {
      if (line.includes(REGISTRATION)) {
        if (++registrations === 2) this.markSubscribed();
      } else if (line.startsWith("error: ") || line.startsWith("setpriv: ")) {
        // setpriv speaks when it cannot run virsh (e.g. not installed).
        this.stderrTail = (this.stderrTail + "\n" + line.replace(/^error: /, "")).slice(-2000);
      }
    });
    child.on("error", (e) => this.onChildGone(child, e.message));
    child.on("close", (code, signal) => this.onChildGone(child, `exited (${signal ?? `code ${code}`})`));
  }

  private markSubscribed(): void {
    if (this.subscribed) return;
    this.subscribed = true;
    this.backoffMs = this.options.minBackoffMs ?? 250;
    this.emit("ready");
  }

  private onChildGone(child: ChildProcessWithoutNullStreams, reason: string): void {
    if (this.child !== child) return;
    this.child = undefined;
    this.subscribed = false;
    if (this.closed) return;
    this.emit("disconnected", `virsh event ${reason}${this.lastWords()}`);
    this.restartTimer = setTimeout(() => this.spawnChild(), this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, this.options.maxBackoffMs ?? 10_000);
  }

  private lastWords(): string {
    return this.stderrTail ? `: ${this.stderrTail.trim()}` : "";
  }
}

function onLines(stream: NodeJS.ReadableStream, handle: (line: string) => void): void {
  let partial = "";
  stream.on("data", (chunk: string) => {
    const parts = (partial + chunk).split("\n");
    partial = parts.pop()!;
    for (const line of parts) handle(line);
  });
}
