// Several real libvirt hosts on this machine, for the cluster tests: each host is a libvirtd +
// virtlogd in its own network, mount and UTS namespace, reached from here over qemu+tcp, and all
// share one dir storage pool, so live migration copies no storage. scripts/test-hosts.sh does the
// work (see its header); this module drives it. The machine's own libvirtd is never touched.
import { execFile, execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";

export const TEST_HOSTS_SCRIPT = path.join(__dirname, "..", "..", "scripts", "test-hosts.sh");
/** Each cluster's folders: `<CLUSTER_ROOT>/<name>/{images,h1,h2,...}`. */
export const CLUSTER_ROOT = "/var/lib/vmpools-cluster";
/** The dir storage pool defined on every host (scripts/test-hosts.sh). */
export const SHARED_STORAGE_POOL = "vmpools-shared";

const execFileAsync = promisify(execFile);

export interface TestHost {
  readonly name: string; // "h1", "h2", ...
  readonly address: string; // its namespace's IPv4 address
  readonly uri: string; // "qemu+tcp://<address>/system"
  readonly hostUuid: string;
  /** Where migration streams to this host go. Its qemu.conf already announces it (migration_host). */
  readonly migrateUri: string;
  /** Its network namespace, as `ip netns` names it (processes in it share /run/netns/<netns>'s inode). */
  readonly netns: string;
  /** Stops this host's libvirtd only (SIGTERM, waits until gone); its guests keep running, as on a real host whose daemon died. */
  stopLibvirtd(): Promise<void>;
  /** Starts it again and waits until it answers (it re-attaches to the running guests). */
  startLibvirtd(): Promise<void>;
  /** One virsh command against this host (throws with virsh's message). */
  virsh(...args: string[]): string;
  /** The pid of the qemu this host runs for `domain` (from its pid file), or undefined when it runs none. */
  qemuPid(domain: string): number | undefined;
}

export interface TestCluster {
  readonly name: string;
  readonly hosts: readonly TestHost[];
  readonly storagePool: string; // the shared dir pool's name on every host
  readonly imageDir: string; // its path
  /** How long `up` took (clean-up of leftovers included). */
  readonly startMs: number;
  host(name: string): TestHost;
  /** Destroys and undefines every domain on the hosts, stops the daemons, removes namespaces, links and folders. */
  close(): Promise<void>;
}

export interface TestClusterOptions {
  /** 1..9 */
  readonly hosts: number;
  /**
   * 1-8 of [a-z0-9]; tests that run at the same time need different names. A run killed before
   * `close` leaves its hosts behind: the next start of the same name removes them first.
   * @default "cluster"
   */
  readonly name?: string;
}

async function runScript(...args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync("bash", [TEST_HOSTS_SCRIPT, ...args], { encoding: "utf8" });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`scripts/test-hosts.sh ${args.join(" ")} failed: ${(err.stderr || err.message).trim()}`);
  }
}

/** One host line of `test-hosts.sh up`: "NAME ADDRESS URI HOST_UUID". */
export function parseHostLine(line: string): { name: string; address: string; uri: string; hostUuid: string } {
  const [name, address, uri, hostUuid, ...rest] = line.trim().split(/\s+/);
  if (!name || !address || !uri || !hostUuid || rest.length > 0) {
    throw new Error(`unexpected host line from scripts/test-hosts.sh up: "${line}"`);
  }
  return { name, address, uri, hostUuid };
}

export async function startTestCluster(options: TestClusterOptions): Promise<TestCluster> {
  const clusterName = options.name ?? "cluster";
  const started = Date.now();
  // A failed start leaves no half-made cluster behind (the caller has nothing to close).
  const out = await runScript("up", clusterName, String(options.hosts)).catch(async (e: unknown) => {
    await runScript("down", clusterName).catch(() => undefined);
    throw e;
  });
  const startMs = Date.now() - started;
  const stateDir = path.join(CLUSTER_ROOT, clusterName);

  const hosts: TestHost[] = out
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map(parseHostLine)
    .map((h) => ({
      ...h,
      migrateUri: `tcp://${h.address}`,
      netns: `vmpools-${clusterName}-${h.name}`,
      stopLibvirtd: async () => {
        await runScript("stop-libvirtd", clusterName, h.name);
      },
      startLibvirtd: async () => {
        await runScript("start-libvirtd", clusterName, h.name);
      },
      virsh: (...args: string[]) =>
        execFileSync("virsh", ["-q", "-c", h.uri, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }),
      qemuPid: (domain: string) => {
        // libvirtd writes it under the host's /run/libvirt, which is <stateDir>/<host>/run here.
        const file = path.join(stateDir, h.name, "run", "qemu", `${domain}.pid`);
        const pid = fs.existsSync(file) ? Number(fs.readFileSync(file, "utf8").trim()) : NaN;
        return Number.isInteger(pid) && pid > 0 && fs.existsSync(`/proc/${pid}`) ? pid : undefined;
      },
    }));
  if (hosts.length !== options.hosts) {
    throw new Error(`scripts/test-hosts.sh up ${clusterName} ${options.hosts} reported ${hosts.length} hosts`);
  }

  return {
    name: clusterName,
    hosts,
    storagePool: SHARED_STORAGE_POOL,
    imageDir: path.join(stateDir, "images"),
    startMs,
    host(name) {
      const found = hosts.find((h) => h.name === name);
      if (!found)
        throw new Error(`no host "${name}" in cluster ${clusterName} (hosts: ${hosts.map((h) => h.name).join(", ")})`);
      return found;
    },
    async close() {
      await runScript("down", clusterName);
    },
  };
}
