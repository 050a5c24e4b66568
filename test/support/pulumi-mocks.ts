// Runs a Pulumi program in-process under pulumi.runtime.setMocks and returns what it registered,
// as the engine would receive it.
//
// setMocks' newResource sees a resource's type, name, inputs and provider only, and its inputs
// come deserialized, which moves secretness up to the top-level property (a secret console
// password makes the whole `devices` a secret). Resource options (protect, ignoreChanges,
// deleteBeforeReplace, retainOnDelete, replaceOnChanges, parent) never reach it. So this helper
// wraps the mock monitor's registerResource and reads the RegisterResourceRequest itself: the
// protobuf message the SDK sends to the engine, with the options as the SDK resolved them
// (inherited from the parent, provider references resolved) and the inputs as serialized, each
// secret marked where it is. That is the SDK's wire contract with the engine, which it must keep,
// unlike a resource's private fields (`__protect`, …); and unlike transforms
// (registerResourceTransform), which the mock monitor never runs, it needs no callback server.
//
// A program fails, as under `pulumi up`, by throwing while it runs (a component's constructor
// validating its props: the run rejects with that error) or by a rejected output that a
// registration waits for (the language host reports every unhandled rejection and fails the
// update): those are collected in `errors`, one per distinct message. While the program runs,
// this helper is the process's only unhandledRejection listener, as the language host is; under
// jest that needs the real `process` (a test's `process` is a copy whose listeners Node never
// calls, and jest's own listener would fail the test), which runInThisContext evaluates in the
// main context. Jest's listener is put back afterwards, so a rejection after the run still fails
// the test.
import * as pulumi from "@pulumi/pulumi";
import { runInThisContext } from "node:vm";

/** A JSON value as a test reads it. */
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** A secret input value, where the SDK marked it. */
export class SecretValue {
  constructor(readonly secret: unknown) {}
}

/** The options a registration carried, as in the RegisterResourceRequest. */
export interface RegisteredOptions {
  /** undefined: not set (the engine's default, false). */
  readonly protect?: boolean;
  readonly ignoreChanges: readonly string[];
  /** undefined: not set. */
  readonly deleteBeforeReplace?: boolean;
  /** undefined: not set. */
  readonly retainOnDelete?: boolean;
  readonly replaceOnChanges: readonly string[];
}

export interface Registration {
  readonly type: string;
  readonly name: string;
  readonly urn: string;
  readonly custom: boolean;
  /** Inputs as serialized for the engine; secrets as SecretValue, unknowns as UNKNOWN. */
  readonly inputs: Json;
  /** The parent's URN; undefined for none. */
  readonly parent?: string;
  /** The URN of the resource's explicit or inherited provider; undefined for the default one. */
  readonly provider?: string;
  readonly options: RegisteredOptions;
  /** The package reference the resource was registered with ("" for none). */
  readonly packageRef: string;
  /** What registerOutputs registered (components), secrets as SecretValue. */
  outputs?: Json;
}

/** A registerPackage call (parameterized providers). */
export interface RegisteredPackage {
  readonly name: string;
  readonly version: string;
  readonly downloadUrl: string;
  readonly parameterization?: { readonly name: string; readonly version: string; readonly value: string };
}

export interface MockRun<T> {
  readonly result: T;
  readonly resources: readonly Registration[];
  readonly packages: readonly RegisteredPackage[];
  /** What the program logged (pulumi.log), in order. */
  readonly logs: readonly { readonly severity: "info" | "warning" | "error"; readonly message: string }[];
  /** Distinct messages of the errors the program failed with after construction; [] for none. */
  readonly errors: readonly string[];
  /** The registration of that type and name; throws when there is none. */
  get(type: string, name: string): Registration;
  /** Registrations of a type (in order of registration). */
  ofType(type: string): Registration[];
}

/** The value the SDK sends for an output not known yet (only in previews). */
export const UNKNOWN = pulumi.runtime.unknownValue;

export interface MockRunOptions {
  readonly project?: string;
  readonly stack?: string;
  /** Run as a preview (outputs of new resources unknown). @default false */
  readonly preview?: boolean;
}

// The shapes of the mock monitor's RPC methods this helper wraps (grpc-style callbacks).
type Callback = (err: Error | null, resp?: unknown) => void;
interface Struct {
  toJavaScript(): Record<string, unknown>;
}
interface RegisterResourceRequest {
  getType(): string;
  getName(): string;
  getCustom(): boolean;
  getObject(): Struct | undefined;
  getParent(): string;
  getProvider(): string;
  hasProtect(): boolean;
  getProtect(): boolean | undefined;
  getIgnorechangesList(): string[];
  getDeletebeforereplace(): boolean;
  getDeletebeforereplacedefined(): boolean;
  hasRetainondelete(): boolean;
  getRetainondelete(): boolean | undefined;
  getReplaceonchangesList(): string[];
  getPackageref(): string;
}
interface RegisterPackageRequest {
  getName(): string;
  getVersion(): string;
  getDownloadUrl(): string;
  getParameterization(): { getName(): string; getVersion(): string; getValue_asU8(): Uint8Array } | undefined;
}
interface MonitorLike {
  registerResource(req: RegisterResourceRequest, cb: Callback): void;
  registerResourceOutputs(req: { getUrn(): string; getOutputs(): Struct | undefined }, cb: Callback): void;
  registerPackage(req: RegisterPackageRequest, cb: Callback): void;
}

const { specialSigKey, specialSecretSig } = pulumi.runtime;

/** Serialized property values with each secret as a SecretValue. */
function markSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(markSecrets);
  if (value === null || typeof value !== "object") return value;
  const obj = value as Record<string, unknown>;
  if (obj[specialSigKey] === specialSecretSig) return new SecretValue(markSecrets(obj.value));
  return Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, markSecrets(v)]));
}

/**
 * An error's message without the `error serializing property "x": ` prefixes the SDK adds for
 * each input it passed through. The SDK prefixes the one Error object that every dependent
 * registration rejects with, so their number depends on the order the registrations ran in.
 */
export const sdkCause = (message: string) => message.replace(/^(error serializing property "[^"]*": )+/, "");

/** The URN in a provider reference (`<urn>::<id>`). */
const providerUrn = (ref: string) => (ref ? ref.slice(0, ref.lastIndexOf("::")) : undefined);

/**
 * Runs `program` under mocks (each resource's outputs are its inputs, ids `<name>-id`) and waits
 * until every registration it started has finished. Runs one at a time (the SDK's state is global).
 */
export async function runMocked<T>(program: () => T, opts: MockRunOptions = {}): Promise<MockRun<T>> {
  await pulumi.runtime.setMocks(
    {
      newResource: (args) => ({ id: args.custom ? `${args.name}-id` : undefined, state: args.inputs }),
      call: (args) => {
        throw new Error(`unexpected invoke ${args.token}`);
      },
    },
    opts.project ?? "project",
    opts.stack ?? "stack",
    opts.preview ?? false,
  );
  const monitor = pulumi.runtime.getMonitor() as unknown as MonitorLike;
  const resources: Registration[] = [];
  const packages: RegisteredPackage[] = [];
  const registerResource = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req, cb) =>
    registerResource(req, (err, resp) => {
      if (!err) {
        resources.push({
          type: req.getType(),
          name: req.getName(),
          urn: (resp as { getUrn(): string }).getUrn(),
          custom: req.getCustom(),
          inputs: markSecrets(req.getObject()?.toJavaScript() ?? {}) as Json,
          parent: req.getParent() || undefined,
          provider: providerUrn(req.getProvider()),
          options: {
            protect: req.hasProtect() ? req.getProtect() : undefined,
            ignoreChanges: req.getIgnorechangesList(),
            deleteBeforeReplace: req.getDeletebeforereplacedefined() ? req.getDeletebeforereplace() : undefined,
            retainOnDelete: req.hasRetainondelete() ? req.getRetainondelete() : undefined,
            replaceOnChanges: req.getReplaceonchangesList(),
          },
          packageRef: req.getPackageref(),
        });
      }
      cb(err, resp);
    });
  const registerOutputs = monitor.registerResourceOutputs.bind(monitor);
  monitor.registerResourceOutputs = (req, cb) =>
    registerOutputs(req, (err, resp) => {
      const r = resources.find((x) => x.urn === req.getUrn());
      if (!err && r) r.outputs = markSecrets(req.getOutputs()?.toJavaScript() ?? {}) as Json;
      cb(err, resp);
    });
  const registerPackage = monitor.registerPackage.bind(monitor);
  monitor.registerPackage = (req, cb) => {
    const p = req.getParameterization();
    packages.push({
      name: req.getName(),
      version: req.getVersion(),
      downloadUrl: req.getDownloadUrl(),
      ...(p
        ? {
            parameterization: {
              name: p.getName(),
              version: p.getVersion(),
              value: Buffer.from(p.getValue_asU8()).toString("utf8"),
            },
          }
        : {}),
    });
    registerPackage(req, cb);
  };

  // As the language host does: a rejection nobody handles fails the program.
  const errors = new Set<string>();
  const realProcess = runInThisContext("process") as NodeJS.Process;
  const others = realProcess.rawListeners("unhandledRejection") as ((...args: unknown[]) => void)[];
  realProcess.removeAllListeners("unhandledRejection");
  const onRejection = (reason: unknown) =>
    errors.add(sdkCause(reason instanceof Error ? reason.message : String(reason)));
  realProcess.on("unhandledRejection", onRejection);
  // pulumi.log without an engine prints `<severity>: [runtime] <message>` on the console.
  const logs: { severity: "info" | "warning" | "error"; message: string }[] = [];
  const consoleMethods = { log: console.log, warn: console.warn, error: console.error };
  for (const method of ["log", "warn", "error"] as const) {
    console[method] = (...args: unknown[]) => {
      const m = args.length === 1 && /^(info|warning|error): \[runtime\] ([^]*)$/.exec(String(args[0]));
      if (m) logs.push({ severity: m[1] as "info" | "warning" | "error", message: m[2]! });
      else consoleMethods[method](...args);
    };
  }
  let result: T | undefined;
  let thrown: { error: unknown } | undefined;
  try {
    try {
      result = program();
    } catch (error) {
      thrown = { error };
    }
    // Drains the SDK's RPC queue (registrations wait for their inputs first); then a turn of the
    // event loop, after which Node has reported the rejections left unhandled.
    await pulumi.runtime.disconnect();
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    Object.assign(console, consoleMethods);
    realProcess.off("unhandledRejection", onRejection);
    for (const listener of others) realProcess.on("unhandledRejection", listener);
  }
  if (thrown) throw thrown.error;

  const get = (type: string, name: string) => {
    const r = resources.find((x) => x.type === type && x.name === name);
    if (!r) throw new Error(`no ${type} named ${name} was registered (${resources.map((x) => x.name).join(", ")})`);
    return r;
  };
  return {
    result: result as T,
    resources,
    packages,
    logs,
    errors: [...errors],
    get,
    ofType: (type) => resources.filter((r) => r.type === type),
  };
}
