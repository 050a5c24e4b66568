import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Reconciler, ReconcilerStatus } from "../reconciler";
import type { Principal, TokenAuth } from "./auth";

/** Maps the reconciler's refusal codes to HTTP statuses; anything else is a 500. */
const STATUS_BY_CODE: Readonly<Record<string, number>> = {
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

async function jsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES)
      throw new HttpError(413, "body-too-large", `request body is over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return {};
  try {
    const value: unknown = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error("not an object");
    return value as Record<string, unknown>;
  } catch {
    throw new HttpError(400, "bad-json", "the request body must be a JSON object");
  }
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

/**
 * The reconciler's HTTP API (JSON, bearer tokens). Users take, return and open consoles of their
 * own VMs; admins also return VMs of manual pools and detach members.
 *
 *   GET  /v1/status
 *   POST /v1/pools/{pool}/take
 *   POST /v1/pools/{pool}/vms/{vm}/return
 *   POST /v1/pools/{pool}/vms/{vm}/console   body: virt-viewer options → .vv file
 *   POST /v1/pools/{pool}/vms/{vm}/detach    (admin)
 */
export function createApiServer(reconciler: Reconciler, auth: TokenAuth): Server {
  return createServer((req, res) => {
    handle(reconciler, auth, req, res).catch((e: unknown) => {
      const err = e as Error & { code?: string };
      const status = e instanceof HttpError ? e.status : (STATUS_BY_CODE[err.code ?? ""] ?? 500);
      const code = e instanceof HttpError ? e.code : status === 500 ? "internal" : err.code!;
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
  });
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
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const who = auth.authenticate(req.headers.authorization);
  if (!who) throw new HttpError(401, "unauthenticated", "send Authorization: Bearer <token> (see: vmpools token)");
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
    return send(res, 201, await reconciler.take(parts[2]!, who.user));
  }
  if (parts[0] === "v1" && parts[1] === "pools" && parts.length === 6 && parts[3] === "vms") {
    const [pool, vm, action] = [parts[2]!, parts[4]!, parts[5]!];
    expect("POST");
    const body = await jsonBody(req);
    switch (action) {
      case "return":
        return send(
          res,
          200,
          await reconciler.return(pool, vm, who.role === "admin" ? { admin: true } : { user: who.user }),
        );
      case "console": {
        const options = body.options as Record<string, string | number | boolean> | undefined;
        return send(res, 200, await reconciler.consoleFile(pool, vm, who.user, options), "application/x-virt-viewer");
      }
      case "detach":
        if (who.role !== "admin")
          throw new HttpError(403, "admin-required", "detaching a VM from its pool needs the admin role");
        await reconciler.detach(pool, vm);
        return send(res, 200, { pool, vm, detached: true });
    }
  }
  throw new HttpError(404, "not-found", `no such endpoint: ${method} ${path}`);
}
