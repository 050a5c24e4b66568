// The README's main command, second half: the example pool comes alive on libvirt's built-in
// test hypervisor. Its members are defined from the same model the constructs synthesize, the
// reconciler prestarts, a user takes a VM and returns it, and the status is printed.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { linuxDesktopPoolProps as demoPoolProps } from "../../examples/linux-desktop-pool.props";
import { formatStatus } from "../cli";
import { DomainEvents } from "../driver/events";
import { VirshDriver } from "../driver/libvirt-driver";
import { Reconciler } from "../reconciler";
import { StateStore } from "../store/store";
import { deployPool, removePool } from "./deploy";

const URI = "test+unix:///default";

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
