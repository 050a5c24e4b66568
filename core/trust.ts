/**
 * Trusted compute pools (seed: "Trusted Compute Pools"): a cluster whose hosts run members only
 * while an attestation service vouches for them. Two services: OpenAttestation (oVirt's, with
 * its engine-config keys and defaults) and Keylime's verifier (the one maintained today).
 *
 * `TrustedClusterConfig` validates the props once, where they are written (as SysprepConfig);
 * the cdktf construct and the Pulumi component wrap it. What the reconciler and the plan-time
 * check need is `AttestationSettings`: no secret in it (the truststore password only opens the
 * truststore at synth; a Keylime client key reaches the plan-time check as a file of mode 0600
 * and the reconciler as a file named on its command line).
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import * as forge from "node-forge";
import { IssueCollector, type SpecIssue } from "./errors";
import type { HostRef } from "./spec";

/** oVirt's engine-config defaults (seed: "OpenAttestation Settings for engine-config"). */
export const OPEN_ATTESTATION_DEFAULTS = {
  server: "oat-server",
  port: 8443,
  truststorePath: "TrustStore.jks",
  truststorePassword: "password",
  firstStageSize: 10,
  secureConnection: true,
  pollUri: "AttestationService/resources/PollHosts",
} as const;

/** Hosts per PollHosts request after the first stage (oVirt's second stage). */
export const OPEN_ATTESTATION_BATCH_SIZE = 20;

/** A host of a trusted cluster. */
export interface TrustedHost extends HostRef {
  /**
   * The host's name at the attestation service: the host name OpenAttestation knows it by, or
   * the Keylime agent's id (a UUID). @default name (OpenAttestation); required for Keylime
   */
  readonly attestationId?: string;
}

/** OpenAttestation (seed's engine-config keys; oVirt's defaults). */
export interface OpenAttestationSpec {
  readonly type: "openattestation";
  /** AttestationServer: FQDN or IP of the server. @default "oat-server" */
  readonly server?: string;
  /** AttestationPort. @default 8443 */
  readonly port?: number;
  /** PollUri. @default "AttestationService/resources/PollHosts" */
  readonly pollUri?: string;
  /**
   * AttestationTruststore: the CA certificates the server's certificate must chain to, as a
   * PKCS#12 truststore (what `keytool` writes since Java 9; a JKS one is refused with the
   * command that converts it). Relative paths are from the working directory at synth.
   * Ignored when `caCertificatePem` is given. @default "TrustStore.jks"
   */
  readonly truststorePath?: string;
  /** AttestationTruststorePass: opens the truststore at synth; stored nowhere. @default "password" */
  readonly truststorePassword?: string;
  /** The CA certificates as PEM, instead of a truststore. @default undefined — the truststore */
  readonly caCertificatePem?: string;
  /** AttestationFirstStageSize: hosts in the first PollHosts request (then 20 a request). @default 10 */
  readonly firstStageSize?: number;
  /** SecureConnectionWithOATServers: HTTPS (true) or plain HTTP (false, warned about). @default true */
  readonly secureConnection?: boolean;
  /**
   * Verify the server's certificate. Turning it off (warned about) accepts any server.
   * @default true
   */
  readonly verifyServerCertificate?: boolean;
}

/** Keylime's verifier (REST API v2.x, mutual TLS). */
export interface KeylimeSpec {
  readonly type: "keylime";
  /** The verifier's base URL, e.g. "https://verifier.example.com:8881". */
  readonly verifierUrl: string;
  /** CA certificates (PEM) the verifier's certificate must chain to. */
  readonly caCertificatePem: string;
  /** The client certificate (PEM) the verifier accepts (Keylime's tenant certificate). */
  readonly clientCertificatePem: string;
  /** Its private key (PEM). A secret: read it with secretFromFile or secretFromEnv. */
  readonly clientKeyPem: string;
  /** API version, e.g. "2.1". @default undefined — the highest 2.x the verifier's GET /version names */
  readonly apiVersion?: string;
  /**
   * A host is trusted only while its last successful attestation is at most this old (an agent in
   * "Get Quote retry" still reports PASS). @default 60
   */
  readonly maxAttestationAgeSeconds?: number;
  /** Verify the verifier's certificate (turning it off is warned about). @default true */
  readonly verifyServerCertificate?: boolean;
}

export interface TrustedClusterProps {
  /** Cluster name, recorded in member metadata (letters, digits, `._-`). */
  readonly name: string;
  /** The cluster's hosts; every one must be attested before it runs members. */
  readonly hosts: readonly TrustedHost[];
  /** The attestation service. */
  readonly attestation: OpenAttestationSpec | KeylimeSpec;
  /** How often the reconciler asks the service. @default 0.5 */
  readonly pollIntervalSeconds?: number;
  /** One request's time limit; a service slower than this makes its hosts unreachable. @default 5 */
  readonly requestTimeoutSeconds?: number;
  /**
   * Fail a plan (cdktf) or preview (Pulumi) when a host is not trusted. The plan machine must then
   * reach the service (and, for Keylime, present the client certificate). @default true
   */
  readonly checkAtPlan?: boolean;
}

/** What the reconciler and the plan-time check need to attest a trusted cluster. No secrets. */
export interface AttestationSettings {
  readonly cluster: string;
  readonly type: "openattestation" | "keylime";
  /** OpenAttestation: the PollHosts URL; Keylime: the verifier's base URL (no trailing slash). */
  readonly url: string;
  readonly verifyServerCertificate: boolean;
  /** CA certificates (PEM); undefined on plain HTTP. */
  readonly caCertificatePem?: string;
  /** Keylime's client certificate (PEM); its key is supplied separately. */
  readonly clientCertificatePem?: string;
  /** OpenAttestation: hosts in the first request, and in each later one. */
  readonly firstStageSize: number;
  readonly batchSize: number;
  /** Keylime: the API version to use; undefined asks GET /version. */
  readonly apiVersion?: string;
  /** Keylime: a PASS older than this is stale. */
  readonly maxAttestationAgeSeconds: number;
  readonly pollIntervalMs: number;
  readonly requestTimeoutMs: number;
  /** Every host of the cluster and its name at the service. */
  readonly hosts: readonly { readonly name: string; readonly attestationId: string }[];
}

const SIMPLE_NAME = /^[A-Za-z0-9._-]+$/;
const REDACTED = "<redacted>";
const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * A trusted cluster, validated when constructed (every problem at once, secrets redacted); the
 * truststore is read here, so a wrong path or password fails at synth. Engine-neutral: give it
 * to the cdktf `TrustedCluster` or the Pulumi one, or directly as a pool's `cluster`.
 */
export class TrustedClusterConfig implements TrustedClusterLike {
  readonly name: string;
  readonly hosts: readonly HostRef[];
  readonly settings: AttestationSettings;
  readonly checkAtPlan: boolean;
  /** Keylime's client key (a secret): only for the plan-time check's 0600 file. */
  readonly clientKeyPem?: string;
  /** Things that work but weaken security (verification off, plain HTTP), for synth output. */
  readonly warnings: readonly string[];

  /** Itself: a config given directly as a pool's `cluster` is a trusted cluster too. */
  get trustedCluster(): TrustedClusterConfig {
    return this;
  }

  constructor(props: TrustedClusterProps) {
    const errors = new IssueCollector();
    const warnings: string[] = [];
    const p = props ?? ({} as TrustedClusterProps);
    if (typeof p.name !== "string" || !SIMPLE_NAME.test(p.name)) {
      errors.add("name", p.name, "must be letters, digits, '.', '_' or '-', e.g. \"trusted\"");
    }
    const a = p.attestation;
    const hosts = Array.isArray(p.hosts) ? p.hosts : [];
    if (hosts.length === 0) errors.add("hosts", p.hosts, "needs at least one host: [{ name, uri }]");
    // Host names are compared without case (DNS names are; a verdict for "KVM1" must not count
    // for "kvm1"), as are OpenAttestation's names for them; Keylime's agent ids exactly.
    const names = new Map<string, number>();
    const ids = new Map<string, number>();
    hosts.forEach((h, i) => {
      let nameTwice = false;
      if (typeof h?.name !== "string" || !SIMPLE_NAME.test(h.name))
        errors.add(`hosts[${i}].name`, h?.name, "must be letters, digits, '.', '_' or '-'");
      else if (names.has(h.name.toLowerCase())) {
        nameTwice = true;
        errors.add(
          `hosts[${i}].name`,
          h.name,
          `is listed twice (as hosts[${names.get(h.name.toLowerCase())}], case aside); host names must be unique`,
        );
      } else names.set(h.name.toLowerCase(), i);
      const id = typeof h?.attestationId === "string" ? h.attestationId : h?.name;
      if (typeof id === "string" && !nameTwice) {
        const key = a?.type === "keylime" ? id : id.toLowerCase();
        const other = ids.get(key);
        if (other !== undefined) {
          errors.add(
            `hosts[${i}].attestationId`,
            id,
            `is also hosts[${other}]'s name at the attestation service: one verdict would count for both`,
          );
        } else ids.set(key, i);
      }
      if (typeof h?.uri !== "string" || !/^[a-z][a-z0-9+]*:\/\//.test(h.uri))
        errors.add(`hosts[${i}].uri`, h?.uri, 'must be a libvirt URI such as "qemu+ssh://root@host1/system"');
      if (
        h?.attestationId !== undefined &&
        (typeof h.attestationId !== "string" || !/^[^\s,]{1,255}$/.test(h.attestationId))
      )
        errors.add(`hosts[${i}].attestationId`, h.attestationId, "must be a name without spaces or commas");
      if (a?.type === "keylime" && h?.attestationId === undefined)
        errors.add(`hosts[${i}].attestationId`, undefined, "is required with Keylime: the host's agent id (a UUID)");
    });
    const seconds = (prop: string, v: unknown, fallback: number, min: number, max: number): number => {
      if (v === undefined) return fallback;
      if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) {
        errors.add(prop, v, `must be a number of seconds from ${min} to ${max}`);
        return fallback;
      }
      return v;
    };
    const pollIntervalMs = Math.round(1000 * seconds("pollIntervalSeconds", p.pollIntervalSeconds, 0.5, 0.1, 3600));
    const requestTimeoutMs = Math.round(1000 * seconds("requestTimeoutSeconds", p.requestTimeoutSeconds, 5, 0.1, 300));
    const verify = (prop: string, v: unknown): boolean => {
      if (v === undefined || v === true) return true;
      if (v !== false) {
        errors.add(prop, v, "must be true or false");
        return true;
      }
      warnings.push(`TrustedCluster ${p.name}: ${prop} is false: any server is accepted as the attestation service`);
      return false;
    };

    let settings: Omit<AttestationSettings, "cluster" | "pollIntervalMs" | "requestTimeoutMs" | "hosts"> | undefined;
    let clientKeyPem: string | undefined;
    if (a?.type === "openattestation") {
      const d = OPEN_ATTESTATION_DEFAULTS;
      const server = a.server ?? d.server;
      if (typeof server !== "string" || !/^[A-Za-z0-9.:[\]-]+$/.test(server))
        errors.add("attestation.server", server, 'must be a host name or IP address, e.g. "oat.example.com"');
      const port = a.port ?? d.port;
      if (!Number.isInteger(port) || port < 1 || port > 65535) errors.add("attestation.port", port, "must be 1..65535");
      const rawPollUri: unknown = a.pollUri ?? d.pollUri;
      const pollUri = typeof rawPollUri === "string" ? rawPollUri.replace(/^\/+/, "") : "";
      if (!/^[A-Za-z0-9._~!$&'()*+,;=:@/%-]+$/.test(pollUri))
        errors.add(
          "attestation.pollUri",
          a.pollUri,
          'must be a URL path such as "AttestationService/resources/PollHosts"',
        );
      const firstStageSize = a.firstStageSize ?? d.firstStageSize;
      if (!Number.isInteger(firstStageSize) || firstStageSize < 1 || firstStageSize > 1000)
        errors.add("attestation.firstStageSize", firstStageSize, "must be a whole number from 1 to 1000");
      const secure = a.secureConnection ?? d.secureConnection;
      if (typeof secure !== "boolean") errors.add("attestation.secureConnection", secure, "must be true or false");
      if (secure === false) {
        warnings.push(
          `TrustedCluster ${p.name}: attestation.secureConnection is false: verdicts travel over plain HTTP, unauthenticated`,
        );
      }
      const verifyServerCertificate = verify("attestation.verifyServerCertificate", a.verifyServerCertificate);
      let caCertificatePem: string | undefined;
      if (secure !== false && verifyServerCertificate) {
        caCertificatePem =
          a.caCertificatePem !== undefined
            ? pemCertificates("attestation.caCertificatePem", a.caCertificatePem, errors)
            : truststoreCertificates(
                a.truststorePath ?? d.truststorePath,
                a.truststorePassword ?? d.truststorePassword,
                errors,
              );
      }
      settings = {
        type: "openattestation",
        url: `${secure === false ? "http" : "https"}://${server}:${port}/${pollUri}`,
        verifyServerCertificate,
        caCertificatePem,
        firstStageSize,
        batchSize: OPEN_ATTESTATION_BATCH_SIZE,
        maxAttestationAgeSeconds: 0,
      };
    } else if (a?.type === "keylime") {
      let url = a.verifierUrl;
      try {
        const u = new URL(a.verifierUrl);
        if (u.protocol !== "https:" || u.search || u.hash || u.username || u.password) throw new Error("not https");
        url = u.toString().replace(/\/+$/, "");
      } catch {
        errors.add(
          "attestation.verifierUrl",
          // User info, a query or a fragment may hold a credential or token: never shown.
          typeof a.verifierUrl === "string" && /\/\/[^/]*@|[?#]/.test(a.verifierUrl) ? REDACTED : a.verifierUrl,
          'must be an https URL without credentials, query or fragment, e.g. "https://verifier.example.com:8881"',
        );
      }
      const verifyServerCertificate = verify("attestation.verifyServerCertificate", a.verifyServerCertificate);
      const caCertificatePem = pemCertificates("attestation.caCertificatePem", a.caCertificatePem, errors);
      const clientCertificatePem = pemCertificates("attestation.clientCertificatePem", a.clientCertificatePem, errors);
      if (typeof a.clientKeyPem !== "string" || !/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(a.clientKeyPem)) {
        errors.add(
          "attestation.clientKeyPem",
          a.clientKeyPem === undefined ? undefined : REDACTED,
          'must be a PEM private key, e.g. secretFromFile("/etc/keylime/tenant-key.pem")',
        );
      } else {
        const problem = clientKeyProblem(a.clientKeyPem, clientCertificatePem);
        if (problem === undefined) clientKeyPem = a.clientKeyPem;
        else errors.add("attestation.clientKeyPem", REDACTED, problem);
      }
      if (a.apiVersion !== undefined && (typeof a.apiVersion !== "string" || !/^2\.\d+$/.test(a.apiVersion)))
        errors.add("attestation.apiVersion", a.apiVersion, 'must be a 2.x API version such as "2.1"');
      settings = {
        type: "keylime",
        url,
        verifyServerCertificate,
        caCertificatePem,
        clientCertificatePem,
        firstStageSize: 0,
        batchSize: 0,
        apiVersion: a.apiVersion,
        maxAttestationAgeSeconds: seconds(
          "attestation.maxAttestationAgeSeconds",
          a.maxAttestationAgeSeconds,
          60,
          1,
          86400,
        ),
      };
    } else {
      errors.add(
        "attestation.type",
        (a as { type?: unknown } | undefined)?.type,
        'must be "openattestation" or "keylime"',
      );
    }
    const checkAtPlan = p.checkAtPlan ?? true;
    if (typeof checkAtPlan !== "boolean") errors.add("checkAtPlan", checkAtPlan, "must be true or false");
    errors.throwIfAny(`TrustedCluster ${typeof p.name === "string" ? p.name : ""}`.trim());

    this.name = p.name;
    this.hosts = hosts.map((h) => ({ name: h.name, uri: h.uri }));
    this.settings = {
      cluster: p.name,
      ...settings!,
      pollIntervalMs,
      requestTimeoutMs,
      hosts: hosts.map((h) => ({ name: h.name, attestationId: h.attestationId ?? h.name })),
    };
    this.checkAtPlan = checkAtPlan;
    this.clientKeyPem = clientKeyPem;
    this.warnings = warnings;
  }
}

/** The service, for messages: "OpenAttestation server https://…" or "Keylime verifier https://…". */
export function describeService(s: AttestationSettings): string {
  return `${s.type === "keylime" ? "Keylime verifier" : "OpenAttestation server"} ${s.url}`;
}

/** A pool's `cluster` may be a trusted cluster: the engines' constructs carry one of these. */
export interface TrustedClusterLike {
  readonly trustedCluster: TrustedClusterConfig;
}

export function isTrustedClusterLike(v: unknown): v is TrustedClusterLike {
  return (
    typeof v === "object" && v !== null && (v as TrustedClusterLike).trustedCluster instanceof TrustedClusterConfig
  );
}

/**
 * For the engines: a pool's trusted cluster that should be checked at plan time but is not the
 * engine's own construct (which adds the check) — a bare TrustedClusterConfig, or the other
 * engine's — would silently skip the check. The issue names the construct to use.
 */
export function uncheckedTrustedCluster(
  cluster: unknown,
  isEngineConstruct: boolean,
  example: string,
): SpecIssue | undefined {
  if (!isTrustedClusterLike(cluster) || isEngineConstruct || !cluster.trustedCluster.checkAtPlan) return undefined;
  return {
    prop: "cluster",
    value: `trusted cluster ${cluster.trustedCluster.name}`,
    message: `is not this engine's TrustedCluster, so the plan would not check the hosts' attestation: give ${example} (same props), or set checkAtPlan: false`,
  };
}

/** The certificates of a PEM text, normalized (one per block, "\n" line ends); undefined when none. */
function pemCertificates(prop: string, pem: unknown, errors: IssueCollector): string | undefined {
  const blocks = typeof pem === "string" ? (pem.replace(/\r\n/g, "\n").match(PEM_CERT) ?? []) : [];
  if (blocks.length === 0) {
    errors.add(
      prop,
      // A private key given here by mistake is a secret: never shown.
      typeof pem === "string" ? (/PRIVATE KEY/.test(pem) ? REDACTED : `${pem.slice(0, 40)}…`) : pem,
      "must hold PEM certificates (-----BEGIN CERTIFICATE-----)",
    );
    return undefined;
  }
  for (const b of blocks) {
    try {
      new X509Certificate(b);
    } catch (e) {
      errors.add(prop, `${b.slice(0, 40)}…`, `is not a readable certificate: ${(e as Error).message}`);
    }
  }
  return `${blocks.join("\n")}\n`;
}

/**
 * The CA certificates of a PKCS#12 truststore, as PEM. Read with node-forge (Node's TLS takes
 * a PKCS#12 only with a private key in it; a truststore has none).
 */
function truststoreCertificates(path: string, password: string, errors: IssueCollector): string | undefined {
  const prop = "attestation.truststorePath";
  let der: Buffer;
  try {
    der = readFileSync(resolve(path));
  } catch (e) {
    errors.add(
      prop,
      path,
      `cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): give the OpenAttestation ` +
        "server's CA as a PKCS#12 truststore at this path, or as attestation.caCertificatePem",
    );
    return undefined;
  }
  if (der.length >= 4 && der.readUInt32BE(0) === 0xfeedfeed) {
    errors.add(
      prop,
      path,
      "is a JKS keystore; convert it to PKCS#12: keytool -importkeystore -srckeystore " +
        `${path} -destkeystore TrustStore.p12 -deststoretype PKCS12`,
    );
    return undefined;
  }
  let certificates: X509Certificate[];
  try {
    const p12 = forge.pkcs12.pkcs12FromAsn1(forge.asn1.fromDer(der.toString("binary")), password);
    const certBag = forge.pki.oids.certBag!;
    const bags = p12.getBags({ bagType: certBag })[certBag] ?? [];
    // forge parses RSA certificates only (`cert` is null for an EC one, its ASN.1 kept): take
    // the DER and let Node read it.
    certificates = bags.flatMap((b) => {
      const asn1 = b.cert ? forge.pki.certificateToAsn1(b.cert) : (b as { asn1?: forge.asn1.Asn1 }).asn1;
      return asn1 ? [new X509Certificate(Buffer.from(forge.asn1.toDer(asn1).getBytes(), "binary"))] : [];
    });
  } catch (e) {
    const message = (e as Error).message;
    errors.add(
      /password/i.test(message) ? "attestation.truststorePassword" : prop,
      /password/i.test(message) ? REDACTED : path,
      /password/i.test(message)
        ? `does not open ${path} (the truststore's MAC does not verify): give its password`
        : `is not a PKCS#12 truststore (${message})`,
    );
    return undefined;
  }
  if (certificates.length === 0) {
    errors.add(prop, path, "holds no certificate: import the OpenAttestation server's CA into it");
    return undefined;
  }
  return certificates.map((c) => c.toString().replace(/\r\n/g, "\n")).join("");
}

/**
 * Why a Keylime client key cannot be used (never quoting it), or undefined: Node's TLS needs it
 * unencrypted, and one that does not match the certificate fails only at the first handshake.
 */
function clientKeyProblem(keyPem: string, certificatePem: string | undefined): string | undefined {
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    return "is not a readable unencrypted PEM private key (decrypt it first, e.g. openssl pkey -in key.pem -out plain.pem)";
  }
  const first = certificatePem?.match(PEM_CERT)?.[0];
  if (first !== undefined && !new X509Certificate(first).checkPrivateKey(key))
    return "does not belong to attestation.clientCertificatePem: give the key of that certificate";
  return undefined;
}
