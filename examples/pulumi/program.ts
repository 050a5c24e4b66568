// The README's Linux desktop pool as a Pulumi program. In your own project, import from
// "vmpools/pulumi" and "vmpools/core"; here the repository's sources are used directly.
import * as pulumi from "@pulumi/pulumi";
import type { VmPoolProps } from "../../core";
import { VmPool } from "../../engines/pulumi";
import { linuxDesktopPoolProps } from "../linux-desktop-pool.props";

/** The stack's outputs: the members' names. */
export function linuxDesktopPool(): { members: pulumi.Output<string[]> } {
  const config = new pulumi.Config();
  const storagePool = config.get("storagePool");
  const props: VmPoolProps = {
    ...linuxDesktopPoolProps,
    size: config.getNumber("size") ?? linuxDesktopPoolProps.size,
    cluster: { hosts: [{ name: "localhost", uri: config.get("hostUri") ?? "qemu:///system" }] },
    ...(storagePool
      ? { resourceAllocation: { disk: { storagePools: [{ name: storagePool }], autoSelectTarget: false } } }
      : {}),
  };
  const pool = new VmPool("MyPool", props);
  return { members: pool.memberNames };
}
