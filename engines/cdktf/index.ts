export { VmPool, type VmPoolProps, type PoolMemberResources } from "./vm-pool";
export { libvirtProviderFor, providerAlias } from "./providers";
export { synthStack, readStackDir, POOL_FILE_SUFFIX } from "./pool-files";
export {
  TrustedCluster,
  type TrustedClusterProps,
  type AttestationProbeResult,
  ATTESTATION_PROBE_SCRIPT,
  ATTESTATION_PROTOCOL_SCRIPT,
} from "./trusted-cluster";
