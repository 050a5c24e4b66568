// `vmpools/reconciler`: the runtime that hands pool members to users. Loads no IaC engine.
export {
  Reconciler,
  type ReconcilerOptions,
  type ReconcilerStatus,
  type PoolStatus,
  type MemberStatus,
  type Requester,
  type TakeResult,
  type ReturnResult,
  type RetryPolicy,
} from "./reconciler";
export { StateStore, type Assignment, type Intent, type ConsoleOptions } from "./store/store";
export { VirshDriver, type LibvirtDriver, type DomainInfo, type DomainState } from "./driver/libvirt-driver";
export { DomainEvents, type DomainEventSource, type LifecycleEvent } from "./driver/events";
export { createApiServer } from "./api/server";
export { TokenAuth, newToken, type Principal, type Role, type TokenEntry } from "./api/auth";
export { main as runCli } from "./cli";
export * from "./errors";
