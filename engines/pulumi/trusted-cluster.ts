import * as pulumi from "@pulumi/pulumi";
import { describeService, TrustedClusterConfig, type TrustedClusterLike, type TrustedClusterProps } from "../../core";
import { createAttestationClient, type Verdict } from "../../core/attestation/protocol.cjs";

export type { TrustedClusterProps } from "../../core";
export type { Verdict } from "../../core/attestation/protocol.cjs";

/**
 * A trusted cluster as a Pulumi component: the same props and validation as the cdktf
 * `TrustedCluster` (core's TrustedClusterConfig). Give it to a pool as `cluster`.
 *
 * With `checkAtPlan` (the default) the program asks the attestation service about every host
 * while it runs, at preview as at up (the program runs in Node, so the attestation client runs
 * in-process, where cdktf needs an external data source), and fails naming each host that is
 * not trusted, its level and why. A `VmPool` placed on it waits for that check before it
 * registers any volume (as for its shrink guard), so no member is created on an untrusted
 * cluster. `pulumi destroy` does not run the program, so it needs no attestation.
 *
 * The machine running the program must then reach the service (and, for Keylime, present the
 * client certificate). The client key stays in memory: no input, output or file holds it.
 */
export class TrustedCluster extends pulumi.ComponentResource implements TrustedClusterLike {
  readonly trustedCluster: TrustedClusterConfig;
  /**
   * The plan-time check: every host's verdict, all of them `trusted`. Rejects, failing the
   * program and everything that waits for it, when a host is not trusted. `[]` without
   * `checkAtPlan`.
   */
  readonly check: pulumi.Output<readonly Verdict[]>;

  constructor(name: string, props: TrustedClusterProps, opts: pulumi.ComponentResourceOptions = {}) {
    // Validated before anything is registered.
    const trustedCluster = new TrustedClusterConfig(props);
    // No inputs: the props hold the truststore password and the Keylime client key, and a
    // component's inputs are stored in the state as they are.
    super("vmpools:index:TrustedCluster", name, {}, opts);
    this.trustedCluster = trustedCluster;
    for (const warning of trustedCluster.warnings) void pulumi.log.warn(warning, this);
    this.check = pulumi.output(trustedCluster.checkAtPlan ? attestAll(trustedCluster) : Promise.resolve([]));
    // Among the outputs, so that a cluster no pool uses yet still fails the program when a host
    // is not trusted. Host names only: verdict times would change the state on every run.
    this.registerOutputs({ attestedHosts: this.check.apply((verdicts) => verdicts.map((v) => v.host)) });
  }
}

/** Asks the service once about every host; rejects naming each host that is not trusted. */
async function attestAll(config: TrustedClusterConfig): Promise<readonly Verdict[]> {
  const { settings, clientKeyPem } = config;
  // Worded as the cdktf construct's postcondition, one line per host.
  const service = describeService(settings);
  const client = createAttestationClient(settings, clientKeyPem === undefined ? {} : { clientKeyPem });
  let verdicts: readonly Verdict[];
  try {
    verdicts = await client.attest();
  } catch (e) {
    // attest() never rejects by contract; should it, its message must still not carry the key.
    const message = (e as Error).message ?? String(e);
    const safe = clientKeyPem ? message.split(clientKeyPem).join("<redacted>") : message;
    throw new Error(`TrustedCluster ${config.name}: the attestation check against ${service} failed: ${safe}`);
  } finally {
    client.close();
  }
  const byHost = new Map(verdicts.map((v) => [v.host, v]));
  // A host the client gave no verdict for is not trusted either.
  const failed = settings.hosts
    .map((h): Verdict => byHost.get(h.name) ?? { host: h.name, level: "unknown", reason: "no verdict for this host" })
    .filter((v) => v.level !== "trusted");
  if (failed.length > 0) {
    throw new Error(
      `TrustedCluster ${config.name}: the ${service} does not vouch for ${failed.length} of ` +
        `${settings.hosts.length} hosts:\n` +
        failed.map((v) => `  - host ${v.host}: ${v.level} (${v.reason})\n`).join("") +
        "Members would not be placed or started there: no pool on this cluster creates any. Have the hosts " +
        "attested again (or fix what the reason says), or remove them from the cluster's hosts; checkAtPlan: " +
        "false runs without this check (the reconciler still keeps them out of service).",
    );
  }
  return verdicts;
}
