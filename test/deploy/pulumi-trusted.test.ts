// A real `pulumi preview` (the CLI and terraform-provider plugin of scripts/pulumi-tools.sh,
// Automation API inline program: test/support/pulumi.ts) of a VmPool on a TrustedCluster whose
// attestation service is a loopback OpenAttestation server (HTTPS, a PKCS#12 truststore of a test
// CA): while every host is trusted the preview plans the members; with h2 untrusted it fails
// naming h2, and plans no volume and no domain. Previews only: nothing is created, so the host
// probe is a fake (no storage pool is needed) and libvirt is only the providers' URI.
import type { EngineEvent } from "@pulumi/pulumi/automation";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runInThisContext } from "node:vm";
import type { ProbeResult } from "../../engines/libvirt-provider/probe";
import { TrustedCluster, VmPool } from "../../engines/pulumi";
import { LIBVIRT_TYPES } from "../../engines/pulumi/package";
import { makeTestPki } from "../support/attestation/pki";
import { startOpenAttestationServer, type OpenAttestationServer } from "../support/attestation/openattestation-server";
import { validProps } from "../support/fixtures";
import { closePulumiStacks, openStack, type PulumiStack } from "../support/pulumi";

const PASSWORD = `ts-${randomBytes(12).toString("hex")}`;
let dir: string;
let oat: OpenAttestationServer;
let truststore: string;
let stack: PulumiStack;

const probe = async (query: Readonly<Record<string, string>>): Promise<ProbeResult> => ({
  storage_pool: query.candidates!.split(",")[0]!,
  available_bytes: String(100 << 30),
  max_member_index: "",
  held_above: "",
  undetached: "",
  member_count: "0",
});

const program = async () => {
  const cluster = new TrustedCluster("Trusted", {
    name: "trusted",
    // Two names for this machine's libvirt: previews never connect to create anything.
    hosts: ["h1", "h2"].map((name) => ({ name, uri: "qemu:///system" })),
    attestation: {
      type: "openattestation",
      server: "127.0.0.1",
      port: oat.port,
      truststorePath: truststore,
      truststorePassword: PASSWORD,
    },
  });
  const pool = new VmPool("Pool", validProps({ name: "TrustedPool-???", size: 2, cluster }), {
    hostProbe: probe,
    assetDir: join(dir, "assets"),
  });
  return { members: pool.memberNames };
};

/** `op type name` of every step other than "same" that the preview showed. */
function steps(events: readonly EngineEvent[]): string[] {
  return events
    .flatMap((e) => (e.resourcePreEvent ? [e.resourcePreEvent.metadata] : []))
    .filter((m) => m.op !== "same")
    .map((m) => `${m.op} ${m.type} ${m.urn.slice(m.urn.lastIndexOf("::") + 2)}`)
    .sort();
}

/**
 * A preview, with the program's unhandled rejections reaching the Automation API's inline-program
 * server as they would outside jest. The server fails the run from its unhandledRejection
 * listener, which it adds to this module's `process`: under jest a copy whose listeners Node never
 * calls (see test/support/pulumi-mocks.ts), so the real process's rejections are handed to them,
 * and jest's own listener, which would fail the test instead, is put back afterwards.
 */
async function preview(): Promise<{ steps: string[]; error?: Error }> {
  const seen: EngineEvent[] = [];
  const real = runInThisContext("process") as NodeJS.Process;
  const others = real.rawListeners("unhandledRejection") as ((...args: unknown[]) => void)[];
  real.removeAllListeners("unhandledRejection");
  const forward = (reason: unknown, promise: Promise<unknown>) => {
    for (const listener of process.listeners("unhandledRejection")) listener(reason, promise);
  };
  real.on("unhandledRejection", forward);
  try {
    await stack.preview({ onEvent: (e) => seen.push(e) });
    return { steps: steps(seen) };
  } catch (e) {
    return { steps: steps(seen), error: e as Error };
  } finally {
    real.off("unhandledRejection", forward);
    for (const listener of others) real.on("unhandledRejection", listener);
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "vmpools-pulumi-trusted-deploy-"));
  const pki = makeTestPki(join(dir, "pki"));
  truststore = pki.truststoreP12(PASSWORD);
  oat = await startOpenAttestationServer({ pki });
  stack = await openStack({ project: "vmpools-trusted-test", program });
}, 20 * 60_000);

afterAll(async () => {
  try {
    await closePulumiStacks();
  } finally {
    await oat?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}, 5 * 60_000);

const MEMBER_TYPES = new Set<string>([LIBVIRT_TYPES.volume, LIBVIRT_TYPES.domain]);

test("every host trusted: the preview plans the pool's members and policy volumes", async () => {
  oat.setDefaultTrust("trusted");
  const { steps: planned, error } = await preview();
  expect(error).toBeUndefined();
  expect(oat.requests.map((r) => [...r.hosts].sort())).toEqual([["h1", "h2"]]);
  const members = planned.filter((s) => MEMBER_TYPES.has(s.split(" ")[1]!));
  // Two members (system volume, media volume, domain each) and a policy volume per host.
  expect(members).toHaveLength(2 * 3 + 2);
  expect(members.every((s) => s.startsWith("create "))).toBe(true);
  expect(stack.output.join("")).not.toContain(PASSWORD);
}, 120_000);

test("h2 untrusted: the preview fails naming h2, its level and reason, and plans no volume or domain", async () => {
  oat.setDefaultTrust("trusted");
  oat.setTrust("h2", "untrusted");
  oat.clearRequests();
  const before = stack.output.length;
  const { steps: planned, error } = await preview();
  expect(error).toBeDefined();
  const printed = stack.output.slice(before).join("");
  expect(printed).toMatch(
    /TrustedCluster trusted: the OpenAttestation server https:\/\/127\.0\.0\.1:\d+\/\S+ does not vouch for 1 of 2 hosts:/,
  );
  expect(printed).toContain("- host h2: untrusted (OpenAttestation: trust_lvl untrusted)");
  expect(printed).not.toContain("host h1:");
  expect(oat.requests).toHaveLength(1);
  expect(planned.filter((s) => MEMBER_TYPES.has(s.split(" ")[1]!))).toEqual([]);
  expect(printed).not.toContain(PASSWORD);
}, 120_000);
