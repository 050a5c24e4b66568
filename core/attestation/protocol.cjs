// The attestation clients: OpenAttestation's PollHosts and Keylime's verifier (REST API v2.x).
// Types and contract: protocol.d.cts.
//
// Why plain CommonJS with Node built-ins only: the plan-time check copies this file alone next to
// a probe script into the stack's assets (as host-probe.cjs is), where no node_modules and no
// TypeScript exist; the reconciler requires the same file, so both decide alike.
//
// Verdict rules (only `trusted` keeps a host Up; every host always gets exactly one verdict):
// - OpenAttestation: trust_lvl "trusted" (any case) → trusted; "untrusted" → untrusted; any other
//   level (unknown, timeout, pending, uninitialized, missing, not a string) → unknown naming it; a
//   host absent from the answer → unknown. vtime is read leniently into attestedAt; an unreadable
//   one leaves attestedAt undefined and the verdict as it is.
// - Keylime, in this order: an agent the verifier does not know → unknown; operational_state
//   7 Failed, 8 Terminated, 9 Invalid Quote, 10 Tenant Quote Failed → untrusted; attestation_status
//   FAIL → untrusted; PENDING or states 0, 1, 2, 5, 6 → unknown (not attested yet); push mode's
//   TIMEOUT → stale; PASS or states 3, 4 → trusted only while last_successful_attestation (epoch
//   seconds) is at most maxAttestationAgeSeconds old, else stale. A verifier before 7.14 sends no
//   last_successful_attestation: state 3 is then trusted, state 4 (retrying) stale, as its age is
//   unknown. Any other shape → unknown, never a throw.
// - Transport: no answer within requestTimeoutMs (the whole exchange), refused connections, TLS
//   failures and HTTP statuses outside 2xx → unreachable (Keylime: the agents handler's JSON 404
//   is an unknown agent; an empty 404 is a route the verifier does not serve); an answer that is
//   not JSON, or larger than MAX_BODY_BYTES → unknown. Once a request gets no answer at all, the
//   requests not yet sent in that cycle are not sent (their hosts get the same verdict), and an
//   OpenAttestation first stage that fails speaks for every host: a dead service costs one time
//   limit per cycle, not one per batch or agent.
// - Keylime bulk: GET /v{api}/agents/?bulk=True (what keylime_tenant's bulkinfo sends; a bare
//   ?bulk is dropped by the verifier's query parser). A 4xx (but 408 and 429), or the plain
//   {"uuids": …} list of a verifier without bulk, switches this client to one GET per agent for
//   good.
// Reasons never hold a key or a request body; text taken from an answer is clipped and cleaned.
"use strict";
const http = require("node:http");
const https = require("node:https");

/** Answers larger than this are refused (1000 Keylime agents are about 1 MiB). */
const MAX_BODY_BYTES = 16 * 1024 * 1024;
/** Requests in flight per client: Keylime per-agent GETs and OpenAttestation's later batches. */
const MAX_CONCURRENT_REQUESTS = 20;

const KEYLIME_STATES = [
  "Registered",
  "Start",
  "Saved",
  "Get Quote",
  "Get Quote (retry)",
  "Provide V",
  "Provide V (retry)",
  "Failed",
  "Terminated",
  "Invalid Quote",
  "Tenant Quote Failed",
];
const KEYLIME_FAILED_STATES = new Set([7, 8, 9, 10]);
const KEYLIME_NOT_YET_STATES = new Set([0, 1, 2, 5, 6]);
const KEYLIME_QUOTING_STATES = new Set([3, 4]);

// ---------------------------------------------------------------------------------------------
// Pure parts

/** Text from an answer or an error, fit for a reason: control characters replaced, clipped. */
function clip(value, max = 60) {
  // eslint-disable-next-line no-control-regex
  const s = String(value).replace(/[\u0000-\u001f\u007f-\u009f]/g, " ");
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** A JSON value's kind, for reasons ("a number", "an object"). */
function kindOf(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function own(obj, key) {
  return Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
}

/** ms since the epoch → ISO 8601, or undefined outside Date's range. */
function isoOf(ms) {
  return Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString() : undefined;
}

/** Epoch seconds or milliseconds (told apart by size: 1e11 s is the year 5138) → ISO 8601. */
function fromEpoch(n) {
  if (!Number.isFinite(n) || n <= 0) return undefined;
  return isoOf(n >= 1e11 ? n : n * 1000);
}

/** UTC ms of a calendar time, or undefined when a field is out of range (Feb 30, 25:00). */
function utcMs(year, month, day, hour, minute, second, millis) {
  if (month < 1 || month > 12 || day < 1 || hour > 24 || minute > 59 || second > 60) return undefined;
  if (hour === 24 && (minute > 0 || second > 0 || millis > 0)) return undefined;
  const d = new Date(Date.UTC(year, month - 1, day));
  d.setUTCFullYear(year); // Date.UTC maps years 0-99 to 1900-1999
  if (d.getUTCMonth() !== month - 1 || d.getUTCDate() !== day) return undefined;
  // A leap second (:60) is read as the next second: no Date holds it.
  return d.getTime() + ((hour * 60 + minute) * 60 + second) * 1000 + millis;
}

const ISO_LIKE =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?\s*(Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?$/i;
const MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
// Java's Date.toString, "EEE MMM dd HH:mm:ss zzz yyyy", and without the zone (UTC), as the
// javadoc of OAT's PollHosts shows it.
const JAVA_DATE =
  /^(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*,?\s+([a-z]{3})[a-z]*\s+(\d{1,2})\s+(\d{1,2}):(\d{2}):(\d{2})(?:\s+([a-z]+|(?:gmt|utc)[+-]\d{1,2}(?::?\d{2})?))?\s+(\d{4})$/i;
// Zone abbreviations Java writes that mean one offset where OpenAttestation ran (US and UTC);
// others (IST, CET, …) are ambiguous or unlisted, and the time is then unreadable.
// "CST" is read as US Central, as java.util.TimeZone does.
const ZONE_MINUTES = {
  UTC: 0,
  GMT: 0,
  UT: 0,
  Z: 0,
  EST: -300,
  EDT: -240,
  CST: -360,
  CDT: -300,
  MST: -420,
  MDT: -360,
  PST: -480,
  PDT: -420,
  AKST: -540,
  AKDT: -480,
  HST: -600,
};

/** "+05:30", "-0800", "+05", "Z", "UTC", "GMT+8", "GMT-08:00" → minutes east of UTC, or undefined. */
function zoneMinutes(zone) {
  if (zone === undefined) return 0; // no zone: read as UTC (the server's zone is not known)
  const upper = zone.toUpperCase();
  if (Object.prototype.hasOwnProperty.call(ZONE_MINUTES, upper)) return ZONE_MINUTES[upper];
  const m = /^(?:GMT|UTC)?([+-])(\d{1,2})(?::?(\d{2}))?$/.exec(upper);
  if (!m) return undefined;
  const hours = Number(m[2]);
  const minutes = Number(m[3] ?? 0);
  if (hours > 14 || minutes > 59) return undefined;
  return (m[1] === "-" ? -1 : 1) * (hours * 60 + minutes);
}

/** See protocol.d.cts. */
function parseVtime(value) {
  if (typeof value === "number") return fromEpoch(value);
  if (typeof value !== "string") return undefined;
  const s = value.trim();
  if (s.length > 64) return undefined;
  if (/^\d+(?:\.\d+)?$/.test(s)) return fromEpoch(Number(s));
  let m = ISO_LIKE.exec(s);
  if (m) {
    const millis = m[7] === undefined ? 0 : Number(m[7].padEnd(3, "0").slice(0, 3));
    const ms = utcMs(
      Number(m[1]),
      Number(m[2]),
      Number(m[3]),
      Number(m[4] ?? 0),
      Number(m[5] ?? 0),
      Number(m[6] ?? 0),
      millis,
    );
    const zone = zoneMinutes(m[8]);
    return ms === undefined || zone === undefined ? undefined : isoOf(ms - zone * 60000);
  }
  m = JAVA_DATE.exec(s);
  if (m) {
    const month = MONTHS.indexOf(m[1].toLowerCase()) + 1;
    const ms = utcMs(Number(m[7]), month, Number(m[2]), Number(m[3]), Number(m[4]), Number(m[5]), 0);
    const zone = zoneMinutes(m[6]);
    return month === 0 || ms === undefined || zone === undefined ? undefined : isoOf(ms - zone * 60000);
  }
  return undefined;
}

/** One PollHosts entry → verdict fields (without the host). */
function pollHostsEntryVerdict(entry) {
  const attestedAt = parseVtime(own(entry, "vtime"));
  const level = own(entry, "trust_lvl");
  let v;
  if (typeof level !== "string") {
    v = {
      level: "unknown",
      reason: `OpenAttestation: trust_lvl ${level === undefined ? "missing" : `is ${kindOf(level)}, not a level`}`,
    };
  } else {
    const normalized = level.trim().toLowerCase();
    if (normalized === "trusted") v = { level: "trusted", reason: "OpenAttestation: trust_lvl trusted" };
    else if (normalized === "untrusted") v = { level: "untrusted", reason: "OpenAttestation: trust_lvl untrusted" };
    else
      v = { level: "unknown", reason: `OpenAttestation: trust_lvl ${normalized === "" ? "empty" : clip(normalized)}` };
  }
  return attestedAt === undefined ? v : { ...v, attestedAt };
}

/** See protocol.d.cts. Names are matched without regard to case, as DNS names are. */
function verdictsFromPollHosts(body, hosts) {
  let list = isObject(body) ? own(body, "hosts") : undefined;
  // The older output the javadoc of OAT's PollHosts shows: hosts keyed by name, "timestamp".
  if (isObject(list)) {
    list = Object.keys(list).map((name) => {
      const e = own(list, name);
      if (!isObject(e)) return { host_name: name };
      const vtime = own(e, "vtime") ?? own(e, "timestamp");
      return { host_name: name, trust_lvl: own(e, "trust_lvl"), vtime };
    });
  }
  if (!Array.isArray(list)) {
    const reason = isObject(body)
      ? "OpenAttestation: the answer has no hosts list"
      : `OpenAttestation: the answer is ${kindOf(body)}, not an object`;
    return hosts.map((h) => ({ host: h.name, level: "unknown", reason }));
  }
  const wanted = new Set(hosts.map((h) => String(h.attestationId).toLowerCase()));
  const found = new Map();
  for (const entry of list) {
    if (!isObject(entry)) continue;
    const id = own(entry, "host_name");
    if (typeof id !== "string") continue;
    const key = id.toLowerCase();
    if (!wanted.has(key)) continue;
    const v = pollHostsEntryVerdict(entry);
    const earlier = found.get(key);
    // Named twice with different levels: believe neither.
    if (earlier !== undefined && earlier.level !== v.level) {
      found.set(key, {
        level: "unknown",
        reason: "OpenAttestation: the host is in the answer twice, with different levels",
      });
    } else if (earlier === undefined) found.set(key, v);
  }
  return hosts.map((h) => {
    const v = found.get(String(h.attestationId).toLowerCase());
    return v === undefined
      ? { host: h.name, level: "unknown", reason: "OpenAttestation: not in the answer" }
      : { host: h.name, ...v };
  });
}

function stateText(state) {
  return `operational_state ${state} (${KEYLIME_STATES[state]})`;
}

/** See protocol.d.cts. */
function verdictFromKeylimeAgent(host, agent, nowMs, maxAttestationAgeSeconds) {
  const verdict = (level, reason, attestedAt) =>
    attestedAt === undefined
      ? { host, level, reason: `Keylime: ${reason}` }
      : { host, level, reason: `Keylime: ${reason}`, attestedAt };
  if (agent === undefined) return verdict("unknown", "the verifier does not know this agent");
  if (!isObject(agent)) return verdict("unknown", `the agent's status is ${kindOf(agent)}, not an object`);
  const rawState = own(agent, "operational_state");
  const rawStatus = own(agent, "attestation_status");
  // operational_state is null for push-mode agents.
  const state = Number.isInteger(rawState) && rawState >= 0 && rawState < KEYLIME_STATES.length ? rawState : undefined;
  if (rawState !== undefined && rawState !== null && state === undefined)
    return verdict("unknown", `operational_state ${clip(JSON.stringify(rawState))} is not a state`);
  const status = typeof rawStatus === "string" ? rawStatus.trim().toUpperCase() : undefined;
  if (rawStatus !== undefined && rawStatus !== null && status === undefined)
    return verdict("unknown", `attestation_status is ${kindOf(rawStatus)}, not a status`);

  if (state !== undefined && KEYLIME_FAILED_STATES.has(state)) return verdict("untrusted", stateText(state));
  if (status === "FAIL") return verdict("untrusted", "attestation_status FAIL");
  if (state !== undefined && KEYLIME_NOT_YET_STATES.has(state))
    return verdict("unknown", `not attested yet: ${stateText(state)}`);
  if (status === "PENDING") return verdict("unknown", "not attested yet: attestation_status PENDING");
  if (status === "TIMEOUT")
    return verdict("stale", "attestation_status TIMEOUT: no attestation within the verifier's maximum interval");
  const quoting = state !== undefined && KEYLIME_QUOTING_STATES.has(state);
  if (status !== "PASS" && !quoting) {
    return verdict(
      "unknown",
      status === undefined
        ? "the answer has neither operational_state nor attestation_status"
        : `attestation_status ${clip(status)} is not a status`,
    );
  }
  const what = state !== undefined ? stateText(state) : "attestation_status PASS";
  if (!Object.prototype.hasOwnProperty.call(agent, "last_successful_attestation")) {
    // Verifiers before 7.14: the state is all there is; a retrying agent's last quote may be old.
    return state === 3
      ? verdict("trusted", what)
      : verdict("stale", `${what}, and this verifier (before 7.14) does not say when it last attested`);
  }
  const last = own(agent, "last_successful_attestation");
  if (last === null || last === 0) return verdict("unknown", `not attested yet: ${what}, no successful attestation`);
  if (typeof last !== "number" || !Number.isFinite(last) || last < 0)
    return verdict("unknown", `last_successful_attestation is ${kindOf(last)}, not epoch seconds`);
  const attestedAt = isoOf(last * 1000);
  const ageSeconds = nowMs / 1000 - last;
  if (-ageSeconds > maxAttestationAgeSeconds) {
    return verdict(
      "unknown",
      `last successful attestation is ${Math.round(-ageSeconds)} s in the future (are the clocks apart?)`,
      attestedAt,
    );
  }
  if (ageSeconds > maxAttestationAgeSeconds) {
    return verdict(
      "stale",
      `last successful attestation ${Math.round(ageSeconds)} s ago (limit ${maxAttestationAgeSeconds} s)`,
      attestedAt,
    );
  }
  return verdict(
    "trusted",
    `${what}, last successful attestation ${Math.max(0, Math.round(ageSeconds))} s ago`,
    attestedAt,
  );
}

/** The highest "2.x" of a list, or undefined ("2.10" is above "2.9"). */
function highest2x(list) {
  let best;
  for (const v of list) {
    const m = typeof v === "string" ? /^2\.(\d{1,4})$/.exec(v.trim()) : null;
    if (m && (best === undefined || Number(m[1]) > best)) best = Number(m[1]);
  }
  return best === undefined ? undefined : `2.${best}`;
}

/** GET /version's results → the highest 2.x it supports (else its current version if 2.x). */
function keylimeApiVersion(results) {
  if (!isObject(results)) return undefined;
  const supported = own(results, "supported_versions");
  return highest2x(Array.isArray(supported) ? supported : []) ?? highest2x([own(results, "current_version")]);
}

// ---------------------------------------------------------------------------------------------
// Transport

/** Codes of certificate checks that failed (OpenSSL's X509 errors and Node's host name check). */
function isCertificateError(code) {
  return (
    typeof code === "string" &&
    !code.startsWith("ERR_SSL_") &&
    /CERT|SELF_SIGNED|ISSUER|LEAF_SIGNATURE|ALTNAME|HOSTNAME_MISMATCH|INVALID_CA|PATH_LENGTH|INVALID_PURPOSE/.test(code)
  );
}

/** A failed request → an unreachable reason. Node's messages of these errors carry no secret. */
function transportReason(error, timeoutMs) {
  if (error && error.vmpoolsTimeout) return `no answer within ${timeoutMs / 1000} s`;
  if (error && error.setup) return `unusable TLS settings (CA, client certificate or key): ${clip(error.message, 160)}`;
  const code = error && error.code;
  if (isCertificateError(code)) return `certificate does not verify: ${code} (${clip(error.message, 160)})`;
  if (typeof code === "string" && code.startsWith("ERR_SSL_")) {
    const detail = typeof error.reason === "string" ? error.reason : code;
    return `attestation service unreachable: TLS ${clip(detail)} (${code})`;
  }
  const message =
    error && typeof error.message === "string" && error.message !== "" ? error.message : String(code ?? error);
  return `attestation service unreachable: ${clip(message, 160)}`;
}

/**
 * One HTTP request → { status, statusText, body } (body: the parsed JSON, or NOT_JSON), or
 * { failure: Verdict fields }. Never rejects. The time limit covers the whole exchange.
 */
const NOT_JSON = Symbol("not JSON");
const TOO_LARGE = Symbol("too large");

function requestOnce(transport, agent, url, method, payload, timeoutMs) {
  return new Promise((resolve) => {
    let settled = false;
    const done = (result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const headers = { Accept: "application/json" };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      headers["Content-Length"] = Buffer.byteLength(payload);
    }
    let req;
    try {
      req = transport.request(url, { method, agent, headers });
    } catch (error) {
      // A key or certificate Node cannot read fails here, synchronously.
      resolve({ error: { setup: true, message: error && error.message }, reused: false });
      return;
    }
    const timer = setTimeout(() => {
      const e = new Error("timeout");
      e.vmpoolsTimeout = true;
      req.destroy(e);
    }, timeoutMs);
    req.on("error", (error) => done({ error, reused: req.reusedSocket }));
    req.on("response", (res) => {
      const declared = Number(res.headers["content-length"]);
      // done() before destroy(): destroying emits "aborted", which would report a cut-off answer.
      if (declared > MAX_BODY_BYTES) {
        done({ status: res.statusCode, statusText: res.statusMessage, body: TOO_LARGE });
        res.destroy();
        return;
      }
      const chunks = [];
      let size = 0;
      res.on("data", (chunk) => {
        size += chunk.length;
        if (size > MAX_BODY_BYTES) {
          done({ status: res.statusCode, statusText: res.statusMessage, body: TOO_LARGE });
          res.destroy();
        } else chunks.push(chunk);
      });
      res.on("error", (error) => done({ error, reused: false }));
      res.on("aborted", () => done({ error: new Error("the answer was cut off"), reused: false }));
      res.on("end", () => {
        let body;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
        } catch {
          body = NOT_JSON;
        }
        done({ status: res.statusCode, statusText: res.statusMessage, body });
      });
    });
    req.end(payload);
  });
}

async function request(transport, agent, url, method, payload, timeoutMs) {
  let r = await requestOnce(transport, agent, url, method, payload, timeoutMs);
  // A kept-alive socket the server closed just as we sent: once more on a fresh one (Node's advice).
  if (r.error && r.reused && r.error.code === "ECONNRESET") {
    r = await requestOnce(transport, agent, url, method, payload, timeoutMs);
  }
  return r.error ? { failure: { level: "unreachable", reason: transportReason(r.error, timeoutMs) } } : r;
}

/** "HTTP 503 Service Unavailable"; with Keylime's JSON `status` when it says more, e.g. "(API Version not supported)". */
function httpReason(r, extra) {
  const text = typeof r.statusText === "string" && r.statusText !== "" ? ` ${clip(r.statusText)}` : "";
  const said = isObject(r.body) ? own(r.body, "status") : undefined;
  const status = typeof said === "string" && said !== "" && said !== r.statusText ? ` (${clip(said)})` : "";
  return `HTTP ${r.status}${text}${status}${extra ?? ""}`;
}

/** A parsed answer's body that is not usable JSON → an unknown verdict's fields, else undefined. */
function bodyFailure(body) {
  if (body === NOT_JSON) return { level: "unknown", reason: "answer is not JSON" };
  if (body === TOO_LARGE) return { level: "unknown", reason: `answer larger than ${MAX_BODY_BYTES / 1048576} MiB` };
  return undefined;
}

/**
 * Runs fn over items with at most `limit` in flight; results in order. Once fn reports that the
 * service gave no answer at all ({ failure }), the items not yet sent get that failure without a
 * request: 1000 agents would otherwise each wait out the time limit.
 */
async function mapLimit(items, limit, fn, failed) {
  const results = new Array(items.length);
  let next = 0;
  let failure;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      if (failure !== undefined) {
        results[i] = failed(items[i], failure);
        continue;
      }
      const r = await fn(items[i]);
      if (r.failure !== undefined && failure === undefined) failure = r.failure;
      results[i] = r.result;
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

function chunk(items, size) {
  const out = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Clients

/** See protocol.d.cts. */
function createAttestationClient(settings, options) {
  const opts = options ?? {};
  const now = typeof opts.now === "function" ? opts.now : Date.now;
  if (!settings || (settings.type !== "openattestation" && settings.type !== "keylime"))
    throw new TypeError('settings.type must be "openattestation" or "keylime"');
  const base = new URL(settings.url);
  const secure = base.protocol === "https:";
  const transport = secure ? https : http;
  const hosts = Array.isArray(settings.hosts) ? settings.hosts : [];
  const timeoutMs = settings.requestTimeoutMs > 0 ? settings.requestTimeoutMs : 5000;
  const keylime = settings.type === "keylime";
  const missingKey =
    keylime && (typeof opts.clientKeyPem !== "string" || typeof settings.clientCertificatePem !== "string");

  const agentOptions = { keepAlive: true, maxSockets: MAX_CONCURRENT_REQUESTS };
  if (secure) {
    if (settings.caCertificatePem) agentOptions.ca = settings.caCertificatePem;
    agentOptions.rejectUnauthorized = settings.verifyServerCertificate !== false;
    if (keylime && !missingKey) {
      agentOptions.cert = settings.clientCertificatePem;
      agentOptions.key = opts.clientKeyPem;
    }
  }
  const agent = new transport.Agent(agentOptions);
  let closed = false;

  const all = (fields) => hosts.map((h) => ({ host: h.name, ...fields }));

  async function attestOpenAttestation() {
    // Hosts by their name at the service (two of ours may share one); each name asked once.
    const byId = new Map();
    for (const h of hosts) {
      const key = String(h.attestationId).toLowerCase();
      if (!byId.has(key)) byId.set(key, []);
      byId.get(key).push(h);
    }
    const ids = [...byId.values()].map((group) => group[0].attestationId);
    const firstSize = settings.firstStageSize > 0 ? settings.firstStageSize : 10;
    const batchSize = settings.batchSize > 0 ? settings.batchSize : 20;
    const hostsOf = (batch) => batch.flatMap((id) => byId.get(String(id).toLowerCase()));
    const each = (batch, fields) => hostsOf(batch).map((h) => ({ host: h.name, ...fields }));
    const poll = async (batch) => {
      const r = await request(transport, agent, base, "POST", JSON.stringify({ hosts: batch }), timeoutMs);
      if (r.failure) return { failure: r.failure, result: each(batch, r.failure) };
      if (r.status < 200 || r.status > 299) {
        const fields = { level: "unreachable", reason: httpReason(r) };
        return { httpFailure: fields, result: each(batch, fields) };
      }
      const bad = bodyFailure(r.body);
      return { result: bad ? each(batch, bad) : verdictsFromPollHosts(r.body, hostsOf(batch)) };
    };
    // oVirt's order: the first stage alone, then the rest (here concurrently). A first stage
    // without an answer (or refused) speaks for every host: 50 more requests would wait for nothing.
    const first = await poll(ids.slice(0, firstSize));
    const firstFailure = first.failure ?? first.httpFailure;
    if (firstFailure) return all(firstFailure);
    const rest = await mapLimit(chunk(ids.slice(firstSize), batchSize), MAX_CONCURRENT_REQUESTS, poll, each);
    const verdictOf = new Map();
    for (const part of [first.result, ...rest]) for (const v of part) verdictOf.set(v.host, v);
    return hosts.map((h) => verdictOf.get(h.name));
  }

  let apiVersion = settings.apiVersion;
  let bulkRefused = false;
  const maxAge = settings.maxAttestationAgeSeconds;
  const keylimeUrl = (path) => new URL(`${base.pathname.replace(/\/+$/, "")}${path}`, base);

  async function keylimeVersion() {
    if (apiVersion !== undefined) return { version: apiVersion };
    const r = await request(transport, agent, keylimeUrl("/version"), "GET", undefined, timeoutMs);
    if (r.failure) return { failure: r.failure };
    if (r.status < 200 || r.status > 299)
      return { failure: { level: "unreachable", reason: httpReason(r, " (GET /version; set apiVersion to skip it)") } };
    const bad = bodyFailure(r.body);
    if (bad) return { failure: bad };
    const results = isObject(r.body) && isObject(own(r.body, "results")) ? own(r.body, "results") : r.body;
    const version = keylimeApiVersion(results);
    if (version === undefined)
      return { failure: { level: "unknown", reason: "Keylime: GET /version names no 2.x API version" } };
    apiVersion = version;
    return { version };
  }

  // In TLS 1.3 a verifier refusing our certificate closes the connection after the handshake:
  // the client only sees the connection end.
  const keylimeHint = (fields) =>
    fields.level === "unreachable" && /socket hang up|ECONNRESET/.test(fields.reason)
      ? { ...fields, reason: `${fields.reason} (did the verifier refuse the client certificate?)` }
      : fields;

  async function attestKeylime() {
    if (missingKey) {
      return all({
        level: "unreachable",
        reason: "Keylime: mutual TLS needs the client certificate and its key, and one is not given",
      });
    }
    const v = await keylimeVersion();
    if (v.failure) return all(keylimeHint(v.failure));
    if (!bulkRefused) {
      const r = await request(
        transport,
        agent,
        keylimeUrl(`/v${v.version}/agents/?bulk=True`),
        "GET",
        undefined,
        timeoutMs,
      );
      if (r.failure) return all(keylimeHint(r.failure));
      const refused = r.status >= 400 && r.status < 500 && r.status !== 408 && r.status !== 429;
      if (!refused) {
        if (r.status < 200 || r.status > 299) return all({ level: "unreachable", reason: httpReason(r) });
        const bad = bodyFailure(r.body);
        if (bad) return all(bad);
        const results = isObject(r.body) ? own(r.body, "results") : undefined;
        if (!isObject(results))
          return all({ level: "unknown", reason: "Keylime: the bulk answer has no results object" });
        // A verifier without bulk ignores ?bulk and lists the agents' ids: ask each agent then.
        if (!Array.isArray(own(results, "uuids")) || hosts.some((h) => isObject(own(results, h.attestationId)))) {
          const nowMs = now(); // after the answer: a slow one must not look fresher than it is
          return hosts.map((h) => verdictFromKeylimeAgent(h.name, own(results, h.attestationId), nowMs, maxAge));
        }
      }
      bulkRefused = true;
    }
    const one = async (h) => {
      const url = keylimeUrl(`/v${v.version}/agents/${encodeURIComponent(h.attestationId)}`);
      const r = await request(transport, agent, url, "GET", undefined, timeoutMs);
      if (r.failure) {
        const failure = keylimeHint(r.failure);
        return { failure, result: { host: h.name, ...failure } };
      }
      // The agents handler's 404 is JSON; an empty 404 is a route this verifier does not serve.
      if (r.status === 404 && isObject(r.body) && own(r.body, "code") === 404)
        return { result: verdictFromKeylimeAgent(h.name, undefined, now(), maxAge) };
      if (r.status === 404) {
        const reason = httpReason(
          r,
          ` (the verifier serves no /v${v.version}/agents/: is API ${v.version} supported?)`,
        );
        return { failure: { level: "unreachable", reason }, result: { host: h.name, level: "unreachable", reason } };
      }
      if (r.status < 200 || r.status > 299)
        return { result: { host: h.name, level: "unreachable", reason: httpReason(r) } };
      const bad = bodyFailure(r.body);
      if (bad) return { result: { host: h.name, ...bad } };
      const results = isObject(r.body) ? own(r.body, "results") : undefined;
      return {
        result: isObject(results)
          ? verdictFromKeylimeAgent(h.name, results, now(), maxAge)
          : { host: h.name, level: "unknown", reason: "Keylime: the agent's answer has no results object" },
      };
    };
    return mapLimit(hosts, MAX_CONCURRENT_REQUESTS, one, (h, failure) => ({ host: h.name, ...failure }));
  }

  return {
    async attest() {
      if (closed) return all({ level: "unreachable", reason: "the attestation client is closed" });
      if (hosts.length === 0) return [];
      try {
        return await (keylime ? attestKeylime() : attestOpenAttestation());
      } catch (e) {
        // Not expected (every path above resolves), but attest() never rejects.
        return all({ level: "unknown", reason: `attestation failed: ${clip(e && e.message)}` });
      }
    },
    close() {
      closed = true;
      agent.destroy();
    },
  };
}

module.exports = { createAttestationClient, verdictsFromPollHosts, verdictFromKeylimeAgent, parseVtime };
