export * from "./spec";
export * from "./errors";
export * from "./naming";
export * from "./plan";
export * from "./domain";
export * from "./metadata";
export * from "./placement";
export type { ResolvedPool } from "./resolved";
export { resolvePool, DEFAULT_MAX_VMS_IN_POOL, MAX_VMS_PER_USER_LIMIT, DEFAULT_HOST } from "./validate";
export { cloudInitMedia, type CloudInitMedia } from "./initrun/cloudinit";
export { SysprepConfig } from "./initrun/sysprep-config";
export type { SysprepProps, SysprepDomainJoin, SysprepLocalAdministrator, WindowsVersion } from "./initrun/sysprep";
export type { CloudConfigProps, CloudConfigUser, CloudConfigFile } from "./initrun/cloud-config";
export { secretFromEnv, secretFromFile } from "./secrets";
export { describePlan } from "./summary";
export {
  TrustedClusterConfig,
  isTrustedClusterLike,
  uncheckedTrustedCluster,
  describeService,
  OPEN_ATTESTATION_DEFAULTS,
  OPEN_ATTESTATION_BATCH_SIZE,
  type TrustedClusterProps,
  type TrustedClusterLike,
  type TrustedHost,
  type OpenAttestationSpec,
  type KeylimeSpec,
  type AttestationSettings,
} from "./trust";
