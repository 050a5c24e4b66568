import { join } from "node:path";

/**
 * The plan-time probe of one host (host-probe.cjs: the storage pool with the most free space,
 * and what the shrink guard needs). Terraform runs it through hashicorp/external; the Pulumi
 * component runs it itself while the program runs (at preview and at up).
 */
export const HOST_PROBE_SCRIPT = join(__dirname, "host-probe.cjs");
