// The real Pulumi engine on qemu:///system, offline: the CLI and the parameterized
// terraform-provider plugin built by scripts/pulumi-tools.sh, the libvirt provider stand-in as the
// plugin's Terraform provider, one volume through an explicit provider in a storage pool made with
// virsh (a deploy-test site). up creates it, preview and a second up change nothing, destroy removes it, and the CLI
// never tries to download a plugin. Fails, never skips, without libvirtd or the tools.
import * as pulumi from "@pulumi/pulumi";
import { randomBytes } from "node:crypto";
import * as path from "node:path";
import { ensureLibvirt, virsh } from "../../guest/guest";
import { makeSite, type Site } from "../../deploy/support";
import { closePulumiStacks, openStack, pulumiEnv, type PulumiStack } from "../../support/pulumi";

// What `pulumi package add terraform-provider dmacvicar/libvirt 0.9.7` puts in a generated SDK's
// getPackage(), inline for this test: the product's own version lives in engines/pulumi.
// baseProviderVersion is the plugin's (scripts/pulumi-tools.sh's plugin_version); the engine
// runs the plugin on PATH whatever version is asked for.
const libvirtPackage = () =>
  pulumi.runtime.registerPackage({
    baseProviderName: "terraform-provider",
    baseProviderVersion: "3.120.0",
    baseProviderDownloadUrl: "",
    packageName: "libvirt",
    packageVersion: "0.9.7",
    base64Parameter: Buffer.from(
      JSON.stringify({ remote: { url: "registry.opentofu.org/dmacvicar/libvirt", version: "0.9.7" } }),
    ).toString("base64"),
  });

class LibvirtProvider extends pulumi.ProviderResource {
  constructor(name: string, args: { uri: pulumi.Input<string> }, opts: pulumi.ResourceOptions) {
    super("libvirt", name, args, opts, false, libvirtPackage());
  }
}

class Volume extends pulumi.CustomResource {
  // `declare`: with ES2022 class fields a plain field would overwrite the output that the
  // CustomResource constructor set.
  declare readonly path: pulumi.Output<string>;
  declare readonly key: pulumi.Output<string>;

  constructor(name: string, args: Record<string, pulumi.Input<unknown>>, opts: pulumi.CustomResourceOptions) {
    // Outputs are named with undefined inputs, as generated SDKs do.
    super(
      "libvirt:index/volume:Volume",
      name,
      { ...args, key: undefined, path: undefined },
      opts,
      false,
      libvirtPackage(),
    );
  }
}

const VOLUME = `vol-${process.pid}-${randomBytes(3).toString("hex")}.qcow2`;
let site: Site | undefined;
let stack: PulumiStack;

const program = async () => {
  // Engine 3.276.0 gives an explicit provider of a parameterized package the package's version
  // (0.9.7) as its "version" input on the first up and the plugin's (3.120.0) on later ones,
  // which would show as a provider update; ignoreChanges keeps the first.
  const provider = new LibvirtProvider("qemu", { uri: "qemu:///system" }, { ignoreChanges: ["version"] });
  // The stand-in refuses libvirt_pool (schema only): the storage pool is virsh's.
  const volume = new Volume(
    "volume",
    { name: VOLUME, pool: site!.storagePool, capacity: 1 << 20, target: { format: { type: "qcow2" } } },
    { provider },
  );
  return { path: volume.path, key: volume.key };
};

const volumeInfo = () => virsh("vol-info", "--pool", site!.storagePool, VOLUME);

beforeAll(async () => {
  ensureLibvirt();
  pulumiEnv(); // the first build takes minutes on a cold cache
  site = makeSite("peng");
  stack = await openStack({ project: "vmpools-engine-test", program });
}, 20 * 60_000);

afterAll(async () => {
  try {
    await closePulumiStacks();
  } finally {
    site?.remove();
  }
}, 5 * 60_000);

test("up creates the volume through an explicit provider", async () => {
  const up = await stack.up();
  // The stack, the provider and the volume.
  expect(up.summary.resourceChanges).toEqual({ create: 3 });
  expect(up.outputs.path?.value).toBe(path.join(site!.dir, "pool", VOLUME));
  expect(volumeInfo()).toMatch(/^Capacity:\s+1\.00 MiB$/m);
}, 120_000);

test("preview and a second up change nothing", async () => {
  const preview = await stack.preview();
  expect(preview.changeSummary).toEqual({ same: 3 });
  const up = await stack.up();
  expect(up.summary.resourceChanges).toEqual({ same: 3 });
}, 120_000);

test("destroy removes the volume", async () => {
  const destroyed = await stack.destroy();
  expect(destroyed.summary.resourceChanges).toEqual({ delete: 3 });
  expect(volumeInfo).toThrow(/Storage volume not found/);
}, 120_000);

test("the CLI ran the built plugin and downloaded nothing", () => {
  const text = stack.output.join("");
  expect(text).toContain(`using pulumi-resource-terraform-provider from $PATH at ${pulumiEnv().VMPOOLS_PULUMI_BIN}/`);
  // Plugin acquisition (get.pulumi.com, GitHub releases), and the plugin asking a Terraform
  // registry for the provider when its OpenTofu plugin cache does not have it.
  expect(text).not.toMatch(
    /downloading|get\.pulumi\.com|api\.github\.com|registry\.opentofu\.org|registry\.terraform\.io/i,
  );
});
