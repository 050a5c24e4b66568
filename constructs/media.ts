import { AssetType, TerraformAsset } from "cdktf";
import type { Construct } from "constructs";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ConfigMediaPlan } from "../core";
import { buildConfigMedia } from "../core/media";

let stagingDir: string | undefined;

/**
 * A private folder (0700) for media images until cdktf copies them into the stack's assets at
 * synth; removed when the process exits. Images hold secrets, so they never sit in a shared place.
 */
function staging(): string {
  if (!stagingDir) {
    const dir = mkdtempSync(join(tmpdir(), "vmpools-media-"));
    stagingDir = dir;
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  return stagingDir;
}

/**
 * The provider reads upload content on the Terraform machine and resolves relative paths against
 * its own working directory, so every path it reads is made absolute at plan time.
 */
const absoluteAssetUrl = (asset: TerraformAsset) => `\${abspath(path.module)}/${asset.path}`;

/**
 * Builds a member's initial-run image (cloud-init NoCloud ISO, sysprep ISO or floppy),
 * deterministic for the same input, written with mode 0600 and shipped as a Terraform asset.
 * Returns the absolute path the libvirt provider uploads the volume from.
 */
export function configMediaUrl(scope: Construct, vmName: string, media: ConfigMediaPlan): string {
  const { image, extension } = buildConfigMedia(media);
  // One staging folder serves every stack of the process, and cdktf copies assets only at
  // app.synth(): a folder per pool (the member scope's parent) keeps two stacks' same-named
  // members apart. One per member would cost a mkdir each (~1 ms, measured in the synth bench).
  const dir = join(staging(), createHash("sha256").update(scope.node.scope!.node.path).digest("hex").slice(0, 16));
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `${vmName}-${media.kind}.${extension}`);
  writeFileSync(file, image, { mode: 0o600 });
  // cdktf names asset folders by an MD5 of the content unless told otherwise; for a deterministic
  // image whose only unknowns are the passwords that hash would let anyone who reads the plan
  // guess them offline. Name it by non-secret facts instead (the volume is creation-time anyway).
  const assetHash = createHash("sha256")
    .update(`vmpools-${media.kind}\u0000${scope.node.path}`)
    .digest("hex")
    .slice(0, 32);
  const asset = new TerraformAsset(scope, `${media.kind}-media`, { path: file, type: AssetType.FILE, assetHash });
  return absoluteAssetUrl(asset);
}

/** The pool's policy document as an asset (no secrets in it), for the policy volumes. */
export function policyDocumentUrl(scope: Construct, xml: string): string {
  const file = join(staging(), `${createHash("sha256").update(scope.node.path).digest("hex").slice(0, 16)}.xml`);
  writeFileSync(file, xml, { mode: 0o644 });
  return absoluteAssetUrl(new TerraformAsset(scope, "policy-document", { path: file, type: AssetType.FILE }));
}
