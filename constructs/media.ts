import { AssetType, TerraformAsset } from "cdktf";
import type { Construct } from "constructs";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ConfigMediaPlan } from "../core";
import { buildFloppy, buildIso } from "../core/media";

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
 * Builds a member's sysprep image (ISO 9660 + Joliet, or a FAT12 floppy), deterministic for the
 * same answer file, written with mode 0600 and shipped as a Terraform asset. Returns the path the
 * libvirt provider uploads the volume from.
 */
export function sysprepMediaUrl(
  scope: Construct,
  vmName: string,
  media: Extract<ConfigMediaPlan, { kind: "sysprep" }>,
): string {
  const floppy = media.device === "floppy";
  const image = floppy
    ? buildFloppy({ label: "UNATTEND", files: media.files })
    : buildIso({ volumeId: "UNATTEND", files: media.files });
  const file = join(staging(), `${vmName}-sysprep.${floppy ? "img" : "iso"}`);
  writeFileSync(file, image, { mode: 0o600 });
  // cdktf names asset folders by an MD5 of the content unless told otherwise; for a deterministic
  // image whose only unknowns are the passwords that hash would let anyone who reads the plan
  // guess them offline. Name it by non-secret facts instead (the volume is creation-time anyway).
  const assetHash = createHash("sha256").update(`vmpools-sysprep\u0000${scope.node.path}`).digest("hex").slice(0, 32);
  const asset = new TerraformAsset(scope, "sysprep-media", { path: file, type: AssetType.FILE, assetHash });
  return `\${path.module}/${asset.path}`;
}
