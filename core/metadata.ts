import type { ResolvedPool } from "./resolved";
import { escapeXml, unescapeXml } from "./xml";

/**
 * Who holds a member, as the reconciler mirrors its store into the domain's `<metadata>` (a
 * namespace of its own, so the engines' member element is never rewritten). Plan-time tools
 * read it: the shrink guard never lets Terraform destroy a VM a user holds.
 */
export const HOLDER_NAMESPACE = "https://vmpools.dev/xmlns/holder/1";
export const HOLDER_PREFIX = "vmpoolsholder";

export function renderHolderXml(user: string): string {
  return `<${HOLDER_PREFIX}:holder xmlns:${HOLDER_PREFIX}="${HOLDER_NAMESPACE}" user="${escapeXml(user)}"/>`;
}

export function parseHolderXml(xml: string | undefined): string | undefined {
  const m = xml === undefined ? null : /\buser="([^"]*)"/.exec(xml);
  return m ? unescapeXml(m[1]!) : undefined;
}

/** Our XML namespace inside libvirt's `<metadata>`; the reconciler reads members by it. */
export const METADATA_NAMESPACE = "https://vmpools.dev/xmlns/pool/1";
export const METADATA_PREFIX = "vmpools";

/** The pool policy and member identity the reconciler needs, as written into every member. */
export interface MemberMetadata {
  readonly pool: string;
  readonly cluster: string;
  readonly index: number;
  readonly templateName: string;
  readonly templateVersion: number;
  readonly baseImagePath: string;
  readonly baseImageFormat: string;
  readonly diskFormat: string;
  readonly type: "automatic" | "manual";
  readonly stateful: boolean;
  readonly prestarted: number;
  readonly maxVmsPerUser: number;
  readonly deleteProtection: boolean;
  readonly spiceProxy?: string;
  readonly allowedHosts: readonly string[];
  readonly migrationMode: string;
  readonly migrationPolicy?: string;
  readonly migrationDowntimeMs?: number;
  readonly autoConverge: string;
  readonly compression: string;
}

export function memberMetadata(pool: ResolvedPool, index: number): MemberMetadata {
  return {
    pool: pool.name,
    cluster: pool.clusterName,
    index,
    templateName: pool.template.name,
    templateVersion: pool.template.version,
    baseImagePath: pool.template.baseImagePath,
    baseImageFormat: pool.template.baseImageFormat,
    diskFormat: pool.storage.format,
    type: pool.type,
    stateful: pool.stateful,
    prestarted: pool.prestarted,
    maxVmsPerUser: pool.maxVmsPerUser,
    deleteProtection: pool.deleteProtection,
    spiceProxy: pool.spiceProxy,
    allowedHosts: pool.allowedHosts.map((h) => h.name),
    migrationMode: pool.migration.mode,
    migrationPolicy: pool.migration.policy,
    migrationDowntimeMs: pool.migration.customDowntimeMs,
    autoConverge: pool.migration.autoConverge,
    compression: pool.migration.compression,
  };
}

const attrs = (values: Record<string, string | number | boolean | undefined>) =>
  Object.entries(values)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}="${escapeXml(String(v))}"`)
    .join("");

/** Renders the `<vmpools:member>` element libvirt stores inside the domain's `<metadata>`. */
export function renderMetadataXml(m: MemberMetadata): string {
  return renderElement("member", m, { pool: m.pool, cluster: m.cluster, index: m.index }, "");
}

/**
 * The pool's current policy as a document of its own (root `<vmpools:pool>`, same children as a
 * member's metadata plus the description). The engines deploy it as a small volume on every
 * cluster host and replace that volume when the policy changes; member domains keep the policy
 * they were created with and are never updated. The reconciler reads the document, so a policy
 * edit reaches running members without Terraform or Pulumi touching them.
 */
export function renderPolicyDocument(pool: ResolvedPool): string {
  const m = memberMetadata(pool, 0);
  const description = [pool.description, pool.comment].filter((s) => s.length > 0).join("\n\n");
  return renderElement(
    "pool",
    m,
    { pool: m.pool, cluster: m.cluster },
    `<${METADATA_PREFIX}:description>${escapeXml(description)}</${METADATA_PREFIX}:description>`,
  );
}

function renderElement(
  root: "member" | "pool",
  m: MemberMetadata,
  rootAttrs: Record<string, string | number>,
  extra: string,
): string {
  const p = METADATA_PREFIX;
  return (
    `<${p}:${root} xmlns:${p}="${METADATA_NAMESPACE}"${attrs(rootAttrs)}>` +
    extra +
    `<${p}:template${attrs({ name: m.templateName, version: m.templateVersion, base: m.baseImagePath, baseFormat: m.baseImageFormat, diskFormat: m.diskFormat })}/>` +
    `<${p}:policy${attrs({ type: m.type, stateful: m.stateful, prestarted: m.prestarted, maxVmsPerUser: m.maxVmsPerUser, deleteProtection: m.deleteProtection })}/>` +
    `<${p}:console${attrs({ spiceProxy: m.spiceProxy })}/>` +
    `<${p}:placement${attrs({ hosts: m.allowedHosts.join(",") })}/>` +
    `<${p}:migration${attrs({ mode: m.migrationMode, policy: m.migrationPolicy, downtimeMs: m.migrationDowntimeMs, autoConverge: m.autoConverge, compression: m.compression })}/>` +
    `</${p}:${root}>`
  );
}

/**
 * Reads member metadata back from libvirt's XML (as `virsh metadata` or `dumpxml` returns it,
 * with any namespace prefix). Returns undefined when the element is missing or incomplete.
 */
export function parseMetadataXml(xml: string, root: "member" | "pool" = "member"): MemberMetadata | undefined {
  const element = (name: string): Record<string, string> | undefined => {
    const m = new RegExp(`<(?:[A-Za-z0-9_-]+:)?${name}\\b([^>]*?)/?>`).exec(xml);
    if (!m) return undefined;
    const out: Record<string, string> = {};
    for (const a of m[1]!.matchAll(/([A-Za-z_][\w.-]*(?::[\w.-]+)?)="([^"]*)"/g)) out[a[1]!] = unescapeXml(a[2]!);
    return out;
  };
  if (!xml.includes(METADATA_NAMESPACE)) return undefined;
  const member = element(root);
  const template = element("template");
  const policy = element("policy");
  const migration = element("migration");
  if (!member || !template || !policy || !migration) return undefined;
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  return {
    pool: member.pool!,
    cluster: member.cluster!,
    index: root === "member" ? Number(member.index) : 0,
    templateName: template.name!,
    templateVersion: Number(template.version),
    baseImagePath: template.base!,
    baseImageFormat: template.baseFormat!,
    diskFormat: template.diskFormat!,
    type: policy.type === "manual" ? "manual" : "automatic",
    stateful: policy.stateful === "true",
    prestarted: Number(policy.prestarted),
    maxVmsPerUser: Number(policy.maxVmsPerUser),
    deleteProtection: policy.deleteProtection === "true",
    spiceProxy: element("console")?.spiceProxy,
    allowedHosts: (element("placement")?.hosts ?? "").split(",").filter(Boolean),
    migrationMode: migration.mode!,
    migrationPolicy: migration.policy,
    migrationDowntimeMs: num(migration.downtimeMs),
    autoConverge: migration.autoConverge!,
    compression: migration.compression!,
  };
}

/** A pool's policy document as deployed by the engines, read back. */
export interface PolicyDocument {
  readonly policy: MemberMetadata;
  readonly description: string;
}

/** Reads a document written by `renderPolicyDocument`; undefined when it is not one. */
export function parsePolicyDocument(xml: string): PolicyDocument | undefined {
  const policy = parseMetadataXml(xml, "pool");
  if (!policy) return undefined;
  const description = /<(?:[A-Za-z0-9_-]+:)?description>([^<]*)<\/(?:[A-Za-z0-9_-]+:)?description>/.exec(xml);
  return { policy, description: unescapeXml(description?.[1] ?? "") };
}

/**
 * Name of the policy volume of a pool. `#` cannot occur in pool names (letters, digits, `._-`
 * and `?`), so `MyPool-???` and a pool literally named `MyPool-###` cannot collide.
 */
export function policyVolumeName(poolName: string): string {
  return `${poolName.replace(/\?/g, "#")}${POLICY_VOLUME_SUFFIX}`;
}

export const POLICY_VOLUME_SUFFIX = ".vmpools-policy.xml";
