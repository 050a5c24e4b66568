/**
 * A typed `#cloud-config` for Linux pool members, rendered by a small deterministic YAML writer
 * (same input, same bytes), so plans do not churn between synths.
 *
 * Only password hashes are accepted: user-data sits on the member's NoCloud media and in the
 * plan, so a clear-text password there would be readable by anyone who can read either.
 */
import { PoolSpecError, type SpecIssue } from "../errors";

export interface CloudConfigUser {
  /** Login name (lower case, digits, `_`, `-`). */
  readonly name: string;
  /** OpenSSH public keys allowed to log in. @default [] */
  readonly sshAuthorizedKeys?: readonly string[];
  /**
   * crypt(3) hash of the password (`mkpasswd -m sha-512`, or yescrypt `$y$`). Setting it also
   * unlocks password login. @default undefined — password login locked, SSH keys only
   */
  readonly passwordHash?: string;
  /** `true` for passwordless sudo, or a sudoers rule such as "ALL=(ALL) ALL". @default false — no sudo rule */
  readonly sudo?: boolean | string;
  /** Supplementary groups. @default [] */
  readonly groups?: readonly string[];
  /** Login shell. @default undefined — the distribution's default */
  readonly shell?: string;
}

export interface CloudConfigFile {
  /** Absolute path. */
  readonly path: string;
  /** File content (text). */
  readonly content: string;
  /** Octal mode as a string. @default "0644" (cloud-init's default) */
  readonly permissions?: string;
  /** `user` or `user:group`. @default "root:root" */
  readonly owner?: string;
  /** Write after users are created, needed when `owner` is one of `users`. @default false */
  readonly defer?: boolean;
}

export interface CloudConfigProps {
  /** Users to create. @default [] — only the distribution's default user */
  readonly users?: readonly CloudConfigUser[];
  /** Keep the distribution's default user (e.g. `debian`) next to `users`. @default true */
  readonly keepDefaultUser?: boolean;
  /**
   * Hash of the default user's password. cloud-init treats a `password` value as a hash only in
   * the `$5$`, `$6$`, `$2a$`, `$2y$` formats, so only those are accepted here.
   * @default undefined — unchanged
   */
  readonly passwordHash?: string;
  /** DNS domain; members get `fqdn: <hostname>.<domain>`. @default undefined — no fqdn */
  readonly domain?: string;
  /** IANA time zone, e.g. "Europe/Berlin". @default undefined — the image's */
  readonly timeZone?: string;
  /** Packages to install on first boot. @default [] */
  readonly packages?: readonly string[];
  /** Shell commands run once on first boot, in order (seed: custom script). @default [] */
  readonly runCommands?: readonly string[];
  /** Files written on first boot. @default [] */
  readonly writeFiles?: readonly CloudConfigFile[];
  /**
   * Further top-level cloud-config keys, e.g. `{ ssh_pwauth: false }`. Must not repeat keys the
   * typed props generate. @default {}
   */
  readonly extra?: Readonly<Record<string, unknown>>;
}

/** Top-level keys generated from typed props, and the prop to use instead. */
const GENERATED_KEYS: Readonly<Record<string, string>> = {
  hostname: "the member hostname",
  fqdn: "domain",
  preserve_hostname: "the member hostname",
  users: "users",
  password: "passwordHash",
  chpasswd: "passwordHash",
  timezone: "timeZone",
  packages: "packages",
  runcmd: "runCommands",
  write_files: "writeFiles",
};

const REDACTED = "<redacted>";
const MKPASSWD = "generate one with `mkpasswd -m sha-512` (or `openssl passwd -6`)";
const B64 = "[./A-Za-z0-9]";
const SHA_CRYPT = new RegExp(`^\\$(5|6)\\$(?:rounds=[0-9]+\\$)?${B64}{1,16}\\$(${B64}+)$`);
const BCRYPT = new RegExp(`^\\$2[aby]\\$[0-9]{2}\\$${B64}{53}$`);
const YESCRYPT = new RegExp(`^\\$(?:y|gy)\\$${B64}+\\$${B64}*\\$${B64}{43}$`);
const SSH_KEY =
  /^(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp(?:256|384|521)|sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/]+={0,3}(?: [^\r\n]*)?$/;
const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;
const IANA_TIME_ZONE = /^(?:UTC|[A-Za-z][A-Za-z0-9_+-]*(?:\/[A-Za-z0-9_+-]+){1,2})$/;
const DNS_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
// eslint-disable-next-line no-control-regex -- single-line fields refuse every control character
const CONTROL = /[\u0000-\u001F\u007F]/;

/** Which crypt(3) format `hash` is in, or undefined when it is none we accept. */
function hashFormat(hash: string): "sha" | "bcrypt" | "yescrypt" | undefined {
  const sha = SHA_CRYPT.exec(hash);
  if (sha !== null) return sha[2]!.length === (sha[1] === "5" ? 43 : 86) ? "sha" : undefined;
  if (BCRYPT.test(hash)) return "bcrypt";
  return YESCRYPT.test(hash) ? "yescrypt" : undefined;
}

function hashProblem(hash: unknown): string | undefined {
  if (typeof hash !== "string" || hash.length === 0) return `must be a password hash; ${MKPASSWD}`;
  if (hash.startsWith("$1$")) return `is an MD5 hash, which is too weak; ${MKPASSWD}`;
  if (hashFormat(hash) !== undefined) return undefined;
  return hash.startsWith("$")
    ? `is not a complete crypt(3) hash ($6$, $5$, $y$ or $2b$); ${MKPASSWD}`
    : `looks like a clear-text password; only hashes are accepted: ${MKPASSWD}`;
}

/** Every problem in the props; password hashes are redacted. */
export function cloudConfigProblems(props: CloudConfigProps): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const add = (prop: string, value: unknown, message: string) => issues.push({ prop, value, message });
  const line = (prop: string, v: unknown): v is string => {
    if (typeof v === "string" && v.length > 0 && !CONTROL.test(v)) return true;
    add(prop, v, "must be a non-empty single-line string");
    return false;
  };
  const list = <T>(prop: string, v: readonly T[] | undefined): readonly T[] => {
    if (v === undefined) return [];
    if (Array.isArray(v)) return v;
    add(prop, v, "must be a list");
    return [];
  };

  const names = new Set<string>();
  list("users", props.users).forEach((u, i) => {
    const at = `users[${i}]`;
    if (!line(`${at}.name`, u.name)) return;
    if (!USER_NAME.test(u.name) || u.name === "default") {
      add(`${at}.name`, u.name, 'must be 1-32 of a-z, 0-9, "_", "-", starting with a letter or "_" (not "default")');
    } else if (names.has(u.name)) add(`${at}.name`, u.name, "is given twice; each user once");
    names.add(u.name);
    list(`${at}.sshAuthorizedKeys`, u.sshAuthorizedKeys).forEach((key, k) => {
      const prop = `${at}.sshAuthorizedKeys[${k}]`;
      if (typeof key === "string" && /PRIVATE KEY/.test(key)) {
        add(prop, REDACTED, "is a private key; give the public key (the .pub file) and keep the private key secret");
      } else if (typeof key !== "string" || !SSH_KEY.test(key)) {
        add(prop, key, 'must be one OpenSSH public key line, e.g. "ssh-ed25519 AAAA... user@host"');
      }
    });
    if (u.passwordHash !== undefined) {
      const problem = hashProblem(u.passwordHash);
      if (problem !== undefined) add(`${at}.passwordHash`, REDACTED, problem);
    }
    if (u.sudo !== undefined && typeof u.sudo !== "boolean") {
      // A malformed rule in /etc/sudoers.d breaks sudo for every user, so check its shape.
      if (line(`${at}.sudo`, u.sudo) && !/^\S+\s*=\s*\S/.test(u.sudo)) {
        add(`${at}.sudo`, u.sudo, 'must be true or a sudoers rule such as "ALL=(ALL) ALL"');
      }
    }
    list(`${at}.groups`, u.groups).forEach((g, k) => {
      if (typeof g !== "string" || !USER_NAME.test(g))
        add(`${at}.groups[${k}]`, g, 'must be a group name such as "adm"');
    });
    if (u.shell !== undefined && line(`${at}.shell`, u.shell) && !u.shell.startsWith("/")) {
      add(`${at}.shell`, u.shell, 'must be an absolute path such as "/bin/bash"');
    }
  });
  if (props.keepDefaultUser !== undefined && typeof props.keepDefaultUser !== "boolean") {
    add("keepDefaultUser", props.keepDefaultUser, "must be true or false");
  }

  if (props.passwordHash !== undefined) {
    const problem = hashProblem(props.passwordHash);
    if (problem !== undefined) add("passwordHash", REDACTED, problem);
    else if (props.keepDefaultUser === false && props.users?.length) {
      add("passwordHash", REDACTED, "sets the default user's password, but keepDefaultUser is false; set it on a user");
    } else if (hashFormat(props.passwordHash) !== "sha" && !/^\$2[ay]\$/.test(props.passwordHash)) {
      add(
        "passwordHash",
        REDACTED,
        "cloud-init would set this hash format as the literal password of the default user; " +
          "use a $6$ hash (`mkpasswd -m sha-512`) or give the hash to a named user in users",
      );
    }
  }
  if (props.domain !== undefined && line("domain", props.domain) && !DNS_NAME.test(props.domain)) {
    add("domain", props.domain, 'must be a DNS domain such as "example.com"');
  }
  if (props.timeZone !== undefined && line("timeZone", props.timeZone) && !IANA_TIME_ZONE.test(props.timeZone)) {
    add("timeZone", props.timeZone, 'must be an IANA time zone such as "Europe/Berlin" or "UTC"');
  }
  list("packages", props.packages).forEach((p, i) => {
    if (typeof p !== "string" || !/^[A-Za-z0-9][A-Za-z0-9+._:=~-]*$/.test(p)) {
      add(`packages[${i}]`, p, 'must be a package name such as "qemu-guest-agent"');
    }
  });
  list("runCommands", props.runCommands).forEach((c, i) => {
    if (typeof c !== "string" || c.trim() === "") add(`runCommands[${i}]`, c, "must be a non-empty shell command");
  });
  list("writeFiles", props.writeFiles).forEach((f, i) => {
    const at = `writeFiles[${i}]`;
    if (line(`${at}.path`, f.path) && !f.path.startsWith("/")) add(`${at}.path`, f.path, "must be an absolute path");
    if (typeof f.content !== "string") add(`${at}.content`, f.content, "must be a string");
    if (f.permissions !== undefined && !/^0[0-7]{3,4}$/.test(String(f.permissions))) {
      add(`${at}.permissions`, f.permissions, 'must be an octal mode string such as "0644"');
    }
    if (
      f.owner !== undefined &&
      (typeof f.owner !== "string" || !/^[a-z_][a-z0-9_-]*(?::[a-z_][a-z0-9_-]*)?$/.test(f.owner))
    ) {
      add(`${at}.owner`, f.owner, 'must be "user" or "user:group"');
    }
    if (f.defer !== undefined && typeof f.defer !== "boolean") add(`${at}.defer`, f.defer, "must be true or false");
  });

  for (const [key, value] of Object.entries(props.extra ?? {})) {
    if (Object.hasOwn(GENERATED_KEYS, key)) {
      add(`extra.${key}`, "{...}", `is generated; set ${GENERATED_KEYS[key]} instead`);
      continue;
    }
    const problem = yamlValueProblem(value);
    if (problem !== undefined) add(`extra.${key}${problem.path}`, problem.value, problem.message);
  }
  return issues;
}

/**
 * `#cloud-config` user-data for one member. Keys come in a fixed order (typed keys, then `extra`
 * sorted), so equal props give byte-identical output. Throws `PoolSpecError` on invalid props.
 */
export function renderCloudConfig(props: CloudConfigProps, hostname: string): string {
  const issues = cloudConfigProblems(props);
  if (!/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/.test(hostname)) {
    issues.push({ prop: "hostname", value: hostname, message: "must be a lower-case host label (RFC 1123)" });
  }
  if (issues.length > 0) throw new PoolSpecError("cloud-config", issues);

  const config: Record<string, unknown> = { hostname };
  if (props.domain !== undefined) config.fqdn = `${hostname}.${props.domain}`;
  config.preserve_hostname = false;
  if (props.timeZone !== undefined) config.timezone = props.timeZone;
  if (props.users !== undefined && props.users.length > 0) {
    config.users = [
      ...(props.keepDefaultUser === false ? [] : ["default"]),
      ...props.users.map((u) => ({
        name: u.name,
        ...(u.groups?.length ? { groups: u.groups.join(", ") } : {}),
        ...(u.shell !== undefined ? { shell: u.shell } : {}),
        ...(u.sudo === true ? { sudo: "ALL=(ALL) NOPASSWD:ALL" } : typeof u.sudo === "string" ? { sudo: u.sudo } : {}),
        // hashed_passwd (unlike passwd) also applies to users that already exist in the image.
        ...(u.passwordHash !== undefined ? { lock_passwd: false, hashed_passwd: u.passwordHash } : {}),
        ...(u.sshAuthorizedKeys?.length ? { ssh_authorized_keys: u.sshAuthorizedKeys } : {}),
      })),
    ];
  }
  if (props.passwordHash !== undefined) {
    config.password = props.passwordHash;
    // No forced change at first login: members are reverted on return, so it would recur every session.
    config.chpasswd = { expire: false };
  }
  if (props.packages?.length) config.packages = props.packages;
  if (props.writeFiles?.length) {
    config.write_files = props.writeFiles.map((f) => ({
      path: f.path,
      content: f.content,
      ...(f.permissions !== undefined ? { permissions: f.permissions } : {}),
      ...(f.owner !== undefined ? { owner: f.owner } : {}),
      ...(f.defer ? { defer: true } : {}),
    }));
  }
  if (props.runCommands?.length) config.runcmd = props.runCommands;
  // fromEntries defines keys as data properties, so even an extra "__proto__" stays a key.
  const extra = Object.keys(props.extra ?? {})
    .sort()
    .map((key) => [key, sortKeys(props.extra![key])]);
  return `#cloud-config\n${toYaml(Object.fromEntries([...Object.entries(config), ...extra]))}`;
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (isPlainObject(value)) {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, sortKeys(value[k])]),
    );
  }
  return value;
}

// --- YAML ----------------------------------------------------------------------------------------

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;

/** Why `value` cannot be written as YAML: the path below it, the value and the reason. */
function yamlValueProblem(value: unknown, path = ""): { path: string; value: unknown; message: string } | undefined {
  if (value === null || typeof value === "string" || typeof value === "boolean") return undefined;
  if (typeof value === "number") {
    return Number.isFinite(value) ? undefined : { path, value: String(value), message: "must be a finite number" };
  }
  if (Array.isArray(value)) {
    for (const [i, item] of value.entries()) {
      const problem = yamlValueProblem(item, `${path}[${i}]`);
      if (problem !== undefined) return problem;
    }
    return undefined;
  }
  if (isPlainObject(value)) {
    for (const [k, item] of Object.entries(value)) {
      const problem = yamlValueProblem(item, `${path}.${k}`);
      if (problem !== undefined) return problem;
    }
    return undefined;
  }
  return {
    path,
    value: typeof value,
    message: "must be a string, finite number, boolean, null, list or plain object",
  };
}

/** YAML 1.1 words that a plain scalar would turn into booleans or null (cloud-init uses PyYAML). */
const YAML_WORDS = new Set(["y", "n", "yes", "no", "on", "off", "true", "false", "null"]);
/** Plain scalars we emit: a letter, `_` or `/` first; no `:`, `#`, quotes or flow/indicator characters. */
const PLAIN = /^[A-Za-z_/](?:[A-Za-z0-9_./@%+=,~() -]*[A-Za-z0-9_./@%+=,~()-])?$/;
/** Outside what PyYAML reads as printable, plus line separators that YAML 1.1 folds. */
// eslint-disable-next-line no-control-regex -- these are exactly the characters to escape
const NEEDS_ESCAPE = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u2028\u2029\uD800-\uDFFF\uFEFF\uFFFE\uFFFF]/;

function quoted(s: string): string {
  let out = '"';
  for (const ch of s) {
    const code = ch.codePointAt(0)!;
    if (ch === '"' || ch === "\\") out += `\\${ch}`;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\t") out += "\\t";
    else if (code > 0xffff ? false : NEEDS_ESCAPE.test(ch)) out += `\\u${code.toString(16).padStart(4, "0")}`;
    else out += ch;
  }
  return `${out}"`;
}

function scalar(s: string): string {
  return PLAIN.test(s) && !YAML_WORDS.has(s.toLowerCase()) ? s : quoted(s);
}

/** A `|` block scalar for `s`, or undefined when a block cannot carry it exactly. */
function block(s: string, pad: string): string[] | undefined {
  if (!s.includes("\n") || s.includes("\r") || NEEDS_ESCAPE.test(s) || /^[ \t]|^\n/.test(s)) return undefined;
  const trailing = /\n*$/.exec(s)![0].length;
  const body = s.slice(0, s.length - trailing);
  const chomp = trailing === 0 ? "-" : trailing === 1 ? "" : "+";
  const lines = body.split("\n").map((l) => (l === "" ? "" : pad + l));
  return [`|${chomp}`, ...lines, ...Array<string>(Math.max(0, trailing - 1)).fill("")];
}

function number(n: number): string {
  const text = String(n);
  if (!text.includes("e")) return text;
  // PyYAML's float needs a "." before the exponent: 1e+21 → 1.0e+21.
  const [mantissa, exponent] = text.split("e") as [string, string];
  return `${mantissa.includes(".") ? mantissa : `${mantissa}.0`}e${exponent}`;
}

function node(value: unknown, depth: number): { inline: string } | { lines: string[]; header?: string } {
  const pad = "  ".repeat(depth);
  if (value === null) return { inline: "null" };
  if (typeof value === "boolean") return { inline: String(value) };
  if (typeof value === "number") return { inline: number(value) };
  if (typeof value === "string") {
    // A top-level block would need content at column 0; quote it instead.
    const b = depth > 0 ? block(value, pad) : undefined;
    return b === undefined ? { inline: scalar(value) } : { header: b[0], lines: b.slice(1) };
  }
  if (Array.isArray(value)) {
    if (value.length === 0) return { inline: "[]" };
    return { lines: value.flatMap((item) => entry(`${pad}-`, item, depth, true)) };
  }
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length === 0) return { inline: "{}" };
  return { lines: entries.flatMap(([k, v]) => entry(`${pad}${scalar(k)}:`, v, depth, false)) };
}

/** One map entry (`key:`) or list item (`-`) with its value. */
function entry(lead: string, value: unknown, depth: number, listItem: boolean): string[] {
  const child = node(value, depth + 1);
  if ("inline" in child) return [`${lead} ${child.inline}`];
  if (child.header !== undefined) return [`${lead} ${child.header}`, ...child.lines];
  if (listItem) {
    // A collection in a list starts on the dash's line: "- key: v" / "- - item".
    const [first, ...rest] = child.lines;
    return [`${lead} ${first!.trimStart()}`, ...rest];
  }
  return [lead, ...child.lines];
}

/**
 * YAML for strings, finite numbers, booleans, null, lists and plain objects, read back
 * identically by YAML 1.1 (PyYAML, which cloud-init uses) and 1.2 parsers. Strings stay plain
 * only when no parser could take them for anything else; multi-line strings become `|` blocks.
 */
export function toYaml(value: unknown): string {
  const problem = yamlValueProblem(value);
  if (problem !== undefined) throw new Error(`cannot write value${problem.path} as YAML: ${problem.message}`);
  const n = node(value, 0);
  return "inline" in n ? `${n.inline}\n` : `${n.lines.join("\n")}\n`;
}
