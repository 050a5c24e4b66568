import { TerraformStack } from "cdktf";
import type { Construct } from "constructs";
import { VmPool } from "../engines/cdktf";
import { windowsServerPoolProps } from "./windows-server-pool.props";

export { windowsServerPoolProps };

/**
 * A Windows Server 2022 pool whose members join `addomain.local` on first boot (the seed's
 * example domain and administrator). Real stacks read the secrets with `secretFromEnv` or
 * `secretFromFile`; this example falls back to demo values so it synthesizes anywhere.
 */
export class WindowsServerPoolStack extends TerraformStack {
  readonly pool: VmPool;

  constructor(scope: Construct, id: string) {
    super(scope, id);
    this.pool = new VmPool(this, "WinPool", windowsServerPoolProps());
  }
}
