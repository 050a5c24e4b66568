// The README's main command, second half: the example pool comes alive on libvirt's built-in
// test hypervisor. Its members are defined from the same model the constructs synthesize, the
// reconciler prestarts, a user takes a VM and returns it, and the status is printed.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { VmPoolProps } from "../../core/spec";
import { formatStatus } from "../cli";
import { DomainEvents } from "../driver/events";
import { VirshDriver } from "../driver/libvirt-driver";
import { Reconciler } from "../reconciler";
import { StateStore } from "../store/store";
import { deployPool, removePool } from "./deploy";

const URI = "test+unix:///default";

/**
 * The README's example pool (examples/linux-desktop-pool.ts), as plain data: the runtime loads
 * neither cdktf nor the examples (test/engines/cdktf/runtime-imports checks both are equal).
 */
export const demoPoolProps: VmPoolProps = {
  name: "MyPool-???",
  description: "Linux desktops for the support team",
  comment: "Rebuilt from template debian-12 each release",
  template: {
    name: "debian-12-desktop",
    version: 3,
    baseImagePath: "/var/lib/libvirt/images/debian-12-desktop-v3.qcow2",
    diskSizeGiB: 20,
    memoryMiB: 4096,
    vcpus: 2,
    operatingSystem: "linux",
  },
  optimizedFor: "desktop",
  size: 10,
  prestarted: 2,
  maxVmsPerUser: 1,
  type: "automatic",
  console: { spiceProxy: "http://spice-proxy.example.com:3128" },
  resourceAllocation: {
    disk: { storagePools: [{ name: "default" }, { name: "fast-ssd" }], autoSelectTarget: true },
  },
  initialRun: {
    cloudInit: {
      timeZone: "Europe/Berlin",
      users: [
        {
          name: "support",
          sudo: "ALL=(ALL) NOPASSWD:ALL",
          sshAuthorizedKeys: [
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBu8dYt1a9Q8XnQn2tqkU8ZcJ0pC8Cq6Qm4b8bq9n1Hx support@example.com",
          ],
        },
      ],
      packages: ["firefox-esr", "spice-vdagent"],
      runCommands: ["systemctl enable --now spice-vdagentd"],
    },
  },
};

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "vmpools-demo-"));
  const driver = new VirshDriver({ uri: URI });
  const events = new DomainEvents({ uri: URI });
  const store = StateStore.open(join(dir, "state.db"));
  const pool = demoPoolProps.name;
  console.log(`\n== The example pool on libvirt's test hypervisor (${URI})`);
  const plan = await deployPool(driver, demoPoolProps);
  const reconciler = new Reconciler({
    driver,
    events,
    store,
    retry: { maxAttempts: 3, baseDelayMs: 100 },
    onlyPools: [pool],
  });
  reconciler.on("activity", (a) => console.log(`  reconciler: ${a.kind} ${a.vm}${a.user ? ` for ${a.user}` : ""}`));
  reconciler.on("failure", (f) => console.log(`  reconciler failure: ${f.context} ${f.vm ?? ""}: ${f.error.message}`));
  try {
    console.log(`defined ${plan.members.length} members; starting the reconciler`);
    await reconciler.start();
    await reconciler.idle();
    console.log(formatStatus(reconciler.status()).replace(/^/gm, "  "));

    const started = performance.now();
    const taken = await reconciler.take(pool, "alice");
    console.log(
      `\nalice takes a VM: ${taken.vm} in ${(performance.now() - started).toFixed(1)} ms (${taken.started ? "started for her" : "was prestarted"})`,
    );
    await reconciler.idle();

    const returned = await reconciler.return(pool, taken.vm, { user: "alice" });
    console.log(
      `alice returns ${returned.vm}: ${returned.reverted ? "reverted to the base image" : "kept (stateful)"} and free again`,
    );
    await reconciler.idle();

    const bobs = await reconciler.take(pool, "bob");
    console.log(`bob takes ${bobs.vm} and keeps it`);
    await reconciler.idle();
    console.log(`\nstatus:\n${formatStatus(reconciler.status()).replace(/^/gm, "  ")}`);
  } finally {
    await reconciler.stop();
    await events.close();
    await removePool(driver, plan);
    await driver.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().catch((e: unknown) => {
    console.error(`demo failed: ${(e as Error).message}`);
    process.exit(1);
  });
}
