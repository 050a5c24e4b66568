export { VmPool, type VmPoolProps, type PoolMemberResources } from "./vm-pool";
export { libvirtProviderFor, providerAlias } from "./providers";
export { synthStack, readStackDir, POOL_FILE_SUFFIX } from "./pool-files";
