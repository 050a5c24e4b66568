// Real Pulumi runs for tests: the pulumi CLI and the parameterized terraform-provider plugin that
// scripts/pulumi-tools.sh builds (no release of either can be downloaded here), driven through
// the Automation API with inline programs (the Node language host is not built, so a program on
// disk cannot run). Each stack has a temp dir of its own with a file:// backend, so tests share
// nothing but the build cache, and nothing is asked of get.pulumi.com or GitHub.
import {
  LocalWorkspace,
  PulumiCommand,
  type DestroyOptions,
  type DestroyResult,
  type PreviewOptions,
  type PreviewResult,
  type ProjectSettings,
  type PulumiFn,
  type Stack,
  type UpOptions,
  type UpResult,
} from "@pulumi/pulumi/automation";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

const ROOT = join(__dirname, "../..");

/** The passphrase of every test stack's secrets provider (the file backend's default one). */
export const TEST_PASSPHRASE = "vmpools-test-passphrase";

let built: { env: Record<string, string> } | { error: Error } | undefined;

/**
 * The environment that keeps pulumi on the tools of scripts/pulumi-tools.sh and offline
 * (PULUMI_HOME, plugin acquisition off, the OpenTofu plugin cache of the provider stand-ins, PATH
 * with the built binaries first). Runs the script once per process: it is cached, and fast once
 * built; the first build takes minutes. A failed build fails (never skips) with the script's
 * stderr, and so does a CLI whose version is not that of the installed @pulumi/pulumi.
 */
export function pulumiEnv(): Record<string, string> {
  built ??= buildTools();
  if ("error" in built) throw built.error;
  return built.env;
}

function buildTools(): { env: Record<string, string> } | { error: Error } {
  const run = spawnSync("bash", ["scripts/pulumi-tools.sh"], {
    cwd: ROOT,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    maxBuffer: 256 << 20,
    // A build that hangs fails too (spawnSync blocks jest's own timers); a cold one takes ~8 min.
    timeout: 20 * 60_000,
  });
  if (run.error || run.status !== 0) {
    const how = run.error ? run.error.message : run.signal ? `killed by ${run.signal}` : `exit ${run.status}`;
    return { error: new Error(`bash scripts/pulumi-tools.sh failed (${how}); its stderr:\n${run.stderr}`) };
  }
  // The script's last stdout line is its env file.
  const file = run.stdout.trim().split("\n").pop() ?? "";
  if (!file || !existsSync(file)) {
    return { error: new Error(`scripts/pulumi-tools.sh printed no env file (stdout: ${JSON.stringify(run.stdout)})`) };
  }
  try {
    const env = parseEnvFile(readFileSync(file, "utf8"), file);
    checkVersions(env);
    return { env };
  } catch (e) {
    return { error: e as Error };
  }
}

const EXPORT = /^export ([A-Za-z_][A-Za-z0-9_]*)='([^']*)'$/;

/**
 * The `export KEY='VALUE'` lines of pulumi-tools.sh's env file. Its PATH line (which appends the
 * caller's $PATH, a shell expansion) is left out: PATH is VMPOOLS_PULUMI_BIN + ":" + this
 * process's PATH.
 */
export function parseEnvFile(text: string, file = "env file"): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const line of text.split("\n")) {
    if (!line.trim() || line.startsWith("export PATH=")) continue;
    const m = EXPORT.exec(line);
    if (!m) throw new Error(`${file}: not an export KEY='VALUE' line: ${JSON.stringify(line)}`);
    vars[m[1]!] = m[2]!;
  }
  if (!vars.VMPOOLS_PULUMI_BIN) throw new Error(`${file} sets no VMPOOLS_PULUMI_BIN`);
  vars.PATH = `${vars.VMPOOLS_PULUMI_BIN}:${process.env.PATH ?? ""}`;
  return vars;
}

/** The version of the @pulumi/pulumi package this process loads. */
export function sdkVersion(): string {
  const pkg = JSON.parse(readFileSync(require.resolve("@pulumi/pulumi/package.json"), "utf8")) as { version: string };
  return pkg.version;
}

/** The Automation API speaks the CLI of its own release; an engine of another release is refused. */
function checkVersions(env: Record<string, string>): void {
  const pulumi = join(env.VMPOOLS_PULUMI_BIN!, "pulumi");
  const run = spawnSync(pulumi, ["version"], { encoding: "utf8", env: { ...process.env, ...env } });
  if (run.error || run.status !== 0) {
    throw new Error(`${pulumi} version failed: ${run.error?.message ?? `exit ${run.status}`}\n${run.stderr}`);
  }
  const cli = run.stdout.trim().replace(/^v/, "");
  const sdk = sdkVersion();
  if (cli !== sdk) {
    throw new Error(
      `the pulumi CLI built by scripts/pulumi-tools.sh is ${cli}, but node_modules/@pulumi/pulumi is ${sdk}: ` +
        `install @pulumi/pulumi@${cli}, or move the script's pulumi_version (and tools/pulumi-build/cli) to ${sdk}`,
    );
  }
}

let command: Promise<PulumiCommand> | undefined;

/** The built CLI, for LocalWorkspace (which would otherwise look for `pulumi` on this process's PATH). */
function pulumiCommand(): Promise<PulumiCommand> {
  const bin = pulumiEnv().VMPOOLS_PULUMI_BIN!;
  command ??= PulumiCommand.get({ root: dirname(bin) });
  return command;
}

export interface PulumiStackOptions {
  /** The project name (ignored when `workDir` has a Pulumi.yaml: that one names the project). */
  readonly project: string;
  /** The stack name; "test" when not given. */
  readonly stack?: string;
  readonly program: PulumiFn;
  /**
   * A project directory of the caller's, used as it is: its Pulumi.yaml is not rewritten, and a
   * backend it names is overridden (PULUMI_BACKEND_URL wins over a project's `backend.url`), so
   * state always lands in the stack's temp dir. The stack's config file
   * (Pulumi.<stack>.yaml) is written there and removed with the stack. Without it, the temp dir
   * holds a fresh project.
   */
  readonly workDir?: string;
  /** Stack config, as `pulumi config set KEY VALUE` (plain, not secret). */
  readonly config?: Readonly<Record<string, string>>;
}

export interface PulumiStack {
  readonly stack: Stack;
  /** The stack's temp dir: `state/` is its file:// backend, `work/` its project when no workDir was given. */
  readonly dir: string;
  up(opts?: UpOptions): Promise<UpResult>;
  preview(opts?: PreviewOptions): Promise<PreviewResult>;
  destroy(opts?: DestroyOptions): Promise<DestroyResult>;
  /** Everything the CLI printed (stdout and stderr) in up, preview and destroy, close's included. */
  readonly output: string[];
  /**
   * Destroys what the stack still has, removes the stack and deletes its temp dir. If the
   * destroy fails, it throws and keeps the temp dir (the state of what was left behind).
   */
  close(): Promise<void>;
}

const open = new Set<PulumiStack>();

/**
 * A stack in a temp dir of its own, with a file:// backend there, the passphrase secrets provider
 * (TEST_PASSPHRASE) and the env of pulumiEnv(). Close it, or call closePulumiStacks() in afterAll.
 */
export async function openStack(opts: PulumiStackOptions): Promise<PulumiStack> {
  const env = pulumiEnv();
  const pulumiCmd = await pulumiCommand();
  const dir = mkdtempSync(join(tmpdir(), "vmpools-pulumi-"));
  const backend = `file://${join(dir, "state")}`;
  mkdirSync(join(dir, "state"));
  const stackName = opts.stack ?? "test";
  const envVars = { ...env, PULUMI_BACKEND_URL: backend, PULUMI_CONFIG_PASSPHRASE: TEST_PASSPHRASE };
  let stack: Stack;
  try {
    let workDir = opts.workDir;
    // With a project of its own (the Automation API would overwrite the caller's Pulumi.yaml if
    // given projectSettings), PULUMI_BACKEND_URL alone places the state.
    let projectSettings: ProjectSettings | undefined;
    if (!workDir) {
      workDir = join(dir, "work");
      mkdirSync(workDir);
      projectSettings = { name: opts.project, runtime: "nodejs", backend: { url: backend } };
    }
    stack = await LocalWorkspace.createOrSelectStack(
      { stackName, projectName: opts.project, program: opts.program },
      { workDir, projectSettings, envVars, pulumiCommand: pulumiCmd },
    );
    if (opts.config) {
      await stack.setAllConfig(Object.fromEntries(Object.entries(opts.config).map(([k, value]) => [k, { value }])));
    }
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }

  const output: string[] = [];
  // Every CLI line goes to `output`, and to the caller's own callbacks too.
  const capture = <O extends { onOutput?: (out: string) => void; onError?: (err: string) => void }>(o?: O): O =>
    ({
      ...o,
      onOutput: (out: string) => {
        output.push(out);
        o?.onOutput?.(out);
      },
      onError: (err: string) => {
        output.push(err);
        o?.onError?.(err);
      },
    }) as O;

  const handle: PulumiStack = {
    stack,
    dir,
    output,
    up: (o) => stack.up(capture(o)),
    preview: (o) => stack.preview(capture(o)),
    destroy: (o) => stack.destroy(capture(o)),
    async close() {
      if (!open.delete(handle)) return;
      try {
        const state = (await stack.exportStack()) as { deployment?: { resources?: unknown[] } };
        if ((state.deployment?.resources ?? []).length > 0) await stack.destroy(capture());
        await stack.workspace.removeStack(stackName);
      } catch (e) {
        throw new Error(
          `pulumi stack ${stackName} (project ${opts.project}) could not be destroyed and removed; its state is kept ` +
            `in ${backend} (passphrase ${JSON.stringify(TEST_PASSPHRASE)}): ${(e as Error).message}`,
        );
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  open.add(handle);
  return handle;
}

/** Closes every stack still open (for afterAll); throws one error naming each that failed. */
export async function closePulumiStacks(): Promise<void> {
  const failures: string[] = [];
  for (const s of [...open]) {
    await s.close().catch((e: Error) => failures.push(e.message));
  }
  if (failures.length) throw new Error(failures.join("\n\n"));
}
