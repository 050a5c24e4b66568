// Refusals a caller (HTTP API, CLI) shows to a user. `code` is stable for mapping to responses.
import { RefusalError } from "./refusal";
export { NotHolderError } from "./store/store";
export { ConsoleOptionsError } from "./console";

export class UnknownPoolError extends RefusalError {
  readonly code = "unknown-pool" as const;
  constructor(
    readonly pool: string,
    readonly known: readonly string[],
  ) {
    super(
      `no pool named ${JSON.stringify(pool)} on this hypervisor` +
        (known.length > 0 ? `; pools: ${known.join(", ")}` : "; no pool members are defined yet"),
    );
    this.name = "UnknownPoolError";
  }
}

export class UnknownVmError extends RefusalError {
  readonly code = "unknown-vm" as const;
  constructor(
    readonly pool: string,
    readonly vm: string,
  ) {
    super(`${vm} is not a member of pool ${pool}`);
    this.name = "UnknownVmError";
  }
}

export class UserLimitError extends RefusalError {
  readonly code = "user-limit" as const;
  constructor(
    readonly pool: string,
    readonly user: string,
    readonly limit: number,
    readonly held: readonly string[],
  ) {
    super(
      `${user} already holds ${held.length} VM(s) from pool ${pool} (${held.join(", ")}), the most it allows ` +
        `per user is ${limit}; return one first`,
    );
    this.name = "UserLimitError";
  }
}

export class NoFreeVmError extends RefusalError {
  readonly code = "no-free-vm" as const;
  constructor(
    readonly pool: string,
    readonly size: number,
  ) {
    super(`every VM of pool ${pool} (${size}) is taken or being returned; try again later`);
    this.name = "NoFreeVmError";
  }
}

/** The VM could not be started for the user; the claim was released, nothing is assigned. */
export class VmStartError extends RefusalError {
  readonly code = "start-failed" as const;
  constructor(
    readonly pool: string,
    readonly vm: string,
    readonly reason: string,
  ) {
    super(`could not start ${vm} from pool ${pool}, so it was not assigned: ${reason}`);
    this.name = "VmStartError";
  }
}

export class NotHeldError extends RefusalError {
  readonly code = "not-held" as const;
  constructor(
    readonly pool: string,
    readonly vm: string,
  ) {
    super(`${vm} in pool ${pool} is not held by anyone`);
    this.name = "NotHeldError";
  }
}

export class AdminRequiredError extends RefusalError {
  readonly code = "admin-required" as const;
  constructor(
    readonly pool: string,
    readonly vm: string,
    readonly action: string,
  ) {
    super(`${pool} is a manual pool: only an administrator can ${action} ${vm}`);
    this.name = "AdminRequiredError";
  }
}

/** Detach needs the VM Down (seed: "you cannot detach a running virtual machine"). */
export class NotDownError extends RefusalError {
  readonly code = "not-down" as const;
  constructor(
    readonly pool: string,
    readonly vm: string,
    readonly state: string,
  ) {
    super(`${vm} is ${state}; only a VM that is Down can be detached from pool ${pool}: shut it down first`);
    this.name = "NotDownError";
  }
}

export class NotRunningError extends RefusalError {
  readonly code = "not-running" as const;
  constructor(
    readonly pool: string,
    readonly vm: string,
    readonly state: string,
  ) {
    super(`${vm} in pool ${pool} is ${state}; a console needs it running`);
    this.name = "NotRunningError";
  }
}

/** The reconciler is not the active one for its pools (it lost its lease, or was stopped). */
export class NotActiveError extends RefusalError {
  readonly code = "not-active" as const;
  constructor(reason: string) {
    super(`this vmpools reconciler is not active (${reason}); ask the active one, or restart this one`);
    this.name = "NotActiveError";
  }
}

/** An admin verb names a host the reconciler's cluster does not have. */
export class UnknownHostError extends RefusalError {
  readonly code = "unknown-host" as const;
  constructor(
    readonly host: string,
    readonly known: readonly string[],
  ) {
    super(`no host named ${JSON.stringify(host)} in this reconciler's cluster; hosts: ${known.join(", ")}`);
    this.name = "UnknownHostError";
  }
}

/** A migration its pool's settings (or the guest's CPU, or the hosts) do not allow. */
export class MigrationRefusedError extends RefusalError {
  readonly code = "migration-refused" as const;
  constructor(
    readonly pool: string,
    readonly vm: string,
    readonly reason: string,
  ) {
    super(`${vm} in pool ${pool} cannot be migrated: ${reason}`);
    this.name = "MigrationRefusedError";
  }
}

/** The member's host is not up (unreachable, in maintenance, non-operational): it cannot be acted on now. */
export class HostUnavailableError extends RefusalError {
  readonly code = "host-unavailable" as const;
  constructor(
    readonly vm: string,
    readonly host: string,
    readonly state: string,
    readonly reason: string,
  ) {
    super(`${vm} is on host ${host}, which is ${state} (${reason}); try again once it is up`);
    this.name = "HostUnavailableError";
  }
}
