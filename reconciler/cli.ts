// `vmpools`: run the reconciler (serve) or talk to it (take, return, status, detach, console).
import { writeFileSync } from "node:fs";
import { DomainEvents } from "./driver/events";
import { VirshDriver } from "./driver/libvirt-driver";
import { StateStore } from "./store/store";
import { Reconciler, type ReconcilerStatus } from "./reconciler";
import { createApiServer } from "./api/server";
import { TokenAuth, newToken, userNameProblem } from "./api/auth";
import { parseConsoleOption } from "./console";
import { hostname } from "node:os";

const USAGE = `usage:
  vmpools init [DIR] [--force]            write a cdktf app with one pool (main.ts, cdktf.json, ...)
  vmpools serve [--uri qemu:///system] [--db /var/lib/vmpools/state.db] [--listen 127.0.0.1:8480]
                [--tokens /etc/vmpools/tokens.json] [--console-host HOST] [--resync-seconds 30]
  vmpools token USER [--admin]            print a new token and its tokens-file entry
  vmpools take POOL
  vmpools return POOL VM
  vmpools status
  vmpools detach POOL VM                  (admin)
  vmpools console POOL VM [--out FILE] [--option key=value ...]
Client commands use VMPOOLS_URL (default http://127.0.0.1:8480) and VMPOOLS_TOKEN.`;

export class UsageError extends Error {}

interface Parsed {
  readonly positional: string[];
  readonly flags: Map<string, string[]>;
}

/** `--name value` and `--switch` (for names in `switches`); everything else is positional. */
export function parseArgs(argv: readonly string[], switches: readonly string[] = []): Parsed {
  const positional: string[] = [];
  const flags = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--")) {
      positional.push(a);
      continue;
    }
    const name = a.slice(2);
    const value = switches.includes(name) ? "true" : argv[++i];
    if (value === undefined) throw new UsageError(`--${name} needs a value`);
    flags.set(name, [...(flags.get(name) ?? []), value]);
  }
  return { positional, flags };
}

const flag = (p: Parsed, name: string, fallback: string) => p.flags.get(name)?.at(-1) ?? fallback;

function want(p: Parsed, count: number, what: string): string[] {
  if (p.positional.length !== count) throw new UsageError(`expected ${what}`);
  return p.positional;
}

async function call(
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; text: string; json?: Record<string, unknown> }> {
  const base = process.env.VMPOOLS_URL ?? "http://127.0.0.1:8480";
  const token = process.env.VMPOOLS_TOKEN;
  if (!token)
    throw new UsageError("set VMPOOLS_TOKEN to your API token (an admin creates one with: vmpools token USER)");
  const res = await fetch(new URL(path, base), {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json: Record<string, unknown> | undefined;
  if (res.headers.get("content-type")?.startsWith("application/json")) json = JSON.parse(text);
  if (!res.ok) throw new Error(`${json?.message ?? text} (HTTP ${res.status}${json?.error ? `, ${json.error}` : ""})`);
  return { status: res.status, text, json };
}

const enc = encodeURIComponent;

/** Human-readable status: one block per pool, then who holds what. */
export function formatStatus(status: ReconcilerStatus | Record<string, unknown>): string {
  const s = status as ReconcilerStatus;
  const lines: string[] = [];
  for (const p of s.pools) {
    const c = p.counts;
    lines.push(`pool ${p.name}: ${c.members} members, ${c.held} held, ${c.prestarted} prestarted, ${c.free} free`);
    for (const m of p.members) {
      const who = m.holder ? `held by ${m.holder.user}` : (m.role ?? "");
      lines.push(
        `  ${m.name.padEnd(16)} ${String(m.state).padEnd(10)} ${who}${m.activity ? ` (${m.activity})` : ""}${m.problem ? ` ! ${m.problem}` : ""}`,
      );
    }
  }
  for (const [user, vms] of Object.entries(s.users ?? {})) {
    lines.push(`user ${user}: ${vms.length === 0 ? "none" : vms.map((v) => `${v.pool}/${v.vm}`).join(", ")}`);
  }
  return lines.join("\n");
}

/** Where viewers reach the hypervisor's SPICE ports: the URI's host, or this machine for local URIs. */
export function consoleHostOf(uri: string): string {
  const host = /^[a-z0-9+]+:\/\/(?:[^@/]*@)?(\[[^\]]+\]|[^:/]+)/.exec(uri)?.[1];
  return host ?? hostname();
}

async function serve(p: Parsed): Promise<void> {
  // Also how soon a deployed policy edit takes effect: libvirt has no volume events.
  const resync = flag(p, "resync-seconds", "30");
  if (!/^[1-9][0-9]{0,4}$/.test(resync)) {
    throw new UsageError(`--resync-seconds ${resync}: give whole seconds from 1 to 99999, e.g. --resync-seconds 10`);
  }
  const uri = flag(p, "uri", "qemu:///system");
  const [host, port] = flag(p, "listen", "127.0.0.1:8480").split(/:(?=\d+$)/);
  const auth = TokenAuth.fromFile(flag(p, "tokens", "/etc/vmpools/tokens.json"));
  const store = StateStore.open(flag(p, "db", "/var/lib/vmpools/state.db"));
  const driver = new VirshDriver({ uri });
  const events = new DomainEvents({ uri });
  const reconciler = new Reconciler({
    driver,
    events,
    store,
    retry: { maxAttempts: 5, baseDelayMs: 500 },
    resyncIntervalMs: Number(resync) * 1000,
    consoleHost: flag(p, "console-host", consoleHostOf(uri)),
  });
  reconciler.on("failure", (f) => console.error(`vmpools: ${f.context}${f.vm ? ` ${f.vm}` : ""}: ${f.error.message}`));
  reconciler.on("activity", (a) => console.log(`vmpools: ${a.kind} ${a.pool}/${a.vm}${a.user ? ` (${a.user})` : ""}`));
  await reconciler.start();
  const server = createApiServer(reconciler, auth);
  await new Promise<void>((resolve) => server.listen(Number(port), host, resolve));
  console.log(`vmpools: reconciling ${uri}, API on http://${host}:${port}`);
  const stop = async () => {
    server.close();
    await reconciler.stop();
    await events.close();
    await driver.close();
    store.close();
    process.exit(0);
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

export async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "init": {
        const p = parseArgs(rest, ["force"]);
        const unknown = [...p.flags.keys()].filter((f) => f !== "force");
        if (unknown.length > 0) throw new UsageError(`init: unknown option --${unknown[0]} (init takes --force)`);
        if (p.positional.length > 1) throw new UsageError(`init takes at most one DIR, got ${p.positional.join(" ")}`);
        // Loaded here: the other commands need none of it.
        const { initProject } = await import("../engines/cdktf/init");
        const r = initProject(p.positional[0] ?? ".", { force: p.flags.has("force") });
        console.log(`vmpools: wrote ${r.written.join(", ")} in ${r.dir}`);
        console.log(
          "next: npm install, then npx cdktf synth (needs the cdktf CLI 0.21: npm install -g cdktf-cli@0.21)",
        );
        return 0;
      }
      case "serve":
        await serve(parseArgs(rest));
        return 0;
      case "token": {
        const p = parseArgs(rest, ["admin"]);
        const unknown = [...p.flags.keys()].filter((f) => f !== "admin");
        if (unknown.length > 0) throw new UsageError(`token: unknown option --${unknown[0]} (token takes --admin)`);
        const [user] = want(p, 1, "USER");
        const problem = userNameProblem(user!);
        if (problem) throw new UsageError(`token: ${problem}`);
        const { token, entry } = newToken(user!, p.flags.has("admin") ? "admin" : "user");
        console.log(`token (give it to ${user}, it is shown once): ${token}`);
        console.log(`tokens-file entry: ${JSON.stringify(entry)}`);
        return 0;
      }
      case "take": {
        const [pool] = want(parseArgs(rest), 1, "POOL");
        const r = (await call("POST", `/v1/pools/${enc(pool!)}/take`)).json!;
        console.log(`you have ${r.vm} from pool ${r.pool}${r.started ? " (starting)" : ""}`);
        return 0;
      }
      case "return": {
        const [pool, vm] = want(parseArgs(rest), 2, "POOL VM");
        const r = (await call("POST", `/v1/pools/${enc(pool!)}/vms/${enc(vm!)}/return`)).json!;
        console.log(`returned ${r.vm} to pool ${r.pool}${r.reverted ? " (reverted to its base image)" : ""}`);
        return 0;
      }
      case "detach": {
        const [pool, vm] = want(parseArgs(rest), 2, "POOL VM");
        await call("POST", `/v1/pools/${enc(pool!)}/vms/${enc(vm!)}/detach`);
        console.log(`detached ${vm} from pool ${pool}; it is now an independent VM`);
        return 0;
      }
      case "status":
        want(parseArgs(rest), 0, "no arguments");
        console.log(formatStatus((await call("GET", "/v1/status")).json!));
        return 0;
      case "console": {
        const p = parseArgs(rest);
        const [pool, vm] = want(p, 2, "POOL VM");
        const options = Object.fromEntries(
          (p.flags.get("option") ?? []).map((kv) => {
            const at = kv.indexOf("=");
            if (at < 1) throw new UsageError(`--option ${kv}: use key=value`);
            return [kv.slice(0, at), parseConsoleOption(kv.slice(0, at), kv.slice(at + 1))];
          }),
        );
        const body = Object.keys(options).length > 0 ? { options } : {};
        const vv = (await call("POST", `/v1/pools/${enc(pool!)}/vms/${enc(vm!)}/console`, body)).text;
        const out = flag(p, "out", `${vm}.vv`);
        writeFileSync(out, vv, { mode: 0o600 });
        console.log(`console file written to ${out} (open it with remote-viewer; the ticket is short-lived)`);
        return 0;
      }
      default:
        throw new UsageError(command ? `unknown command ${command}` : "no command");
    }
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`vmpools: ${e.message}\n${USAGE}`);
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
