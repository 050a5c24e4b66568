export { VmPool, type VmPoolOptions, type VmPoolProps, type PoolMember } from "./vm-pool";
export { TrustedCluster, type TrustedClusterProps, type Verdict } from "./trusted-cluster";
export { libvirtPackage, libvirtProvider, LIBVIRT_PROVIDER_VERSION, DEFAULT_PLUGIN_VERSION } from "./package";
export type { ProbeResult } from "../libvirt-provider/probe";
