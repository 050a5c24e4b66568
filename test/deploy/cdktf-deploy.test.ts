// End to end through real Terraform: the VmPool construct's own output is planned and applied on
// qemu:///system (the provider stand-ins of test/support/terraform.ts: the real dmacvicar/libvirt
// cannot be had here), the tiny real guest boots from it, and the reconciler takes over. Then
// every edit the seed describes, each through a new synth + plan + apply, while users hold
// running members. Fails, never skips, without libvirtd, qemu or Terraform.
import * as fs from "node:fs";
import * as path from "node:path";
import { DEFAULT_HOST, parsePolicyDocument, policyVolumeName, type VmPoolProps } from "../../core";
import { DomainEvents } from "../../reconciler/driver/events";
import { VirshDriver } from "../../reconciler/driver/libvirt-driver";
import { UserLimitError } from "../../reconciler/errors";
import { Reconciler, type Failure } from "../../reconciler/reconciler";
import { StateStore } from "../../reconciler/store/store";
import { ensureGuest, ensureLibvirt, readImageMarker, virsh } from "../guest/guest";
import { eventually } from "../reconciler/support";
import { effective, TerraformProject } from "../support/terraform";
import {
  BASE_MARKER,
  domainFacts,
  LIBVIRT_URI,
  makeSite,
  memberChanges,
  policyChanges,
  prefixOf,
  runtimeFacts,
  stackWith,
  tinyGuestProps,
  POLICY_V2,
  reconcilerFor,
  type Site,
} from "./support";

let site: Site;
let project: TerraformProject;
let driver: VirshDriver;
let events: DomainEvents;
let store: StateStore;
let reconciler: Reconciler;
const failures: Failure[] = [];

const WROTE = "TF-GUEST-WROTE";
let POOL: string;
let member: (i: number) => string;
const overlay = (i: number) => path.join(site.dir, "pool", `${member(i)}.qcow2`);

function props(overrides: Partial<VmPoolProps> = {}): VmPoolProps {
  return tinyGuestProps(site, POOL, WROTE, { ...overrides });
}

const policyV2 = POLICY_V2;

/** Matches `text` in Terraform's output, which wraps long messages at any space. */
const wrapped = (text: string) => new RegExp(text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/ /g, "\\s+"));

async function deploy(p: VmPoolProps): Promise<ReturnType<TerraformProject["plan"]>> {
  project.synth(stackWith(p));
  return project.plan();
}

const policyVolumeXml = () => {
  const file = path.join(site.dir, "policy.xml");
  virsh("vol-download", "--pool", site.storagePool, "--vol", policyVolumeName(POOL, DEFAULT_HOST.name), "--file", file);
  return fs.readFileSync(file, "utf8");
};

beforeAll(async () => {
  ensureLibvirt();
  ensureGuest();
  site = makeSite("e2e");
  POOL = `${prefixOf(site.id)}-?`;
  member = (i) => `${prefixOf(site.id)}-${i}`;
  project = new TerraformProject(path.join(site.dir, "project"), "pool");
  driver = new VirshDriver({ uri: LIBVIRT_URI });
  events = new DomainEvents({ uri: LIBVIRT_URI });
  await events.ready();
  store = StateStore.open(path.join(site.dir, "state.db"));
}, 300_000);

afterAll(async () => {
  await reconciler?.stop();
  store?.close();
  await events?.close();
  await driver?.close();
  site?.remove();
});

test("deploys through Terraform, the reconciler takes over, and a take boots a guest", async () => {
  project.synth(stackWith(props()));
  await project.init();
  const { changes } = await project.plan();
  // 3 domains, 3 overlays, 3 NoCloud media volumes, the policy volume and its revision.
  expect(
    effective(changes)
      .map((c) => `${c.actions.join("+")} ${c.type}`)
      .sort(),
  ).toEqual(
    [
      ...Array(3).fill("create libvirt_domain"),
      ...Array(7).fill("create libvirt_volume"),
      "create terraform_data",
    ].sort(),
  );
  await project.applyPlan();

  for (const i of [1, 2, 3]) {
    expect(virsh("domstate", member(i))).toBe("shut off");
    const vol = virsh("vol-dumpxml", "--pool", site.storagePool, `${member(i)}.qcow2`);
    expect(vol).toContain(`<path>${site.baseImage}</path>`);
    const xml = virsh("dumpxml", member(i));
    expect(xml).toMatch(
      new RegExp(`<disk type='volume' device='cdrom'>[\\s\\S]*?volume='${member(i)}-cloud-init.iso'`),
    );
    expect(xml).toContain(`<source network='${site.network}'`);
  }
  // The policy document on the host is the plan's.
  expect(parsePolicyDocument(policyVolumeXml())!.policy).toMatchObject({ prestarted: 1, maxVmsPerUser: 1 });

  reconciler = reconcilerFor({ driver, store, events, pool: POOL, failures });
  const acts: string[] = [];
  reconciler.on("activity", (a) => acts.push(`${Date.now() % 100000} ${a.kind} ${a.vm}`));
  events.on("lifecycle", (e) => acts.push(`${Date.now() % 100000} event ${e.event} ${e.detail} ${e.domain}`));
  await reconciler.start();
  await eventually(() => expect(virsh("domstate", member(1))).toBe("running"), 30_000).catch((e) => {
    throw new Error(
      `${(e as Error).message}; failures: ${JSON.stringify(failures.map((f) => [f.context, f.vm, f.error.message]))}; status ${JSON.stringify(reconciler.status())}`,
    );
  });

  expect(await reconciler.take(POOL, "alice")).toEqual({ pool: POOL, vm: member(1), started: false });
  // The guest booted from what Terraform created and wrote into its own overlay.
  await eventually(() => expect(readImageMarker(overlay(1), "qcow2", { whileRunning: true })).toBe(WROTE), 60_000);
  await expect(reconciler.take(POOL, "alice")).rejects.toBeInstanceOf(UserLimitError);
  // The replacement prestarted member; the third stays off (prestarted is 1).
  await eventually(() => expect(virsh("domstate", member(2))).toBe("running"), 30_000).catch((e) => {
    throw new Error(
      `${(e as Error).message}; failures: ${JSON.stringify(failures.map((f) => [f.context, f.vm, f.error.message]))}; status ${JSON.stringify(reconciler.status().pools[0]!.members)} acts ${JSON.stringify(acts)}`,
    );
  });
  expect(virsh("domstate", member(3))).toBe("shut off");
}, 300_000);

test("a policy edit replaces only the policy volume: the held member keeps running, the new policy applies", async () => {
  const before = [1, 2, 3].map((i) => domainFacts(member(i)));
  const held = runtimeFacts(member(1));
  expect(held.state).toBe("running");
  const { changes } = await deploy(props(policyV2));
  // The test that fails should any deploy update or replace a member.
  expect(memberChanges(changes)).toEqual([]);
  expect(policyChanges(changes)).toEqual([
    "delete+create libvirt_volume.Pool1_policy_host_localhost",
    "update terraform_data.Pool1_policy_revision",
  ]);
  await project.applyPlan();

  expect([1, 2, 3].map((i) => domainFacts(member(i)))).toEqual(before);
  // Never stopped: same runtime id, still running, still alice's, her write still there.
  expect(runtimeFacts(member(1))).toEqual(held);
  expect(store.holder(POOL, member(1))?.user).toBe("alice");
  expect(readImageMarker(overlay(1), "qcow2", { whileRunning: true })).toBe(WROTE);

  // The reconciler reads the new document: two prestarted, two per user, the new proxy.
  await eventually(
    () => expect(reconciler.status().pools[0]!.policy).toMatchObject({ prestarted: 2, maxVmsPerUser: 2 }),
    10_000,
  );
  await eventually(() => expect(virsh("domstate", member(3))).toBe("running"), 30_000);
  const second = await reconciler.take(POOL, "alice");
  expect([member(2), member(3)]).toContain(second.vm);
  expect(await reconciler.consoleFile(POOL, member(1), "alice")).toContain("proxy=http://proxy-two.vmpools.test:4000");
}, 300_000);

test("raising size adds only the new member; a template edit reaches only members created afterwards", async () => {
  const before = [1, 2, 3].map((i) => domainFacts(member(i)));
  const held = runtimeFacts(member(1));
  const { changes } = await deploy(
    props({ ...policyV2, size: 4, template: { ...props().template, version: 2, memoryMiB: 160 } }),
  );
  expect(memberChanges(changes)).toEqual(
    [
      `create libvirt_domain.Pool1_${member(4)}_domain`,
      `create libvirt_volume.Pool1_${member(4)}_media`,
      `create libvirt_volume.Pool1_${member(4)}_system`,
    ].sort(),
  );
  // The template version is part of the policy (the pool's current template).
  expect(policyChanges(changes)).toHaveLength(2);
  await project.applyPlan();

  expect([1, 2, 3].map((i) => domainFacts(member(i)))).toEqual(before);
  expect(runtimeFacts(member(1))).toEqual(held);
  const newest = virsh("dumpxml", "--inactive", member(4));
  expect(newest).toContain("<memory unit='KiB'>163840</memory>");
  expect(newest).toContain("<entry>vmpools:template-version=2</entry>");
  const oldest = virsh("dumpxml", "--inactive", member(1));
  expect(oldest).toContain("<memory unit='KiB'>196608</memory>");
  expect(oldest).toContain("<entry>vmpools:template-version=1</entry>");
  await eventually(
    () => expect(reconciler.status().pools[0]!.members.map((m) => m.templateVersion)).toEqual([1, 1, 1, 2]),
    10_000,
  );
}, 300_000);

test("lowering size fails the plan; allowShrink removes free members above it, never a held one", async () => {
  const v3 = { ...policyV2, template: { ...props().template, version: 2, memoryMiB: 160 } };
  // alice holds 1 and 2 or 3; bob takes another, so a held member lies above size 2.
  const bob = await reconciler.take(POOL, "bob");
  const aboveHeldByBob = bob.vm === member(3) || bob.vm === member(4);
  expect(aboveHeldByBob).toBe(true);

  project.synth(stackWith(props({ ...v3, size: 2 })));
  await expect(project.plan()).rejects.toThrow(
    wrapped("members above the new size 2; lowering size would destroy them"),
  );

  project.synth(stackWith(props({ ...v3, size: 2, allowShrink: true })));
  await expect(project.plan()).rejects.toThrow(
    wrapped(`that users hold (${bob.vm} (bob)); lowering size would destroy them`),
  );

  await reconciler.return(POOL, bob.vm, { user: "bob" });
  const aliceHeld = store.heldBy("alice", POOL).map((a) => a.vm);
  if (aliceHeld.includes(member(3))) await reconciler.return(POOL, member(3), { user: "alice" });
  const { changes } = await project.plan();
  expect(memberChanges(changes)).toEqual(
    [3, 4]
      .flatMap((i) => [
        `delete libvirt_domain.Pool1_${member(i)}_domain`,
        `delete libvirt_volume.Pool1_${member(i)}_media`,
        `delete libvirt_volume.Pool1_${member(i)}_system`,
      ])
      .sort(),
  );
  await project.applyPlan();
  const names = virsh("list", "--all", "--name");
  expect(names).not.toContain(member(3));
  expect(names).not.toContain(member(4));
  expect(virsh("vol-list", site.storagePool)).not.toContain(`${member(4)}.qcow2`);
  await eventually(() => expect(reconciler.status().pools[0]!.counts.members).toBe(2), 10_000);
  expect(store.holder(POOL, member(1))?.user).toBe("alice");
  expect(virsh("domstate", member(1))).toBe("running");
}, 300_000);

test("a detached member stays as an independent VM through the next deploys", async () => {
  const base = { ...policyV2, prestarted: 0, size: 2, template: { ...props().template, version: 2, memoryMiB: 160 } };
  await deploy(props(base));
  await project.applyPlan();
  await eventually(() => expect(reconciler.status().pools[0]!.policy.prestarted).toBe(0), 10_000);
  const held = store.heldBy("alice", POOL).map((a) => a.vm);
  if (held.includes(member(2))) await reconciler.return(POOL, member(2), { user: "alice" });
  await eventually(() => expect(virsh("domstate", member(2))).toBe("shut off"), 30_000);
  await reconciler.detach(POOL, member(2));

  const { changes } = await deploy(props({ ...base, detached: [member(2)] }));
  expect(memberChanges(changes)).toEqual(
    [
      `forget libvirt_domain.Pool1_${member(2)}_domain`,
      `forget libvirt_volume.Pool1_${member(2)}_media`,
      `forget libvirt_volume.Pool1_${member(2)}_system`,
    ].sort(),
  );
  await project.applyPlan();
  const { stdout } = await project.run(["state", "list"]);
  expect(stdout).not.toContain(member(2));
  // Still there, no longer a member, and no plan wants it back.
  expect(virsh("domstate", member(2))).toBe("shut off");
  expect(virsh("dumpxml", member(2))).not.toContain("https://vmpools.dev/xmlns/pool/1");
  const again = await project.plan();
  expect(effective(again.changes)).toEqual([]);
}, 300_000);

test("delete protection makes destroy fail on every member resource; destroying an unprotected pool leaves nothing behind", async () => {
  const base = {
    ...policyV2,
    prestarted: 0,
    size: 2,
    detached: [member(2)],
    template: { ...props().template, version: 2, memoryMiB: 160 },
  };
  await reconciler.return(POOL, member(1), { user: "alice" });
  // A second, protected pool in the same stack.
  const protectedPool = { ...props(), name: `${prefixOf(site.id)}P-?`, size: 1, prestarted: 0, deleteProtection: true };
  const guarded = `${prefixOf(site.id)}P-1`;
  project.synth(stackWith(props(base), protectedPool));
  await project.plan();
  await project.applyPlan();

  // Terraform refuses the whole destroy while any protected resource is in it, and names it.
  // Each refusal names the protected resource it met first; forgetting it (state rm) shows the
  // next, until every kind has been seen.
  const refusedKinds = new Set<string>();
  for (let round = 0; round < 4; round++) {
    const refused = await project.destroy({ allowFailure: true });
    if (refused.code === 0) break;
    expect(refused.stderr).toMatch(/Instance cannot be destroyed/);
    const named = [
      ...refused.stderr.matchAll(/Resource (libvirt_\w+\.Pool2_[\w-]+) has\s+lifecycle\.prevent_destroy/g),
    ].map((m) => m[1]!);
    expect(named.length).toBeGreaterThan(0);
    // Nothing was destroyed by the refused run.
    expect(virsh("domstate", member(1))).toBe("shut off");
    for (const address of named) {
      refusedKinds.add(/_(domain|system|media)$/.exec(address)![1]!);
      await project.run(["state", "rm", address]);
    }
  }
  expect([...refusedKinds].sort()).toEqual(["domain", "media", "system"]);
  // The protected member was never destroyed.
  expect(virsh("domstate", guarded)).toBe("shut off");
  expect(virsh("vol-list", site.storagePool)).toContain(`${guarded}.qcow2`);

  // The unprotected pool is gone without a trace: domains, overlays, media, policy volume.
  const left = virsh("list", "--all", "--name")
    .split("\n")
    .map((l) => l.trim())
    .filter((n) => n.startsWith(`${prefixOf(site.id)}-`));
  // Only the detached VM, an independent VM now, remains, with its disks.
  expect(left).toEqual([member(2)]);
  const volumes = virsh("vol-list", site.storagePool);
  expect(volumes).not.toContain(`${member(1)}.qcow2`);
  expect(volumes).not.toContain(`${member(1)}-cloud-init.iso`);
  expect(volumes).not.toContain(policyVolumeName(POOL, DEFAULT_HOST.name));
  expect(volumes).toContain(`${member(2)}.qcow2`);
  const { stdout } = await project.run(["state", "list"]);
  expect(stdout.trim()).toBe("");
  await reconciler.idle();
  // The alternate overlay a revert made (reconciler/revert.ts) went with the destroyed member.
  expect(virsh("vol-list", site.storagePool)).not.toContain(`${member(1)}.vmpools-alt`);
  expect(failures).toEqual([]);
  expect(store.pendingIntents()).toEqual([]);
  // Nothing of the guests' writes reached the base image.
  expect(fs.readFileSync(site.baseImage).subarray(0, BASE_MARKER.length).toString("latin1")).toBe(BASE_MARKER);
}, 300_000);
