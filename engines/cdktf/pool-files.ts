import { Testing, TerraformStack } from "cdktf";
// Not re-exported by cdktf's index, but the hook its own TerraformAsset uses to write files at
// synth. cdktf 0.21 is the last release (the project is archived), so it will not move; the
// peer range pins it.
import { addCustomSynthesis } from "cdktf/lib/synthesize/synthesizer";
import { Construct } from "constructs";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { JsonObject } from "./terraform-json";

/** Suffix of the Terraform JSON files pools write next to the stack's `cdk.tf.json`. */
export const POOL_FILE_SUFFIX = ".vmpools.tf.json";
/** Stack-relative folder of the files pools upload (media, policy documents). */
export const POOL_ASSET_DIR = "assets/vmpools";

/** A file a pool uploads, relative to POOL_ASSET_DIR. */
export interface PoolAsset {
  readonly path: string;
  readonly content: () => Buffer | string;
  /** 0600 for anything holding secrets. */
  readonly mode: number;
}

/** What one pool writes at synth: a Terraform JSON file and the files it uploads. */
export interface PoolOutput {
  /** File name in the stack folder, ending in POOL_FILE_SUFFIX. */
  readonly fileName: string;
  readonly terraform: () => JsonObject;
  readonly assets: () => Iterable<PoolAsset>;
}

/**
 * Writes every pool's member resources as its own Terraform JSON file beside `cdk.tf.json`
 * (Terraform reads every `*.tf.json` of a folder) and their media straight into the stack's
 * assets, in one pass per stack. This keeps thousands of resources out of cdktf's token
 * resolution and skips the staging copy a TerraformAsset per member needs.
 *
 * One instance per stack, so a synth first removes what an earlier synth wrote (a renamed or
 * removed pool's file would otherwise still be read by Terraform).
 */
export class StackPoolFiles extends Construct {
  private readonly pools: PoolOutput[] = [];

  static of(scope: Construct): StackPoolFiles {
    const stack = TerraformStack.of(scope);
    return (
      (stack.node.tryFindChild("vmpools-files") as StackPoolFiles | undefined) ??
      new StackPoolFiles(stack, "vmpools-files")
    );
  }

  private constructor(stack: TerraformStack, id: string) {
    super(stack, id);
    addCustomSynthesis(this, {
      onSynthesize: (session) => {
        const stackPath = session.manifest.forStack(stack).synthesizedStackPath;
        this.write(join(session.outdir, dirname(stackPath)));
      },
    });
  }

  add(pool: PoolOutput): void {
    if (this.pools.some((p) => p.fileName === pool.fileName)) {
      throw new Error(`two pools of stack ${TerraformStack.of(this).node.path} would write ${pool.fileName}`);
    }
    this.pools.push(pool);
  }

  /** The pools' Terraform JSON, merged (for `synthStack`). */
  terraform(): JsonObject[] {
    return this.pools.map((p) => p.terraform());
  }

  private write(stackDir: string): void {
    mkdirSync(stackDir, { recursive: true });
    for (const f of readdirSync(stackDir)) if (f.endsWith(POOL_FILE_SUFFIX)) rmSync(join(stackDir, f));
    const assetRoot = join(stackDir, POOL_ASSET_DIR);
    rmSync(assetRoot, { recursive: true, force: true });
    for (const pool of this.pools) {
      writeFileSync(join(stackDir, pool.fileName), JSON.stringify(pool.terraform(), null, 2));
      const made = new Set<string>();
      for (const asset of pool.assets()) {
        const file = join(assetRoot, asset.path);
        const dir = dirname(file);
        if (!made.has(dir)) {
          // 0700: media hold secrets. One mkdir per folder, not per file (~1 ms each).
          mkdirSync(dir, { recursive: true, mode: 0o700 });
          made.add(dir);
        }
        writeFileSync(file, asset.content(), { mode: asset.mode });
      }
    }
  }
}

/** Merges Terraform JSON as Terraform merges files: block lists (`removed`) add up, maps join. */
function mergeInto(target: Record<string, unknown>, source: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(source)) {
    const existing = target[key];
    if (Array.isArray(existing) && Array.isArray(value)) {
      target[key] = [...existing, ...value];
    } else if (
      existing &&
      typeof existing === "object" &&
      !Array.isArray(existing) &&
      value &&
      typeof value === "object"
    ) {
      mergeInto(existing as Record<string, unknown>, value as Record<string, unknown>);
    } else {
      target[key] = value;
    }
  }
}

/**
 * `Testing.synth(stack)` with the member resources pools write to their own files, as Terraform
 * reads the stack folder: for unit tests of stacks that hold pools (cdktf's matchers work on it).
 */
export function synthStack(stack: TerraformStack): string {
  const json = JSON.parse(Testing.synth(stack)) as Record<string, unknown>;
  const files = stack.node.tryFindChild("vmpools-files") as StackPoolFiles | undefined;
  for (const part of files?.terraform() ?? []) mergeInto(json, JSON.parse(JSON.stringify(part)));
  return JSON.stringify(json, null, 2);
}

/** A synthesized stack folder as Terraform reads it: every `*.tf.json` in it, merged. */
export function readStackDir(stackDir: string): Record<string, unknown> {
  const json: Record<string, unknown> = {};
  for (const f of readdirSync(stackDir).sort()) {
    if (f.endsWith(".tf.json")) mergeInto(json, JSON.parse(readFileSync(join(stackDir, f), "utf8")));
  }
  return json;
}
