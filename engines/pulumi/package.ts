// The dmacvicar/libvirt provider as a Pulumi package: Pulumi's terraform-provider plugin,
// parameterized with the provider's registry address and version, which is what
// `pulumi package add terraform-provider dmacvicar/libvirt 0.9.7` sets up. The resources are
// registered here by token, as the SDK that command generates does, so users need no generated
// SDK in their project.
import * as pulumi from "@pulumi/pulumi";

export const LIBVIRT_PROVIDER_VERSION = "0.9.7";
/** The package's resource types, as the plugin names the provider's resources. */
export const LIBVIRT_TYPES = {
  volume: "libvirt:index/volume:Volume",
  domain: "libvirt:index/domain:Domain",
} as const;

/**
 * The terraform-provider plugin version the package names: the one scripts/pulumi-tools.sh
 * builds. The engine uses a plugin on PATH whatever its version; one installed with
 * `pulumi plugin install` must match, so set `vmpools:terraformProviderPluginVersion` to its version.
 */
export const DEFAULT_PLUGIN_VERSION = "3.120.0";

const PARAMETER = {
  remote: { url: "registry.opentofu.org/dmacvicar/libvirt", version: LIBVIRT_PROVIDER_VERSION },
};

/** The package reference of the parameterized libvirt package (registered once per deployment by the SDK). */
export function libvirtPackage(): Promise<string> {
  const version = new pulumi.Config("vmpools").get("terraformProviderPluginVersion") ?? DEFAULT_PLUGIN_VERSION;
  return pulumi.runtime.registerPackage({
    baseProviderName: "terraform-provider",
    baseProviderVersion: version,
    baseProviderDownloadUrl: "",
    packageName: "libvirt",
    packageVersion: LIBVIRT_PROVIDER_VERSION,
    base64Parameter: Buffer.from(JSON.stringify(PARAMETER)).toString("base64"),
  });
}

// The SDK's resource classes are abstract: generated SDKs subclass them, one class per type.
class LibvirtProvider extends pulumi.ProviderResource {}
class LibvirtResource extends pulumi.CustomResource {}

/** An explicit libvirt provider for one host (connection URI). */
export function libvirtProvider(
  name: string,
  uri: string,
  opts: pulumi.CustomResourceOptions,
): pulumi.ProviderResource {
  return new LibvirtProvider(
    "libvirt",
    name,
    { uri },
    // Engine 3.276 records a parameterized provider's `version` input as the package version on
    // the first up and as the plugin's on every later one, which would show a provider update
    // on each second run; the input means nothing to the provider.
    { ...opts, ignoreChanges: [...(opts.ignoreChanges ?? []), "version"] },
    false,
    libvirtPackage(),
  );
}

/** A resource of the libvirt package. */
export function libvirtResource(
  type: (typeof LIBVIRT_TYPES)[keyof typeof LIBVIRT_TYPES],
  name: string,
  inputs: pulumi.Inputs,
  opts: pulumi.CustomResourceOptions,
): pulumi.CustomResource {
  return new LibvirtResource(type, name, inputs, opts, false, libvirtPackage());
}
