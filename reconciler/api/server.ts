import { RefusalError, type RefusalCode } from "../refusal";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Reconciler, ReconcilerStatus } from "../reconciler";
import type { Principal, TokenAuth } from "./auth";
import { parseBody, type BodyAction } from "./schemas";

/** Maps the reconciler's refusal codes to HTTP statuses; anything else is a 500. */
const STATUS_BY_CODE: Readonly<Record<RefusalCode, number>> = {
  "unknown-pool": 404,
  "unknown-vm": 404,
  "user-limit": 409,
  "no-free-vm": 409,
  "not-held": 409,
  "not-down": 409,
  "not-running": 409,
  "not-holder": 403,
  "admin-required": 403,
  "invalid-console-options": 400,
  "start-failed": 502,
  "not-active": 503,
  // Only at start-up; a running server never sees it.
  "lease-held": 503,
  "unknown-host": 404,
  "migration-refused": 409,
  "host-unavailable": 409,
};

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const MAX_BODY_BYTES = 64 * 1024;
/**
 * An oversized body up to this size is read and dropped before the 413 goes out, so the client
 * can finish sending and read the answer: closing while it still sends resets the connection
 * (the client sees ECONNRESET and can lose the answer). Beyond it the server answers and closes.
 */
const MAX_DRAINED_BYTES = 16 * 1024 * 1024;

function readBody(req: IncomingMessage): Promise<Buffer> {
  const tooLarge = (size: number, over = false) =>
    new HttpError(
      413,
      "body-too-large",
      `the request body is ${over ? "over " : ""}${size} bytes; the API takes at most ${MAX_BODY_BYTES} (64 KiB)`,
      { connection: "close" },
    );
  const declared = Number(req.headers["content-length"] ?? NaN);
  if (declared > MAX_DRAINED_BYTES) return Promise.reject(tooLarge(declared));
  return new Promise((resolve, reject) => {
    let size = 0;
    let settled = false;
    const chunks: Buffer[] = [];
    const settle = (e?: Error) => {
      if (settled) return;
      settled = true;
      if (e) reject(e);
      else resolve(Buffer.concat(chunks));
    };
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
      else if (size > MAX_DRAINED_BYTES) settle(tooLarge(MAX_DRAINED_BYTES, true));
    });
    req.once("end", () =>
      settle(size > MAX_BODY_BYTES ? tooLarge(Number.isFinite(declared) ? declared : size) : undefined),
    );
    // Cut off by the client (Node's "aborted" error, or a close before the end): not the
    // server's fault, and nobody is left to answer. "close" also comes after every answered
    // request: the error (and its stack trace) is made only when it is needed, which was 13-23 ms
    // of a 1000-take burst in a CPU profile (2026-12-02).
    const cutOff = () => {
      if (!settled) settle(new HttpError(400, "aborted", "the request body was cut off before its end"));
    };
    req.once("error", cutOff);
    req.once("close", cutOff);
  });
}

async function jsonBody(req: IncomingMessage): Promise<unknown> {
  const raw = await readBody(req);
  if (raw.length === 0) return {};
  try {
    const value: unknown = JSON.parse(raw.toString("utf8"));
    if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error("not an object");
    return value;
  } catch {
    throw new HttpError(400, "bad-json", "the request body must be a JSON object");
  }
}

/** The request body, checked against its action's schema; every problem at once in a 400. */
async function bodyFor<A extends BodyAction>(req: IncomingMessage, action: A) {
  const parsed = parseBody(action, await jsonBody(req));
  if (!parsed.ok) throw new HttpError(400, "invalid-body", parsed.problems.join("; "));
  return parsed.value;
}

/** What a user may see: pool summaries, and members only where they hold them. Admins see all. */
export function statusFor(status: ReconcilerStatus, who: Principal): unknown {
  if (who.role === "admin") return status;
  return {
    pools: status.pools.map((p) => ({
      name: p.name,
      type: p.policy.type,
      maxVmsPerUser: p.policy.maxVmsPerUser,
      counts: p.counts,
      members: p.members
        .filter((m) => m.holder?.user === who.user)
        .map((m) => ({ name: m.name, state: m.state, since: m.holder!.since })),
    })),
    users: { [who.user]: status.users[who.user] ?? [] },
  };
}

/** Timeouts and the connection cap of the API server, and when it may act. */
export interface ApiServerOptions {
  /**
   * Settles once the reconciler has started. Until then authenticated requests get 503
   * `starting` with `Retry-After: 1`, so `serve` can bind (and fail on a busy port) before it acts;
   * if it rejects, they get 503 `reconciler-failed`.
   * @default already started
   */
  readonly ready?: Promise<void>;
  /** How long a connection may stay open without sending a request. @default 10000 */
  readonly idleTimeoutMs?: number;
  /** How long a connection stays open after its last answer, waiting for the next request. @default 5000 */
  readonly keepAliveTimeoutMs?: number;
  /** Time for a request's headers to arrive; then 408. @default 10000 */
  readonly headersTimeoutMs?: number;
  /** Time for a whole request (headers and body) to arrive; then 408. @default 30000 */
  readonly requestTimeoutMs?: number;
  /**
   * Open connections at most. At the cap a new connection closes the longest-idle one; only when
   * every connection has a request in flight is the newcomer refused (503).
   * @default maxConnectionsFor(the process's soft limit of open files)
   */
  readonly maxConnections?: number;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The default connection cap: a quarter of the open-files limit, so sockets leave the rest to
 * virsh children, libvirt, SQLite and the event stream (at systemd's default soft limit of 1024,
 * 256), and between 16 and 1024.
 */
export function maxConnectionsFor(openFilesLimit: number): number {
  return Math.max(16, Math.min(1024, Math.floor(openFilesLimit / 4)));
}

/** The soft `Max open files` of this process; 1024 (the usual default) where /proc does not say. */
function openFilesLimit(): number {
  try {
    const soft = /^Max open files\s+(\S+)/m.exec(readFileSync("/proc/self/limits", "utf8"))?.[1];
    if (soft === "unlimited") return Infinity;
    if (soft !== undefined && /^\d+$/.test(soft)) return Number(soft);
  } catch {
    // Not Linux: fall through.
  }
  return 1024;
}

type Resolved = Required<Omit<ApiServerOptions, "ready">>;

function resolveOptions(o: ApiServerOptions): Resolved {
  const r: Resolved = {
    idleTimeoutMs: o.idleTimeoutMs ?? 10_000,
    keepAliveTimeoutMs: o.keepAliveTimeoutMs ?? 5_000,
    headersTimeoutMs: o.headersTimeoutMs ?? 10_000,
    requestTimeoutMs: o.requestTimeoutMs ?? 30_000,
    maxConnections: o.maxConnections ?? maxConnectionsFor(openFilesLimit()),
  };
  for (const [name, value] of Object.entries(r)) {
    if (!Number.isInteger(value) || value < 1 || value > MAX_TIMER_MS) {
      const what = name === "maxConnections" ? "a whole number" : "a whole number of milliseconds";
      throw new Error(`createApiServer: ${name} ${value}: give ${what} from 1 to ${MAX_TIMER_MS}`);
    }
  }
  if (r.headersTimeoutMs > r.requestTimeoutMs) {
    throw new Error(
      `createApiServer: headersTimeoutMs ${r.headersTimeoutMs} is over requestTimeoutMs ${r.requestTimeoutMs}: ` +
        "the headers are part of the request; lower the first or raise the second",
    );
  }
  return r;
}

const TOO_MANY = JSON.stringify({
  error: "too-many-connections",
  message: "every connection to the API has a request in flight; retry in a second",
});
const TOO_MANY_RESPONSE =
  "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n" +
  `connection: close\r\ncontent-length: ${Buffer.byteLength(TOO_MANY) + 1}\r\n\r\n${TOO_MANY}\n`;

/**
 * Idle timeouts and the connection cap (issue 9, D3): Node closes neither a connection that never
 * sends a request nor any beyond the fd limit, so one client holding idle sockets locked everyone
 * out and starved virsh of descriptors. Returns the per-request hook that marks a connection busy.
 */
function guardConnections(server: Server, o: Resolved): (req: IncomingMessage, res: ServerResponse) => boolean {
  interface Conn {
    active: number;
    timer?: NodeJS.Timeout;
  }
  // Map order is idle order: a connection moves to the end whenever it turns idle, so the first
  // idle one is the longest idle.
  const conns = new Map<Socket, Conn>();
  const refused = new WeakSet<Socket>();
  const turnIdle = (socket: Socket, c: Conn, ms: number) => {
    conns.delete(socket);
    conns.set(socket, c);
    clearTimeout(c.timer);
    c.timer = setTimeout(() => c.active === 0 && socket.destroy(), ms).unref();
  };
  const evictIdle = (): boolean => {
    for (const [socket, c] of conns) {
      if (c.active > 0) continue;
      clearTimeout(c.timer);
      conns.delete(socket);
      socket.destroy();
      return true;
    }
    return false;
  };
  server.on("connection", (socket: Socket) => {
    if (conns.size >= o.maxConnections && !evictIdle()) {
      refused.add(socket);
      socket.end(TOO_MANY_RESPONSE);
      // A second for the client to read the answer; whatever it sends meanwhile goes unanswered.
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    const c: Conn = { active: 0 };
    turnIdle(socket, c, o.idleTimeoutMs);
    socket.once("close", () => {
      clearTimeout(c.timer);
      conns.delete(socket);
    });
  });
  return (req, res) => {
    if (refused.has(req.socket)) return false;
    const c = conns.get(req.socket);
    if (!c) return true;
    c.active++;
    clearTimeout(c.timer);
    res.once("close", () => {
      c.active--;
      // Node closes it after keepAliveTimeoutMs too; this keeps the map's idle order.
      if (c.active === 0 && !req.socket.destroyed) turnIdle(req.socket, c, o.keepAliveTimeoutMs);
    });
    return true;
  };
}

/** Whether requests may reach the reconciler yet; see ApiServerOptions.ready. */
function readiness(ready: Promise<void> | undefined): () => void {
  let state: "starting" | "ready" | "failed" = ready ? "starting" : "ready";
  ready?.then(
    () => (state = "ready"),
    (e: unknown) => {
      state = "failed";
      console.error("vmpools api: the reconciler failed to start:", e);
    },
  );
  return () => {
    if (state === "starting")
      throw new HttpError(503, "starting", "the reconciler is starting; retry in a second", { "retry-after": "1" });
    if (state === "failed") {
      throw new HttpError(
        503,
        "reconciler-failed",
        "the reconciler failed to start; the server's log has the details, and serve must be restarted",
      );
    }
  };
}

/**
 * The reconciler's HTTP API (JSON, bearer tokens). Users take, return and open consoles of their
 * own VMs; admins also return VMs of manual pools and detach members.
 *
 *   GET  /v1/status
 *   POST /v1/pools/{pool}/take                 body: {} or none
 *   POST /v1/pools/{pool}/vms/{vm}/return      body: {} or none
 *   POST /v1/pools/{pool}/vms/{vm}/console     body: { options?: virt-viewer options } → .vv file
 *   POST /v1/pools/{pool}/vms/{vm}/detach      body: {} or none (admin)
 *   POST /v1/pools/{pool}/vms/{vm}/migrate     body: { to?: host } (admin; live migration)
 *   POST /v1/hosts/{host}/maintenance          body: {} or none (admin)
 *   POST /v1/hosts/{host}/activate             body: {} or none (admin; out of maintenance)
 *
 * Bodies are checked by the schemas in ./schemas.
 */
export function createApiServer(reconciler: Reconciler, auth: TokenAuth, options: ApiServerOptions = {}): Server {
  const o = resolveOptions(options);
  const requireReady = readiness(options.ready);
  const server = createServer(
    {
      headersTimeout: o.headersTimeoutMs,
      requestTimeout: o.requestTimeoutMs,
      // How often Node checks the two timeouts above (its default, 30 s, would let a slow client
      // keep its connection four times as long as headersTimeoutMs).
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(o.headersTimeoutMs / 4))),
    },
    (req, res) => {
      if (!busy(req, res)) return;
      handle(reconciler, auth, requireReady, req, res).catch((e: unknown) => {
        const err = e as Error & { code?: string };
        const status = e instanceof HttpError ? e.status : e instanceof RefusalError ? STATUS_BY_CODE[e.code] : 500;
        const code = e instanceof HttpError ? e.code : e instanceof RefusalError ? e.code : "internal";
        if (status === 500) {
          // Details (virsh command lines, file paths) go to the server's log, not to the client.
          console.error(`vmpools api: internal error on ${req.method} ${req.url}:`, err);
          send(res, 500, { error: code, message: "internal error; the server's log has the details" });
          return;
        }
        send(
          res,
          status,
          { error: code, message: err.message },
          "application/json",
          e instanceof HttpError ? e.headers : {},
        );
      });
    },
  );
  server.keepAliveTimeout = o.keepAliveTimeoutMs;
  const busy = guardConnections(server, o);
  return server;
}

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  contentType = "application/json",
  headers: Record<string, string> = {},
): void {
  const text = contentType === "application/json" ? `${JSON.stringify(body)}\n` : String(body);
  res.writeHead(status, { "content-type": contentType, "cache-control": "no-store", ...headers }).end(text);
}

async function handle(
  reconciler: Reconciler,
  auth: TokenAuth,
  requireReady: () => void,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const who = auth.authenticate(req.headers.authorization);
  if (!who) throw new HttpError(401, "unauthenticated", "send Authorization: Bearer <token> (see: vmpools token)");
  requireReady();
  const path = new URL(req.url ?? "/", "http://api").pathname;
  let parts: string[];
  try {
    parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  } catch {
    throw new HttpError(400, "bad-path", `the path ${path} has a malformed %-escape`);
  }
  const method = req.method ?? "GET";
  const expect = (wanted: string) => {
    if (method !== wanted) throw new HttpError(405, "method-not-allowed", `${path} takes ${wanted}`, { allow: wanted });
  };

  if (parts.length === 2 && parts[0] === "v1" && parts[1] === "status") {
    expect("GET");
    return send(res, 200, statusFor(reconciler.status(), who));
  }
  if (parts[0] === "v1" && parts[1] === "pools" && parts.length === 4 && parts[3] === "take") {
    expect("POST");
    await bodyFor(req, "take");
    return send(res, 201, await reconciler.take(parts[2]!, who.user));
  }
  if (parts[0] === "v1" && parts[1] === "pools" && parts.length === 6 && parts[3] === "vms") {
    const [pool, vm, action] = [parts[2]!, parts[4]!, parts[5]!];
    expect("POST");
    switch (action) {
      case "return":
        await bodyFor(req, "return");
        return send(
          res,
          200,
          await reconciler.return(pool, vm, who.role === "admin" ? { admin: true } : { user: who.user }),
        );
      case "console": {
        const { options } = await bodyFor(req, "console");
        return send(res, 200, await reconciler.consoleFile(pool, vm, who.user, options), "application/x-virt-viewer");
      }
      case "detach":
        if (who.role !== "admin")
          throw new HttpError(403, "admin-required", "detaching a VM from its pool needs the admin role");
        await bodyFor(req, "detach");
        await reconciler.detach(pool, vm);
        return send(res, 200, { pool, vm, detached: true });
      case "migrate": {
        if (who.role !== "admin") throw new HttpError(403, "admin-required", "migrating a VM needs the admin role");
        const { to } = await bodyFor(req, "migrate");
        return send(res, 200, await reconciler.migrate(pool, vm, to));
      }
    }
  }
  if (parts[0] === "v1" && parts[1] === "hosts" && parts.length === 4) {
    const [host, action] = [parts[2]!, parts[3]!];
    if (action === "maintenance" || action === "activate") {
      expect("POST");
      if (who.role !== "admin") {
        throw new HttpError(403, "admin-required", "taking a host out of service or back needs the admin role");
      }
      await bodyFor(req, action);
      return send(res, 200, await reconciler.setMaintenance(host, action === "maintenance"));
    }
  }
  // An unencoded ? or # ends the path, so a name holding one arrives cut short.
  const target = req.url ?? path;
  const hint = /[?#]/.test(target)
    ? "; if a pool or VM name holds ? or #, percent-encode it: ? as %3F and # as %23 (encodeURIComponent)"
    : "";
  throw new HttpError(404, "not-found", `no such endpoint: ${method} ${hint ? target : path}${hint}`);
}
