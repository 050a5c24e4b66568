import { App, Testing, TerraformStack } from "cdktf";
// Not re-exported by cdktf's index, but the hook its own TerraformAsset uses to write files at
// synth. cdktf 0.21 is the last release (the project is archived), so it will not move; the
// peer range pins it.
import { addCustomSynthesis } from "cdktf/lib/synthesize/synthesizer";
import { Construct } from "constructs";
import { createHash } from "node:crypto";
import {
  chmodSync,
  closeSync,
  existsSync,
  fchmodSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { ownPackage } from "./own-package";
import { writeAppPlacementRecords } from "./placement";
import type { JsonObject } from "./terraform-json";

/** Suffix of the Terraform JSON files pools write next to the stack's `cdk.tf.json`. */
export const POOL_FILE_SUFFIX = ".vmpools.tf.json";
/** Stack-relative folder of the files pools upload (media, policy documents). */
// A dot no cdktf asset folder can have (logical ids keep only [A-Za-z0-9_-]), so a synth's
// clean-up never meets a TerraformAsset's files.
export const POOL_ASSET_DIR = "assets/vmpools.uploads";

/** A file a pool uploads, relative to POOL_ASSET_DIR. */
export interface PoolAsset {
  readonly path: string;
  readonly content: () => Buffer | string;
  /** 0600 for anything holding secrets. */
  readonly mode: number;
  /**
   * Everything the content is built from (a media plan as JSON). When it is unchanged since the
   * last synth into this folder and the file is still there, the content is not built again.
   * @default undefined — built on every synth
   */
  readonly inputs?: string;
}

/** Bump to rebuild every image (the builders' code and vmpools' version are hashed as well). */
const BUILD_FORMAT = "vmpools-built-1";
/** Per-stack record of what each built asset was made from: sha256 of its inputs and its size. */
const BUILT_MANIFEST = ".built.json";
type BuiltManifest = Record<string, { readonly inputsSha256: string; readonly bytes: number }>;

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
 * One instance per stack, so a synth also removes what an earlier synth wrote and this one did
 * not (a renamed or removed pool's file would otherwise still be read by Terraform).
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
        const folderOf = (s: TerraformStack) =>
          join(session.outdir, dirname(session.manifest.forStack(s).synthesizedStackPath));
        this.write(folderOf(stack));
        // The app's own synth (not Testing.fullSynth's): the placement records, once for all stacks.
        const app = App.of(stack);
        if (session.manifest === app.manifest) writeAppPlacementRecords(app, session.manifest);
        // A stack of the app whose last pool was removed has no instance of its own to clean up.
        for (const other of stack.node.root.node.findAll()) {
          if (TerraformStack.isStack(other) && !other.node.tryFindChild("vmpools-files")) {
            StackPoolFiles.clearStackDir(folderOf(other));
          }
        }
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

  /**
   * Writes only files whose content changed (images are deterministic, so a re-synth mostly
   * changes none), then removes what no pool wrote this time. Overwriting or deleting a thousand
   * media files costs ~0.1 s more per synth than reading them back: freeing their blocks is slow
   * on file systems that discard them.
   */
  private write(stackDir: string): void {
    const assetRoot = join(stackDir, POOL_ASSET_DIR);
    const manifestFile = join(assetRoot, BUILT_MANIFEST);
    const previous = readManifest(manifestFile);
    const written = new Set<string>([manifestFile]);
    const dirs = new Set<string>();
    const reused: BuiltManifest = {};
    const toBuild: { asset: PoolAsset; file: string; inputsSha256?: string }[] = [];
    for (const pool of this.pools) {
      for (const asset of pool.assets()) {
        const file = join(assetRoot, asset.path);
        dirs.add(dirname(file));
        written.add(file);
        const inputsSha256 =
          asset.inputs === undefined
            ? undefined
            : createHash("sha256").update(`${builderFingerprint()}\u0000${asset.inputs}`).digest("hex");
        const before = inputsSha256 === undefined ? undefined : previous[asset.path];
        const existing = before?.inputsSha256 === inputsSha256 ? statSync(file, { throwIfNoEntry: false }) : undefined;
        if (before && existing?.isFile() && existing.size === before.bytes && (existing.mode & 0o777) === asset.mode) {
          reused[asset.path] = before;
        } else {
          toBuild.push({ asset, file, inputsSha256 });
        }
      }
    }
    for (const dir of [assetRoot, ...dirs]) {
      // 0700: media hold secrets. One mkdir per folder, not per file (~1 ms each); chmod for a
      // folder that existed with other permissions.
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      chmodSync(dir, 0o700);
      written.add(dir);
    }
    // Before an image is rewritten its entry leaves the manifest, so a synth cut short after
    // rewriting it cannot make a later synth take it for the image of other inputs.
    const rebuilt = toBuild.some((b) => b.inputsSha256 !== undefined && previous[b.asset.path] !== undefined);
    if (rebuilt) putFile(manifestFile, JSON.stringify(reused), 0o600);
    for (const pool of this.pools) {
      putFile(join(stackDir, pool.fileName), JSON.stringify(pool.terraform(), null, 2), 0o644);
      written.add(join(stackDir, pool.fileName));
    }
    const built: BuiltManifest = { ...reused };
    for (const { asset, file, inputsSha256 } of toBuild) {
      const content = asset.content();
      putFile(file, content, asset.mode);
      if (inputsSha256 !== undefined) built[asset.path] = { inputsSha256, bytes: Buffer.byteLength(content) };
    }
    putFile(manifestFile, JSON.stringify(built), 0o600);
    removeUnwritten(stackDir, written);
  }

  /** Removes what pools wrote into the folder of a stack that has none any more. */
  static clearStackDir(stackDir: string): void {
    if (existsSync(stackDir)) removeUnwritten(stackDir, new Set());
  }
}

/** Writes a file unless it already holds `content`; the mode is set either way. */
function putFile(file: string, content: Buffer | string, mode: number): void {
  const data = typeof content === "string" ? Buffer.from(content, "utf8") : content;
  const existing = statSync(file, { throwIfNoEntry: false });
  if (existing?.isFile() && existing.size === data.length && readFileSync(file).equals(data)) {
    if ((existing.mode & 0o777) !== mode) chmodSync(file, mode);
    return;
  }
  // Mode as asked also when the file existed (open's mode applies only on creation).
  const fd = openSync(file, "w", mode);
  try {
    fchmodSync(fd, mode);
    writeFileSync(fd, data);
  } finally {
    closeSync(fd);
  }
}

/**
 * Folders of the TerraformAssets earlier releases made per member (`<Pool>_<VM>_cloud-init-media_<HASH>`)
 * and per pool (`…_policy-document_<HASH>`): media with secrets that nothing else would remove.
 */
function removeLegacyAssets(stackDir: string): void {
  const assets = join(stackDir, "assets");
  if (!existsSync(assets)) return;
  for (const f of readdirSync(assets)) {
    if (/_(cloud-init-media|sysprep-media|policy-document)_[0-9A-F]{8}$/.test(f)) {
      rmSync(join(assets, f), { recursive: true, force: true });
    }
  }
}

let fingerprint: string | undefined;

/**
 * What the image builders are: vmpools' version and the builders' own code, so that a changed
 * builder (a new release, or an edit in a checkout) never reuses an image an older one made.
 */
function builderFingerprint(): string {
  if (fingerprint === undefined) {
    const dir = dirname(require.resolve("../../core/media"));
    const hash = createHash("sha256").update(`${BUILD_FORMAT}\u0000${ownPackage().version}`);
    for (const f of readdirSync(dir).sort()) {
      if (/\.(js|ts)$/.test(f) && !f.endsWith(".d.ts")) hash.update(f).update(readFileSync(join(dir, f)));
    }
    fingerprint = hash.digest("hex");
  }
  return fingerprint;
}

function readManifest(file: string): BuiltManifest {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as BuiltManifest;
  } catch {
    return {};
  }
}

/**
 * Removes from a stack folder what pools wrote there earlier and not in `keep`: pool files,
 * uploads (a kept folder keeps only kept files), earlier releases' media folders.
 */
function removeUnwritten(stackDir: string, keep: ReadonlySet<string>): void {
  for (const f of readdirSync(stackDir)) {
    if (f.endsWith(POOL_FILE_SUFFIX) && !keep.has(join(stackDir, f))) rmSync(join(stackDir, f));
  }
  const uploads = join(stackDir, POOL_ASSET_DIR);
  if (keep.has(uploads)) removeUnkept(uploads, keep);
  else rmSync(uploads, { recursive: true, force: true });
  removeLegacyAssets(stackDir);
}

/** Removes everything under `dir` that is not in `keep` (a kept folder keeps only kept files). */
function removeUnkept(dir: string, keep: ReadonlySet<string>): void {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    const path = join(dir, e.name);
    if (e.isDirectory() && keep.has(path)) removeUnkept(path, keep);
    else if (!keep.has(path)) rmSync(path, { recursive: true, force: true });
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
