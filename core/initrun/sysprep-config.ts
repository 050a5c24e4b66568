import { readFileSync } from "node:fs";
import { PoolSpecError } from "../errors";
import { sysprepProblems, type SysprepProps } from "./sysprep";

/**
 * Windows initial-run settings for a pool (oVirt's sysprep): validated when constructed, so a bad
 * config fails where it is written. Engine-neutral: the cdktf construct and the Pulumi component
 * take the same object. Secrets in it end up only on the per-member media files (mode 0600),
 * never in synthesized plans; error messages redact them.
 */
export class SysprepConfig {
  readonly props: SysprepProps;

  constructor(props: SysprepProps) {
    const problems = sysprepProblems(props);
    if (problems.length > 0) throw new PoolSpecError("SysprepConfig", problems);
    this.props = props;
  }

  /**
   * Uses an answer file in oVirt's format (e.g. a copy of oVirt's default sysprep file) with its
   * `$Placeholder$` variables filled from `props`.
   */
  static fromOvirtAnswerFile(path: string, props: Omit<SysprepProps, "customAnswerFile"> = {}): SysprepConfig {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (e) {
      throw new Error(`SysprepConfig: cannot read the answer file ${path}: ${(e as Error).message}`);
    }
    return new SysprepConfig({ ...props, customAnswerFile: text });
  }
}
