// `vmpools serve` as a real child process, and an HTTP client for its API with keep-alive agents,
// for tests that load it from many users at once or kill it with SIGKILL.
import { spawn, type ChildProcess } from "node:child_process";
import { Agent, request } from "node:http";
import { join } from "node:path";

const BIN = join(__dirname, "../../bin/vmpools");

export interface ServeArgs {
  readonly uri: string;
  readonly db: string;
  readonly tokens: string;
  readonly pools: readonly string[];
  /** Further `serve` options, e.g. ["--resync-seconds", "5"]. */
  readonly extra?: readonly string[];
}

export interface ServeProcess {
  readonly child: ChildProcess;
  /** The API's URL, once serve says it reconciles. */
  readonly url: string;
  /** When the process was spawned, bound its port (modules loaded; nothing done yet) and said it reconciles. */
  readonly spawnedAt: number;
  readonly boundAt: number;
  readonly readyAt: number;
  readonly stdout: () => string;
  readonly stderr: () => string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL; resolves once the process is gone. */
  kill9(): Promise<void>;
  /** SIGTERM (drains); resolves with the exit. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** A `serve` just spawned: it may stand by (another leads its store) before it reconciles. */
export interface SpawnedServe {
  readonly child: ChildProcess;
  readonly spawnedAt: number;
  readonly stdout: () => string;
  readonly stderr: () => string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves once it says it stands by (another reconciler leads the store). */
  readonly standingBy: Promise<void>;
  /** Resolves once it reconciles (rejects if it exits first, or after `timeoutMs`). */
  readonly ready: Promise<ServeProcess>;
}

/**
 * Starts `vmpools serve --listen 127.0.0.1:0` and resolves once it reconciles. Output is kept
 * only from the last 64 KiB of each stream: a burst logs a line per take.
 */
export function startServe(args: ServeArgs, timeoutMs = 30_000): Promise<ServeProcess> {
  return spawnServe(args, timeoutMs).ready;
}

/** {@link startServe} without waiting: also for a serve that stands by first. */
export function spawnServe(args: ServeArgs, timeoutMs = 30_000): SpawnedServe {
  const spawnedAt = Date.now();
  const child = spawn(
    process.execPath,
    [
      BIN,
      "serve",
      "--uri",
      args.uri,
      "--db",
      args.db,
      "--tokens",
      args.tokens,
      "--pools",
      args.pools.join(","),
      "--listen",
      "127.0.0.1:0",
      ...(args.extra ?? []),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const keep = (s: string) => (s.length > 65_536 ? s.slice(-65_536) : s);
  let out = "";
  let err = "";
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  let stoodBy!: () => void;
  const standingBy = new Promise<void>((resolve) => (stoodBy = resolve));
  const ready = new Promise<ServeProcess>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`serve was not ready within ${timeoutMs} ms: ${out}${err}`));
    }, timeoutMs);
    let url: string | undefined;
    let boundAt: number | undefined;
    child.stderr!.setEncoding("utf8").on("data", (c: string) => (err = keep(err + c)));
    child.stdout!.setEncoding("utf8").on("data", (c: string) => {
      out = keep(out + c);
      if (boundAt === undefined && /API on \S+; starting/.test(out)) boundAt = Date.now();
      if (/standing by/.test(out)) stoodBy();
      const m = url === undefined && /reconciling .*API on (http:\/\/\S+)/.exec(out);
      if (!m) return;
      url = m[1]!;
      clearTimeout(timer);
      const readyAt = Date.now();
      resolve({
        child,
        url,
        spawnedAt,
        boundAt: boundAt ?? readyAt,
        readyAt,
        stdout: () => out,
        stderr: () => err,
        exited,
        async kill9() {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
          await exited;
        },
        async stop() {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
          return exited;
        },
      });
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`serve exited (${code ?? signal}) before it was ready: ${out}${err}`));
    });
  });
  ready.catch(() => undefined);
  return { child, spawnedAt, stdout: () => out, stderr: () => err, exited, standingBy, ready };
}

/** One answer of the API, or the transport error in its place. */
export type Outcome =
  | {
      readonly kind: "answer";
      readonly status: number;
      readonly body: unknown;
      /** The raw body when it was not JSON. */
      readonly text?: string;
      readonly sentAt: number;
      readonly at: number;
    }
  | { readonly kind: "transport"; readonly error: string; readonly sentAt: number; readonly at: number };

/**
 * A user of the API: its own token and keep-alive agent, so a user's concurrent requests run on
 * parallel connections and its sequential ones reuse them.
 */
export class ApiUser {
  private agent: Agent;

  constructor(
    readonly name: string,
    private readonly token: string,
    private readonly maxSockets: number,
  ) {
    this.agent = this.newAgent();
  }

  private newAgent(): Agent {
    // A timeout is what makes Node 20's agent honour the server's `Keep-Alive: timeout=5` hint
    // (it then drops a pooled socket a second before the server does); without one it keeps
    // sockets forever and reuses some just as the server closes them (ECONNRESET on a POST).
    return new Agent({ keepAlive: true, maxSockets: this.maxSockets, timeout: 60_000 });
  }

  /** Drops every pooled connection (after the server they led to was killed). */
  reset(): void {
    this.agent.destroy();
    this.agent = this.newAgent();
  }

  close(): void {
    this.agent.destroy();
  }

  /** Never rejects: a reset or refused connection is an outcome like an answer. */
  send(base: string, method: string, path: string): Promise<Outcome> {
    const sentAt = Date.now();
    return new Promise<Outcome>((resolve) => {
      const fail = (e: Error) =>
        resolve({
          kind: "transport",
          error: (e as NodeJS.ErrnoException).code ?? e.message,
          sentAt,
          at: Date.now(),
        });
      const body = method === "POST" ? "{}" : "";
      const req = request(base + path, {
        method,
        agent: this.agent,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body ? { "content-type": "application/json", "content-length": body.length } : {}),
        },
      });
      req.on("response", (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("error", fail);
        res.on("end", () => {
          const at = Date.now();
          try {
            resolve({ kind: "answer", status: res.statusCode!, body: JSON.parse(text), sentAt, at });
          } catch {
            resolve({ kind: "answer", status: res.statusCode!, body: undefined, text, sentAt, at });
          }
        });
      });
      req.on("error", fail);
      req.end(body);
    });
  }
}

/** A deterministic generator (LCG): the same seed gives the same test run. */
export function seededRandom(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n: number) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return Math.floor((s / 2 ** 32) * n);
  };
}
