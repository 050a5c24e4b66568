import { readFileSync, statSync } from "node:fs";

/**
 * Reads a secret (password, product key) from the environment at synth time, so it never has to
 * be written in stack code. Throws, without the value, when the variable is unset or empty.
 */
export function secretFromEnv(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") {
    throw new Error(`secret ${name} is not set: export ${name}=… (e.g. from your CI's secret store) before synth`);
  }
  return value;
}

/**
 * Reads a secret from a file that only its owner can read (mode 0600 or 0400); one trailing
 * newline is dropped. Refuses group- or world-readable files, as ssh does for keys.
 */
export function secretFromFile(path: string): string {
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch (e) {
    throw new Error(`secret file ${path} cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if ((mode & 0o077) !== 0) {
    throw new Error(
      `secret file ${path} has mode ${mode.toString(8).padStart(4, "0")}; make it private: chmod 600 ${path}`,
    );
  }
  return readFileSync(path, "utf8").replace(/\r?\n$/, "");
}
