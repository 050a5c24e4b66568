// Real Terraform runs over synthesized stacks: `terraform init/plan/apply/destroy` with the
// provider stand-ins that scripts/terraform-tools.sh builds (the real dmacvicar/libvirt and
// hashicorp/external cannot be had here: the Go module proxy refuses both). Commands run
// asynchronously, so a reconciler in the same process keeps working while Terraform applies.
import { App, LocalBackend, type TerraformStack } from "cdktf";
import { execFile, execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { readStackDir } from "../../engines/cdktf";

const ROOT = join(__dirname, "../..");

let tools: { cliConfig: string; terraform: string } | undefined;

/** Builds (or finds in its cache) the stand-ins once per process; fails, never skips. */
export function terraformTools(): { cliConfig: string; terraform: string } {
  if (!tools) {
    const out = execFileSync("bash", [join(ROOT, "scripts/terraform-tools.sh")], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
    // The script's last two lines: the terraform binary, then the CLI config.
    const [terraform, cliConfig] = out.trim().split("\n").slice(-2);
    tools = { terraform: terraform!, cliConfig: cliConfig! };
  }
  return tools;
}

export interface ResourceChange {
  readonly address: string;
  readonly type: string;
  readonly name: string;
  /** e.g. ["no-op"], ["create"], ["update"], ["delete", "create"], ["delete"], ["forget"] */
  readonly actions: readonly string[];
  readonly before?: Record<string, unknown> | null;
  readonly after?: Record<string, unknown> | null;
}

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** A cdktf stack synthesized into a folder of its own, with its state next to it. */
export class TerraformProject {
  readonly outdir: string;
  readonly stackDir: string;
  /** Every command line and its output, for tests that look for leaked secrets. */
  readonly transcript: string[] = [];

  constructor(
    readonly dir: string,
    readonly stackName: string,
    private readonly env: NodeJS.ProcessEnv = {},
  ) {
    this.outdir = join(dir, "cdktf.out");
    this.stackDir = join(this.outdir, "stacks", stackName);
    mkdirSync(dir, { recursive: true });
  }

  /** Synthesizes the stack (as `cdktf synth` does) with a local state file in `dir`. */
  synth(build: (app: App, id: string) => TerraformStack): Record<string, unknown> {
    const app = new App({ outdir: this.outdir });
    const stack = build(app, this.stackName);
    new LocalBackend(stack, { path: join(this.dir, "terraform.tfstate") });
    app.synth();
    return readStackDir(this.stackDir) as Record<string, unknown>;
  }

  run(args: readonly string[], opts: { readonly allowFailure?: boolean } = {}): Promise<RunResult> {
    const { terraform, cliConfig } = terraformTools();
    return new Promise((resolve, reject) => {
      execFile(
        terraform,
        [...args],
        {
          cwd: this.stackDir,
          maxBuffer: 256 << 20,
          env: {
            ...process.env,
            TF_CLI_CONFIG_FILE: cliConfig,
            TF_IN_AUTOMATION: "1",
            TF_INPUT: "0",
            CHECKPOINT_DISABLE: "1",
            ...this.env,
          },
        },
        (error, stdout, stderr) => {
          const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
          this.transcript.push(`$ terraform ${args.join(" ")}\n${stdout}\n${stderr}`);
          if (code !== 0 && !opts.allowFailure) {
            reject(new Error(`terraform ${args.join(" ")} exited ${code}:\n${stderr || stdout}`));
          } else resolve({ code, stdout, stderr });
        },
      );
    });
  }

  async init(): Promise<void> {
    await this.run(["init", "-no-color"]);
  }

  /** `terraform plan` saved to a file and read back as JSON: what would change, per resource. */
  async plan(extra: readonly string[] = []): Promise<{ changes: ResourceChange[]; text: string }> {
    const planned = await this.run(["plan", "-no-color", "-out=tfplan", ...extra]);
    const shown = await this.run(["show", "-json", "tfplan"]);
    const json = JSON.parse(shown.stdout) as {
      resource_changes?: {
        address: string;
        type: string;
        name: string;
        change: { actions: string[]; before?: Record<string, unknown>; after?: Record<string, unknown> };
      }[];
    };
    const changes = (json.resource_changes ?? []).map((c) => ({
      address: c.address,
      type: c.type,
      name: c.name,
      actions: c.change.actions,
      before: c.change.before,
      after: c.change.after,
    }));
    return { changes, text: planned.stdout };
  }

  /** Applies the saved plan from `plan()`. */
  async applyPlan(): Promise<RunResult> {
    return this.run(["apply", "-no-color", "-auto-approve", "tfplan"]);
  }

  async apply(extra: readonly string[] = []): Promise<RunResult> {
    return this.run(["apply", "-no-color", "-auto-approve", ...extra]);
  }

  async destroy(opts: { readonly allowFailure?: boolean } = {}): Promise<RunResult> {
    return this.run(["destroy", "-no-color", "-auto-approve"], opts);
  }
}

/** Changes other than no-op (and reads of data sources), for assertions. */
export function effective(changes: readonly ResourceChange[]): ResourceChange[] {
  return changes.filter((c) => !(c.actions.length === 1 && (c.actions[0] === "no-op" || c.actions[0] === "read")));
}
