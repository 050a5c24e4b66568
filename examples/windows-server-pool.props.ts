// The Windows example pool's props as plain data (no cdktf), so that either engine (and a test)
// can build the same pool. Real stacks read the secrets with `secretFromEnv` or `secretFromFile`;
// this example falls back to demo values so it synthesizes anywhere. A function, not a constant:
// the environment is read when a stack is built, not when the module is first imported.
import { SysprepConfig, type VmPoolProps } from "../core";

/**
 * A Windows Server 2022 pool whose members join `addomain.local` on first boot (the seed's
 * example domain and administrator). Secrets from VMPOOLS_PRODUCT_KEY, VMPOOLS_DOMAIN_PASSWORD
 * and VMPOOLS_ADMIN_PASSWORD, demo values when unset.
 */
export function windowsServerPoolProps(): VmPoolProps {
  const env = (name: string, demo: string) => process.env[name] ?? demo;
  return {
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
  };
}
