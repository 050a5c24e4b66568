// Every kind of pool edit, planned by real Terraform against a pool it applied on qemu:///system
// (provider stand-ins, see test/support/terraform.ts): no edit may update or replace an existing
// member domain or volume. Secrets of a Windows pool never appear in Terraform's output or state.
import * as fs from "node:fs";
import * as path from "node:path";
import { METADATA_NAMESPACE, SysprepConfig, secretFromEnv, type VmPoolProps } from "../../core";
import { ensureLibvirt, virsh } from "../guest/guest";
import { effective, TerraformProject } from "../support/terraform";
import { makeSite, memberChanges, policyChanges, prefixOf, siteProps, stackWith, type Site } from "./support";

let site: Site;
let project: TerraformProject;
const DOMAIN_PASSWORD = `Dom-${process.pid}-pässwörd`;
const ADMIN_PASSWORD = `Adm-${process.pid}-secret`;
const PRODUCT_KEY = "VK7JG-NPHTM-C97JM-9MPGT-3V66T";

const linux = (o: Partial<VmPoolProps> = {}): VmPoolProps =>
  siteProps(site, `${prefixOf(site.id)}L-?`, { size: 2, ...o });

const windows = (): VmPoolProps => ({
  ...linux(),
  name: `${prefixOf(site.id)}W-?`,
  operatingSystem: "windows-server-2022",
  initialRun: {
    sysprep: new SysprepConfig({
      domain: { name: "addomain.local", user: "Sarah_Smith", password: secretFromEnv("VMPOOLS_TEST_JOIN_PASSWORD") },
      localAdministrator: { password: secretFromEnv("VMPOOLS_TEST_ADMIN_PASSWORD") },
      productKey: secretFromEnv("VMPOOLS_TEST_PRODUCT_KEY"),
    }),
  },
});

beforeAll(async () => {
  ensureLibvirt();
  Object.assign(process.env, {
    VMPOOLS_TEST_JOIN_PASSWORD: DOMAIN_PASSWORD,
    VMPOOLS_TEST_ADMIN_PASSWORD: ADMIN_PASSWORD,
    VMPOOLS_TEST_PRODUCT_KEY: PRODUCT_KEY,
  });
  site = makeSite("edit");
  project = new TerraformProject(path.join(site.dir, "project"), "edits");
  project.synth(stackWith(linux(), windows()));
  await project.init();
  await project.apply();
}, 300_000);

afterAll(async () => {
  await project?.destroy({ allowFailure: true });
  site?.remove();
});

const t = () => linux().template;
// Edits are functions: the template's base image path is known only once the site exists.
const edits: [string, () => Partial<VmPoolProps>, "policy" | "none"][] = [
  ["prestarted", () => ({ prestarted: 1 }), "policy"],
  ["maxVmsPerUser", () => ({ maxVmsPerUser: 5 }), "policy"],
  ["SPICE proxy", () => ({ console: { spiceProxy: "https://spice.example.com:443" } }), "policy"],
  ["description", () => ({ description: "for the training room" }), "policy"],
  ["comment", () => ({ comment: "ticket 42" }), "policy"],
  ["pool type", () => ({ type: "manual" }), "policy"],
  ["stateful", () => ({ stateful: true }), "policy"],
  [
    "migration",
    () => ({ host: { migration: { mode: "manual-only", policy: "legacy", autoConverge: "on" } } }),
    "policy",
  ],
  ["delete protection", () => ({ deleteProtection: true }), "policy"],
  ["template version", () => ({ template: { ...t(), version: 2 } }), "policy"],
  [
    "base image",
    () => ({ template: { ...t(), version: 2, baseImagePath: "/var/lib/libvirt/images/other.qcow2" } }),
    "policy",
  ],
  ["memory and vCPUs", () => ({ template: { ...t(), memoryMiB: 256, vcpus: 2 } }), "none"],
  ["machine type", () => ({ template: { ...t(), machine: "pc" } }), "none"],
  [
    "direct kernel boot",
    () => ({ template: { ...t(), directKernelBoot: { kernelPath: "/boot/k", cmdline: "quiet" } } }),
    "none",
  ],
  ["NIC model", () => ({ network: { network: "other", model: "e1000" } }), "none"],
  ["cloud-init", () => ({ initialRun: { cloudInit: { timeZone: "Europe/Berlin", packages: ["htop"] } } }), "none"],
  ["pass-through CPU", () => ({ host: { migration: { mode: "none" }, passThroughHostCpu: true } }), "policy"],
  ["NUMA", () => ({ template: { ...t(), vcpus: 2 }, host: { numa: { nodeCount: 2 } } }), "none"],
  ["optimized for", () => ({ optimizedFor: "server" }), "none"],
];

test.each(edits)(
  "editing %s updates or replaces no member",
  async (_, edit, expected) => {
    project.synth(stackWith(linux(edit()), windows()));
    const { changes } = await project.plan();
    expect(memberChanges(changes)).toEqual([]);
    if (expected === "policy") {
      expect(policyChanges(changes)).toEqual([
        "delete+create libvirt_volume.Pool1_policy_host_localhost",
        "update terraform_data.Pool1_policy_revision",
      ]);
    } else {
      expect(effective(changes)).toEqual([]);
    }
  },
  120_000,
);

test("raising size only creates the new members; changed secrets touch no member", async () => {
  process.env.VMPOOLS_TEST_ADMIN_PASSWORD = `${ADMIN_PASSWORD}-rotated`;
  try {
    project.synth(stackWith(linux({ size: 3 }), windows()));
    const { changes } = await project.plan();
    const m3 = `${prefixOf(site.id)}L-3`;
    expect(memberChanges(changes)).toEqual(
      [
        `create libvirt_domain.Pool1_${m3}_domain`,
        `create libvirt_volume.Pool1_${m3}_media`,
        `create libvirt_volume.Pool1_${m3}_system`,
      ].sort(),
    );
    expect(policyChanges(changes)).toEqual([]);
  } finally {
    process.env.VMPOOLS_TEST_ADMIN_PASSWORD = ADMIN_PASSWORD;
  }
}, 120_000);

test("detaching and shrinking in one deploy forgets the detached member, and only after vmpools detach", async () => {
  const m2 = `${prefixOf(site.id)}L-2`;
  project.synth(stackWith(linux({ size: 1, detached: [m2] }), windows()));
  // Still a member (vmpools detach not run): the plan refuses to forget a VM the reconciler serves.
  await expect(project.plan()).rejects.toThrow(/listed in detached that are\s+still members \(/);
  // What vmpools detach does to the domain: its pool metadata goes.
  virsh("metadata", "--domain", m2, "--uri", METADATA_NAMESPACE, "--remove", "--config");
  const { changes } = await project.plan();
  expect(memberChanges(changes)).toEqual(
    [
      `forget libvirt_domain.Pool1_${m2}_domain`,
      `forget libvirt_volume.Pool1_${m2}_media`,
      `forget libvirt_volume.Pool1_${m2}_system`,
    ].sort(),
  );
}, 120_000);

test("no secret appears in Terraform's output, plan JSON or state", async () => {
  project.synth(stackWith(linux(), windows()));
  await project.plan();
  await project.run(["show", "-no-color"]);
  await project.run(["show", "-json"]);
  const state = fs.readFileSync(path.join(project.dir, "terraform.tfstate"), "utf8");
  // Every Terraform file of the stack (cdk.tf.json and the pools' own files).
  const json = fs
    .readdirSync(project.stackDir)
    .filter((f) => f.endsWith(".tf.json"))
    .map((f) => fs.readFileSync(path.join(project.stackDir, f), "utf8"))
    .join("\n");
  expect(json).toContain("W-1-sysprep.iso");
  // The Windows pool really is in there, with its media.
  expect(state).toContain(`${prefixOf(site.id)}W-1-sysprep.iso`);
  // The console lock (an expired random password) is marked sensitive, so plans never print it.
  const domains = (
    JSON.parse(state) as { resources: { type: string; instances: { sensitive_attributes: unknown }[] }[] }
  ).resources.filter((r) => r.type === "libvirt_domain");
  expect(domains.length).toBeGreaterThan(0);
  for (const d of domains) expect(JSON.stringify(d.instances[0]!.sensitive_attributes)).toContain('"passwd"');
  for (const text of [...project.transcript, state, json]) {
    for (const secret of [DOMAIN_PASSWORD, ADMIN_PASSWORD, PRODUCT_KEY]) expect(text).not.toContain(secret);
  }
}, 120_000);
