// The example Pulumi project (examples/pulumi) through the real pulumi CLI on qemu:///system:
// its own Pulumi.yaml (the project's name, its config keys hostUri, storagePool and size) with a
// stack config as a user sets it, previewed with the terraform-provider plugin and the
// dmacvicar/libvirt stand-in. The program is the example's linuxDesktopPool(), run as an
// Automation API inline program: the CLI cannot launch `runtime: nodejs` itself here, since the
// Node language host (pulumi-language-nodejs) cannot be built (its Go module is not served by
// the module proxy; see scripts/pulumi-tools.sh). Preview only: the example's base image
// does not exist on this machine. Fails, never skips, without libvirtd or the Pulumi tools.
import type { EngineEvent } from "@pulumi/pulumi/automation";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { linuxDesktopPool } from "../../../examples/pulumi/program";
import { ensureLibvirt, virsh } from "../../guest/guest";
import { makeSite, type Site } from "../../deploy/support";
import { closePulumiStacks, openStack, pulumiEnv } from "../../support/pulumi";

const EXAMPLE = path.join(__dirname, "../../../examples/pulumi");
const tag = `${process.pid}-${randomBytes(3).toString("hex")}`;
let site: Site | undefined;
// A stack of its own: its config file is written beside the example's Pulumi.yaml.
const STACK = `example-${tag}`;
let cwd: string;

beforeAll(() => {
  ensureLibvirt();
  pulumiEnv(); // the first build takes minutes on a cold cache
  site = makeSite("pex");
  // The program writes its assets under its working directory (as `pulumi preview` in the
  // project folder would): a temp dir, not the repository.
  cwd = fs.mkdtempSync(path.join(os.tmpdir(), "vmpools-example-cwd-"));
}, 20 * 60_000);

afterAll(async () => {
  try {
    await closePulumiStacks();
  } finally {
    site?.remove();
    if (cwd) fs.rmSync(cwd, { recursive: true, force: true });
  }
}, 5 * 60_000);

test("pulumi preview of the example project creates 3 members, their volumes and the policy volume; no media content in the output", async () => {
  const stack = await openStack({
    project: "linux-desktop-pool",
    stack: STACK,
    workDir: EXAMPLE,
    program: async () => linuxDesktopPool(),
    config: { hostUri: "qemu:///system", storagePool: site!.storagePool, size: "3" },
  });
  // The stack config the example's Pulumi.yaml declares, in the project's namespace.
  expect(await stack.stack.getAllConfig()).toEqual({
    "linux-desktop-pool:hostUri": { value: "qemu:///system", secret: false },
    "linux-desktop-pool:size": { value: "3", secret: false },
    "linux-desktop-pool:storagePool": { value: site!.storagePool, secret: false },
  });

  const seen: EngineEvent[] = [];
  const before = process.cwd();
  process.chdir(cwd);
  let result;
  try {
    // With diff: every input of every resource in the output.
    result = await stack.preview({ diff: true, onEvent: (e) => seen.push(e) });
  } finally {
    process.chdir(before);
  }
  const steps = seen
    .flatMap((e) => (e.resourcePreEvent ? [e.resourcePreEvent.metadata] : []))
    .map((m) => `${m.op} ${m.type} ${m.urn.slice(m.urn.lastIndexOf("::") + 2)}`)
    .sort();
  const members = ["MyPool-001", "MyPool-002", "MyPool-003"];
  expect(steps).toEqual(
    [
      `create pulumi:pulumi:Stack linux-desktop-pool-${STACK}`,
      "create vmpools:index:VmPool MyPool",
      "create pulumi:providers:libvirt MyPool-localhost",
      "create libvirt:index/volume:Volume MyPool-policy-localhost",
      ...members.flatMap((vm) => [
        `create libvirt:index/domain:Domain MyPool-${vm}`,
        `create libvirt:index/volume:Volume MyPool-${vm}-system`,
        `create libvirt:index/volume:Volume MyPool-${vm}-media`,
      ]),
    ].sort(),
  );
  expect(result.changeSummary).toEqual({ create: 13 });

  const text = stack.output.join("");
  // The members' volumes in the storage pool the stack config names.
  for (const vm of members) {
    expect(text).toContain(`name        : "${vm}.qcow2"`);
    expect(text).toContain(`name  : "${vm}-cloud-init.iso"`);
  }
  expect(text).toContain(`pool        : "${site!.storagePool}"`);
  // The example's cloud-init has no password (an SSH key, packages, a command): what must not
  // leak is the media itself. Its upload paths are shown, none of its bytes.
  const assets = path.join(cwd, ".vmpools", `linux-desktop-pool.${STACK}`, "MyPool");
  for (const vm of members) {
    const media = path.join(assets, `${vm}-cloud-init.iso`);
    expect(text).toContain(`url: "${media}"`);
    expect(fs.statSync(media).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(media).toString("latin1")).toContain("support@example.com");
  }
  expect(fs.statSync(assets).mode & 0o777).toBe(0o700);
  for (const content of ["ssh-ed25519", "support@example.com", "firefox-esr", "spice-vdagentd", "#cloud-config"]) {
    expect(text).not.toContain(content);
  }
  // The console passwords are secrets: each domain's graphics, which hold one, are shown as such.
  expect(text.match(/graphics +: \[secret\]/g)).toHaveLength(3);
  expect(text).not.toMatch(/passwd/);

  await stack.close();
  // Nothing was created, and the stack's config file went with the stack.
  expect(virsh("list", "--all", "--name")).not.toContain("MyPool-");
  expect(fs.readdirSync(EXAMPLE).sort()).toEqual(["Pulumi.yaml", "index.ts", "program.ts"]);
}, 300_000);
