// A stand-in for an OpenAttestation (OAT) attestation server's PollHosts resource, on loopback,
// for tests and benchmarks. The real one (Intel's Java/Glassfish service, last changed in 2015)
// cannot run here; this follows its code and oVirt's client of it:
// - OAT services/AttestationService .../as/rest/PollHosts.java (`@Path("/PollHosts")` under
//   `/AttestationService/resources`, `@POST`, consumes and produces application/json) and
//   HostTrustBO.getPollHosts: every host asked is answered, in the order asked, as
//   `{"host_name","trust_lvl","vtime"}` (HostTrustLevel1String, properties in alphabetical
//   order) inside `{"hosts":[…]}` (OpenStackHostTrustLevelReport). A host OAT cannot attest,
//   including one it does not know (the lookup throws), is answered `"unknown"`; `vtime` is the
//   time of the answer, one for the whole batch. The request's `hosts` may also be a single
//   string (OAT's Jackson has ACCEPT_SINGLE_VALUE_AS_ARRAY, for OpenStack's one-host queries).
// - `vtime` is a java.util.Date written by Jackson 1.x. OAT's JacksonConfig turns
//   WRITE_DATES_AS_TIMESTAMPS off, giving StdDateFormat's "2015-02-14T09:02:48.123+0000"
//   (`vtimeFormat: "jackson-iso"`, the default); a second ContextResolver<ObjectMapper> in the
//   same service leaves it on when it wins, giving epoch milliseconds (`"epoch-ms"`); the
//   resource's javadoc shows the older asctime-like "Tue Feb 14 09:02:48 2012" (`"asctime"`).
// - oVirt's client (ovirt-engine vdsbroker/attestation/AttestationService.java): POST to
//   "/" + PollUri with headers Accept and Content-type application/json; reads `hosts[]`,
//   `host_name` and `trust_lvl` (case-insensitively mapped to TRUSTED, UNTRUSTED, UNKNOWN,
//   TIMEOUT, UNINITIALIZED). AttestThread sends a first batch of AttestationFirstStageSize (10)
//   hosts, then batches of 20, which `requests` lets a test check.
// Faults stand for what a real deployment does wrong: no answer, HTTP 5xx (Glassfish on an
// ASException), a body that is not JSON, fields of the wrong shape, hosts left out, slowness.
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { listenOnLoopback } from "./loopback";
import type { TestPki } from "./pki";

export const DEFAULT_POLL_URI = "AttestationService/resources/PollHosts";

/** What OAT and oVirt know; any other string may be answered too. */
export type OatTrustLevel = "trusted" | "untrusted" | "unknown" | "timeout" | "uninitialized" | "pending";

export type VtimeFormat = "jackson-iso" | "epoch-ms" | "asctime";

export const OAT_FAULT_KINDS = ["timeout", "5xx", "malformed-json", "odd-fields", "missing-hosts", "slow"] as const;
export type OatFaultKind = (typeof OAT_FAULT_KINDS)[number];

/** How "odd-fields" is odd. */
export const ODD_FIELD_VARIANTS = [
  /** `trust_lvl` a number (1) for every host. */
  "trust-lvl-number",
  /** `host_name` missing from every entry. */
  "missing-host-name",
  /** `trust_lvl` missing from every entry. */
  "missing-trust-lvl",
  /** `hosts` a string, not an array. */
  "hosts-not-array",
  /**
   * `hosts` an object keyed by host name with `trust_lvl` and `timestamp`, as the javadoc of
   * OAT's PollHosts shows (an older output format); `count` beside it.
   */
  "hosts-object",
  /** Each entry `null`. */
  "null-entries",
] as const;
export type OddFieldVariant = (typeof ODD_FIELD_VARIANTS)[number];

export interface OatFault {
  readonly kind: OatFaultKind;
  /** "slow": how long before answering (normally). @default 1000 */
  readonly delayMs?: number;
  /** "5xx": the status. @default 500 */
  readonly status?: number;
  /** "odd-fields": which oddity. @default "trust-lvl-number" */
  readonly variant?: OddFieldVariant;
  /**
   * "odd-fields" of the per-entry variants (not hosts-not-array, hosts-object): only these hosts'
   * entries are odd. @default every host's
   */
  readonly only?: readonly string[];
  /** "missing-hosts": the hosts left out. @default every second host asked (2nd, 4th, …) */
  readonly omit?: readonly string[];
}

export interface OpenAttestationServerOptions {
  readonly pki: TestPki;
  /**
   * "good": HTTPS with the test CA's server certificate; "other-ca": HTTPS with a certificate
   * the test CA did not sign; "none": plain HTTP (SecureConnectionWithOATServers false).
   * @default "good"
   */
  readonly tls?: "good" | "other-ca" | "none";
  /** The resource path, without the leading "/". @default DEFAULT_POLL_URI */
  readonly pollUri?: string;
  /** The level of hosts no `setTrust` named: OAT answers hosts it cannot attest "unknown". @default "unknown" */
  readonly defaultTrust?: string;
  /** @default "jackson-iso" */
  readonly vtimeFormat?: VtimeFormat;
  /** Clock for `vtime`, ms since the epoch. @default Date.now */
  readonly now?: () => number;
}

export interface PollHostsRequest {
  /** The hosts asked, as sent (a single-string `hosts` as one element). */
  readonly hosts: readonly string[];
  readonly path: string;
}

export interface OpenAttestationServer {
  /** e.g. "https://127.0.0.1:40123" (no trailing slash). */
  readonly url: string;
  readonly port: number;
  /** Connections accepted so far (TLS or plain): with keep-alive, far fewer than requests. */
  readonly connections: number;
  /** Every well-formed PollHosts request so far, in arrival order. */
  readonly requests: readonly PollHostsRequest[];
  setTrust(host: string, level: OatTrustLevel | string): void;
  setDefaultTrust(level: OatTrustLevel | string): void;
  /**
   * A host's `vtime`: a string or number written as is, `null` to leave the field out,
   * `undefined` to go back to the time of the answer.
   */
  setVtime(host: string, vtime: string | number | null | undefined): void;
  /** A fault for every following request, or none (`undefined`). A kind alone uses its defaults. */
  setFault(fault: OatFaultKind | OatFault | undefined): void;
  clearRequests(): void;
  /** Stops listening and drops every connection, held ("timeout") ones included. */
  close(): Promise<void>;
}

/** Jackson 1.x StdDateFormat ISO-8601 in GMT: "yyyy-MM-dd'T'HH:mm:ss.SSSZ" → "…+0000". */
export function jacksonIsoDate(ms: number): string {
  return new Date(ms).toISOString().replace("Z", "+0000");
}

/** java.text.SimpleDateFormat("EEE MMM dd HH:mm:ss yyyy") in GMT, as the PollHosts javadoc shows. */
export function asctimeDate(ms: number): string {
  const d = new Date(ms);
  const p = (n: number): string => String(n).padStart(2, "0");
  const day = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][d.getUTCDay()];
  const mon = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][d.getUTCMonth()];
  return `${day} ${mon} ${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} ${d.getUTCFullYear()}`;
}

interface Entry {
  host_name?: unknown;
  trust_lvl?: unknown;
  vtime?: unknown;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function send(res: ServerResponse, status: number, body: string, contentType = "application/json"): void {
  res.writeHead(status, { "Content-Type": contentType, "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

/** Starts the server on 127.0.0.1, an ephemeral port. */
export async function startOpenAttestationServer(
  options: OpenAttestationServerOptions,
): Promise<OpenAttestationServer> {
  const tls = options.tls ?? "good";
  const pollPath = "/" + (options.pollUri ?? DEFAULT_POLL_URI).replace(/^\/+/, "");
  const now = options.now ?? Date.now;
  const vtimeFormat = options.vtimeFormat ?? "jackson-iso";
  const trust = new Map<string, string>();
  const vtimes = new Map<string, string | number | null>();
  let defaultTrust = options.defaultTrust ?? "unknown";
  let fault: OatFault | undefined;
  const requests: PollHostsRequest[] = [];

  const formatVtime = (ms: number): string | number =>
    vtimeFormat === "epoch-ms" ? ms : vtimeFormat === "asctime" ? asctimeDate(ms) : jacksonIsoDate(ms);

  const answer = (hosts: readonly string[], f: OatFault | undefined): string => {
    const batchTime = formatVtime(now());
    let asked = hosts;
    if (f?.kind === "missing-hosts") {
      const omit = f.omit;
      asked = omit ? hosts.filter((h) => !omit.includes(h)) : hosts.filter((_, i) => i % 2 === 0);
    }
    const entries = asked.map((h) => {
      const v = vtimes.has(h) ? vtimes.get(h) : batchTime;
      const entry: Entry = {
        host_name: h,
        trust_lvl: trust.get(h) ?? defaultTrust,
      };
      if (v !== null) entry.vtime = v;
      return entry;
    });
    if (f?.kind === "odd-fields") {
      const variant = f.variant ?? "trust-lvl-number";
      if (variant === "hosts-not-array") return JSON.stringify({ hosts: entries.map((e) => e.host_name).join(",") });
      if (variant === "hosts-object")
        return JSON.stringify({
          count: entries.length,
          hosts: Object.fromEntries(entries.map((e) => [e.host_name, { trust_lvl: e.trust_lvl, timestamp: e.vtime }])),
        });
      const only = f.only;
      const odd = (e: Entry): Entry | null => {
        if (only && !only.includes(e.host_name as string)) return e;
        const copy = { ...e };
        switch (variant) {
          case "trust-lvl-number":
            // oVirt's AttestationResultEnum numbers: UNTRUSTED(0), TRUSTED(1).
            return { ...copy, trust_lvl: e.trust_lvl === "trusted" ? 1 : 0 };
          case "missing-host-name":
            delete copy.host_name;
            return copy;
          case "missing-trust-lvl":
            delete copy.trust_lvl;
            return copy;
          case "null-entries":
            return null;
        }
      };
      return JSON.stringify({ hosts: entries.map(odd) });
    }
    return JSON.stringify({ hosts: entries });
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? "/").split("?")[0]!;
    if (path !== pollPath) {
      // Glassfish's 404 page is HTML.
      await readBody(req);
      send(res, 404, "<html><body><h1>HTTP Status 404 - Not Found</h1></body></html>", "text/html");
      return;
    }
    if (req.method !== "POST") {
      await readBody(req);
      send(res, 405, "<html><body><h1>HTTP Status 405 - Method Not Allowed</h1></body></html>", "text/html");
      return;
    }
    // JAX-RS @Consumes(application/json): anything else is refused before the resource runs.
    if (!/^application\/json\b/i.test(req.headers["content-type"] ?? "")) {
      await readBody(req);
      send(res, 415, "<html><body><h1>HTTP Status 415 - Unsupported Media Type</h1></body></html>", "text/html");
      return;
    }
    const raw = await readBody(req);
    let hosts: string[];
    try {
      const parsed = JSON.parse(raw) as { hosts?: unknown };
      const h = parsed.hosts;
      if (typeof h === "string") hosts = [h];
      else if (Array.isArray(h) && h.every((x) => typeof x === "string")) hosts = h as string[];
      else {
        // OAT: `input.hosts` null → NullPointerException → ASException → 500.
        send(
          res,
          500,
          JSON.stringify({ error_code: "SYSTEM_ERROR", error_message: "hosts missing or not a list of names" }),
        );
        return;
      }
    } catch {
      send(res, 400, "<html><body><h1>HTTP Status 400 - Bad Request</h1></body></html>", "text/html");
      return;
    }
    requests.push({ hosts, path });

    const f = fault;
    switch (f?.kind) {
      case "timeout":
        return; // never answered; the socket stays open until the client gives up or close()
      case "5xx":
        send(
          res,
          f.status ?? 500,
          "<html><body><h1>HTTP Status 500 - Internal Server Error</h1></body></html>",
          "text/html",
        );
        return;
      case "malformed-json":
        send(res, 200, '{"hosts":[{"host_name":"' + (hosts[0] ?? "") + '","trust_lvl":"trus');
        return;
      case "slow":
        await new Promise((r) => setTimeout(r, f.delayMs ?? 1000));
        if (res.destroyed) return;
        break;
      default:
        break;
    }
    send(res, 200, answer(hosts, f));
  };

  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    handle(req, res).catch(() => {
      if (!res.headersSent) send(res, 500, "{}");
      else res.destroy();
    });
  };

  const server: Server =
    tls === "none"
      ? createHttpServer(listener)
      : createHttpsServer(
          {
            cert: tls === "good" ? options.pki.serverCertPem : options.pki.otherServerCertPem,
            key: tls === "good" ? options.pki.serverKeyPem : options.pki.otherServerKeyPem,
          },
          listener,
        );
  const listening = await listenOnLoopback(server);
  const port = listening.port;

  return {
    url: `${tls === "none" ? "http" : "https"}://127.0.0.1:${port}`,
    port,
    get connections() {
      return listening.connections();
    },
    requests,
    setTrust: (host, level) => void trust.set(host, level),
    setDefaultTrust: (level) => void (defaultTrust = level),
    setVtime: (host, vtime) => void (vtime === undefined ? vtimes.delete(host) : vtimes.set(host, vtime)),
    setFault: (f) => void (fault = typeof f === "string" ? { kind: f } : f),
    clearRequests: () => void requests.splice(0),
    close: () => listening.close(),
  };
}
