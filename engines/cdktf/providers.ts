import { TerraformAsset, AssetType, TerraformStack } from "cdktf";
import type { Construct } from "constructs";
import { HOST_PROBE_SCRIPT } from "../libvirt-provider/probe";
import { LibvirtProvider } from "../../providers/gen/providers/libvirt/provider";
import { ExternalProvider } from "../../providers/gen/providers/external/provider";
import type { HostRef } from "../../core";

/** Terraform provider alias for a host; host names are already `[A-Za-z0-9._-]`. */
export function providerAlias(host: HostRef): string {
  return `host_${host.name.replace(/[^A-Za-z0-9_]/g, "_")}`;
}

/**
 * One libvirt provider per cluster host, shared by every pool of the stack (found by id, so two
 * pools on the same host do not configure it twice). A host name reused with another URI is an
 * error: it would silently send one pool's VMs to the other host.
 */
export function libvirtProviderFor(scope: Construct, host: HostRef): LibvirtProvider {
  const stack = TerraformStack.of(scope);
  const id = `libvirt-${providerAlias(host)}`;
  const existing = stack.node.tryFindChild(id) as LibvirtProvider | undefined;
  if (existing) {
    if (existing.uri !== host.uri) {
      throw new Error(
        `${scope.node.path}: host "${host.name}" is declared with uri "${host.uri}" here and "${existing.uri}" by another pool; use one URI per host name`,
      );
    }
    return existing;
  }
  return new LibvirtProvider(stack, id, { alias: providerAlias(host), uri: host.uri });
}

/** The hashicorp/external provider, which runs the plan-time host probe. */
export function externalProviderFor(scope: Construct): ExternalProvider {
  const stack = TerraformStack.of(scope);
  return (
    (stack.node.tryFindChild("external") as ExternalProvider | undefined) ?? new ExternalProvider(stack, "external", {})
  );
}

/** The probe script, copied into the stack's assets once and run by `terraform plan`. */
export function hostProbeAsset(scope: Construct): TerraformAsset {
  const stack = TerraformStack.of(scope);
  return (
    (stack.node.tryFindChild("vmpools-host-probe") as TerraformAsset | undefined) ??
    new TerraformAsset(stack, "vmpools-host-probe", {
      path: HOST_PROBE_SCRIPT,
      type: AssetType.FILE,
    })
  );
}
