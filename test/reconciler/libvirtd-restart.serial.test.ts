// Work in flight while libvirtd restarts: users take and return real qemu guests in loops while
// libvirtd is killed and started again. Afterwards everything converges: no VM was held by two
// users at once, nothing is pending, no member is out of service, free members are clean.
// Serial: a libvirtd restart wipes the test hypervisor the parallel suites use.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { HOLDER_NAMESPACE, parseHolderXml } from "../../core/metadata";
import { DomainEvents } from "../../reconciler/driver/events";
import { Reconciler, type Failure } from "../../reconciler/reconciler";
import { StateStore } from "../../reconciler/store/store";
import { LIBVIRT_URI, virsh } from "../guest/guest";
import { BASE_MARKER, openQemuPools, until, type QemuPools } from "../support/qemu-pool";

let q: QemuPools;

beforeAll(async () => {
  q = await openQemuPools();
}, 120_000);

afterAll(async () => {
  await q?.close();
}, 60_000);

/**
 * Kills libvirtd (by the pid in its pid file) and starts it again, as a host upgrade or crash
 * would; running qemu guests and persistent domains survive it. Resolves once it answers.
 */
async function restartLibvirtd(): Promise<void> {
  const pid = Number(fs.readFileSync("/run/libvirtd.pid", "utf8").trim());
  process.kill(pid, "SIGKILL");
  await until("the old libvirtd to exit", () => !fs.existsSync(`/proc/${pid}`) || /\) Z /.test(stat(pid)), 10_000);
  execFileSync("libvirtd", ["-d"]);
  await until("libvirtd to answer", () => {
    try {
      execFileSync("virsh", ["-c", LIBVIRT_URI, "uri"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  });
}
const stat = (pid: number) => {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return "";
  }
};

const code = (e: unknown) => (e as { code?: unknown }).code;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("takes and returns under way while libvirtd restarts: converges, no double assignment, nothing pending", async () => {
  // The guests write to their overlay and stay up; they ignore ACPI, so each return destroys them.
  const plan = await q.deploy(
    q.props(`Restart${q.tag}-?`, { size: 4, prestarted: 1, maxVmsPerUser: 1 }),
    q.guest({ kind: "write-marker", text: "USER-WROTE" }, { stay: true }),
  );
  const pool = plan.pool.name;
  const store = StateStore.open(path.join(q.dir, "restart.db"));
  const events = new DomainEvents({ uri: LIBVIRT_URI });
  const reconciler = new Reconciler({
    driver: q.driver,
    store,
    events,
    // serve's retry policy; a short resync so that what the outage cut short is picked up soon.
    retry: { maxAttempts: 5, baseDelayMs: 500 },
    resyncIntervalMs: 2000,
    shutdownTimeoutMs: 1000,
    onlyPools: [pool],
  });
  const failures: Failure[] = [];
  reconciler.on("failure", (f) => failures.push(f));
  await reconciler.start();
  await reconciler.idle();

  // What the users were told: who holds which VM. A take answering with a VM someone holds is a double assignment.
  const holders = new Map<string, string>();
  const doubles: string[] = [];
  const refusals: string[] = [];
  const errors: string[] = [];
  let restarted = false;
  let cyclesAfterRestart = 0;
  const user = async (name: string) => {
    for (let cycle = 0; cycle < 40 && !(restarted && cyclesAfterRestart >= 6); cycle++) {
      let vm: string;
      try {
        vm = (await reconciler.take(pool, name)).vm;
      } catch (e) {
        // Refusals (a coded error) are answers; anything else is libvirt being away.
        (code(e) ? refusals : errors).push(`take ${name}: ${(e as Error).message}`);
        await sleep(200);
        continue;
      }
      if (holders.has(vm)) doubles.push(`${vm} given to ${name} while ${holders.get(vm)} held it`);
      holders.set(vm, name);
      await sleep(300);
      // A user whose return failed tries again, as a person would, until it is theirs no more.
      for (;;) {
        try {
          await reconciler.return(pool, vm, { user: name });
          break;
        } catch (e) {
          if (code(e) === "not-held") break;
          errors.push(`return ${name} ${vm}: ${(e as Error).message}`);
          await sleep(300);
        }
      }
      holders.delete(vm);
      if (restarted) cyclesAfterRestart++;
    }
  };
  const users = ["u1", "u2", "u3"].map(user);
  await sleep(3000);
  // Killed while a return is under way (shutting a guest down, or reverting it).
  await until(
    "a return in flight",
    () => reconciler.status().pools[0]!.members.some((m) => m.activity === "return"),
    20_000,
  );
  await restartLibvirtd();
  restarted = true;
  await Promise.all(users);
  expect(doubles).toEqual([]);
  // The loops did run through the restart.
  expect(cyclesAfterRestart).toBeGreaterThanOrEqual(6);

  // Converged: nothing pending, nobody holds anything (every user returned), no member out of
  // service, free members that are down boot a clean disk, one member prestarted.
  await until(
    "convergence",
    async () => {
      await reconciler.idle();
      const status = reconciler.status().pools[0]!;
      return (
        store.pendingIntents().length === 0 &&
        status.members.every((m) => m.problem === undefined && m.activity === undefined) &&
        status.counts.prestarted === 1
      );
    },
    30_000,
  );
  const status = reconciler.status().pools[0]!;
  expect(store.assignments(pool)).toEqual([]);
  expect(status.counts).toMatchObject({ members: 4, held: 0, prestarted: 1 });
  expect(store.conditions()).toEqual([]);
  for (const m of plan.members) {
    // The holder marks in libvirt agree with the store: nobody.
    expect(parseHolderXml((await q.driver.getMetadata(m.name, HOLDER_NAMESPACE)) ?? "") ?? null).toBeNull();
    const state = virsh("domstate", m.name);
    if (state === "shut off") expect(q.marker((await q.overlays(m)).current)).toBe(BASE_MARKER);
    else expect(state).toBe("running");
  }
  await reconciler.stop();
  await events.close();
  store.close();
  // Report what the outage cost (failures while libvirtd was away are expected, and retried).
  console.log(
    `libvirtd restart: ${errors.length} user-visible errors, ${refusals.length} refusals, ` +
      `${failures.length} background failures:\n${[...errors, ...refusals, ...failures.map((f) => `${f.context} ${f.vm}: ${f.error.message}`)].join("\n")}`,
  );
}, 300_000);
