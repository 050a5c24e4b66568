// `vmpools`: run the reconciler (serve) or talk to it (take, return, status, detach, console).
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { isIPv4, isIPv6, type AddressInfo } from "node:net";
import { hostname } from "node:os";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { parseNameMask } from "../core/naming";
import { secretFromFile } from "../core/secrets";
import { DomainEvents } from "./driver/events";
import { VirshDriver } from "./driver/libvirt-driver";
import { openLeadership } from "./store/leader";
import { isPostgresLocation, openStateStore, redactLocation } from "./store/open";
import { Reconciler, type ReconcilerStatus } from "./reconciler";
import { createApiServer } from "./api/server";
import { parseBody } from "./api/schemas";
import { TokenAuth, newToken, userNameProblem } from "./api/auth";
import { parseConsoleOption } from "./console";

const DEFAULT_URL = "http://127.0.0.1:8480";

/** Wrong arguments or environment: printed with the command's usage, exit 2. */
class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
  }
}

interface OptionSpec {
  readonly type: "string" | "boolean";
  /** Placeholder for the value in help, e.g. `FILE`. */
  readonly value?: string;
  readonly multiple?: boolean;
  readonly help: string;
}

type Values = Record<string, string | boolean | string[] | undefined>;

interface Command {
  /** Positional arguments as usage shows them; `[DIR]` is optional. */
  readonly args: readonly string[];
  readonly summary: string;
  readonly options: Readonly<Record<string, OptionSpec>>;
  run(values: Values, positionals: string[]): Promise<number>;
}

const str = (values: Values, name: string, fallback: string): string =>
  (values[name] as string | undefined) ?? fallback;
const enc = encodeURIComponent;

const COMMANDS: Readonly<Record<string, Command>> = {
  init: {
    args: ["[DIR]"],
    summary: "write a cdktf app with one pool (main.ts, cdktf.json, ...) in DIR (default: here)",
    options: { force: { type: "boolean", help: "overwrite the files an earlier init wrote" } },
    async run(values, [dir]) {
      // Loaded here: the other commands need none of it.
      const { initProject } = await import("../engines/cdktf/init");
      const r = initProject(dir ?? ".", { force: values.force === true });
      console.log(`vmpools: wrote ${r.written.join(", ")} in ${r.dir}`);
      console.log("next: npm install, then npx cdktf synth (needs the cdktf CLI 0.21: npm install -g cdktf-cli@0.21)");
      return 0;
    },
  },
  serve: {
    args: [],
    summary: "run the reconciler and its HTTP API",
    options: {
      uri: { type: "string", value: "URI", help: "libvirt connection of a single host (default: qemu:///system)" },
      host: {
        type: "string",
        value: "NAME=URI",
        multiple: true,
        help: "a cluster host, named as in the pools' cluster.hosts (repeat for each; instead of --uri)",
      },
      "migration-uri": {
        type: "string",
        value: "NAME=tcp://ADDRESS",
        multiple: true,
        help: "where migration streams to host NAME go, when its host name does not lead there (default: libvirt's)",
      },
      "unsafe-migration": {
        type: "boolean",
        help: "migrate although libvirt does not know the hosts' shared storage as shared (only if it is!)",
      },
      db: { type: "string", value: "FILE", help: "state database (default: /var/lib/vmpools/state.db)" },
      listen: {
        type: "string",
        value: "ADDRESS",
        help: "PORT, HOST:PORT or [IPv6]:PORT for the API; port 0 picks a free one (default: 127.0.0.1:8480)",
      },
      tokens: { type: "string", value: "FILE", help: "tokens file (default: /etc/vmpools/tokens.json)" },
      "console-host": {
        type: "string",
        value: "HOST",
        help: "host written into console files (default: the URI's host, or this machine's name)",
      },
      "resync-seconds": {
        type: "string",
        value: "N",
        help: "full resync period, also how soon policy edits apply (default: 30)",
      },
      pools: {
        type: "string",
        value: "POOL,...",
        multiple: true,
        help: "manage only these pools, leaving other pools' members alone (default: every pool on the URI)",
      },
      "drain-seconds": {
        type: "string",
        value: "N",
        help: "on SIGTERM or SIGINT, how long requests in flight may take before serve stops anyway (default: 30)",
      },
      "attestation-key": {
        type: "string",
        value: "CLUSTER=FILE",
        multiple: true,
        help: "the Keylime client key (PEM, mode 0600) for trusted cluster CLUSTER (repeat for each)",
      },
    },
    run: (values) => serve(serveOptions(values)),
  },
  token: {
    args: ["USER"],
    summary: "print a new token for USER and its tokens-file entry",
    options: { admin: { type: "boolean", help: "the admin role (return in manual pools, detach)" } },
    async run(values, [user]) {
      const problem = userNameProblem(user!);
      if (problem) throw new UsageError(problem, "token");
      const { token, entry } = newToken(user!, values.admin === true ? "admin" : "user");
      console.log(`token (give it to ${user}, it is shown once): ${token}`);
      console.log(`tokens-file entry: ${JSON.stringify(entry)}`);
      return 0;
    },
  },
  take: {
    args: ["POOL"],
    summary: "take a free VM of POOL (a prestarted one first)",
    options: {},
    async run(_, [pool]) {
      const r = (await call("POST", `/v1/pools/${enc(pool!)}/take`)).json!;
      console.log(`you have ${r.vm} from pool ${r.pool}${r.started ? " (starting)" : ""}`);
      return 0;
    },
  },
  return: {
    args: ["POOL", "VM"],
    summary: "give VM back to POOL (in manual pools: admin)",
    options: {},
    async run(_, [pool, vm]) {
      const r = (await call("POST", `/v1/pools/${enc(pool!)}/vms/${enc(vm!)}/return`)).json!;
      console.log(`returned ${r.vm} to pool ${r.pool}${r.reverted ? " (reverted to its base image)" : ""}`);
      return 0;
    },
  },
  status: {
    args: [],
    summary: "pools, members and who holds what (users see their own VMs)",
    options: {},
    async run() {
      console.log(formatStatus((await call("GET", "/v1/status")).json!));
      return 0;
    },
  },
  migrate: {
    args: ["POOL", "VM"],
    summary: "live-migrate a running VM of POOL to another host (admin)",
    options: {
      to: { type: "string", value: "HOST", help: "the destination (default: the up host with the most headroom)" },
    },
    async run(values, [pool, vm]) {
      const to = values.to as string | undefined;
      const body = to === undefined ? {} : { to };
      const r = (await call("POST", `/v1/pools/${enc(pool!)}/vms/${enc(vm!)}/migrate`, body)).json!;
      console.log(`migrated ${r.vm} from ${r.from} to ${r.to}`);
      return 0;
    },
  },
  host: {
    args: ["maintenance|activate", "HOST"],
    summary: "take a cluster host out of service (free VMs stop, held ones migrate) or back (admin)",
    options: {},
    async run(_, [action, host]) {
      if (action !== "maintenance" && action !== "activate") {
        throw new UsageError(`host ${action}: say maintenance or activate, e.g. vmpools host maintenance kvm2`, "host");
      }
      const r = (await call("POST", `/v1/hosts/${enc(host!)}/${action}`)).json!;
      console.log(`host ${r.name} is ${r.state}${r.reason ? ` (${r.reason})` : ""}`);
      return 0;
    },
  },
  detach: {
    args: ["POOL", "VM"],
    summary: "make a Down member of POOL an independent VM (admin)",
    options: {},
    async run(_, [pool, vm]) {
      await call("POST", `/v1/pools/${enc(pool!)}/vms/${enc(vm!)}/detach`);
      console.log(`detached ${vm} from pool ${pool}; it is now an independent VM`);
      return 0;
    },
  },
  console: {
    args: ["POOL", "VM"],
    summary: "write a virt-viewer file with a short-lived SPICE ticket for VM",
    options: {
      out: { type: "string", value: "FILE", help: "where to write it (default: VM.vv)" },
      option: {
        type: "string",
        value: "KEY=VALUE",
        multiple: true,
        help: "a virt-viewer setting, e.g. fullscreen=1 (repeat for several)",
      },
    },
    async run(values, [pool, vm]) {
      const options = Object.fromEntries(
        ((values.option as string[] | undefined) ?? []).map((kv) => {
          const at = kv.indexOf("=");
          if (at < 1) throw new UsageError(`--option ${kv}: use key=value`, "console");
          return [kv.slice(0, at), parseConsoleOption(kv.slice(0, at), kv.slice(at + 1))];
        }),
      );
      const body = Object.keys(options).length > 0 ? { options } : {};
      // The API's own schema: a misspelt option is refused here, before a ticket is made.
      const checked = parseBody("console", body);
      if (!checked.ok) {
        const problems = checked.problems.map((p) => p.replace(/^options\./, ""));
        throw new UsageError(`--option: ${problems.join("; ")}`, "console");
      }
      const vv = (await call("POST", `/v1/pools/${enc(pool!)}/vms/${enc(vm!)}/console`, body)).text;
      const out = str(values, "out", `${vm}.vv`);
      writeFileSync(out, vv, { mode: 0o600 });
      console.log(`console file written to ${out} (open it with remote-viewer; the ticket is short-lived)`);
      return 0;
    },
  },
  help: {
    args: ["[COMMAND]"],
    summary: "this text, or a command's options",
    options: {},
    async run(_, [name]) {
      if (name === undefined) console.log(usage());
      else if (Object.hasOwn(COMMANDS, name)) console.log(commandHelp(name));
      else throw new UsageError(`unknown command ${name}`);
      return 0;
    },
  },
};

function synopsis(name: string): string {
  const c = COMMANDS[name]!;
  const opts = Object.entries(c.options).map(
    ([o, s]) => `[--${o}${s.value ? ` ${s.value}` : ""}${s.multiple && !s.value?.endsWith("...") ? " ..." : ""}]`,
  );
  return ["vmpools", name, ...c.args, ...opts].join(" ");
}

function usage(): string {
  const lines = Object.keys(COMMANDS).map((name) => `  vmpools ${name} ${COMMANDS[name]!.args.join(" ")}`.trimEnd());
  const width = Math.max(...lines.map((l) => l.length)) + 2;
  return [
    "usage:",
    ...lines.map((l, i) => l.padEnd(width) + COMMANDS[Object.keys(COMMANDS)[i]!]!.summary),
    `Client commands use VMPOOLS_URL (default ${DEFAULT_URL}) and VMPOOLS_TOKEN.`,
    "vmpools help COMMAND (or vmpools COMMAND --help) lists a command's options.",
  ].join("\n");
}

function commandHelp(name: string): string {
  const c = COMMANDS[name]!;
  const rows: [string, string][] = Object.entries(c.options).map(([o, s]) => [
    `--${o}${s.value ? ` ${s.value}` : ""}`,
    s.help,
  ]);
  rows.push(["-h, --help", "this text"]);
  const width = Math.max(...rows.map(([l]) => l.length)) + 2;
  return [`usage: ${synopsis(name)}`, c.summary, ...rows.map(([l, h]) => `  ${l.padEnd(width)}${h}`)].join("\n");
}

/**
 * One command's arguments through node:util's parseArgs, strictly. The tokens of a lenient
 * pass name the offending argument in words of this CLI (parseArgs' own messages talk about
 * "positional arguments" and quoting); the strict pass then has nothing left to refuse.
 */
function parseCommand(name: string, argv: string[]): { values: Values; positionals: string[]; help: boolean } {
  const c = COMMANDS[name]!;
  const options = { ...c.options, help: { type: "boolean", short: "h" } } as const;
  const { tokens } = parseArgs({ args: argv, options, allowPositionals: true, strict: false, tokens: true });
  if (tokens.some((t) => t.kind === "option" && t.name === "help")) return { values: {}, positionals: [], help: true };
  const names = Object.keys(c.options).map((o) => `--${o}`);
  for (const t of tokens) {
    if (t.kind !== "option") continue;
    const spec = c.options[t.name];
    if (!spec) {
      const takes = names.length > 0 ? `takes ${names.join(", ")}` : "takes no options";
      throw new UsageError(`unknown option ${t.rawName} (${name} ${takes})`, name);
    }
    if (spec.type === "boolean" && t.value !== undefined) throw new UsageError(`${t.rawName} takes no value`, name);
    if (spec.type === "string" && t.value === undefined) throw new UsageError(`${t.rawName} needs a value`, name);
    if (spec.type === "string" && !t.inlineValue && t.value!.startsWith("-")) {
      throw new UsageError(
        `${t.rawName} needs a value (for one that starts with -, write ${t.rawName}=${t.value})`,
        name,
      );
    }
  }
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message, name);
  }
  const required = c.args.filter((a) => !a.startsWith("[")).length;
  const got = parsed.positionals;
  if (got.length < required || got.length > c.args.length) {
    const given =
      got.length === 0 ? "" : `, got ${got.length} argument${got.length === 1 ? "" : "s"}: ${got.join(" ")}`;
    const expected =
      c.args.length === 0
        ? `takes no arguments, got ${got.length}: ${got.join(" ")}`
        : `expected ${c.args.join(" ")}${given}`;
    throw new UsageError(expected, name);
  }
  return { ...parsed, help: false };
}

// --- client ------------------------------------------------------------------------------------

/** VMPOOLS_URL, checked; printed without a password. */
function apiBase(token: string): URL {
  const raw = process.env.VMPOOLS_URL || DEFAULT_URL;
  const example = `set VMPOOLS_URL to the API's address, e.g. VMPOOLS_URL=${DEFAULT_URL}`;
  // Swapped variables would print the token in the next message.
  if (raw === token) throw new UsageError(`VMPOOLS_URL holds your token (the value of VMPOOLS_TOKEN); ${example}`);
  let url: URL | undefined;
  try {
    url = new URL(raw);
  } catch {
    url = undefined;
  }
  const shown = url?.password ? url.href.replace(`:${url.password}@`, ":<redacted>@") : raw;
  if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) {
    throw new UsageError(`VMPOOLS_URL ${shown} is not an http:// or https:// URL; ${example}`);
  }
  if (url.username || url.password) {
    throw new UsageError(`VMPOOLS_URL ${shown} carries a user name or password; the API takes VMPOOLS_TOKEN instead`);
  }
  return url;
}

/** Why a request did not reach the API, from undici's cause (`fetch failed` says nothing). */
function unreachable(e: unknown): string {
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  const code = cause?.code ?? "";
  if (code === "ECONNREFUSED") return "connection refused";
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return "host not found";
  if (code === "ETIMEDOUT" || code === "UND_ERR_CONNECT_TIMEOUT") return "timed out";
  if (code === "ECONNRESET" || code === "UND_ERR_SOCKET") return "the connection was closed";
  if (code === "EHOSTUNREACH" || code === "ENETUNREACH") return "no route to the host";
  return cause?.message ?? (e as Error).message;
}

async function call(
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; text: string; json?: Record<string, unknown> }> {
  const token = process.env.VMPOOLS_TOKEN;
  if (!token)
    throw new UsageError("set VMPOOLS_TOKEN to your API token (an admin creates one with: vmpools token USER)");
  const base = apiBase(token);
  // Relative to the base's path, so an API behind a proxy prefix (https://h/vmpools/) works.
  const url = new URL(base.pathname.replace(/\/$/, "") + path, base);
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new Error(
      `cannot reach the vmpools API at ${base.href} (${unreachable(e)}): is vmpools serve running there? ` +
        `Start it, or set VMPOOLS_URL to its address`,
    );
  }
  const text = await res.text();
  let json: Record<string, unknown> | undefined;
  if (res.headers.get("content-type")?.startsWith("application/json")) {
    try {
      json = JSON.parse(text);
    } catch {
      throw new Error(`the API at ${base.href} answered HTTP ${res.status} with malformed JSON`);
    }
  }
  if (!res.ok) {
    const message = json?.message ?? (text.length > 200 ? `${text.slice(0, 197)}...` : text);
    throw new Error(`${message} (HTTP ${res.status}${json?.error ? `, ${json.error}` : ""})`);
  }
  return { status: res.status, text, json };
}

/** Human-readable status: one block per pool, then who holds what. */
export function formatStatus(status: ReconcilerStatus | Record<string, unknown>): string {
  const s = status as ReconcilerStatus;
  const lines: string[] = [];
  // Users see no hosts; a reconciler of one host has nothing to say about them, unless it is attested.
  if ((s.hosts ?? []).length > 1 || (s.hosts ?? []).some((h) => h.trust)) {
    for (const h of s.hosts) {
      // The reason of a host out of service for its trust already says what the trust is.
      const trust =
        h.trust && h.trust.level === "trusted" ? `, trusted (${h.trust.service}, checked ${h.trust.checkedAt})` : "";
      lines.push(
        `host ${h.name}: ${h.state}${h.reason ? ` (${h.reason})` : ""}${trust}, ${h.running}/${h.members} members running`,
      );
    }
  }
  for (const p of s.pools) {
    const c = p.counts;
    lines.push(`pool ${p.name}: ${c.members} members, ${c.held} held, ${c.prestarted} prestarted, ${c.free} free`);
    for (const m of p.members) {
      const who = m.holder ? `held by ${m.holder.user}` : (m.role ?? "");
      lines.push(
        `  ${m.name.padEnd(16)} ${String(m.state).padEnd(10)} ${(s.hosts ?? []).length > 1 ? `${m.host} ` : ""}${who}${m.activity ? ` (${m.activity})` : ""}${m.problem ? ` ! ${m.problem}` : ""}`,
      );
    }
  }
  for (const [user, vms] of Object.entries(s.users ?? {})) {
    lines.push(`user ${user}: ${vms.length === 0 ? "none" : vms.map((v) => `${v.pool}/${v.vm}`).join(", ")}`);
  }
  return lines.join("\n");
}

// --- serve -------------------------------------------------------------------------------------

/** Where viewers reach the hypervisor's SPICE ports: the URI's host, or this machine for local URIs. */
export function consoleHostOf(uri: string): string {
  const host = /^[a-z0-9+]+:\/\/(?:[^@/]*@)?(\[[^\]]+\]|[^:/]+)/.exec(uri)?.[1];
  return host ?? hostname();
}

const HOST_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** `PORT` (on loopback), `HOST:PORT` or `[IPv6]:PORT`. */
export function parseListen(value: string): { host: string; port: number } {
  const refuse = (hint = "") =>
    new UsageError(
      `--listen ${value}: give PORT, HOST:PORT or [IPv6]:PORT with a port from 0 to 65535, e.g. --listen 127.0.0.1:8480${hint}`,
      "serve",
    );
  const m = /^(?:(?:\[([^\]]*)\]|([^:[\]]+)):)?(\d{1,5})$/.exec(value);
  if (!m) {
    const bareV6 = isIPv6(value.replace(/:\d+$/, ""));
    throw refuse(bareV6 ? "; write IPv6 addresses in brackets, e.g. [::1]:8480" : "");
  }
  const [, v6, host, port] = m;
  if (Number(port) > 65535) throw refuse();
  if (v6 !== undefined && !isIPv6(v6)) throw refuse();
  if (host !== undefined && !isIPv4(host) && !HOST_NAME.test(host)) throw refuse();
  return { host: v6 ?? host ?? "127.0.0.1", port: Number(port) };
}

/** `NAME=VALUE` pairs of a repeatable option, each name a host name given once. */
function namedValues(option: string, values: readonly string[], example: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const v of values) {
    const at = v.indexOf("=");
    const name = at > 0 ? v.slice(0, at) : "";
    if (!HOST_NAME.test(name) || at === v.length - 1) {
      throw new UsageError(`--${option} ${v}: give NAME=VALUE, e.g. --${option} ${example}`, "serve");
    }
    if (out.has(name)) throw new UsageError(`--${option} ${v}: ${name} is given twice`, "serve");
    out.set(name, v.slice(at + 1));
  }
  return out;
}

/** `--host NAME=URI` (repeatable) with `--migration-uri NAME=tcp://ADDRESS`; none: the --uri host. */
function parseHosts(
  hostArgs: readonly string[],
  migrationArgs: readonly string[],
): { name: string; uri: string; migrateUri?: string }[] {
  const hosts = namedValues("host", hostArgs, "kvm1=qemu+ssh://kvm1.example.com/system");
  const migration = namedValues("migration-uri", migrationArgs, "kvm1=tcp://10.0.0.11");
  for (const [name, uri] of migration) {
    if (!hosts.has(name))
      throw new UsageError(`--migration-uri ${name}=${uri}: no --host ${name}=URI is given`, "serve");
    if (!/^tcp:\/\/\S+$/.test(uri)) {
      throw new UsageError(`--migration-uri ${name}=${uri}: give tcp://ADDRESS, e.g. tcp://10.0.0.11`, "serve");
    }
  }
  return [...hosts].map(([name, uri]) => ({
    name,
    uri,
    ...(migration.has(name) ? { migrateUri: migration.get(name)! } : {}),
  }));
}

/** `--pools` values (each a comma-separated list), every name checked as the constructs check it. */
function parsePools(values: readonly string[]): string[] {
  const names: string[] = [];
  for (const value of values) {
    for (const name of value.split(",")) {
      const problem =
        name === "" ? "an empty pool name" : names.includes(name) ? `"${name}" is listed twice` : undefined;
      const mask = problem ?? parseNameMask(name);
      if (typeof mask === "string") {
        const what = problem ?? `"${name}": ${mask}`;
        throw new UsageError(
          `--pools ${value}: ${what}; separate pool names with commas, e.g. --pools Desk-??,Lab`,
          "serve",
        );
      }
      names.push(name);
    }
  }
  return names;
}

function seconds(values: Values, name: string, fallback: string, min: number, max: number, example: number): number {
  const text = str(values, name, fallback);
  const n = /^[0-9]{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(n >= min && n <= max)) {
    throw new UsageError(
      `--${name} ${text}: give whole seconds from ${min} to ${max}, e.g. --${name} ${example}`,
      "serve",
    );
  }
  return n;
}

interface ServeOptions {
  /** The hosts: the --host list, or the one --uri host (named "localhost"). */
  readonly hosts: readonly {
    readonly name: string;
    readonly uri: string;
    readonly migrateUri?: string;
    readonly unsafeMigration?: boolean;
  }[];
  readonly db: string;
  readonly listen: { readonly host: string; readonly port: number };
  readonly tokens: string;
  readonly consoleHost: string;
  readonly resyncSeconds: number;
  readonly pools?: readonly string[];
  readonly drainSeconds: number;
  /** Keylime client keys by trusted cluster name. */
  readonly attestationKeys: ReadonlyMap<string, string>;
}

/** Every value checked before serve opens anything. */
function serveOptions(values: Values): ServeOptions {
  const hostArgs = (values.host as string[] | undefined) ?? [];
  if (hostArgs.length > 0 && values.uri !== undefined) {
    throw new UsageError(
      "--uri and --host: give one libvirt connection with --uri, or the cluster's with --host",
      "serve",
    );
  }
  const pools = values.pools as string[] | undefined;
  // Without --host, the one --uri host, named as the pools' default cluster names it.
  const hosts =
    hostArgs.length > 0
      ? parseHosts(hostArgs, (values["migration-uri"] as string[] | undefined) ?? [])
      : [{ name: "localhost", uri: str(values, "uri", "qemu:///system") }];
  return {
    hosts: hosts.map((h) => (values["unsafe-migration"] === true ? { ...h, unsafeMigration: true } : h)),
    db: str(values, "db", "/var/lib/vmpools/state.db"),
    listen: parseListen(str(values, "listen", "127.0.0.1:8480")),
    tokens: str(values, "tokens", "/etc/vmpools/tokens.json"),
    consoleHost: str(values, "console-host", consoleHostOf(hosts[0]!.uri)),
    // Also how soon a deployed policy edit takes effect: libvirt has no volume events.
    resyncSeconds: seconds(values, "resync-seconds", "30", 1, 99999, 10),
    pools: pools && parsePools(pools),
    drainSeconds: seconds(values, "drain-seconds", "30", 0, 3600, 30),
    attestationKeys: attestationKeys((values["attestation-key"] as string[] | undefined) ?? []),
  };
}

/** `--attestation-key CLUSTER=FILE`: each file read now (private, a PEM key), so serve fails before it acts. */
function attestationKeys(args: readonly string[]): Map<string, string> {
  const keys = new Map<string, string>();
  for (const [cluster, file] of namedValues("attestation-key", args, "trusted=/etc/vmpools/keylime-client.key")) {
    let pem: string;
    try {
      pem = secretFromFile(file);
    } catch (e) {
      throw new UsageError(`--attestation-key ${cluster}=${file}: ${(e as Error).message}`, "serve");
    }
    if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
      throw new UsageError(`--attestation-key ${cluster}=${file}: the file holds no PEM private key`, "serve");
    }
    keys.set(cluster, pem);
  }
  return keys;
}

const LISTEN_PROBLEMS: Readonly<Record<string, string>> = {
  EADDRINUSE: "the address is in use (another vmpools serve?); stop what holds it or choose another with --listen",
  EACCES: "permission denied (ports below 1024 need privileges); choose another with --listen",
  EADDRNOTAVAIL: "no interface of this machine has that address; choose one it has with --listen",
  ENOTFOUND: "the host name does not resolve; give an address with --listen",
  EAI_AGAIN: "the host name does not resolve; give an address with --listen",
};

const urlHost = (host: string) => (host.includes(":") ? `[${host}]` : host);

/** Binds the API, or says in one line why it cannot; resolves with the URL it listens on. */
async function listen(server: Server, { host, port }: ServeOptions["listen"]): Promise<string> {
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = LISTEN_PROBLEMS[err.code ?? ""] ?? `${err.message}; choose another address with --listen`;
    throw new Error(`cannot listen on ${urlHost(host)}:${port}: ${why}`);
  }
  // Errors after binding (e.g. accept failing for want of descriptors) are logged, not fatal.
  server.on("error", (e) => console.error(`vmpools api: ${e.message}`));
  const bound = server.address() as AddressInfo;
  return `http://${urlHost(bound.address)}:${bound.port}`;
}

/**
 * Runs until SIGTERM or SIGINT. It binds before the reconciler starts (issue 9, D5): a serve that
 * cannot listen has done nothing, and requests before the start is done get 503 `starting`.
 */
async function serve(o: ServeOptions): Promise<number> {
  const auth = TokenAuth.fromFile(o.tokens);
  const store = openStateStore(o.db);
  // One active reconciler per store: another serve on it stands by until this one is gone.
  const leadership = openLeadership(o.db);
  let term: number | undefined;
  // Which store a hypervisor lease's holder leads (lease.ts), never the URL itself (it may hold a password).
  const storeId = createHash("sha256")
    .update(isPostgresLocation(o.db) ? redactLocation(o.db) : resolve(o.db))
    .digest("hex")
    .slice(0, 16);
  const hosts = o.hosts.map((h) => ({
    ...h,
    driver: new VirshDriver({ uri: h.uri }),
    events: new DomainEvents({ uri: h.uri }),
  }));
  const closeBackends = async () => {
    for (const h of hosts) {
      await h.events.close();
      await h.driver.close();
    }
    await leadership.release();
    store.close();
  };
  const reconciler = new Reconciler({
    hosts,
    store,
    retry: { maxAttempts: 5, baseDelayMs: 500 },
    resyncIntervalMs: o.resyncSeconds * 1000,
    consoleHost: o.consoleHost,
    onlyPools: o.pools,
    lease: { leadership: () => (term === undefined ? undefined : { store: storeId, term }) },
    attestation: { clientKeys: o.attestationKeys },
  });
  reconciler.on("failure", (f) => console.error(`vmpools: ${f.context}${f.vm ? ` ${f.vm}` : ""}: ${f.error.message}`));
  reconciler.on("warning", (w) => console.error(`vmpools: warning: ${w}`));
  reconciler.on("activity", (a) =>
    console.log(
      `vmpools: ${a.kind} ${a.pool}/${a.vm}${a.user ? ` (${a.user})` : ""}${a.from ? ` from ${a.from} to ${a.to}` : ""}`,
    ),
  );
  // Never rejected: a start that fails closes the server, and the API would only log it again.
  let started!: () => void;
  const server = createApiServer(reconciler, auth, { ready: new Promise<void>((resolve) => (started = resolve)) });
  const inFlight = trackRequests(server);
  let url: string;
  try {
    url = await listen(server, o.listen);
  } catch (e) {
    await closeBackends();
    throw e;
  }
  console.log(`vmpools: API on ${url}; starting`);

  const standby = new AbortController();
  const startup = (async () => {
    term = await leadership.tryAcquire();
    if (term === undefined) {
      console.log(
        `vmpools: another reconciler leads the state store; standing by (the API answers 503 until this one leads)`,
      );
      term = await leadership.acquire({ signal: standby.signal });
    }
    // Writes of a store fenced with our term fail once a later leader's term has begun.
    if ("fence" in store && typeof store.fence === "function") store.fence(term);
    await reconciler.start();
  })();
  const startSettled = startup.then(
    () => undefined,
    () => undefined,
  );
  let stopping = false;
  let finish!: (code: Promise<number>) => void;
  const stopped = new Promise<number>((resolve) => (finish = resolve));
  const beginStop = (why: string, code: 0 | 1) => {
    stopping = true;
    standby.abort(new Error(why));
    console.log(`vmpools: ${why}: taking no new requests; finishing ${plural(inFlight.size, "request")} in flight`);
    const stop = stopWithin(o.drainSeconds, inFlight, async () => {
      await drain(server, inFlight);
      await startSettled;
      await reconciler.stop();
      await closeBackends();
    });
    finish(stop.then((c) => Math.max(c, code)));
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (!stopping) return beginStop(signal, 0);
    console.error(`vmpools: ${signal} again: stopping now`);
    process.exit(1);
  };
  // The reconciler has stopped acting; an API in front of it would only answer for stale state.
  reconciler.on("leaseLost", (e) => {
    if (stopping) return;
    console.error(`vmpools: lost the lease on the hypervisor, another reconciler may act now (${oneLine(e.message)})`);
    beginStop("lease lost", 1);
  });
  // Another reconciler may lead the store now: this one must not act on it any more.
  leadership.on("lost", (e) => {
    if (stopping) return;
    console.error(
      `vmpools: lost the leadership of the state store, another reconciler may act now (${oneLine(e.message)})`,
    );
    beginStop("leadership lost", 1);
  });
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  const done = async () => {
    const code = await stopped;
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
    return code;
  };
  try {
    await startup;
  } catch (e) {
    if (stopping) return await done();
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
    server.close();
    server.closeAllConnections();
    await reconciler.stop();
    await closeBackends();
    // Refusals such as another reconciler holding the hypervisor carry a code: a message, no stack.
    const err = e as Error & { code?: unknown };
    const message = oneLine(err.message);
    throw new Error(typeof err.code === "string" ? message : `the reconciler could not start: ${message}`);
  }
  started();
  const pools = o.pools ? ` (pools ${o.pools.join(", ")})` : "";
  const where = o.hosts.length > 1 ? o.hosts.map((h) => h.name).join(", ") : o.hosts[0]!.uri;
  console.log(`vmpools: reconciling ${where}${pools} (leader term ${term}), API on ${url}`);
  return await done();
}

/** virsh's errors come as several lines; serve's messages are one. */
const oneLine = (text: string) => text.trim().replace(/\s*\n\s*/g, "; ");

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? "" : "s"}`;

/** The responses not yet finished; once serve drains, each is the last on its connection. */
function trackRequests(server: Server): Set<ServerResponse> {
  const inFlight = new Set<ServerResponse>();
  server.on("request", (_req: IncomingMessage, res: ServerResponse) => {
    inFlight.add(res);
    if (!server.listening && !res.headersSent) res.setHeader("connection", "close");
    res.once("close", () => {
      inFlight.delete(res);
      // Its connection is idle now, or about to be: a draining server closes it.
      if (!server.listening) setImmediate(() => server.closeIdleConnections());
    });
  });
  return inFlight;
}

/**
 * Stops accepting connections, closes idle keep-alive ones, and resolves once the requests in
 * flight are answered and their connections closed (issue 9, D10).
 */
function drain(server: Server, inFlight: ReadonlySet<ServerResponse>): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  for (const res of inFlight) if (!res.headersSent) res.setHeader("connection", "close");
  server.closeIdleConnections();
  return closed;
}

/**
 * Runs `stop`, but for at most `seconds` (--drain-seconds): then connections are cut and serve
 * exits 1. Cutting work short is safe: intents are persisted, and the next start finishes or
 * rolls back what was in flight.
 */
async function stopWithin(seconds: number, inFlight: ReadonlySet<ServerResponse>, stop: () => Promise<void>) {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), seconds * 1000)));
  const outcome = await Promise.race([stop().then(() => "done" as const), late]);
  clearTimeout(timer);
  if (outcome === "done") {
    console.log("vmpools: stopped");
    return 0;
  }
  const what = inFlight.size > 0 ? `${plural(inFlight.size, "request")} still in flight` : "work still in progress";
  console.error(
    `vmpools: ${what} after --drain-seconds ${seconds}; stopping anyway (the next start finishes or rolls back what was cut short)`,
  );
  for (const res of inFlight) res.socket?.destroy();
  return 1;
}

export async function main(argv: readonly string[]): Promise<number> {
  const [first, ...rest] = argv;
  let name: string | undefined;
  try {
    if (first === undefined) throw new UsageError("no command");
    if (first === "--help" || first === "-h") return await COMMANDS.help!.run({}, []);
    if (first.startsWith("-")) throw new UsageError(`expected a command first, got ${first}`);
    if (!Object.hasOwn(COMMANDS, first)) throw new UsageError(`unknown command ${first}`);
    name = first;
    const { values, positionals, help } = parseCommand(first, rest);
    if (help) {
      console.log(commandHelp(first));
      return 0;
    }
    return await COMMANDS[first]!.run(values, positionals);
  } catch (e) {
    if (e instanceof UsageError) {
      const command = e.command ?? name;
      const prefix = command && command !== "help" ? `${command}: ` : "";
      const text = command && command !== "help" ? `usage: ${synopsis(command)}` : usage();
      console.error(`vmpools: ${prefix}${e.message}\n${text}`);
      return 2;
    }
    console.error(`vmpools: ${(e as Error).message}`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    if (code !== 0) process.exit(code);
  });
}
