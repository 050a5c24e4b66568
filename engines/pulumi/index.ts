export { VmPool, type VmPoolOptions, type VmPoolProps, type PoolMember } from "./vm-pool";
export { libvirtPackage, libvirtProvider, LIBVIRT_PROVIDER_VERSION, DEFAULT_PLUGIN_VERSION } from "./package";
export type { ProbeResult } from "../libvirt-provider/probe";
