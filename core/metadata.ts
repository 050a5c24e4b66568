import type { ResolvedPool } from "./resolved";
import type { AttestationSettings } from "./trust";
import { buildXml, childElements, el, elementsInNamespace, localName, parseXml, textOf, type XmlElement } from "./xml";

/**
 * Who holds a member, as the reconciler mirrors its store into the domain's `<metadata>` (a
 * namespace of its own, so the engines' member element is never rewritten). Plan-time tools
 * read it: the shrink guard never lets Terraform destroy a VM a user holds.
 */
export const HOLDER_NAMESPACE = "https://vmpools.dev/xmlns/holder/1";
export const HOLDER_PREFIX = "vmpoolsholder";

export function renderHolderXml(user: string): string {
  return buildXml(el(`${HOLDER_PREFIX}:holder`, { [`xmlns:${HOLDER_PREFIX}`]: HOLDER_NAMESPACE, user }));
}

export function parseHolderXml(xml: string | undefined): string | undefined {
  const root = xml === undefined ? undefined : parseXml(xml);
  return root && elementsInNamespace(root, HOLDER_NAMESPACE, "holder")[0]?.attrs.user;
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
  /**
   * The member's home host, fixed at creation: where the reconciler moves a migrated member's
   * definition back to. Absent in the policy document and in members created before it existed.
   */
  readonly homeHost?: string;
  readonly migrationMode: string;
  readonly migrationPolicy?: string;
  readonly migrationDowntimeMs?: number;
  readonly autoConverge: string;
  readonly compression: string;
  /**
   * The pool runs on a trusted cluster (`cluster` names it): its hosts run members only while
   * attested. Members carry the flag, so a reconciler without the pool's policy document (and so
   * without the attestation settings) keeps their hosts out of service instead of trusting them.
   */
  readonly trusted?: boolean;
  /** How to attest the trusted cluster's hosts: in the policy document only. */
  readonly attestation?: AttestationSettings;
}

export function memberMetadata(pool: ResolvedPool, index: number, homeHost?: string): MemberMetadata {
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
    ...(homeHost === undefined ? {} : { homeHost }),
    migrationMode: pool.migration.mode,
    migrationPolicy: pool.migration.policy,
    migrationDowntimeMs: pool.migration.customDowntimeMs,
    autoConverge: pool.migration.autoConverge,
    compression: pool.migration.compression,
    ...(pool.trust ? { trusted: true } : {}),
  };
}

/** Renders the `<vmpools:member>` element libvirt stores inside the domain's `<metadata>`. */
export function renderMetadataXml(m: MemberMetadata): string {
  return renderElement("member", m, { pool: m.pool, cluster: m.cluster, index: m.index });
}

/**
 * The pool's current policy as a document of its own (root `<vmpools:pool>`, same children as a
 * member's metadata plus the description). The engines deploy it as a small volume on every
 * cluster host and replace that volume when the policy changes; member domains keep the policy
 * they were created with and are never updated. The reconciler reads the document, so a policy
 * edit reaches running members without Terraform or Pulumi touching them.
 */
export function renderPolicyDocument(pool: ResolvedPool): string {
  const m = { ...memberMetadata(pool, 0), ...(pool.trust ? { attestation: pool.trust } : {}) };
  const description = [pool.description, pool.comment].filter((s) => s.length > 0).join("\n\n");
  // Always a text child: deployed documents carry `<vmpools:description></vmpools:description>`
  // when it is empty, and the builder would shorten an element without children to `<…/>`.
  return renderElement(
    "pool",
    m,
    { pool: m.pool, cluster: m.cluster },
    el(`${METADATA_PREFIX}:description`, {}, description || ""),
  );
}

type Attrs = Record<string, string | number | boolean | undefined>;

// The attribute order and compact form are what deployed members carry (test/core/metadata-xml).
function renderElement(root: "member" | "pool", m: MemberMetadata, rootAttrs: Attrs, extra?: XmlElement): string {
  const p = METADATA_PREFIX;
  const child = (name: string, a: Attrs) => el(`${p}:${name}`, a);
  return buildXml(
    el(
      `${p}:${root}`,
      { [`xmlns:${p}`]: METADATA_NAMESPACE, ...rootAttrs },
      extra,
      child("template", {
        name: m.templateName,
        version: m.templateVersion,
        base: m.baseImagePath,
        baseFormat: m.baseImageFormat,
        diskFormat: m.diskFormat,
      }),
      child("policy", {
        type: m.type,
        stateful: m.stateful,
        prestarted: m.prestarted,
        maxVmsPerUser: m.maxVmsPerUser,
        deleteProtection: m.deleteProtection,
      }),
      child("console", { spiceProxy: m.spiceProxy }),
      child("placement", { hosts: m.allowedHosts.join(","), home: m.homeHost, trusted: m.trusted }),
      child("migration", {
        mode: m.migrationMode,
        policy: m.migrationPolicy,
        downtimeMs: m.migrationDowntimeMs,
        autoConverge: m.autoConverge,
        compression: m.compression,
      }),
      m.attestation && renderAttestation(m.attestation),
    ),
  );
}

function renderAttestation(a: AttestationSettings): XmlElement {
  const p = METADATA_PREFIX;
  return el(
    `${p}:attestation`,
    {
      cluster: a.cluster,
      type: a.type,
      url: a.url,
      verify: a.verifyServerCertificate,
      firstStage: a.firstStageSize || undefined,
      batch: a.batchSize || undefined,
      apiVersion: a.apiVersion,
      maxAgeSeconds: a.maxAttestationAgeSeconds || undefined,
      intervalMs: a.pollIntervalMs,
      timeoutMs: a.requestTimeoutMs,
    },
    a.caCertificatePem === undefined ? undefined : el(`${p}:ca`, {}, a.caCertificatePem),
    a.clientCertificatePem === undefined ? undefined : el(`${p}:clientCertificate`, {}, a.clientCertificatePem),
    ...a.hosts.map((h) => el(`${p}:host`, { name: h.name, id: h.attestationId })),
  );
}

/** The attestation settings of a policy document, or undefined when it has none or they are incomplete. */
function parseAttestation(e: XmlElement | undefined): AttestationSettings | undefined {
  if (!e) return undefined;
  const a = e.attrs;
  const type = a.type === "keylime" || a.type === "openattestation" ? a.type : undefined;
  const n = (v: string | undefined) => (v === undefined ? 0 : Number(v));
  if (!type || !a.cluster || !a.url || !a.intervalMs || !a.timeoutMs) return undefined;
  // Numbers as TrustedClusterConfig allows them; a document with others is not trusted to poll
  // (it would poll every millisecond, or never time out): its hosts stay out of service.
  const within = (v: string | undefined, min: number, max: number) => {
    const x = Number(v);
    return Number.isFinite(x) && x >= min && x <= max;
  };
  if (!within(a.intervalMs, 100, 3_600_000) || !within(a.timeoutMs, 100, 300_000)) return undefined;
  if (type === "openattestation" && (!within(a.firstStage, 1, 1000) || !within(a.batch, 1, 1000))) return undefined;
  if (type === "keylime" && !within(a.maxAgeSeconds, 1, 86400)) return undefined;
  const part = (name: string) => childElements(e).find((c) => localName(c.name) === name);
  return {
    cluster: a.cluster,
    type,
    url: a.url,
    verifyServerCertificate: a.verify !== "false",
    caCertificatePem: textOf(part("ca")),
    clientCertificatePem: textOf(part("clientCertificate")),
    firstStageSize: n(a.firstStage),
    batchSize: n(a.batch),
    apiVersion: a.apiVersion,
    maxAttestationAgeSeconds: n(a.maxAgeSeconds),
    pollIntervalMs: n(a.intervalMs),
    requestTimeoutMs: n(a.timeoutMs),
    hosts: childElements(e)
      .filter((c) => localName(c.name) === "host" && c.attrs.name)
      .map((c) => ({ name: c.attrs.name!, attestationId: c.attrs.id ?? c.attrs.name! })),
  };
}

/** Our element `root` in a parsed document, and its children by local name (first of each). */
function ourElement(doc: XmlElement | undefined, root: "member" | "pool") {
  const e = doc && elementsInNamespace(doc, METADATA_NAMESPACE, root)[0];
  if (!e) return undefined;
  const parts = new Map<string, XmlElement>();
  for (const c of e.children)
    if (typeof c !== "string" && !parts.has(localName(c.name))) parts.set(localName(c.name), c);
  return { attrs: e.attrs, part: (name: string) => parts.get(name) };
}

/**
 * Reads member metadata back from libvirt's XML (as `virsh metadata` or `dumpxml` returns it,
 * with any namespace prefix). Returns undefined when the element is missing or incomplete.
 */
export function parseMetadataXml(xml: string, root: "member" | "pool" = "member"): MemberMetadata | undefined {
  // Most domains of a host are not ours: skip parsing them. Parsing costs ~85 µs a member
  // (the regular expressions this replaced: ~35 µs; 1000 members: ~85 ms per full read), small
  // next to the `virsh metadata` call per domain that fetches it.
  if (!xml.includes(METADATA_NAMESPACE)) return undefined;
  const ours = ourElement(parseXml(xml), root);
  const template = ours?.part("template")?.attrs;
  const policy = ours?.part("policy")?.attrs;
  const migration = ours?.part("migration")?.attrs;
  if (!ours || !template || !policy || !migration) return undefined;
  const member = ours.attrs;
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  const home = ours.part("placement")?.attrs.home;
  const trusted = ours.part("placement")?.attrs.trusted === "true";
  const attestation = root === "pool" ? parseAttestation(ours.part("attestation")) : undefined;
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
    spiceProxy: ours.part("console")?.attrs.spiceProxy,
    allowedHosts: (ours.part("placement")?.attrs.hosts ?? "").split(",").filter(Boolean),
    ...(home === undefined || home === "" ? {} : { homeHost: home }),
    migrationMode: migration.mode!,
    migrationPolicy: migration.policy,
    migrationDowntimeMs: num(migration.downtimeMs),
    autoConverge: migration.autoConverge!,
    compression: migration.compression!,
    ...(trusted ? { trusted } : {}),
    ...(attestation ? { attestation } : {}),
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
  const description = ourElement(parseXml(xml), "pool")?.part("description");
  return { policy, description: textOf(description) ?? "" };
}

/**
 * Name of a pool's policy volume on one host: one per host, because hosts may share a storage
 * pool (shared storage is what live migration needs), where one name would be one file that
 * each host's apply overwrites and each destroy deletes for all. `#` cannot occur in pool names
 * (letters, digits, `._-` and `?`) and `@` in neither pool nor host names (letters, digits,
 * `._-`), so no two (pool, host) pairs share a name: `MyPool-???` and `MyPool-###` differ, and
 * so do pool `a.b` on host `c` and pool `a` on host `b.c`.
 */
export function policyVolumeName(poolName: string, hostName: string): string {
  return `${poolName.replace(/\?/g, "#")}@${hostName}${POLICY_VOLUME_SUFFIX}`;
}

export const POLICY_VOLUME_SUFFIX = ".vmpools-policy.xml";
