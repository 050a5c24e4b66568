// Placement fixed at creation, through real Terraform on two real libvirt hosts
// (test/support/cluster-hosts.ts): a pool deployed on one host, then a second host added to
// cluster.hosts and size raised, plans only the new members' creates (some on the new host) and
// changes or destroys nothing, because the placement record keeps every member where it is.
// Without the record, the host probe fails the plan naming the VM that would get a second domain.
// Both hosts use one shared storage pool (one folder, as live migration needs), where each host
// keeps a policy volume of its own.
// Fails, never skips, without libvirtd, qemu or Terraform.
import * as fs from "node:fs";
import * as path from "node:path";
import {
  homeHost,
  memberName,
  parseNameMask,
  parsePolicyDocument,
  policyVolumeName,
  POLICY_VOLUME_SUFFIX,
  type HostRef,
  type VmPoolProps,
} from "../../core";
import { SHARED_STORAGE_POOL, startTestCluster, type TestCluster } from "../support/cluster-hosts";
import { TerraformProject } from "../support/terraform";
import { memberChanges, policyChanges } from "./support";
import { VmPool } from "../../engines/cdktf";
import { TerraformStack } from "cdktf";

let cluster: TestCluster;
let project: TerraformProject;
let work: string;
let record: string;
let POOL: string;
const STORAGE = SHARED_STORAGE_POOL;

const hostRefs = (n: number): HostRef[] => cluster.hosts.slice(0, n).map((h) => ({ name: h.name, uri: h.uri }));
const member = (i: number) => memberName(parseNameMask(POOL) as Exclude<ReturnType<typeof parseNameMask>, string>, i);

function props(hostCount: number, size: number): VmPoolProps {
  return {
    name: POOL,
    size,
    template: {
      name: "t",
      version: 1,
      baseImagePath: path.join(work, "base.raw"),
      baseImageFormat: "raw",
      diskSizeGiB: 1,
      memoryMiB: 128,
      vcpus: 1,
      domainType: "qemu",
    },
    cluster: { hosts: hostRefs(hostCount) },
    resourceAllocation: { disk: { storagePools: [{ name: STORAGE }] } },
  };
}

function synth(p: VmPoolProps): void {
  project.synth((app, id) => {
    const stack = new TerraformStack(app, id);
    new VmPool(stack, "Pool", { ...p, placementRecordPath: record });
    return stack;
  });
}

const domainsOn = (host: string) =>
  cluster
    .host(host)
    .virsh("list", "--all", "--name")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.startsWith(POOL.replace(/\?+$/, "")))
    .sort();

/** The pool's policy documents in the shared folder, by file name. */
const policyFiles = () =>
  Object.fromEntries(
    fs
      .readdirSync(cluster.imageDir)
      .filter((f) => f.startsWith(POOL.replace(/\?/g, "#")) && f.endsWith(POLICY_VOLUME_SUFFIX))
      .sort()
      .map((f) => [f, parsePolicyDocument(fs.readFileSync(path.join(cluster.imageDir, f), "utf8"))?.policy]),
  );

/** Terraform's output wraps long messages at any space. */
const wrapped = (text: string) => new RegExp(text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/ /g, "\\s+"));

let initial: number;
let grown: number;

beforeAll(async () => {
  cluster = await startTestCluster({ hosts: 2, name: "place" });
  // Under the cluster's folder: the hosts' mount namespaces have /var/lib/libvirt of their own.
  work = fs.mkdtempSync(path.join(path.dirname(cluster.imageDir), "placement-"));
  fs.chmodSync(work, 0o755);
  fs.writeFileSync(path.join(work, "base.raw"), Buffer.alloc(1024 * 1024), { mode: 0o644 });
  POOL = `Place${process.pid % 1000}-??`;
  // Sizes where hashing over both hosts would move an existing member to h2 (so the record is
  // what keeps it), and where a new member goes to h2.
  const both = hostRefs(2);
  const prefersH2 = (i: number) => homeHost(member(i), both).name === "h2";
  initial = 1;
  while (!Array.from({ length: initial }, (_, i) => prefersH2(i + 1)).some(Boolean)) initial++;
  initial = Math.max(initial, 3);
  grown = initial + 1;
  while (!prefersH2(grown)) grown++;
  project = new TerraformProject(path.join(work, "project"), "pool");
  record = path.join(project.dir, "vmpools.placement.json");
}, 300_000);

afterAll(async () => {
  await cluster?.close();
  if (work) fs.rmSync(work, { recursive: true, force: true });
}, 300_000);

test("adding a host and raising size creates only the new members, some on the new host; nothing moves", async () => {
  synth(props(1, initial));
  await project.init();
  const first = await project.plan();
  expect(memberChanges(first.changes).every((c) => c.startsWith("create "))).toBe(true);
  await project.applyPlan();
  const onH1 = Array.from({ length: initial }, (_, i) => member(i + 1));
  expect(domainsOn("h1")).toEqual(onH1);
  expect(JSON.parse(fs.readFileSync(record, "utf8"))).toEqual({
    [POOL]: Object.fromEntries(onH1.map((vm) => [vm, "h1"])),
  });
  expect(Object.keys(policyFiles())).toEqual([policyVolumeName(POOL, "h1")]);

  synth(props(2, grown));
  const recorded = JSON.parse(fs.readFileSync(record, "utf8"))[POOL] as Record<string, string>;
  const added = Array.from({ length: grown - initial }, (_, i) => member(initial + i + 1));
  for (const vm of onH1) expect(recorded[vm]).toBe("h1");
  expect(Object.keys(recorded).sort()).toEqual([...onH1, ...added].sort());
  expect(recorded[member(grown)]).toBe("h2");

  const { changes } = await project.plan();
  // Creates of the new members' domains and volumes only: no update, replace or delete.
  const expected = added
    .flatMap((vm) => {
      const id = `Pool_${vm}`;
      return [`libvirt_domain.${id}_domain`, `libvirt_volume.${id}_system`, `libvirt_volume.${id}_media`];
    })
    .map((a) => `create ${a}`)
    .sort();
  expect(memberChanges(changes)).toEqual(expected);
  // The policy names the allowed hosts, so it is a new document: its volumes are replaced (and
  // the new host gets one), which touches no member (the policy edit of cdktf-deploy.test.ts).
  expect(policyChanges(changes)).toEqual([
    "create libvirt_volume.Pool_policy_host_h2",
    "delete+create libvirt_volume.Pool_policy_host_h1",
    "update terraform_data.Pool_policy_revision",
  ]);
  await project.applyPlan();
  expect(domainsOn("h1")).toEqual([...onH1, ...added.filter((vm) => recorded[vm] === "h1")].sort());
  expect(domainsOn("h2")).toEqual(added.filter((vm) => recorded[vm] === "h2").sort());
  // One policy volume per host in the one shared folder, each the new document (one name for
  // both would be one file: h2's create would fail on it, or a destroy on one host delete both).
  const policies = policyFiles();
  expect(Object.keys(policies)).toEqual([policyVolumeName(POOL, "h1"), policyVolumeName(POOL, "h2")]);
  for (const policy of Object.values(policies)) {
    expect(policy).toMatchObject({ pool: POOL, allowedHosts: ["h1", "h2"] });
  }
}, 600_000);

test("with the record lost, the plan fails naming the VM, where it is and where the plan would create it", async () => {
  fs.rmSync(record);
  synth(props(2, grown));
  // Hashing alone now puts an old member on h2, where the plan would make a second domain.
  const moved = Array.from({ length: initial }, (_, i) => member(i + 1)).filter(
    (vm) => homeHost(vm, hostRefs(2)).name === "h2",
  );
  expect(moved.length).toBeGreaterThan(0);
  const planned = await project.run(["plan", "-no-color"], { allowFailure: true });
  expect(planned.code).not.toBe(0);
  const out = planned.stderr + planned.stdout;
  expect(out).toMatch(wrapped(`Pool ${POOL}: host h1 already has members that the plan would create on another host`));
  for (const vm of moved) expect(out).toMatch(wrapped(`${vm} (planned on h2)`));
  expect(out).toMatch(wrapped("restore vmpools.placement.json from version control"));
  // Nothing was created on the way.
  expect(domainsOn("h2").filter((vm) => moved.includes(vm))).toEqual([]);
}, 600_000);
