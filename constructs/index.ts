export { VmPool, type VmPoolProps, type PoolMemberResources } from "./vm-pool";
export { libvirtProviderFor, providerAlias } from "./providers";
