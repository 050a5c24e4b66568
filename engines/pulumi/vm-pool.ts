import * as pulumi from "@pulumi/pulumi";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import {
  configDiskOf,
  planPool,
  PoolSpecError,
  uncheckedTrustedCluster,
  type HostRef,
  type PoolPlan,
  type VmPlan,
  type VmPoolProps,
} from "../../core";
import { buildConfigMedia } from "../../core/media";
import {
  hasMediaVolume,
  memberDomain,
  memberVolumes,
  firstStoragePool,
  policyVolume,
} from "../libvirt-provider/attributes";
import {
  guardChecks,
  HOST_PROBE_SCRIPT,
  probePicksStoragePool,
  probeQuery,
  type ProbeResult,
} from "../libvirt-provider/probe";
import {
  mergePlacementRecord,
  PLACEMENT_RECORD_FILE,
  readPlacementRecord,
  writePlacementRecord,
} from "../libvirt-provider/placement-record";
import { toPulumiInputs } from "./names";
import { LIBVIRT_TYPES, libvirtProvider, libvirtResource } from "./package";
import { TrustedCluster } from "./trusted-cluster";

export type { VmPoolProps } from "../../core";

export interface VmPoolOptions extends pulumi.ComponentResourceOptions {
  /**
   * Where the initial-run images and the policy document are written for the provider to
   * upload (folders 0700, images 0600: they hold the sysprep and cloud-init secrets). The folder
   * is this pool's alone: what the program did not write this time (a removed member's media,
   * an old policy document) is deleted.
   * @default `.vmpools/<project>.<stack>/<name>` under the program's working directory
   */
  readonly assetDir?: string;
  /**
   * How a host is probed: the query is host-probe.cjs's input, the answer its output.
   * @default runs engines/libvirt-provider/host-probe.cjs (virsh against the host's URI)
   */
  readonly hostProbe?: (query: Readonly<Record<string, string>>) => Promise<ProbeResult>;
  /**
   * The placement record: which host each member was placed on, so that a member keeps its host
   * when hosts are added. Read before planning, written while the program runs (at preview and
   * at up) when this pool's entry changed; other pools' entries are kept. Keep it in version
   * control, like the stack's `Pulumi.<stack>.yaml`.
   * @default `vmpools.placement.<stack>.json` in the project's folder (where Pulumi.yaml is) when
   * the pulumi CLI runs the program; no record (members placed by hashing alone) for inline
   * Automation API programs and under mocks, which have no project folder: give them this option
   */
  readonly placementRecordPath?: string;
}

/** One member's resources. */
export interface PoolMember {
  readonly plan: VmPlan;
  readonly systemVolume: pulumi.CustomResource;
  readonly mediaVolume?: pulumi.CustomResource;
  readonly domain: pulumi.CustomResource;
}

/**
 * An oVirt-style VM pool as a Pulumi component: the same props, validation, members, media,
 * metadata and edit rules as the cdktf `VmPool`, rendered from the same description of the
 * provider's resources (engines/libvirt-provider) through Pulumi's terraform-provider plugin.
 *
 * Member resources are creation-time (`ignoreChanges: ["*"]`): the provider's in-place update of
 * a domain shuts the guest down, and a volume update always fails. As in oVirt, an edit affects
 * only members created afterwards; the policy lives in a policy volume per host, replaced when the
 * policy changes (its upload path carries the document's hash), which the reconciler reads.
 * Resources with fixed libvirt names are deleted before their replacement is created.
 *
 * While the program runs (at preview and at up) each host is probed as `terraform plan` probes
 * it: the storage pool with the most free space, and the shrink guard, which fails the program
 * with the same messages as the cdktf construct's postconditions.
 */
export class VmPool extends pulumi.ComponentResource {
  /** The engine-neutral plan this component rendered. */
  readonly plan: PoolPlan;
  readonly members: readonly PoolMember[];
  readonly memberNames: pulumi.Output<string[]>;

  constructor(name: string, props: VmPoolProps, opts: VmPoolOptions = {}) {
    // Validated before anything is registered.
    const unchecked = uncheckedTrustedCluster(
      props.cluster,
      props.cluster instanceof TrustedCluster,
      'new TrustedCluster("secure", props) from vmpools/pulumi',
    );
    if (unchecked) throw new PoolSpecError(`VmPool ${name}`, [unchecked]);
    const recordFile = placementRecordFile(opts.placementRecordPath);
    const record = recordFile === undefined ? {} : readPlacementRecord(recordFile);
    const plan = planPool(props, `VmPool ${name}`, { placement: record[props.name] ?? {} });
    if (recordFile !== undefined) {
      writePlacementRecord(recordFile, mergePlacementRecord(record, new Map([[props.name, plan.placement]])));
    }
    // No inputs: the props hold the sysprep and cloud-init secrets, and a component's inputs are
    // stored in the state as they are.
    super("vmpools:index:VmPool", name, {}, opts);
    this.plan = plan;
    for (const warning of this.plan.warnings) void pulumi.log.warn(warning, this);
    const { pool, policy } = this.plan;
    const assetDir = resolve(
      opts.assetDir ?? join(".vmpools", `${pulumi.getProject()}.${pulumi.getStack()}`, safeName(name)),
    );
    const protect = pool.deleteProtection;

    // On a Pulumi TrustedCluster every probe also waits for its attestation check: a host that is
    // not trusted stops every volume and so every member, as a failed shrink guard does.
    const trustCheck = props.cluster instanceof TrustedCluster ? props.cluster.check : undefined;
    // Every cluster host gets its provider and probe, also those without a member under the
    // current size: members created earlier may live there (and the shrink guard looks there).
    const hosts = new Map(
      pool.clusterHosts.map((host) => {
        const provider = libvirtProvider(`${name}-${host.name}`, host.uri, { parent: this });
        const probe = probeHost(this.plan, host, opts.hostProbe ?? runHostProbe, trustCheck);
        return [host.name, { host, provider, probe }] as const;
      }),
    );
    // Every name waits for the probe: a failed shrink guard must stop every volume.
    const afterProbe = (host: HostRef, name: (r: ProbeResult) => string) => hosts.get(host.name)!.probe.apply(name);
    const storagePool = (host: HostRef): pulumi.Input<string> =>
      afterProbe(host, (r) => (probePicksStoragePool(this.plan) ? r.storage_pool : firstStoragePool(this.plan)));

    const written = new Set<string>();
    // The policy document on every cluster host. A new document is a new upload path, which
    // replaces the volume (volumes cannot be updated in place). The host's member domains depend
    // on it (dependsOn alone, no input of theirs: its replacement replaces none of them), so a
    // destroy refused by a protected member deletes no policy volume either.
    const policyFile = writeAsset(
      assetDir,
      `policy-${createHash("sha256").update(policy.xml).digest("hex").slice(0, 16)}.xml`,
      policy.xml,
      0o644,
    );
    written.add(policyFile);
    const policyVolumes = new Map<string, pulumi.CustomResource>();
    for (const { host, provider } of hosts.values()) {
      policyVolumes.set(
        host.name,
        libvirtResource(
          LIBVIRT_TYPES.volume,
          `${name}-policy-${host.name}`,
          toPulumiInputs(
            policyVolume(this.plan, host, {
              storagePool: afterProbe(host, () => firstStoragePool(this.plan)),
              url: policyFile,
            }),
          ),
          // Only a new document replaces it (as cdktf's replace_triggered_by); anything else would
          // be an in-place update, which the provider refuses for volumes.
          {
            parent: this,
            provider,
            deleteBeforeReplace: true,
            replaceOnChanges: ["create"],
            ignoreChanges: ["name", "pool", "target"],
          },
        ),
      );
    }

    const member = (m: VmPlan, detached: boolean): PoolMember => {
      const { provider } = hosts.get(m.host.name)!;
      const config = configDiskOf(m);
      const mediaUrl = config && m.configMedia ? writeMedia(assetDir, config.volumeName, m) : undefined;
      if (mediaUrl) written.add(mediaUrl);
      const options: pulumi.CustomResourceOptions = {
        parent: this,
        provider,
        protect,
        ignoreChanges: ["*"],
        deleteBeforeReplace: true,
        // A detached member is an independent VM now (seed): never deleted, whatever happens to the stack.
        ...(detached ? { retainOnDelete: true } : {}),
      };
      const volumes = memberVolumes<pulumi.Input<unknown>>(m, {
        storagePool: storagePool(m.host),
        ...(mediaUrl ? { mediaUrl } : {}),
      });
      const systemVolume = libvirtResource(
        LIBVIRT_TYPES.volume,
        `${name}-${m.name}-system`,
        toPulumiInputs(volumes.system),
        options,
      );
      const mediaVolume =
        volumes.media &&
        libvirtResource(LIBVIRT_TYPES.volume, `${name}-${m.name}-media`, toPulumiInputs(volumes.media), options);
      const byRole = { system: systemVolume, config: mediaVolume };
      const domain = libvirtResource(
        LIBVIRT_TYPES.domain,
        `${name}-${m.name}`,
        toPulumiInputs(
          memberDomain<pulumi.Input<unknown>>(m, hasMediaVolume(m, mediaUrl), {
            volume: (role, attribute) => outputOf(byRole[role]!, attribute),
            // Random, set once at creation (ignoreChanges keeps the first), encrypted in the state.
            consolePassword: pulumi.secret(randomBytes(18).toString("base64url")),
          }),
        ),
        { ...options, dependsOn: [policyVolumes.get(m.host.name)!] },
      );
      return { plan: m, systemVolume, ...(mediaVolume ? { mediaVolume } : {}), domain };
    };
    this.members = this.plan.members.map((m) => member(m, false));
    // Detached members stay registered, unchanged and retained, so that no up and no destroy
    // removes them; the reconciler has already taken them out of the pool (vmpools detach).
    for (const m of this.plan.detached) member(m, true);

    // Secrets of members that are gone must not stay behind.
    for (const f of readdirSync(assetDir)) {
      if (!written.has(join(assetDir, f))) rmSync(join(assetDir, f), { recursive: true, force: true });
    }
    this.memberNames = pulumi.output(this.plan.members.map((m) => m.name));
    // The probes among the outputs: a pool with no member still fails when a check does.
    const probed = pulumi.all([...hosts.values()].map((h) => h.probe)).apply((results) => results.length);
    this.registerOutputs({ memberNames: this.memberNames, hostsProbed: probed });
  }
}

/** The placement record's file: configured, or in the project's root directory (see VmPoolOptions). */
function placementRecordFile(configured: string | undefined): string | undefined {
  if (configured !== undefined) return resolve(configured);
  // The language host passes the project's folder (--root-directory); under mocks and in inline
  // Automation API programs the SDK answers a placeholder ("rootDirectory"), not a path.
  const root = typeof pulumi.getRootDirectory === "function" ? pulumi.getRootDirectory() : "";
  const fileName = PLACEMENT_RECORD_FILE.replace(/\.json$/, `.${safeName(pulumi.getStack())}.json`);
  return isAbsolute(root) ? join(root, fileName) : undefined;
}

/** Resource names from Pulumi names: file names for the assets. */
const safeName = (name: string) => name.replace(/[^A-Za-z0-9._-]/g, "_");

/** An output property of a resource registered by token (the SDK defines one per input). */
function outputOf(resource: pulumi.CustomResource, property: string): pulumi.Output<unknown> {
  return (resource as unknown as Record<string, pulumi.Output<unknown>>)[property]!;
}

/**
 * The probe's answer for the host, failing when a check of the shrink guard fails, or the
 * cluster's attestation check (at preview as at up).
 */
function probeHost(
  plan: PoolPlan,
  host: HostRef,
  run: NonNullable<VmPoolOptions["hostProbe"]>,
  trustCheck?: pulumi.Output<unknown>,
): pulumi.Output<ProbeResult> {
  const probed = pulumi.output(
    run(probeQuery(plan, host)).then((result) => {
      const failed = guardChecks(plan, host).filter((c) => c.failed(result));
      if (failed.length > 0) throw new Error(failed.map((c) => c.message(result[c.field] ?? "")).join("\n"));
      return result;
    }),
  );
  return trustCheck === undefined ? probed : pulumi.all([trustCheck, probed]).apply(([, result]) => result);
}

/** Runs host-probe.cjs as Terraform's external data source would. */
function runHostProbe(query: Readonly<Record<string, string>>): Promise<ProbeResult> {
  return new Promise((ok, fail) => {
    const child = execFile(process.execPath, [HOST_PROBE_SCRIPT], { encoding: "utf8" }, (error, stdout, stderr) => {
      if (error) return fail(new Error(`probing ${query.uri} failed: ${stderr.trim() || error.message}`));
      ok(JSON.parse(stdout) as ProbeResult);
    });
    child.stdin!.end(JSON.stringify(query));
  });
}

/** The member's initial-run image, built now (deterministic for the same plan); its absolute path. */
function writeMedia(dir: string, fileName: string, m: VmPlan): string {
  return writeAsset(dir, fileName, buildConfigMedia(m.configMedia!).image, 0o600);
}

/** Writes a file unless it already holds `content`; folders 0700 (media hold secrets). */
function writeAsset(dir: string, fileName: string, content: string | Buffer, mode: number): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const file = join(dir, fileName);
  const bytes = typeof content === "string" ? Buffer.from(content) : content;
  let same = false;
  try {
    same = readFileSync(file).equals(bytes);
  } catch {
    // not there yet
  }
  if (!same) writeFileSync(file, bytes, { mode });
  chmodSync(file, mode);
  return file;
}
