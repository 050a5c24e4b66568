import { TerraformStack } from "cdktf";
import type { Construct } from "constructs";
import { VmPool } from "../engines/cdktf";
import { SysprepConfig } from "../core";

/**
 * A Windows Server 2022 pool whose members join `addomain.local` on first boot (the seed's
 * example domain and administrator). Real stacks read the secrets with `secretFromEnv` or
 * `secretFromFile`; this example falls back to demo values so it synthesizes anywhere.
 */
export class WindowsServerPoolStack extends TerraformStack {
  readonly pool: VmPool;

  constructor(scope: Construct, id: string) {
    super(scope, id);
    const env = (name: string, demo: string) => process.env[name] ?? demo;
    this.pool = new VmPool(this, "WinPool", {
      name: "WinSrv-??",
      description: "Windows Server 2022 build agents",
      template: {
        name: "ws2022-core",
        version: 7,
        baseImagePath: "/var/lib/libvirt/images/ws2022-core-v7.qcow2",
        diskSizeGiB: 60,
        memoryMiB: 8192,
        vcpus: 4,
        operatingSystem: "windows-server-2022",
      },
      optimizedFor: "server",
      size: 20,
      type: "manual",
      stateful: true,
      maxVmsPerUser: 2,
      deleteProtection: true,
      initialRun: {
        sysprep: new SysprepConfig({
          productKey: env("VMPOOLS_PRODUCT_KEY", ""),
          domain: {
            name: "addomain.local",
            user: "Sarah_Smith",
            password: env("VMPOOLS_DOMAIN_PASSWORD", "demo-only-12345678"),
            machineObjectOU: "OU=BuildAgents,DC=addomain,DC=local",
          },
          localAdministrator: { fullName: "Build Admin", password: env("VMPOOLS_ADMIN_PASSWORD", "demo-only-Adm1n!") },
          timeZone: "W. Europe Standard Time",
          organizationName: "Example Corp",
        }),
      },
    });
  }
}
