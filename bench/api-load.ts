// Helpers for benchmarks through the HTTP API: a loopback client, a driver proxy that counts and
// timestamps libvirt calls, and statistics.
import { performance } from "node:perf_hooks";
import { Worker } from "node:worker_threads";
import type { LibvirtDriver } from "../reconciler/driver/libvirt-driver";

export interface Answer {
  readonly status: number;
  readonly body: { readonly error?: string; readonly vm?: string; readonly started?: boolean };
  /** Request written → whole answer read, milliseconds. */
  readonly ms: number;
  /** When the request was sent, as performance.now() of the calling thread. */
  readonly sentAt: number;
}

// The client's thread: keep-alive connections as a user's tool would hold them, reused. It runs on
// its own event loop so that sending and reading answers is not counted as the server's time (in
// the server's thread the client's work delayed the server's and split its batches).
const CLIENT = `
const { parentPort, workerData } = require("node:worker_threads");
const { Agent, request } = require("node:http");
let agent = new Agent({ keepAlive: true, maxSockets: 4096 });
let lastUse = 0;
parentPort.on("message", ({ id, path, token }) => {
  // The server closes connections idle for 5 s; one reused just then would hang up.
  if (Date.now() - lastUse > 2000) { agent.destroy(); agent = new Agent({ keepAlive: true, maxSockets: 4096 }); }
  lastUse = Date.now();
  const sentAt = performance.timeOrigin + performance.now();
  const req = request({ agent, host: workerData.host, port: workerData.port, method: "POST", path,
    headers: { authorization: "Bearer " + token, "content-type": "application/json", "content-length": "2" } },
    (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => parentPort.postMessage({ id, status: res.statusCode, text: Buffer.concat(chunks).toString("utf8"),
        sentAt, ms: performance.timeOrigin + performance.now() - sentAt }));
    });
  req.on("error", (e) => parentPort.postMessage({ id, error: e.message, sentAt }));
  req.end("{}");
});
`;

/** An HTTP client on a thread of its own; see CLIENT. */
export class ApiClient {
  private readonly worker: Worker;
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (a: Answer) => void; reject: (e: Error) => void }>();

  constructor(base: URL) {
    this.worker = new Worker(CLIENT, { eval: true, workerData: { host: base.hostname, port: Number(base.port) } });
    this.worker.on(
      "message",
      (m: { id: number; status?: number; text?: string; error?: string; sentAt: number; ms: number }) => {
        const w = this.waiting.get(m.id)!;
        this.waiting.delete(m.id);
        if (m.error !== undefined) return w.reject(new Error(m.error));
        try {
          const sentAt = m.sentAt - performance.timeOrigin;
          w.resolve({ status: m.status!, body: JSON.parse(m.text!), ms: m.ms, sentAt });
        } catch (e) {
          w.reject(new Error(`answer ${m.status} is not JSON: ${(e as Error).message}`));
        }
      },
    );
  }

  post(path: string, token: string): Promise<Answer> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ id, path, token });
    });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

export interface DriverCall {
  readonly method: string;
  readonly domain?: string;
  /** performance.now() when the call was made. */
  readonly at: number;
}

/**
 * The driver with every method call recorded (name, first argument, time) before it runs,
 * its background view's calls included.
 */
export function recordingDriver(driver: LibvirtDriver, calls: DriverCall[]): LibvirtDriver {
  let background: LibvirtDriver | undefined;
  return new Proxy(driver, {
    get(target, prop) {
      if (prop === "background" && target.background) return (background ??= recordingDriver(target.background, calls));
      const value = (target as unknown as Record<string | symbol, unknown>)[prop];
      if (typeof value !== "function" || typeof prop !== "string" || prop === "constructor") return value;
      return (...args: unknown[]) => {
        calls.push({
          method: prop,
          ...(typeof args[0] === "string" ? { domain: args[0] } : {}),
          at: performance.now(),
        });
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

export const quantile = (values: readonly number[], q: number): number => {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
};

export const median = (values: readonly number[]): number => quantile(values, 0.5);
export const min = (values: readonly number[]): number => Math.min(...values);
