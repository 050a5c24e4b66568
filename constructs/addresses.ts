import { TerraformStack, type TerraformElement } from "cdktf";
import type { Construct } from "constructs";

/** A Terraform resource name: letters, digits, `_` and `-`, not starting with a digit or `-`. */
export function terraformName(raw: string): string {
  const name = raw.replace(/[^A-Za-z0-9_-]/g, "_");
  return /^[A-Za-z_]/.test(name) ? name : `_${name}`;
}

const claimedByStack = new WeakMap<TerraformStack, Map<string, string>>();

/**
 * Gives a resource its readable Terraform name, refusing one that another construct of the
 * stack already has: cdktf would merge the two into one resource without a word.
 */
export function claimLogicalId(resource: TerraformElement, logicalId: string): void {
  const stack = TerraformStack.of(resource);
  let claimed = claimedByStack.get(stack);
  if (!claimed) {
    claimed = new Map();
    claimedByStack.set(stack, claimed);
  }
  const other = claimed.get(logicalId);
  if (other !== undefined) {
    throw new Error(
      `${resource.node.path}: its Terraform name "${logicalId}" is already used by ${other}; ` +
        `give one of the pools (or a construct around it) another id`,
    );
  }
  claimed.set(logicalId, resource.node.path);
  resource.overrideLogicalId(logicalId);
}

/** `removed` blocks of each stack, gathered from every pool of it. */
const removedByStack = new WeakMap<TerraformStack, { from: string; lifecycle: { destroy: false } }[]>();

/**
 * Makes Terraform forget resources without destroying them (`removed { from = …, lifecycle {
 * destroy = false } }`, Terraform ≥ 1.7). cdktf has no construct for the block, so it is written
 * as a stack override; all pools of a stack share the one list.
 */
export function forgetResources(scope: Construct, addresses: readonly string[]): void {
  if (addresses.length === 0) return;
  const stack = TerraformStack.of(scope);
  let blocks = removedByStack.get(stack);
  if (!blocks) {
    blocks = [];
    removedByStack.set(stack, blocks);
  }
  blocks.push(...addresses.map((from) => ({ from, lifecycle: { destroy: false as const } })));
  stack.addOverride("removed", blocks);
}
