import type {
  DiskFormat,
  HostRef,
  MigrationMode,
  MigrationPolicy,
  NumaPin,
  NumaTuneMode,
  OperatingSystem,
  OptimizedFor,
  PoolType,
  StoragePoolRef,
  TemplateSpec,
  DirectKernelBootSpec,
  TriState,
  CloudInitSpec,
} from "./spec";
import type { SysprepConfig } from "./initrun/sysprep-config";
import type { NameMask } from "./naming";
import type { AttestationSettings } from "./trust";

/** Pool props after validation with every default applied. Renderers read only this. */
export interface ResolvedPool {
  readonly name: string;
  readonly mask: NameMask;
  readonly description: string;
  readonly comment: string;
  readonly template: Required<Omit<TemplateSpec, "directKernelBoot">> & {
    readonly directKernelBoot?: Required<Omit<DirectKernelBootSpec, "initrdPath">> & { readonly initrdPath?: string };
  };
  readonly operatingSystem: OperatingSystem;
  readonly optimizedFor: OptimizedFor;
  readonly size: number;
  readonly maxVmsInPool: number;
  readonly prestarted: number;
  readonly maxVmsPerUser: number;
  readonly deleteProtection: boolean;
  readonly type: PoolType;
  readonly stateful: boolean;
  readonly allowShrink: boolean;
  /** Names of detached members: not rendered, forgotten by the engines (never destroyed). */
  readonly detached: readonly string[];
  readonly initialRun?:
    | { readonly kind: "cloud-init"; readonly config: CloudInitSpec }
    | { readonly kind: "sysprep"; readonly config: SysprepConfig };
  readonly spiceProxy?: string;
  readonly clusterName: string;
  readonly clusterHosts: readonly HostRef[];
  /** Set when the cluster is a trusted one: how its hosts are attested. */
  readonly trust?: AttestationSettings;
  /** Hosts members may run on, in cluster order. */
  readonly allowedHosts: readonly HostRef[];
  readonly startRunningOn: "any" | "specific";
  readonly migration: {
    readonly mode: MigrationMode;
    readonly policy?: MigrationPolicy;
    readonly customDowntimeMs?: number;
    readonly autoConverge: TriState;
    readonly compression: TriState;
  };
  readonly passThroughHostCpu: boolean;
  readonly numa?: {
    readonly nodeCount: number;
    readonly tuneMode: NumaTuneMode;
    readonly pinning: readonly NumaPin[];
  };
  readonly storage: {
    readonly candidates: readonly Required<StoragePoolRef>[];
    readonly autoSelectTarget: boolean;
    readonly format: DiskFormat;
  };
  readonly network: { readonly network: string; readonly model: string };
}
