import { execFileSync, spawn, type ChildProcess } from "node:child_process";

export const TEST_URI = "test+unix:///default";

/** Runs one virsh command; throws with virsh's message on failure. */
export function virsh(uri: string, ...args: string[]): string {
  return execFileSync("virsh", ["-q", "-c", uri, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/**
 * libvirtd keeps the test driver's state only while a connection is open, so tests that use
 * several connections hold one open for their duration.
 */
export function holdTestDriver(uri = TEST_URI): ChildProcess {
  const child = spawn("virsh", ["-c", uri], { stdio: ["pipe", "ignore", "ignore"] });
  return child;
}

export async function releaseTestDriver(child: ChildProcess): Promise<void> {
  child.stdin?.end("quit\n");
  await new Promise((resolve) => child.once("exit", resolve));
}

/** Fails with the set-up command when libvirtd is not reachable. */
export function requireLibvirtd(uri = TEST_URI): void {
  try {
    // `uri`, not `version`: the latter probes qemu and can cost seconds.
    virsh(uri, "uri");
  } catch (e) {
    throw new Error(`libvirtd is not answering on ${uri}; run: bash scripts/libvirt-up.sh (${(e as Error).message})`);
  }
}
