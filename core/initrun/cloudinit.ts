/** NoCloud media content for one Linux member (volume label `cidata`). */
export interface CloudInitMedia {
  readonly metaData: string;
  readonly userData: string;
  readonly networkConfig?: string;
}

/**
 * meta-data gives each member its own `instance-id` (so cloud-init treats every member, and
 * every template version, as a new instance) and its `local-hostname`.
 */
export function cloudInitMedia(opts: {
  readonly vmName: string;
  readonly hostname: string;
  readonly templateName: string;
  readonly templateVersion: number;
  readonly extraUserData: string;
  readonly networkConfig?: string;
}): CloudInitMedia {
  const metaData = `instance-id: ${opts.vmName}.${opts.templateName}-v${opts.templateVersion}\nlocal-hostname: ${opts.hostname}\n`;
  const extra = opts.extraUserData.trim();
  const userData =
    `#cloud-config\nhostname: ${opts.hostname}\npreserve_hostname: false\n` + (extra ? `${extra}\n` : "");
  return { metaData, userData, networkConfig: opts.networkConfig };
}
