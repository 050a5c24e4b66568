import type { ConfigMediaPlan } from "../plan";
import { buildFloppy } from "./floppy";
import { buildIso, type MediaFile } from "./iso9660";

/** cloud-init's NoCloud data source finds its seed by this volume label. */
export const NOCLOUD_LABEL = "cidata";

/** The NoCloud seed files at the root of the image. */
export function cloudInitFiles(media: Extract<ConfigMediaPlan, { kind: "cloud-init" }>["media"]): MediaFile[] {
  return [
    { name: "meta-data", content: media.metaData },
    { name: "user-data", content: media.userData },
    ...(media.networkConfig === undefined ? [] : [{ name: "network-config", content: media.networkConfig }]),
  ];
}

/**
 * A member's initial-run image, byte-identical for the same plan: a NoCloud ISO (label `cidata`)
 * for cloud-init, an ISO or FAT12 floppy with the answer file for sysprep. Built here rather than
 * by the provider's `libvirt_cloudinit_disk`, which keeps its ISO in the provider's temp folder
 * and drops the resource from state when that file is gone (another CI runner, a temp cleanup).
 */
export function buildConfigMedia(media: ConfigMediaPlan): { image: Buffer; extension: "iso" | "img" } {
  if (media.kind === "cloud-init") {
    return { image: buildIso({ volumeId: NOCLOUD_LABEL, files: cloudInitFiles(media.media) }), extension: "iso" };
  }
  if (media.device === "floppy") {
    return { image: buildFloppy({ label: "UNATTEND", files: media.files }), extension: "img" };
  }
  return { image: buildIso({ volumeId: "UNATTEND", files: media.files }), extension: "iso" };
}
