// Small helpers the reconciler's modules share.
import { VirshError } from "./driver/virsh-session";

export const message = (e: unknown) => (e instanceof Error ? e.message : String(e));
export const asError = (e: unknown) => (e instanceof Error ? e : new Error(String(e)));
/** libvirt says the domain, volume or pool does not exist. */
export const notFound = (e: unknown) => e instanceof VirshError && e.notFound;
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with undefined when the call fails with not-found (gone meanwhile); rethrows anything else. */
export async function unlessGone<T>(call: Promise<T>): Promise<T | undefined> {
  try {
    return await call;
  } catch (e) {
    if (notFound(e)) return undefined;
    throw e;
  }
}
