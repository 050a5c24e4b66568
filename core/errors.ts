/** One problem found in pool props: which prop, the bad value, what is wrong and how to fix it. */
export interface SpecIssue {
  /** Dotted prop path, e.g. `host.numa.nodeCount`. */
  readonly prop: string;
  /** The offending value, already redacted when the prop holds a secret. */
  readonly value: unknown;
  /** What is wrong and how to fix it, as one sentence or two. */
  readonly message: string;
}

/** Thrown by `planPool` with every problem found, so users fix them in one round. */
export class PoolSpecError extends Error {
  constructor(
    readonly subject: string,
    readonly issues: readonly SpecIssue[],
  ) {
    super(
      `${subject}: invalid pool definition\n` +
        issues.map((i) => `  - ${i.prop} = ${show(i.value)}: ${i.message}`).join("\n"),
    );
    this.name = "PoolSpecError";
  }
}

/** Renders a value for an error message; long strings are shortened, never expanded. */
export function show(value: unknown): string {
  if (value === undefined) return "undefined";
  const text = typeof value === "string" ? JSON.stringify(value) : (JSON.stringify(value) ?? String(value));
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}

/** Collects issues while validating; `throwIfAny` raises them together. */
export class IssueCollector {
  private readonly found: SpecIssue[] = [];
  add(prop: string, value: unknown, message: string): void {
    this.found.push({ prop, value, message });
  }
  get issues(): readonly SpecIssue[] {
    return this.found;
  }
  throwIfAny(subject: string): void {
    if (this.found.length > 0) throw new PoolSpecError(subject, this.found);
  }
}
