import type { CloudInitSpec } from "../spec";
import { renderCloudConfig } from "./cloud-config";

/** NoCloud media content for one Linux member (volume label `cidata`). */
export interface CloudInitMedia {
  readonly metaData: string;
  readonly userData: string;
  readonly networkConfig?: string;
}

/**
 * meta-data gives each member its own `instance-id` (so cloud-init treats every member, and
 * every template version, as a new instance) and its `local-hostname`; user-data is the pool's
 * typed cloud-config with the member's hostname.
 */
export function cloudInitMedia(opts: {
  readonly vmName: string;
  readonly hostname: string;
  readonly templateName: string;
  readonly templateVersion: number;
  readonly config: CloudInitSpec;
}): CloudInitMedia {
  const { networkConfig, ...cloudConfig } = opts.config;
  return {
    metaData: `instance-id: ${opts.vmName}.${opts.templateName}-v${opts.templateVersion}\nlocal-hostname: ${opts.hostname}\n`,
    userData: renderCloudConfig(cloudConfig, opts.hostname),
    networkConfig,
  };
}
