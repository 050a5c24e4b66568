// The provider's attribute names as Pulumi names them. The terraform-provider plugin (Pulumi's
// Terraform bridge) camel-cases every name and gives list attributes a plural name; only the
// three lists below have singular names in dmacvicar/libvirt 0.9.7 among the attributes we set.
// test/engines/pulumi/names.test.ts checks every name we send against the schema the real plugin
// serves (`pulumi package get-schema`), so a name missing here fails there.
import * as pulumi from "@pulumi/pulumi";
import type { Attr, Attrs } from "../libvirt-provider/attributes";

const PLURAL: Readonly<Record<string, string>> = { sys_info: "sysInfos", cell: "cells", entry: "entries" };

export const pulumiName = (terraformName: string): string =>
  PLURAL[terraformName] ?? terraformName.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** The attributes with Pulumi's names; undefined values are left out, Outputs passed through. */
export function toPulumiInputs(attrs: Attrs<pulumi.Input<unknown>>): Record<string, pulumi.Input<unknown>> {
  return convert(attrs) as Record<string, pulumi.Input<unknown>>;
}

function convert(value: Attr<pulumi.Input<unknown>>): unknown {
  if (value === null || typeof value !== "object" || pulumi.Output.isInstance(value) || value instanceof Promise) {
    return value;
  }
  if (Array.isArray(value)) return value.map(convert);
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value as Attrs<pulumi.Input<unknown>>)) {
    if (v !== undefined) out[pulumiName(key)] = convert(v);
  }
  return out;
}
