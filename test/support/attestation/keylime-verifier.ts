// A stand-in for a Keylime verifier's REST API (v2.x, pull mode), on loopback with mutual TLS,
// for tests and benchmarks. The real verifier (Python, with agents that need a TPM) cannot run
// here; this follows keylime/keylime's code (master of 2026, release 7.14 fields):
// - Mutual TLS: the verifier's server context requires a client certificate signed by its CA.
// - Routes (keylime/web/verifier_server.py, base/server.py): GET /version and /versions (not
//   version-scoped); GET /v{major}[.{minor}]/agents[/] and /v…/agents/{id}, routed only for the
//   versions the verifier supports; any other path is the DefaultController's 404 "Not Found"
//   with an empty body. Verifiers from before that web framework (cloud_verifier_tornado.py
//   alone) answer an unsupported version with 400 "API Version not supported"
//   (`legacyRouting`).
// - Every answer of the v2 handlers is web_util.echo_json_response: `{"code", "status",
//   "results"}` with the HTTP status equal to `code`; `results` is `{}` on errors.
// - GET /v2.x/agents/{id} (AgentsHandler.get): 400 "agent_id not not valid" (sic) for an id
//   outside [\w.-]+, 404 "agent id not found" for an unknown one, else 200 "Success" with
//   cloud_verifier_common.process_get_status: operational_state (common/states.py), v, ip,
//   port, tpm_policy, meta_data, has_mb_refstate, has_runtime_policy, accept_tpm_*_algs,
//   hash_alg, enc_alg, sign_alg, verifier_id/_ip/_port, severity_level, last_event_id,
//   attestation_count, last_received_quote, last_successful_attestation (epoch seconds, 0 when
//   never), and from 7.14 attestation_status (pull mode: PASS in states 3-6, FAIL in 7, 9 and
//   10, else PENDING), attestation_period ("2s": quote_interval) and
//   maximum_attestation_interval ("10s": 5 × quote_interval).
// - GET /v2.x/agents/?bulk=True[&verifier=ID] (what `keylime_tenant -c bulkinfo` sends):
//   results keyed by agent id, each as above. The query is read with Python's parse_qsl, which
//   drops a parameter without a value: a bare `?bulk` is the plain list,
//   `{"uuids": [["id1"], ["id2"]]}` (one SQLAlchemy row per agent), which is also all that
//   verifiers without bulk support answer (`setBulkSupported(false)`).
import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import { listenOnLoopback } from "./loopback";
import type { TestPki } from "./pki";

/** keylime/common/states.py */
export const OPERATIONAL_STATES = {
  REGISTERED: 0,
  START: 1,
  SAVED: 2,
  GET_QUOTE: 3,
  GET_QUOTE_RETRY: 4,
  PROVIDE_V: 5,
  PROVIDE_V_RETRY: 6,
  FAILED: 7,
  TERMINATED: 8,
  INVALID_QUOTE: 9,
  TENANT_FAILED: 10,
} as const;

/** keylime/api_version.py (master): CURRENT_VERSION and VERSIONS. */
export const KEYLIME_CURRENT_VERSION = "2.6";
export const KEYLIME_VERSIONS = ["1.0", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "3.0"] as const;

export const KEYLIME_FAULT_KINDS = ["timeout", "5xx", "malformed-json", "odd-fields", "slow"] as const;
export type KeylimeFaultKind = (typeof KEYLIME_FAULT_KINDS)[number];

/** How "odd-fields" is odd (in every agent answered, single or bulk). */
export const KEYLIME_ODD_FIELD_VARIANTS = [
  /** operational_state a string ("3"). */
  "operational-state-string",
  /** operational_state left out. */
  "missing-operational-state",
  /** last_successful_attestation an ISO string instead of epoch seconds. */
  "last-successful-string",
  /** `results` a list, not an object. */
  "results-not-object",
  /** The agent's fields at the top level, not wrapped in code/status/results. */
  "unwrapped",
] as const;
export type KeylimeOddFieldVariant = (typeof KEYLIME_ODD_FIELD_VARIANTS)[number];

export interface KeylimeFault {
  readonly kind: KeylimeFaultKind;
  /** "slow": how long before answering (normally). @default 1000 */
  readonly delayMs?: number;
  /** "5xx": the status (Tornado's HTML error page as body). @default 500 */
  readonly status?: number;
  /** "odd-fields": which oddity. @default "operational-state-string" */
  readonly variant?: KeylimeOddFieldVariant;
  /** Which requests it hits: the agents routes only, or /version too. @default "all" */
  readonly scope?: "agents" | "all";
}

export interface KeylimeVerifierOptions {
  readonly pki: TestPki;
  /** "good": the test CA's server certificate; "other-ca": one it did not sign. Client certificates must chain to the test CA either way. @default "good" */
  readonly tls?: "good" | "other-ca";
  /** GET /version's current_version. @default KEYLIME_CURRENT_VERSION */
  readonly currentVersion?: string;
  /** GET /version's supported_versions, and the versions routed. @default KEYLIME_VERSIONS */
  readonly supportedVersions?: readonly string[];
  /** Answer an unsupported version as the Tornado-only verifiers did (400 JSON), not 404. @default false */
  readonly legacyRouting?: boolean;
  /** Include 7.14's attestation_status, attestation_period and maximum_attestation_interval. @default true */
  readonly withAttestationStatus?: boolean;
  /** The verifier's quote_interval, for attestation_period and maximum_attestation_interval. @default 2 */
  readonly quoteIntervalSeconds?: number;
  /** This verifier's id (verifier_id of its agents, `?verifier=` filter). @default "default" */
  readonly verifierId?: string;
  /** Clock, ms since the epoch. @default Date.now */
  readonly now?: () => number;
}

export interface KeylimeRequest {
  readonly method: string;
  /** Path with query, as sent. */
  readonly path: string;
  /** The client certificate's subject CN (every request has one: the TLS handshake requires it). */
  readonly clientCommonName: string | undefined;
}

/** Fields of an agent as the verifier answers them; unknown keys are answered too, `undefined` leaves a field out. */
export type KeylimeAgentFields = Readonly<Record<string, unknown>>;

export interface KeylimeVerifier {
  /** e.g. "https://127.0.0.1:40123" (no trailing slash). */
  readonly url: string;
  readonly port: number;
  /** Connections accepted so far, refused handshakes included. */
  readonly connections: number;
  /** Every request that passed the TLS handshake, in arrival order. */
  readonly requests: readonly KeylimeRequest[];
  /**
   * Adds the agent, or merges `fields` over what it has. A new agent starts healthy: state 3
   * (Get Quote), last_successful_attestation and last_received_quote the time of each answer,
   * attestation_status derived from operational_state (unless set here).
   */
  setAgent(id: string, fields?: KeylimeAgentFields): void;
  removeAgent(id: string): void;
  /** false: answer `?bulk=True` with the plain `uuids` list, as verifiers without bulk do. @default true */
  setBulkSupported(supported: boolean): void;
  setFault(fault: KeylimeFaultKind | KeylimeFault | undefined): void;
  clearRequests(): void;
  close(): Promise<void>;
}

const AGENT_ID = /^[\w.-]+$/;

/** Tornado's default error page (what an unhandled exception in a handler gives). */
function tornadoErrorPage(status: number, reason: string): string {
  return `<html><title>${status}: ${reason}</title><body>${status}: ${reason}</body></html>`;
}

function attestationStatus(state: unknown): string {
  if (state === 3 || state === 4 || state === 5 || state === 6) return "PASS";
  if (state === 7 || state === 9 || state === 10) return "FAIL";
  return "PENDING";
}

/** Starts the verifier on 127.0.0.1, an ephemeral port. */
export async function startKeylimeVerifier(options: KeylimeVerifierOptions): Promise<KeylimeVerifier> {
  const now = options.now ?? Date.now;
  const supported = options.supportedVersions ?? KEYLIME_VERSIONS;
  const currentVersion = options.currentVersion ?? KEYLIME_CURRENT_VERSION;
  const quoteInterval = options.quoteIntervalSeconds ?? 2;
  const verifierId = options.verifierId ?? "default";
  const withStatus = options.withAttestationStatus ?? true;
  const agents = new Map<string, Record<string, unknown>>();
  const requests: KeylimeRequest[] = [];
  let bulkSupported = true;
  let fault: KeylimeFault | undefined;
  let port = 0;

  const agentResults = (id: string): Record<string, unknown> => {
    const nowS = Math.floor(now() / 1000);
    const fields = agents.get(id)!;
    const a: Record<string, unknown> = {
      operational_state: OPERATIONAL_STATES.GET_QUOTE,
      v: Buffer.alloc(32, id).toString("base64"),
      ip: "127.0.0.1",
      port: 9002,
      tpm_policy: '{"mask": "0x0"}',
      meta_data: "{}",
      has_mb_refstate: 0,
      has_runtime_policy: 0,
      accept_tpm_hash_algs: ["sha512", "sha384", "sha256"],
      accept_tpm_encryption_algs: ["ecc", "rsa"],
      accept_tpm_signing_algs: ["ecschnorr", "rsassa"],
      hash_alg: "sha256",
      enc_alg: "rsa",
      sign_alg: "rsassa",
      verifier_id: verifierId,
      verifier_ip: "127.0.0.1",
      verifier_port: port,
      severity_level: null,
      last_event_id: null,
      attestation_count: 100,
      last_received_quote: nowS,
      last_successful_attestation: nowS,
      ...fields,
    };
    if (withStatus) {
      a.attestation_status =
        "attestation_status" in fields ? fields.attestation_status : attestationStatus(a.operational_state);
      a.attestation_period = `${Math.trunc(quoteInterval)}s`;
      a.maximum_attestation_interval = `${Math.trunc(quoteInterval * 5)}s`;
    }
    return a;
  };

  const oddAgent = (a: Record<string, unknown>, variant: KeylimeOddFieldVariant): Record<string, unknown> => {
    switch (variant) {
      case "operational-state-string":
        return { ...a, operational_state: String(a.operational_state) };
      case "missing-operational-state": {
        const rest = { ...a };
        delete rest.operational_state;
        return rest;
      }
      case "last-successful-string":
        return {
          ...a,
          last_successful_attestation:
            typeof a.last_successful_attestation === "number"
              ? new Date(a.last_successful_attestation * 1000).toISOString()
              : a.last_successful_attestation,
        };
      default:
        return a;
    }
  };

  const send = (
    res: ServerResponse,
    status: number,
    body: string | undefined,
    contentType = "application/json",
  ): void => {
    if (body === undefined) {
      res.writeHead(status, { "Content-Length": 0 });
      res.end();
      return;
    }
    res.writeHead(status, { "Content-Type": contentType, "Content-Length": Buffer.byteLength(body) });
    res.end(body);
  };

  /** echo_json_response, with the fault's distortions of a 200 answer. */
  const echo = (
    res: ServerResponse,
    code: number,
    status: string,
    results: unknown,
    f: KeylimeFault | undefined,
  ): void => {
    if (code === 200 && f?.kind === "malformed-json") {
      send(res, 200, JSON.stringify({ code, status, results }).slice(0, 40));
      return;
    }
    if (code === 200 && f?.kind === "odd-fields") {
      const variant = f.variant ?? "operational-state-string";
      if (variant === "results-not-object") {
        send(res, 200, JSON.stringify({ code, status, results: [results] }));
        return;
      }
      if (variant === "unwrapped") {
        send(res, 200, JSON.stringify(results));
        return;
      }
    }
    send(res, code, JSON.stringify({ code, status, results }));
  };

  const handleAgents = (
    res: ServerResponse,
    rest: readonly string[],
    query: string,
    f: KeylimeFault | undefined,
  ): void => {
    // rest: the path tokens after the version: ["agents"], ["agents", ""], ["agents", id, …]
    const agentId = rest[1];
    const odd = (a: Record<string, unknown>): Record<string, unknown> =>
      f?.kind === "odd-fields" ? oddAgent(a, f.variant ?? "operational-state-string") : a;
    if (agentId !== undefined && agentId !== "") {
      if (!AGENT_ID.test(agentId)) return echo(res, 400, "agent_id not not valid", {}, f);
      if (!agents.has(agentId)) return echo(res, 404, "agent id not found", {}, f);
      return echo(res, 200, "Success", odd(agentResults(agentId)), f);
    }
    // Python's parse_qsl without keep_blank_values: `bulk` and `bulk=` are dropped.
    const params = new Map<string, string>();
    for (const pair of query.split("&")) {
      const eq = pair.indexOf("=");
      if (eq < 0) continue;
      const value = decodeURIComponent(pair.slice(eq + 1).replace(/\+/g, " "));
      if (value !== "") params.set(decodeURIComponent(pair.slice(0, eq)), value);
    }
    const filter = params.get("verifier");
    const ids = [...agents.keys()].filter((id) => filter === undefined || agentResults(id).verifier_id === filter);
    if (bulkSupported && params.has("bulk")) {
      return echo(res, 200, "Success", Object.fromEntries(ids.map((id) => [id, odd(agentResults(id))])), f);
    }
    echo(res, 200, "Success", { uuids: ids.map((id) => [id]) }, f);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = req.url ?? "/";
    const cert = (req.socket as TLSSocket).getPeerCertificate();
    const cn = cert?.subject?.CN;
    requests.push({ method: req.method ?? "", path: url, clientCommonName: Array.isArray(cn) ? cn[0] : cn });
    req.resume();
    await new Promise((r) => req.on("end", r));

    const q = url.indexOf("?");
    const path = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? "" : url.slice(q + 1);
    const tokens = path.replace(/^\/+|\/+$/g, "").split("/");
    const isVersion = tokens.length === 1 && (tokens[0] === "version" || tokens[0] === "versions");
    const versionMatch = /^v(\d+)(?:\.(\d+))?$/.exec(tokens[0] ?? "");
    const isAgents = versionMatch !== null && tokens[1] === "agents" && tokens.length <= 3;

    const f = fault && (fault.scope !== "agents" || isAgents) ? fault : undefined;
    switch (f?.kind) {
      case "timeout":
        return;
      case "5xx": {
        const status = f.status ?? 500;
        send(
          res,
          status,
          tornadoErrorPage(status, status === 503 ? "Service Unavailable" : "Internal Server Error"),
          "text/html; charset=UTF-8",
        );
        return;
      }
      case "slow":
        await new Promise((r) => setTimeout(r, f.delayMs ?? 1000));
        if (res.destroyed) return;
        break;
      default:
        break;
    }

    if (req.method !== "GET") {
      send(res, 405, undefined);
      return;
    }
    if (isVersion) {
      echo(res, 200, "Success", { current_version: currentVersion, supported_versions: [...supported] }, f);
      return;
    }
    if (versionMatch && tokens[1] === "agents") {
      const [, major, minor] = versionMatch;
      // version_scope routes /v{major} and /v{each supported major.minor}.
      const routed =
        minor === undefined
          ? supported.some((v) => v.split(".")[0] === major)
          : supported.includes(`${major}.${minor}`);
      if (!routed) {
        if (options.legacyRouting) echo(res, 400, "API Version not supported", {}, undefined);
        else send(res, 404, undefined);
        return;
      }
      // v3 is not modelled (AgentController's v3 actions are TODOs upstream): an empty 404.
      if (Number(major) >= 3 || !isAgents) {
        send(res, 404, undefined);
        return;
      }
      handleAgents(res, tokens.slice(1), query, f);
      return;
    }
    send(res, 404, undefined);
  };

  const server: Server = createServer(
    {
      cert: options.tls === "other-ca" ? options.pki.otherServerCertPem : options.pki.serverCertPem,
      key: options.tls === "other-ca" ? options.pki.otherServerKeyPem : options.pki.serverKeyPem,
      ca: options.pki.caPem,
      requestCert: true,
      rejectUnauthorized: true,
    },
    (req, res) => {
      handle(req, res).catch(() => {
        if (!res.headersSent) send(res, 500, tornadoErrorPage(500, "Internal Server Error"), "text/html");
        else res.destroy();
      });
    },
  );
  const listening = await listenOnLoopback(server);
  port = listening.port;

  return {
    url: `https://127.0.0.1:${port}`,
    port,
    get connections() {
      return listening.connections();
    },
    requests,
    setAgent: (id, fields = {}) => void agents.set(id, { ...(agents.get(id) ?? {}), ...fields }),
    removeAgent: (id) => void agents.delete(id),
    setBulkSupported: (s) => void (bulkSupported = s),
    setFault: (f) => void (fault = typeof f === "string" ? { kind: f } : f),
    clearRequests: () => void requests.splice(0),
    close: () => listening.close(),
  };
}
