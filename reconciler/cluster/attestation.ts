// Polls each trusted cluster's attestation service and hands the verdicts on. The one place of the
// reconciler that talks to attestation services; what the verdicts mean is in trust.ts.
import { createAttestationClient, type AttestationClient, type Verdict } from "../../core/attestation/protocol.cjs";
import type { AttestationSettings } from "../../core/trust";

export type AttestationClientFactory = (
  settings: AttestationSettings,
  options: { readonly clientKeyPem?: string },
) => AttestationClient;

interface Poller {
  readonly key: string;
  readonly client: AttestationClient;
  timer?: NodeJS.Timeout;
  stopped: boolean;
  /** The cycle in flight, if any. */
  cycle?: Promise<void>;
}

export interface AttestationMonitorOptions {
  /** Called after each poll cycle of a cluster with one verdict per host. */
  readonly onVerdicts: (settings: AttestationSettings, verdicts: readonly Verdict[]) => void;
  /** A failure while handling verdicts (the poll goes on). */
  readonly onError: (error: Error) => void;
  /** Settings that weaken attestation (certificate verification off, plain HTTP), once per cluster. */
  readonly onWarning?: (message: string) => void;
  /** Keylime client keys (PEM) by trusted cluster name. */
  readonly clientKeys?: ReadonlyMap<string, string>;
  /** @default the protocol's client */
  readonly createClient?: AttestationClientFactory;
}

export class AttestationMonitor {
  private readonly pollers = new Map<string, Poller>();
  private readonly settings = new Map<string, AttestationSettings>();
  private readonly warnedKeys = new Set<string>();

  constructor(private readonly o: AttestationMonitorOptions) {}

  /**
   * Polls exactly the given clusters from now on: new ones start (their first cycle at once),
   * changed settings restart, clusters no pool names any more stop.
   */
  update(clusters: ReadonlyMap<string, AttestationSettings>): void {
    for (const name of this.o.clientKeys?.keys() ?? []) {
      if (clusters.has(name) || this.warnedKeys.has(name)) continue;
      this.warnedKeys.add(name);
      const known = [...clusters.keys()];
      this.o.onWarning?.(
        `--attestation-key ${name}: no trusted cluster of the pools is named so (${known.length > 0 ? `they name ${known.join(", ")}` : "none is deployed"})`,
      );
    }
    for (const [name, p] of this.pollers) {
      const s = clusters.get(name);
      if (!s || JSON.stringify(s) !== p.key) this.stopPoller(name);
    }
    for (const [name, s] of clusters) {
      if (this.pollers.has(name)) continue;
      this.settings.set(name, s);
      const create = this.o.createClient ?? createAttestationClient;
      const clientKeyPem = this.o.clientKeys?.get(name);
      const poller: Poller = {
        key: JSON.stringify(s),
        client: create(s, clientKeyPem === undefined ? {} : { clientKeyPem }),
        stopped: false,
      };
      this.pollers.set(name, poller);
      for (const w of weakenings(s)) this.o.onWarning?.(`trusted cluster ${name}: ${w}`);
      this.poll(name, poller);
    }
  }

  /** Waits for the cycles in flight (the first verdicts after `update`, at start). */
  async settled(): Promise<void> {
    await Promise.all([...this.pollers.values()].map((p) => p.cycle));
  }

  stop(): void {
    for (const name of [...this.pollers.keys()]) this.stopPoller(name);
  }

  private poll(name: string, p: Poller): void {
    const s = this.settings.get(name)!;
    // A cycle that takes much longer than its requests may (a verifier without bulk, a service
    // that trickles): trust must not outlive what was last heard.
    const limitMs = 2 * (s.pollIntervalMs + s.requestTimeoutMs);
    const watchdog = setTimeout(() => {
      if (p.stopped) return;
      const reason = `no verdict for ${Math.round(limitMs / 1000)} s: the service has not finished answering this poll`;
      this.o.onVerdicts(
        s,
        s.hosts.map((h) => ({ host: h.name, level: "unreachable", reason })),
      );
    }, limitMs);
    // The next cycle starts an interval after this one ends: a slow service is never asked twice at once.
    p.cycle = p.client
      .attest()
      .then((verdicts) => {
        if (!p.stopped) this.o.onVerdicts(s, verdicts);
      })
      .catch((e: unknown) => this.o.onError(e instanceof Error ? e : new Error(String(e))))
      .finally(() => {
        clearTimeout(watchdog);
        p.cycle = undefined;
        if (!p.stopped) p.timer = setTimeout(() => this.poll(name, p), s.pollIntervalMs);
      });
  }

  private stopPoller(name: string): void {
    const p = this.pollers.get(name);
    if (!p) return;
    p.stopped = true;
    clearTimeout(p.timer);
    p.client.close();
    this.pollers.delete(name);
    this.settings.delete(name);
  }
}

/** What in the settings weakens attestation, for a warning (the engines warn at synth too). */
export function weakenings(s: AttestationSettings): string[] {
  const out: string[] = [];
  if (s.url.startsWith("http:")) out.push(`verdicts come over plain HTTP from ${s.url}, unauthenticated`);
  else if (!s.verifyServerCertificate) out.push(`the certificate of ${s.url} is not verified: any server is accepted`);
  return out;
}
