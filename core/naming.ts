/**
 * Member naming exactly as oVirt does it: `MyPool` → `MyPool-1`, `MyPool-2`…;
 * `MyPool-???` → `MyPool-001`… (one run of `?` is replaced by the zero-padded index).
 */

/** libvirt and oVirt both cap VM names; we keep oVirt's 64. */
export const MAX_VM_NAME_LENGTH = 64;

const NAME_CHARS = /^[A-Za-z0-9._?-]+$/;

export interface NameMask {
  readonly pattern: string;
  /** Text before the `?` run (or the whole name plus `-` without a mask). */
  readonly prefix: string;
  readonly suffix: string;
  /** Width of the `?` run; 0 when the name has no mask. */
  readonly width: number;
}

/** Parses a pool name; returns the problem as a string when it is not a valid name. */
export function parseNameMask(pattern: string): NameMask | string {
  if (pattern.length === 0) return 'the pool name is empty; give it a name such as "MyPool"';
  if (!NAME_CHARS.test(pattern)) {
    return "use only letters, digits, '.', '_', '-' and one run of '?' (e.g. \"MyPool-???\")";
  }
  const runs = pattern.match(/\?+/g) ?? [];
  if (runs.length > 1) {
    return "use a single run of '?' as the number placeholder (e.g. \"MyPool-???\"), not several";
  }
  if (runs.length === 0) return { pattern, prefix: `${pattern}-`, suffix: "", width: 0 };
  const at = pattern.indexOf("?");
  const width = runs[0]!.length;
  if (width === pattern.length) {
    return "the name needs at least one character besides '?' (e.g. \"Desk-??\")";
  }
  return { pattern, prefix: pattern.slice(0, at), suffix: pattern.slice(at + width), width };
}

/** Largest member index the mask can express (unbounded without a mask). */
export function maskCapacity(mask: NameMask): number {
  return mask.width === 0 ? Number.POSITIVE_INFINITY : 10 ** mask.width - 1;
}

/** Name of the member with 1-based `index`. Never widens the mask: callers check capacity first. */
export function memberName(mask: NameMask, index: number): string {
  const digits = mask.width === 0 ? String(index) : String(index).padStart(mask.width, "0");
  return `${mask.prefix}${digits}${mask.suffix}`;
}

/** Regular expression matching every member name of a mask; group 1 is the index. */
export function memberNamePattern(mask: NameMask): RegExp {
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const digits = mask.width === 0 ? "([1-9][0-9]*)" : `([0-9]{${mask.width}})`;
  return new RegExp(`^${esc(mask.prefix)}${digits}${esc(mask.suffix)}$`);
}

/**
 * RFC 1123 host label for a VM name: lower case, `_` and `.` become `-`, at most 63 chars.
 * Member names differ only in digits, so the labels stay unique within a pool.
 */
export function hostnameFor(vmName: string): string {
  const label = vmName
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, "-")
    .replace(/^-+/, "")
    .slice(-63)
    .replace(/^-+|-+$/g, "");
  return label.length > 0 ? label : "vm";
}
