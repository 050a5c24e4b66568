// Where a member goes when it must move (a maintenance, an admin's migration without a
// destination): pure, from the pool's allowed hosts and the cluster's picture.
import type { HostPicture } from "../pools";

/**
 * The up host with the most headroom among those the pool may run on (startRunningOn; empty
 * means any host of the cluster), other than `from`; undefined when there is none.
 */
export function pickDestination(
  allowedHosts: readonly string[],
  from: string,
  clusterHosts: readonly string[],
  picture: HostPicture,
): string | undefined {
  const candidates = (allowedHosts.length > 0 ? allowedHosts : clusterHosts).filter(
    (h) => h !== from && clusterHosts.includes(h) && picture.usable(h),
  );
  return [...candidates].sort(picture.byHeadroom)[0];
}
