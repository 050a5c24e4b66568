// SPICE console tickets and virt-viewer (.vv) files. Pure: the reconciler supplies the facts.
import { RefusalError } from "./refusal";
import { escapeXml } from "../core/xml";
import type { ConsoleOptions } from "./store/store";

/** A console option a user may set (and keep as their default for a pool) and its .vv key. */
export const VV_OPTIONS = {
  fullscreen: { key: "fullscreen", type: "boolean" },
  title: { key: "title", type: "string" },
  enableUsbAutoshare: { key: "enable-usb-autoshare", type: "boolean" },
  enableUsbRedirect: { key: "enable-usbredir", type: "boolean" },
  enableSmartcard: { key: "enable-smartcard", type: "boolean" },
  releaseCursor: { key: "release-cursor", type: "string" },
  toggleFullscreen: { key: "toggle-fullscreen", type: "string" },
  secureAttention: { key: "secure-attention", type: "string" },
} as const;

export type ConsoleOptionName = keyof typeof VV_OPTIONS;
export const CONSOLE_OPTION_NAMES = Object.keys(VV_OPTIONS) as readonly ConsoleOptionName[];

/** Console options that virt-viewer does not know, or of the wrong type. */
export class ConsoleOptionsError extends RefusalError {
  readonly code = "invalid-console-options" as const;
  constructor(readonly problems: readonly string[]) {
    super(`invalid console options: ${problems.join("; ")} (known: ${CONSOLE_OPTION_NAMES.join(", ")})`);
    this.name = "ConsoleOptionsError";
  }
}

export function validateConsoleOptions(options: ConsoleOptions): void {
  const problems: string[] = [];
  for (const [name, value] of Object.entries(options)) {
    const spec = (VV_OPTIONS as Record<string, { type: string }>)[name];
    if (!spec) problems.push(`unknown option ${JSON.stringify(name)}`);
    // Line breaks would start a new .vv key.
    else if (typeof value !== spec.type || (typeof value === "string" && /[\r\n]/.test(value))) {
      problems.push(`${name} must be a single-line ${spec.type}, got ${JSON.stringify(value)}`);
    }
  }
  if (problems.length > 0) throw new ConsoleOptionsError(problems);
}

/**
 * A console option given as text (CLI `--option name=value`) in the type the option takes:
 * booleans from true/false/1/0/yes/no. Unknown names pass through for validation to report.
 */
export function parseConsoleOption(name: string, text: string): string | boolean {
  if ((VV_OPTIONS as Record<string, { type: string }>)[name]?.type !== "boolean") return text;
  const t = text.toLowerCase();
  if (["true", "1", "yes", "on"].includes(t)) return true;
  if (["false", "0", "no", "off"].includes(t)) return false;
  return text;
}

/** libvirt's `passwdValidTo`: UTC without zone or fractions. */
export function libvirtTime(epochMs: number): string {
  return new Date(epochMs).toISOString().slice(0, 19);
}

/**
 * The domain's `<graphics>` element with a new password valid until `validUntilMs`, for
 * `update-device --live`. Everything else stays as the running domain reported it, since
 * libvirt refuses to change listen addresses or ports live.
 */
export function ticketedGraphicsXml(element: string, password: string, validUntilMs: number): string {
  const open = /^<graphics\b[^>]*?(\/?)>/.exec(element)!;
  const kept = open[0]
    .slice(0, open[0].length - (open[1] ? 2 : 1))
    .replace(/\s(passwd|passwdValidTo|connected)\s*=\s*('[^']*'|"[^"]*")/g, "");
  const tag = `${kept} passwd="${escapeXml(password)}" passwdValidTo="${libvirtTime(validUntilMs)}" connected="keep"`;
  return `${tag}${open[1] ? "/>" : ">"}${element.slice(open[0].length)}`;
}

export interface VvFile {
  readonly host: string;
  readonly port?: number;
  readonly tlsPort?: number;
  readonly password: string;
  /** The pool's SPICE proxy override, `protocol://host:port`. */
  readonly proxy?: string;
  readonly title: string;
  readonly options: ConsoleOptions;
}

/** A virt-viewer connection file; virt-viewer deletes it once read (`delete-this-file`). */
export function renderVvFile(f: VvFile): string {
  const lines = ["[virt-viewer]", "type=spice", `host=${f.host}`];
  if (f.port !== undefined) lines.push(`port=${f.port}`);
  if (f.tlsPort !== undefined) lines.push(`tls-port=${f.tlsPort}`);
  lines.push(`password=${f.password}`, "delete-this-file=1");
  if (f.proxy !== undefined) lines.push(`proxy=${f.proxy}`);
  const values: Record<string, string> = { title: f.title };
  for (const [name, value] of Object.entries(f.options)) {
    const key = VV_OPTIONS[name as ConsoleOptionName].key;
    values[key] = typeof value === "boolean" ? (value ? "1" : "0") : String(value);
  }
  for (const [key, value] of Object.entries(values)) lines.push(`${key}=${value}`);
  return lines.join("\n") + "\n";
}
