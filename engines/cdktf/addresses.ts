import { TerraformStack, type TerraformElement } from "cdktf";
import type { Construct } from "constructs";

/** A Terraform resource name: letters, digits, `_` and `-`, not starting with a digit or `-`. */
export function terraformName(raw: string): string {
  const name = raw.replace(/[^A-Za-z0-9_-]/g, "_");
  return /^[A-Za-z_]/.test(name) ? name : `_${name}`;
}

const claimedByStack = new WeakMap<TerraformStack, Map<string, string>>();

/**
 * Reserves a Terraform name in the stack for `owner` (a construct path), refusing one that
 * another construct already has: cdktf, and Terraform reading two files, would merge or reject
 * the two without naming who wrote them.
 */
export function reserveName(scope: Construct, logicalId: string, owner: string = scope.node.path): void {
  const stack = TerraformStack.of(scope);
  let claimed = claimedByStack.get(stack);
  if (!claimed) {
    claimed = new Map();
    claimedByStack.set(stack, claimed);
  }
  const other = claimed.get(logicalId);
  if (other !== undefined) {
    throw new Error(
      `${owner}: its Terraform name "${logicalId}" is already used by ${other}; ` +
        `give one of the pools (or a construct around it) another id`,
    );
  }
  claimed.set(logicalId, owner);
}

/** Gives a cdktf resource its readable Terraform name (reserved as above). */
export function claimLogicalId(resource: TerraformElement, logicalId: string): void {
  reserveName(resource, logicalId);
  resource.overrideLogicalId(logicalId);
}
