import { Annotations, TerraformStack } from "cdktf";
import { Construct } from "constructs";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describeService, TrustedClusterConfig, type TrustedClusterLike, type TrustedClusterProps } from "../../core";
import { DataExternal } from "../../providers/gen/providers/external/data-external";
import { claimLogicalId, terraformName } from "./addresses";
import { POOL_ASSET_DIR, POOL_FILE_SUFFIX, StackPoolFiles, type PoolAsset } from "./pool-files";
import { externalProviderFor } from "./providers";

export type { TrustedClusterProps } from "../../core";

/** The plan-time check and the attestation client it loads with `require("./protocol.cjs")`. */
export const ATTESTATION_PROBE_SCRIPT = join(__dirname, "../libvirt-provider/attestation-probe.cjs");
export const ATTESTATION_PROTOCOL_SCRIPT = join(__dirname, "../../core/attestation/protocol.cjs");

/** What the check answers (strings only: Terraform's external takes no other). */
export interface AttestationProbeResult {
  /** `h1 (untrusted: OpenAttestation: trust_lvl untrusted); h2 (…)`, empty when every host is trusted. */
  readonly not_trusted: string;
  /** `h3, h4`. */
  readonly trusted: string;
}

/**
 * A trusted cluster (seed: Trusted Compute Pools) for cdktf: libvirt hosts whose members run only
 * while an attestation service (OpenAttestation or Keylime) vouches for them. Give it to a pool
 * as `cluster`; the reconciler then keeps hosts that are not trusted Non Operational.
 *
 * With `checkAtPlan` (the default) `terraform plan` asks the service too, through a
 * hashicorp/external data source whose postcondition fails the plan naming each host that is not
 * trusted. A failed plan creates nothing, so the pools' resources need not depend on it. The
 * check's files are written at synth into the stack's assets (one folder, as pools write their
 * media): the probe, `protocol.cjs` beside it, and for Keylime the client key with mode 0600;
 * the plan and the query carry only the key's path.
 */
export class TrustedCluster extends Construct implements TrustedClusterLike {
  readonly trustedCluster: TrustedClusterConfig;
  /** The plan-time check; undefined when `checkAtPlan` is false. */
  readonly attestationCheck?: DataExternal;

  constructor(scope: Construct, id: string, props: TrustedClusterProps) {
    super(scope, id);
    this.trustedCluster = new TrustedClusterConfig(props);
    for (const warning of this.trustedCluster.warnings) Annotations.of(this).addWarning(warning);
    if (!this.trustedCluster.checkAtPlan) return;

    const scopes = this.node.scopes;
    const clusterPath = terraformName(
      scopes
        .slice(scopes.indexOf(TerraformStack.of(this)) + 1)
        .map((c) => c.node.id)
        .join("_"),
    );
    const assetDir = `\${path.module}/${POOL_ASSET_DIR}/${clusterPath}`;
    const config = this.trustedCluster;
    const { settings } = config;
    const assets: PoolAsset[] = [
      {
        path: `${clusterPath}/attestation-probe.cjs`,
        content: () => readFileSync(ATTESTATION_PROBE_SCRIPT),
        mode: 0o644,
      },
      { path: `${clusterPath}/protocol.cjs`, content: () => readFileSync(ATTESTATION_PROTOCOL_SCRIPT), mode: 0o644 },
      ...(config.clientKeyPem === undefined
        ? []
        : [{ path: `${clusterPath}/client-key.pem`, content: () => config.clientKeyPem!, mode: 0o600 }]),
    ];
    // The folder is the pool files' mechanism (written at synth, 0700, stale files removed); the
    // cluster's own Terraform file stays empty, its data source is in cdk.tf.json.
    StackPoolFiles.of(this).add({
      fileName: `${clusterPath}${POOL_FILE_SUFFIX}`,
      terraform: () => ({}),
      assets: () => assets,
    });

    const service = describeService(settings);
    this.attestationCheck = new DataExternal(this, "attestation-check", {
      provider: externalProviderFor(this),
      program: ["node", `${assetDir}/attestation-probe.cjs`],
      query: {
        settings: JSON.stringify(settings),
        client_key_file: config.clientKeyPem === undefined ? "" : `${assetDir}/client-key.pem`,
      },
      lifecycle: {
        postcondition: [
          {
            condition: '${self.result.not_trusted == ""}',
            errorMessage:
              `TrustedCluster ${config.name}: the ${service} does not vouch for these hosts: ` +
              "${self.result.not_trusted}. Members would not be placed or started there. Have the " +
              "hosts attested again (or fix what the reason says), or remove them from the cluster's " +
              "hosts; checkAtPlan: false plans without this check (the reconciler still keeps them out of service).",
          },
        ],
      },
    });
    claimLogicalId(this.attestationCheck, terraformName(`${clusterPath}_attestation`));
  }
}
