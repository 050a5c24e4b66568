// Refusals: errors a caller shows to a user as they are (the API maps each code to an HTTP
// status). One base class, so that "a refusal or a failure" is a type check, and one list of
// codes, so that the API's mapping covers every one of them (a compile error otherwise).
export const REFUSAL_CODES = [
  "unknown-pool",
  "unknown-vm",
  "user-limit",
  "no-free-vm",
  "start-failed",
  "not-held",
  "not-holder",
  "admin-required",
  "not-down",
  "not-running",
  "not-active",
  "invalid-console-options",
  "lease-held",
  "unknown-host",
  "migration-refused",
  "host-unavailable",
] as const;
export type RefusalCode = (typeof REFUSAL_CODES)[number];

export abstract class RefusalError extends Error {
  abstract readonly code: RefusalCode;
}
