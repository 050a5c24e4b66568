// Types of protocol.cjs: the attestation clients (OpenAttestation PollHosts, Keylime verifier
// v2.x), plain CommonJS with Node built-ins only, because the plan-time check runs it as a file
// copied alone into the stack's assets (as host-probe.cjs) and the reconciler runs the same code.
import type { AttestationSettings } from "../trust";

/** What a host's attestation says, as vmpools acts on it: only `trusted` keeps a host Up. */
export type TrustLevel = "trusted" | "untrusted" | "unknown" | "stale" | "unreachable";

export interface Verdict {
  /** vmpools' host name (settings.hosts[].name), not the service's id for it. */
  readonly host: string;
  readonly level: TrustLevel;
  /**
   * Why, for people: e.g. "OpenAttestation: trust_lvl untrusted", "Keylime: operational_state 7
   * (Failed)", "Keylime: last successful attestation 75 s ago (limit 60 s)", "attestation service
   * unreachable: connect ECONNREFUSED 127.0.0.1:8443", "no answer within 5 s", "HTTP 503",
   * "answer is not JSON", "certificate does not verify: …". Never a secret.
   */
  readonly reason: string;
  /**
   * When the service says the host was attested (OpenAttestation `vtime`, Keylime
   * `last_successful_attestation`), ISO 8601; undefined when absent or unreadable.
   */
  readonly attestedAt?: string;
}

export interface AttestationClientOptions {
  /** Keylime's client key (PEM); required for Keylime. */
  readonly clientKeyPem?: string;
  /** Clock in ms since the epoch (staleness). @default Date.now */
  readonly now?: () => number;
}

export interface AttestationClient {
  /**
   * Asks the service about every host of the settings, once: OpenAttestation in a first request of
   * `firstStageSize` hosts, then requests of `batchSize` (concurrently); Keylime with one bulk GET
   * (`/v{api}/agents/?bulk`), falling back to one GET per agent when bulk is refused. Never
   * rejects: every host gets a verdict (a failed request makes its hosts `unreachable`, a bad
   * answer `unknown`).
   */
  attest(): Promise<readonly Verdict[]>;
  /** Closes kept-alive connections. */
  close(): void;
}

export function createAttestationClient(
  settings: AttestationSettings,
  options?: AttestationClientOptions,
): AttestationClient;

/** PollHosts answer (parsed JSON, any shape) → one verdict per host asked. Pure. */
export function verdictsFromPollHosts(
  body: unknown,
  hosts: readonly { readonly name: string; readonly attestationId: string }[],
): Verdict[];

/** A Keylime agent's `results` (any shape; undefined: the verifier does not know it) → a verdict. Pure. */
export function verdictFromKeylimeAgent(
  host: string,
  agent: unknown,
  nowMs: number,
  maxAttestationAgeSeconds: number,
): Verdict;

/** A `vtime` in any of the formats OpenAttestation servers write → ISO 8601, or undefined. Pure. */
export function parseVtime(value: unknown): string | undefined;
