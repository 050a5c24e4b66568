import { TerraformStack } from "cdktf";
import type { Construct } from "constructs";
import { VmPool } from "../engines/cdktf";
import { linuxDesktopPoolProps } from "./linux-desktop-pool.props";

export { linuxDesktopPoolProps };

/**
 * The README's example: a Linux desktop pool of 10 members named MyPool-001…MyPool-010, two of
 * them kept prestarted for users who want a desktop at once.
 */
export class LinuxDesktopPoolStack extends TerraformStack {
  readonly pool: VmPool;

  constructor(scope: Construct, id: string) {
    super(scope, id);
    this.pool = new VmPool(this, "MyPool", linuxDesktopPoolProps);
  }
}
