// Reverting a member to its base image in O(1), whatever the guest wrote.
//
// Deleting an overlay costs time in proportion to what was written into it (1 GiB: ~170 ms, 2 GiB:
// ~320 ms here), and a revert that deleted the overlay and then failed left the member without a
// disk. So a member has two overlay names, the engine's and an alternate: a revert switches the
// member's disk to the other name, which is a fresh overlay made in advance (or made now, which
// is O(1) too), and remakes the old one fresh afterwards, off the critical path. The member's
// disk exists at every moment; the engines ignore changes to members, so the switch shows in no plan.
import type { OverlayFacts, VolumeRef } from "./libvirt-xml";

/** Marks the alternate overlay's name: `vm-1.qcow2` ↔ `vm-1.vmpools-alt.qcow2`. */
const ALTERNATE_MARK = ".vmpools-alt";

/** The member's other overlay name: the alternate of the engine's, and the engine's of the alternate. */
export function otherVolumeName(volume: string): string {
  const at = volume.lastIndexOf(ALTERNATE_MARK);
  if (at >= 0) return volume.slice(0, at) + volume.slice(at + ALTERNATE_MARK.length);
  const dot = volume.lastIndexOf(".");
  return dot > 0 ? `${volume.slice(0, dot)}${ALTERNATE_MARK}${volume.slice(dot)}` : `${volume}${ALTERNATE_MARK}`;
}

export function isAlternateVolumeName(volume: string): boolean {
  return volume.includes(ALTERNATE_MARK);
}

/** What a revert intent persists: enough to finish it after a crash at any step. */
export interface RevertPlan extends OverlayFacts {
  readonly storagePool: string;
  /** The overlay the guest wrote to. */
  readonly from: string;
  /** The fresh overlay the member boots from next. */
  readonly to: string;
}

export function planRevert(current: VolumeRef, facts: OverlayFacts): RevertPlan {
  return { storagePool: current.storagePool, from: current.volume, to: otherVolumeName(current.volume), ...facts };
}
