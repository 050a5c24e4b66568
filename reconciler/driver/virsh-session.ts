import { spawn, spawnSync, type ChildProcessWithoutNullStreams, type SpawnOptions } from "node:child_process";
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";

export interface VirshSessionOptions {
  /** libvirt connection URI, e.g. `qemu:///system` or `test+unix:///default`. */
  readonly uri: string;
  /** @default "virsh" */
  readonly virshPath?: string;
  /**
   * How many commands are written to virsh ahead of their answers. virsh still runs them one
   * at a time; writing ahead only removes the round trip between two commands.
   * @default 64
   */
  readonly pipelineDepth?: number;
  /**
   * A command unanswered for this long kills the child (failing every command in flight), so
   * one hung libvirt call cannot stall the reconciler forever.
   * @default 120000
   */
  readonly commandTimeoutMs?: number;
}

export interface RunOptions {
  /** Overrides {@link VirshSessionOptions.commandTimeoutMs} for this command. */
  readonly timeoutMs?: number;
}

export interface LatencyStats {
  /** Answered commands over the session's lifetime. */
  readonly count: number;
  /** Percentiles over the last 1024 answered commands, in milliseconds, write to answer. */
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

/** A virsh command that ran and failed; `detail` is virsh's error text without `error: ` prefixes. */
export class VirshError extends Error {
  constructor(
    readonly command: readonly string[],
    readonly detail: string,
  ) {
    super(`virsh ${abbreviate(command.join(" "))}: ${detail}`);
    this.name = "VirshError";
  }

  /**
   * libvirtd went away (restart, crash): virsh reports it on the first command after, and
   * reconnects on the next one.
   */
  get connectionLost(): boolean {
    return /Disconnected from .* due to|end of file while reading data|client socket is closed|Cannot recv data|Cannot write data/i.test(
      this.detail,
    );
  }

  /** The domain, volume, pool or metadata element the command named does not exist. */
  get notFound(): boolean {
    return /failed to get (domain|vol|pool)|not found/i.test(this.detail);
  }
}

/**
 * Quotes one argument for virsh's shell-like command parser: plain words stay bare, anything
 * else goes in single quotes with `'` written as `'\''`. Control characters are refused: virsh
 * reads one command per line through readline, where a newline ends the command and a tab
 * triggers completion. Quoting does not stop virsh reading a positional `--word` as an option,
 * so pass such values after their option name (`--domain`, `--pool`, …).
 */
export function quoteVirshArg(arg: string): string {
  if (/\p{Cc}/u.test(arg)) {
    throw new Error(`virsh arguments cannot contain control characters (newline, tab, …): ${JSON.stringify(arg)}`);
  }
  return /^[A-Za-z0-9_.,:/=@%+-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

let pdeathsig: boolean | undefined;

/**
 * Spawns a long-running helper (virsh) that dies with this process, also on `kill -9`, when
 * nothing else would end it (`virsh event --loop` reads no stdin; a session mid-command does not
 * see its EOF). util-linux `setpriv --pdeathsig KILL` asks the kernel to kill the child when its
 * parent dies, then execs the command, so the child's pid is the command's own. Where setpriv is
 * missing (not Linux, util-linux before 2.33) the child is spawned as is.
 */
export function spawnTiedToParent(
  command: string,
  args: readonly string[],
  options: SpawnOptions & { stdio: "pipe" },
): ChildProcessWithoutNullStreams {
  pdeathsig ??= spawnSync("setpriv", ["--pdeathsig", "KILL", "--", "true"], { stdio: "ignore" }).status === 0;
  return pdeathsig
    ? spawn("setpriv", ["--pdeathsig", "KILL", "--", command, ...args], options)
    : spawn(command, args, options);
}

interface Pending {
  readonly args: readonly string[];
  readonly line: string;
  readonly seq: number;
  readonly timeoutMs: number;
  readonly resolve: (stdout: string) => void;
  readonly reject: (error: Error) => void;
  sentAt?: number;
  timer?: NodeJS.Timeout;
  timedOut?: boolean;
  outFrame?: string;
  errFrame?: string;
}

const LATENCY_WINDOW = 1024;
// virsh reports a transparent reconnect (after a libvirtd restart) as an error line, then runs
// the command normally.
const INFORMATIONAL = /^error: Reconnected to the hypervisor$/;

/**
 * One persistent interactive `virsh -q -c <uri>` child serving every command.
 *
 * Framing: each command is sent as the line `echo S;<cmd>;echo E` followed by the line
 * `echo --err Z;echo Z`. stdout between S and E is the command's output; stderr up to `error: Z`
 * holds its errors. Z also closes the frame when virsh rejects the first line's syntax (it then
 * skips the whole line, S and E included). Markers are written with an empty quoted string
 * inside (`@''…`), so readline's echo of the input on stdout never contains them literally.
 * readline reads and echoes input a byte at a time, so every byte of a frame costs time: the
 * frame is kept short.
 */
export class VirshSession {
  private readonly virshPath: string;
  private readonly pipelineDepth: number;
  private readonly commandTimeoutMs: number;
  private readonly nonce = randomBytes(2).toString("hex");
  private readonly queue: Pending[] = [];
  private readonly inFlight: Pending[] = [];
  private readonly latencies = new Float64Array(LATENCY_WINDOW);
  private answered = 0;
  private seq = 0;
  private child?: ChildProcessWithoutNullStreams;
  private outBuf = "";
  private errBuf = "";
  private closed = false;

  constructor(private readonly options: VirshSessionOptions) {
    this.virshPath = options.virshPath ?? "virsh";
    this.pipelineDepth = options.pipelineDepth ?? 64;
    this.commandTimeoutMs = options.commandTimeoutMs ?? 120_000;
  }

  get uri(): string {
    return this.options.uri;
  }

  /** Process id of the current virsh child, if one is running. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Commands written or waiting to be, for spreading work over several sessions. */
  get outstanding(): number {
    return this.queue.length + this.inFlight.length;
  }

  /**
   * Runs one virsh command (`["dominfo", "--domain", name]`) and resolves with its stdout.
   * Commands that read the terminal (`console`, `edit`) would swallow the commands behind them.
   */
  run(args: readonly string[], options: RunOptions = {}): Promise<string> {
    // A command that met a lost connection (libvirtd restarted) is sent once more: virsh has
    // reconnected by then. The driver's commands are reads or state changes that either repeat
    // harmlessly or fail with a clear libvirt error (e.g. "already running").
    return this.runOnce(args, options).catch((e: unknown) => {
      if (e instanceof VirshError && e.connectionLost && !this.closed) return this.runOnce(args, options);
      throw e;
    });
  }

  private runOnce(args: readonly string[], options: RunOptions): Promise<string> {
    if (this.closed) return Promise.reject(new Error(`virsh session for ${this.uri} is closed`));
    if (args.length === 0) return Promise.reject(new Error("virsh command is empty"));
    let line: string;
    try {
      line = args.map(quoteVirshArg).join(" ");
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<string>((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
      this.queue.push({ args, line, seq: this.seq++, timeoutMs, resolve, reject });
      this.pump();
    });
  }

  latencyStats(): LatencyStats {
    const n = Math.min(this.answered, LATENCY_WINDOW);
    const sorted = Array.from(this.latencies.subarray(0, n)).sort((a, b) => a - b);
    const at = (q: number) => (n === 0 ? 0 : sorted[Math.min(n - 1, Math.floor(q * n))]!);
    return { count: this.answered, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: n === 0 ? 0 : sorted[n - 1]! };
  }

  /** Lets commands already written finish, fails queued ones, and waits for virsh to exit. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.queue.splice(0))
      p.reject(new Error(`virsh session for ${this.uri} closed before \`${p.line}\` ran`));
    const child = this.child;
    if (!child) return;
    const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
    child.stdin.end();
    const killer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(killer);
  }

  private marker(seq: number, kind: "S" | "E" | "Z"): string {
    // The upper-case kind ends the lower-case base-36 sequence number, so no marker is a prefix of another.
    return `@${this.nonce}${seq.toString(36)}${kind}`;
  }

  private pump(): void {
    if (this.queue.length === 0 || this.inFlight.length >= this.pipelineDepth) return;
    const child = this.child ?? this.spawnChild();
    let text = "";
    while (this.queue.length > 0 && this.inFlight.length < this.pipelineDepth) {
      const p = this.queue.shift()!;
      // Same text as marker(), split by an empty quoted string that virsh drops.
      const [s, e, z] = (["S", "E", "Z"] as const).map((k) => `@''${this.marker(p.seq, k).slice(1)}`);
      text += `echo ${s};${p.line};echo ${e}\necho --err ${z};echo ${z}\n`;
      p.sentAt = performance.now();
      p.timer = setTimeout(() => {
        p.timedOut = true;
        child.kill("SIGKILL");
      }, p.timeoutMs);
      this.inFlight.push(p);
    }
    child.stdin.write(text);
  }

  private spawnChild(): ChildProcessWithoutNullStreams {
    // C.UTF-8: English messages (we match on them) and readline passes UTF-8 names through
    // instead of treating high bytes as meta keys.
    const child = spawnTiedToParent(this.virshPath, ["-q", "-c", this.uri], {
      env: { ...process.env, LC_ALL: "C.UTF-8" },
      stdio: "pipe",
    });
    this.child = child;
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => this.onOutput("out", chunk));
    child.stderr.on("data", (chunk: string) => this.onOutput("err", chunk));
    // Writes after the child died fail with EPIPE; the close handler fails those commands.
    child.stdin.on("error", () => undefined);
    child.on("error", (e) => this.onChildGone(child, `could not run ${this.virshPath}: ${e.message}`));
    // "close" (not "exit") so that answers still buffered in the pipes are delivered first.
    child.on("close", (code, signal) => this.onChildGone(child, `exited (${signal ?? `code ${code}`})`));
    return child;
  }

  private onOutput(stream: "out" | "err", chunk: string): void {
    if (stream === "out") this.outBuf += chunk;
    else this.errBuf += chunk;
    for (;;) {
      const p = this.inFlight.find((q) => (stream === "out" ? q.outFrame : q.errFrame) === undefined);
      if (!p) break;
      const end = stream === "out" ? this.marker(p.seq, "Z") : `error: ${this.marker(p.seq, "Z")}\n`;
      const buf = stream === "out" ? this.outBuf : this.errBuf;
      const at = buf.indexOf(end);
      if (at < 0) break;
      if (stream === "out") {
        p.outFrame = buf.slice(0, at);
        this.outBuf = buf.slice(at + end.length);
      } else {
        p.errFrame = buf.slice(0, at);
        this.errBuf = buf.slice(at + end.length);
      }
    }
    while (this.inFlight[0]?.outFrame !== undefined && this.inFlight[0].errFrame !== undefined) {
      this.settle(this.inFlight.shift()!);
    }
    this.pump();
  }

  private settle(p: Pending): void {
    clearTimeout(p.timer);
    this.latencies[this.answered++ % LATENCY_WINDOW] = performance.now() - p.sentAt!;
    const [s, e] = [this.marker(p.seq, "S"), this.marker(p.seq, "E")];
    const start = p.outFrame!.indexOf(s);
    const end = start < 0 ? -1 : p.outFrame!.indexOf(e, start + s.length);
    if (end < 0) {
      p.reject(new VirshError(p.args, errorText(p.errFrame!) || "virsh did not run the command"));
    } else if (p.errFrame!.split("\n").some((l) => l.startsWith("error: ") && !INFORMATIONAL.test(l))) {
      p.reject(new VirshError(p.args, errorText(p.errFrame!)));
    } else {
      p.resolve(p.outFrame!.slice(start + s.length, end));
    }
  }

  private onChildGone(child: ChildProcessWithoutNullStreams, reason: string): void {
    if (this.child !== child) return;
    this.child = undefined;
    const stderr = errorText(this.errBuf);
    this.outBuf = "";
    this.errBuf = "";
    for (const p of this.inFlight.splice(0)) {
      clearTimeout(p.timer);
      const why = p.timedOut ? `timed out after ${p.timeoutMs} ms (virsh killed)` : `virsh ${reason}`;
      p.reject(
        new Error(
          `virsh session for ${this.uri}: ${why} while running \`${abbreviate(p.line)}\`; ` +
            `the command may or may not have taken effect${stderr ? ` (virsh said: ${stderr})` : ""}`,
        ),
      );
    }
    // Commands queued behind the dead child run on a fresh one.
    if (!this.closed) this.pump();
  }
}

function errorText(stderr: string): string {
  return stderr
    .split("\n")
    .filter((l) => l.trim() !== "" && !INFORMATIONAL.test(l))
    .map((l) => l.replace(/^error: /, ""))
    .join("\n");
}

function abbreviate(text: string): string {
  return text.length > 200 ? `${text.slice(0, 197)}...` : text;
}
