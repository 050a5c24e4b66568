/**
 * Windows sysprep answer files for pool members: an Unattend.xml generated from typed props, or
 * an administrator's answer file in oVirt's `$Placeholder$` format filled in per member.
 *
 * Pools boot generalized templates (`sysprep /generalize /oobe`), so only the `specialize` and
 * `oobeSystem` passes run on a member; they find the answer file at the root of removable media.
 * The template must not keep a cached answer file in `%WINDIR%\Panther`: Windows searches there
 * before removable media.
 */
import { PoolSpecError, type SpecIssue } from "../errors";
import type { OperatingSystem } from "../spec";
import { escapeXml } from "../xml";

export type WindowsVersion = Exclude<OperatingSystem, "linux">;

/** Joining an Active Directory domain in the specialize pass (Microsoft-Windows-UnattendedJoin). */
export interface SysprepDomainJoin {
  /** Domain to join, e.g. `addomain.local`. */
  readonly name: string;
  /** Account allowed to join machines, e.g. `Sarah_Smith`. */
  readonly user: string;
  /** That account's password. Written in clear text on the member's sysprep media. */
  readonly password: string;
  /** Organizational unit for the computer objects. @default undefined — the domain's default container */
  readonly machineObjectOU?: string;
}

/** The local administrator account created on each member. */
export interface SysprepLocalAdministrator {
  /** Account name (seed: "User Name"). @default "user" */
  readonly name?: string;
  /** Registered owner of the installation. @default undefined — no RegisteredOwner */
  readonly fullName?: string;
  /** Name shown on the sign-in screen. @default the account name */
  readonly displayName?: string;
  /** Password; on servers also the built-in Administrator's (server OOBE asks for it). */
  readonly password: string;
  /** Local group to add the account to; localized Windows images name it differently. @default "Administrators" */
  readonly group?: string;
}

export interface SysprepProps {
  /** Product key put on every member; "" keeps the key already in the template. @default "" */
  readonly productKey?: string;
  /** Join an Active Directory domain. @default undefined — stay in a workgroup */
  readonly domain?: SysprepDomainJoin;
  /**
   * Local administrator. Required unless `customAnswerFile` creates accounts: without it the
   * first boot stops at OOBE's account (clients) or Administrator password (servers) page.
   * @default undefined
   */
  readonly localAdministrator?: SysprepLocalAdministrator;
  /** Windows time zone ID (`tzutil /l`), e.g. "W. Europe Standard Time". @default "UTC" */
  readonly timeZone?: string;
  /** Keyboard layout(s): a locale or `0409:00000409`, `;`-separated. @default "en-US" */
  readonly inputLocale?: string;
  /** Formats for dates, numbers and currency. @default "en-US" */
  readonly userLocale?: string;
  /** Language for non-Unicode programs. @default "en-US" */
  readonly systemLocale?: string;
  /** Display language; must be installed in the template. @default "en-US" */
  readonly uiLanguage?: string;
  /** Registered organization. @default undefined — none */
  readonly organizationName?: string;
  /**
   * Computer name of each member; one run of `#` is the zero-padded member index, e.g.
   * `DESK-###` → `DESK-001`. @default derived from the VM name (upper case, only letters,
   * digits and hyphens), which must then fit in 15 characters
   */
  readonly computerNamePattern?: string;
  /**
   * An answer file in oVirt's format (seed: "Custom Script") with `$ProductKey$`,
   * `$AdminPassword$`, `$ComputerName$`… filled from the props above. Replaces the generated one.
   * @default undefined — generate the answer file
   */
  readonly customAnswerFile?: string;
  /** Device the answer file is attached on. @default "cdrom" */
  readonly media?: "cdrom" | "floppy";
}

/** Values for oVirt's fourteen answer file placeholders (empty string when not set). */
export interface OvirtValues {
  readonly productKey: string;
  readonly adminPassword: string;
  readonly computerName: string;
  readonly joinDomain: string;
  readonly domainAdmin: string;
  readonly domainAdminPassword: string;
  readonly machineObjectOU: string;
  readonly timeZone: string;
  readonly orgName: string;
  readonly inputLocale: string;
  readonly userLocale: string;
  readonly systemLocale: string;
  readonly uiLanguage: string;
  readonly setupUiLanguageUiLanguage: string;
}

const PLACEHOLDERS: Readonly<Record<string, keyof OvirtValues>> = {
  ProductKey: "productKey",
  AdminPassword: "adminPassword",
  ComputerName: "computerName",
  JoinDomain: "joinDomain",
  DomainAdmin: "domainAdmin",
  DomainAdminPassword: "domainAdminPassword",
  MachineObjectOU: "machineObjectOU",
  TimeZone: "timeZone",
  OrgName: "orgName",
  InputLocale: "inputLocale",
  UserLocale: "userLocale",
  SystemLocale: "systemLocale",
  UILanguage: "uiLanguage",
  SetupUiLanguageUiLanguage: "setupUiLanguageUiLanguage",
};

/**
 * Client OOBE asks for a new local account and shows Microsoft-account, wireless and privacy
 * pages; server OOBE shows only the license and the built-in Administrator's password.
 * SkipMachineOOBE/SkipUserOOBE are deprecated since Windows 8, so no version gets them.
 */
const EDITION: Readonly<Record<WindowsVersion, "client" | "server">> = {
  "windows-10": "client",
  "windows-11": "client",
  "windows-server-2016": "server",
  "windows-server-2019": "server",
  "windows-server-2022": "server",
  "windows-server-2025": "server",
};

const DEFAULT_LOCAL_ADMINISTRATOR = "user";
const DEFAULT_WINDOWS_TIME_ZONE = "UTC";
const DEFAULT_WINDOWS_LOCALE = "en-US";
/** NetBIOS limit; Windows truncates longer names, which would make members collide. */
const MAX_COMPUTER_NAME_LENGTH = 15;

const UNATTEND_NS = "urn:schemas-microsoft-com:unattend";
const WCM_NS = "http://schemas.microsoft.com/WMIConfig/2002/State";
const XSI_NS = "http://www.w3.org/2001/XMLSchema-instance";
const REDACTED = "<redacted>";
const PATTERN_EXAMPLE = 'set sysprep computerNamePattern such as "DESK-###"';

/** Characters XML 1.0 cannot carry, not even as character references. */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const XML_INVALID = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|\p{Cs}/u;
// eslint-disable-next-line no-control-regex -- single-line fields refuse every control character
const CONTROL = /[\u0000-\u001F\u007F]/;
const PLACEHOLDER = /\$([A-Za-z][A-Za-z0-9]*)\$/g;
const LOCALE = "[a-z]{2,3}(?:-[a-z]{4})?-(?:[a-z]{2}|[0-9]{3})";
const LOCALE_RE = new RegExp(`^${LOCALE}$`, "i");
/** A locale or a `language:keyboard` hex pair, up to a `;`-separated list. */
const INPUT_LOCALE_RE = new RegExp(
  `^(?:${LOCALE}|[0-9a-f]{4}:[0-9a-f]{8})(?:;(?:${LOCALE}|[0-9a-f]{4}:[0-9a-f]{8}))*$`,
  "i",
);
const DNS_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const DISTINGUISHED_NAME = /^(?:(?:OU|CN)=[^,=]+,)+DC=[^,=]+(?:,DC=[^,=]+)*$/i;
/** Windows time zone IDs are words, digits, `.`, `+`, `-` (e.g. "UTC-02", "W. Europe Standard Time"). */
const WINDOWS_TIME_ZONE = /^[A-Za-z0-9][A-Za-z0-9 .+-]{0,63}$/;
/** Characters a local account name must not contain. */
const ACCOUNT_FORBIDDEN = /["/\\[\]:|<>+=;,?*%@]/;

// --- computer names -----------------------------------------------------------------------------

/** Why `name` cannot be a Windows computer name (without the fix), or undefined. */
function computerNameReason(name: string): string | undefined {
  if (name.length === 0) return "is empty";
  if (!/^[A-Za-z0-9-]+$/.test(name)) {
    return 'may contain only letters, digits and hyphens (no "_", ".", spaces or other symbols)';
  }
  if (name.length > MAX_COMPUTER_NAME_LENGTH) {
    return (
      `is ${name.length} characters, but Windows computer names are at most ${MAX_COMPUTER_NAME_LENGTH} ` +
      `(truncating would make members collide)`
    );
  }
  if (/^[0-9]+$/.test(name)) return "cannot be all digits";
  if (name.startsWith("-") || name.endsWith("-")) return "must not start or end with a hyphen";
  return undefined;
}

/** Why `name` cannot be a Windows computer name and how to fix it; undefined when it can. */
export function computerNameProblem(name: string): string | undefined {
  const reason = computerNameReason(name);
  return reason === undefined ? undefined : `${reason}; ${PATTERN_EXAMPLE}`;
}

/**
 * Computer name of the member with 1-based `index`: from `pattern` (one run of `#` becomes the
 * zero-padded index) or derived from the VM name. Throws rather than widen a pattern or
 * truncate a name, as both could give two members the same name.
 */
export function computerNameFor(vmName: string, index: number, pattern?: string): string {
  if (!Number.isInteger(index) || index < 1) throw new Error(`member index must be an integer >= 1, got ${index}`);
  let name: string;
  if (pattern !== undefined) {
    const run = /#+/.exec(pattern);
    if (run === null) throw new Error(`computerNamePattern "${pattern}" needs one run of '#' for the member index`);
    const digits = String(index).padStart(run[0].length, "0");
    if (digits.length > run[0].length) {
      throw new Error(
        `member ${index} does not fit computerNamePattern "${pattern}" (at most ${10 ** run[0].length - 1} ` +
          `members); use ${"#".repeat(digits.length)} in the pattern`,
      );
    }
    name = pattern.slice(0, run.index) + digits + pattern.slice(run.index + run[0].length);
  } else {
    name = vmName
      .replace(/[^A-Za-z0-9-]/g, "")
      .toUpperCase()
      .replace(/^-+|-+$/g, "");
  }
  const problem = computerNameProblem(name);
  if (problem !== undefined) {
    const from = pattern !== undefined ? `pattern "${pattern}"` : `VM "${vmName}"`;
    throw new Error(`computer name "${name}" (from ${from}) ${problem}`);
  }
  return name;
}

// --- validation ----------------------------------------------------------------------------------

/** Every problem in the props; values of secret props are redacted. */
export function sysprepProblems(props: SysprepProps): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const add = (prop: string, value: unknown, message: string) => issues.push({ prop, value, message });
  const line = (prop: string, v: unknown, required: boolean, max = 256): v is string => {
    if (v === undefined && !required) return false;
    if (typeof v !== "string" || v.length === 0) add(prop, v, "is required: give a non-empty string");
    else if (CONTROL.test(v) || v.length > max) add(prop, v, `must be one line of at most ${max} printable characters`);
    else return true;
    return false;
  };
  const secret = (prop: string, v: unknown) => {
    if (typeof v !== "string" || v.length === 0) add(prop, v === undefined ? v : REDACTED, "is required");
    else if (XML_INVALID.test(v)) add(prop, REDACTED, "contains control characters an answer file cannot carry");
  };

  if (props.productKey !== undefined && props.productKey !== "") {
    if (typeof props.productKey !== "string" || !/^[A-Z0-9]+(?:-[A-Z0-9]+)*$/.test(props.productKey)) {
      add(
        "productKey",
        REDACTED,
        'must be upper-case letters and digits in hyphen-separated groups, e.g. "XXXXX-XXXXX-XXXXX-XXXXX-XXXXX", ' +
          'or "" to keep the template\'s key',
      );
    }
  }

  const d = props.domain;
  if (d !== undefined) {
    if (line("domain.name", d.name, true) && !DNS_NAME.test(d.name)) {
      add("domain.name", d.name, 'must be a domain name such as "addomain.local"');
    }
    line("domain.user", d.user, true);
    secret("domain.password", d.password);
    if (line("domain.machineObjectOU", d.machineObjectOU, false) && !DISTINGUISHED_NAME.test(d.machineObjectOU)) {
      add(
        "domain.machineObjectOU",
        d.machineObjectOU,
        'must be the distinguished name of an OU, e.g. "OU=Pools,DC=addomain,DC=local"',
      );
    }
  }

  const a = props.localAdministrator;
  if (a !== undefined) {
    const name = a.name ?? DEFAULT_LOCAL_ADMINISTRATOR;
    if (line("localAdministrator.name", name, true, 20)) {
      if (ACCOUNT_FORBIDDEN.test(name) || /^\s|\s$/.test(name) || name.toUpperCase() === "NONE") {
        add(
          "localAdministrator.name",
          name,
          'must not contain any of " / \\ [ ] : | < > + = ; , ? * % @, start or end with a space, or be "NONE"',
        );
      } else if (name.toLowerCase() === "administrator") {
        add(
          "localAdministrator.name",
          name,
          "is the built-in account, which sysprep does not create; choose another name " +
            "(servers also set the built-in Administrator's password from localAdministrator.password)",
        );
      }
    }
    line("localAdministrator.fullName", a.fullName, false);
    line("localAdministrator.displayName", a.displayName, false);
    line("localAdministrator.group", a.group, false);
    secret("localAdministrator.password", a.password);
  } else if (props.customAnswerFile === undefined) {
    add(
      "localAdministrator",
      undefined,
      "is required without customAnswerFile: otherwise each member's first boot waits at the account page " +
        '(clients) or the Administrator password page (servers); give e.g. { password: "..." }',
    );
  }

  if (line("timeZone", props.timeZone, false) && !WINDOWS_TIME_ZONE.test(props.timeZone)) {
    add(
      "timeZone",
      props.timeZone,
      'must be a Windows time zone ID as listed by `tzutil /l`, e.g. "UTC" or "W. Europe Standard Time" ' +
        '(not an IANA name like "Europe/Berlin")',
    );
  }
  for (const prop of ["userLocale", "systemLocale", "uiLanguage"] as const) {
    if (line(prop, props[prop], false) && !LOCALE_RE.test(props[prop])) {
      add(prop, props[prop], 'must be a locale such as "en-US" or "de-DE"');
    }
  }
  if (line("inputLocale", props.inputLocale, false) && !INPUT_LOCALE_RE.test(props.inputLocale)) {
    add("inputLocale", props.inputLocale, 'must be locales or keyboard IDs such as "en-US" or "0409:00000409;de-DE"');
  }
  line("organizationName", props.organizationName, false);

  const pattern = props.computerNamePattern;
  if (line("computerNamePattern", pattern, false)) {
    const runs = pattern.match(/#+/g) ?? [];
    if (runs.length !== 1) {
      add("computerNamePattern", pattern, 'needs exactly one run of "#" for the member index, e.g. "DESK-###"');
    } else {
      const sample = pattern.replace(/#+/, (run) => "1".padStart(run.length, "0"));
      const reason = computerNameReason(sample);
      if (reason !== undefined) add("computerNamePattern", pattern, `gives names such as "${sample}", which ${reason}`);
    }
  }

  const custom = props.customAnswerFile;
  if (custom !== undefined) {
    // The file may hold hard-coded passwords (the seed's domain example does), so it is never shown.
    if (typeof custom !== "string") add("customAnswerFile", REDACTED, "must be the answer file's text");
    else {
      const problem = answerFileProblem(custom);
      if (problem !== undefined) add("customAnswerFile", REDACTED, problem);
      const used = placeholdersIn(custom);
      const sources: [string, unknown, string][] = [
        ["AdminPassword", a, "localAdministrator"],
        ["JoinDomain", d, "domain"],
        ["DomainAdmin", d, "domain"],
        ["DomainAdminPassword", d, "domain"],
      ];
      for (const [placeholder, source, prop] of sources) {
        if (used.has(placeholder) && source === undefined) {
          add(
            "customAnswerFile",
            REDACTED,
            `uses $${placeholder}$ but ${prop} is not set; set it or write the value in the file`,
          );
        }
      }
    }
  }

  if (props.media !== undefined && props.media !== "cdrom" && props.media !== "floppy") {
    add("media", props.media, 'must be "cdrom" or "floppy"');
  }
  return issues;
}

function answerFileProblem(text: string): string | undefined {
  const xml = xmlProblem(text);
  if (xml !== undefined) return `is not well-formed XML: ${xml}`;
  if (!/<unattend\s[^>]*xmlns="urn:schemas-microsoft-com:unattend"/.test(text)) {
    return `must be an answer file: <unattend xmlns="${UNATTEND_NS}"> as its root element`;
  }
  const unknown = unknownPlaceholders(text);
  if (unknown.length > 0) return unknownPlaceholderMessage(unknown);
  return undefined;
}

// --- rendering -----------------------------------------------------------------------------------

/**
 * The answer file for one member: `customAnswerFile` filled in, or an Unattend.xml for the
 * specialize and oobeSystem passes. Throws `PoolSpecError` on invalid props.
 */
export function renderUnattend(props: SysprepProps, os: WindowsVersion, computerName: string): string {
  const issues = sysprepProblems(props);
  const nameProblem = computerNameProblem(computerName);
  if (nameProblem !== undefined) issues.push({ prop: "computerName", value: computerName, message: nameProblem });
  if (!Object.hasOwn(EDITION, os)) {
    issues.push({ prop: "operatingSystem", value: os, message: `sysprep is for ${Object.keys(EDITION).join(", ")}` });
  }
  if (issues.length > 0) throw new PoolSpecError("SysprepConfig", issues);
  if (props.customAnswerFile !== undefined) {
    return fillOvirtAnswerFile(props.customAnswerFile, ovirtValues(props, computerName));
  }

  const server = EDITION[os] === "server";
  const admin = props.localAdministrator!;
  const adminName = admin.name ?? DEFAULT_LOCAL_ADMINISTRATOR;
  const password = (value: string): XmlNode[] => [el("Value", value), el("PlainText", "true")];
  const d = props.domain;
  const yes = "true";

  const specialize = [
    component("Microsoft-Windows-Shell-Setup", [
      el("ComputerName", computerName),
      props.productKey ? el("ProductKey", props.productKey) : undefined,
      props.organizationName !== undefined ? el("RegisteredOrganization", props.organizationName) : undefined,
      el("TimeZone", props.timeZone ?? DEFAULT_WINDOWS_TIME_ZONE),
    ]),
    d &&
      component("Microsoft-Windows-UnattendedJoin", [
        el("Identification", [
          el("Credentials", [el("Domain", d.name), el("Password", d.password), el("Username", d.user)]),
          el("JoinDomain", d.name),
          d.machineObjectOU !== undefined ? el("MachineObjectOU", d.machineObjectOU) : undefined,
        ]),
      ]),
  ];
  const oobeSystem = [
    component("Microsoft-Windows-International-Core", [
      el("InputLocale", props.inputLocale ?? DEFAULT_WINDOWS_LOCALE),
      el("SystemLocale", props.systemLocale ?? DEFAULT_WINDOWS_LOCALE),
      el("UILanguage", props.uiLanguage ?? DEFAULT_WINDOWS_LOCALE),
      el("UserLocale", props.userLocale ?? DEFAULT_WINDOWS_LOCALE),
    ]),
    component("Microsoft-Windows-Shell-Setup", [
      el(
        "OOBE",
        server
          ? [el("HideEULAPage", yes)]
          : [
              el("HideEULAPage", yes),
              el("HideLocalAccountScreen", yes),
              el("HideOEMRegistrationScreen", yes),
              el("HideOnlineAccountScreens", yes),
              el("HideWirelessSetupInOOBE", yes),
              // Any value skips the privacy page; 3 declines the recommended settings, as members
              // are reverted anyway and updates belong in the template.
              el("ProtectYourPC", "3"),
            ],
      ),
      el("UserAccounts", [
        server ? el("AdministratorPassword", password(admin.password)) : undefined,
        el("LocalAccounts", [
          el(
            "LocalAccount",
            [
              el("Password", password(admin.password)),
              el("DisplayName", admin.displayName ?? adminName),
              el("Group", admin.group ?? "Administrators"),
              el("Name", adminName),
            ],
            { "wcm:action": "add" },
          ),
        ]),
      ]),
      admin.fullName !== undefined ? el("RegisteredOwner", admin.fullName) : undefined,
    ]),
  ];
  const root = el(
    "unattend",
    [el("settings", specialize, { pass: "specialize" }), el("settings", oobeSystem, { pass: "oobeSystem" })],
    { xmlns: UNATTEND_NS },
  );
  return `<?xml version="1.0" encoding="utf-8"?>\n${renderXml(root, 0)}`;
}

/** The placeholder values for a member, from the same props the generated file uses. */
function ovirtValues(props: SysprepProps, computerName: string): OvirtValues {
  const ui = props.uiLanguage ?? DEFAULT_WINDOWS_LOCALE;
  return {
    productKey: props.productKey ?? "",
    adminPassword: props.localAdministrator?.password ?? "",
    computerName,
    joinDomain: props.domain?.name ?? "",
    domainAdmin: props.domain?.user ?? "",
    domainAdminPassword: props.domain?.password ?? "",
    machineObjectOU: props.domain?.machineObjectOU ?? "",
    timeZone: props.timeZone ?? DEFAULT_WINDOWS_TIME_ZONE,
    orgName: props.organizationName ?? "",
    inputLocale: props.inputLocale ?? DEFAULT_WINDOWS_LOCALE,
    userLocale: props.userLocale ?? DEFAULT_WINDOWS_LOCALE,
    systemLocale: props.systemLocale ?? DEFAULT_WINDOWS_LOCALE,
    uiLanguage: ui,
    setupUiLanguageUiLanguage: ui,
  };
}

/**
 * Files at the root of the member's sysprep media. Only `Unattend.xml`: the passes a generalized
 * template runs (specialize, oobeSystem) accept that name on removable media, while
 * `Autounattend.xml` matters only to windowsPE, i.e. installing from scratch, which pools never do.
 */
export function sysprepMediaFiles(xml: string): { name: string; content: string }[] {
  return [{ name: "Unattend.xml", content: xml }];
}

// --- oVirt-format answer files -------------------------------------------------------------------

/**
 * Fills oVirt's placeholders. Values are entity-escaped in text and attributes; inside CDATA they
 * stay literal, with `]]>` split across two sections. Comments are left alone (Windows ignores
 * them, and a secret has no business there). With an empty product key, every `<ProductKey>`
 * element that holds `$ProductKey$` is removed, so the template's own key stays in effect.
 * Throws on unknown `$Word$` placeholders and on values XML cannot carry.
 */
export function fillOvirtAnswerFile(template: string, values: OvirtValues): string {
  const unknown = unknownPlaceholders(template);
  if (unknown.length > 0) throw new Error(`custom answer file: ${unknownPlaceholderMessage(unknown)}`);
  for (const [placeholder, key] of Object.entries(PLACEHOLDERS)) {
    if (XML_INVALID.test(values[key])) {
      throw new Error(`custom answer file: the value for $${placeholder}$ contains characters XML cannot carry`);
    }
  }
  const text =
    values.productKey === ""
      ? template.replace(/[ \t]*<ProductKey(?:\s[^>]*)?>[\s\S]*?<\/ProductKey>[ \t]*(?:\r?\n)?/g, (block) =>
          block.includes("$ProductKey$") ? "" : block,
        )
      : template;
  const fill = (segment: string, encode: (value: string) => string) =>
    segment.replace(PLACEHOLDER, (_, name: string) => encode(values[PLACEHOLDERS[name]!]));
  return sections(text)
    .map(({ kind, text: s }) => {
      if (kind === "comment") return s;
      if (kind === "text") return fill(s, escapeXml);
      return fill(s, (v) => v.replace(/]]>/g, "]]]]><![CDATA[>"));
    })
    .join("");
}

/** Splits XML text into comments, CDATA sections and everything else, in order. */
function sections(xml: string): { kind: "comment" | "cdata" | "text"; text: string }[] {
  const out: { kind: "comment" | "cdata" | "text"; text: string }[] = [];
  let at = 0;
  for (const m of xml.matchAll(/<!--[\s\S]*?-->|<!\[CDATA\[[\s\S]*?\]\]>/g)) {
    if (m.index > at) out.push({ kind: "text", text: xml.slice(at, m.index) });
    out.push({ kind: m[0].startsWith("<!--") ? "comment" : "cdata", text: m[0] });
    at = m.index + m[0].length;
  }
  if (at < xml.length) out.push({ kind: "text", text: xml.slice(at) });
  return out;
}

/** Names of the `$Word$` placeholders outside comments. */
function placeholdersIn(template: string): Set<string> {
  const found = new Set<string>();
  for (const { kind, text } of sections(template)) {
    if (kind !== "comment") for (const m of text.matchAll(PLACEHOLDER)) found.add(m[1]!);
  }
  return found;
}

function unknownPlaceholders(template: string): string[] {
  return [...placeholdersIn(template)].filter((name) => !Object.hasOwn(PLACEHOLDERS, name)).sort();
}

function unknownPlaceholderMessage(unknown: readonly string[]): string {
  return (
    `unknown placeholder(s) ${unknown.map((u) => `$${u}$`).join(", ")}; use oVirt's ` +
    `${Object.keys(PLACEHOLDERS)
      .map((p) => `$${p}$`)
      .join(" ")} or write the value itself`
  );
}

// --- a tiny XML writer and well-formedness check -------------------------------------------------

interface XmlNode {
  readonly name: string;
  readonly attrs: Readonly<Record<string, string>>;
  readonly content: string | readonly XmlNode[];
}

function el(
  name: string,
  content: string | readonly (XmlNode | undefined)[],
  attrs: Readonly<Record<string, string>> = {},
): XmlNode {
  return {
    name,
    attrs,
    content: typeof content === "string" ? content : content.filter((c): c is XmlNode => c !== undefined),
  };
}

function component(name: string, children: readonly (XmlNode | undefined)[]): XmlNode {
  return el("component", children, {
    name,
    processorArchitecture: "amd64",
    publicKeyToken: "31bf3856ad364e35",
    language: "neutral",
    versionScope: "nonSxS",
    "xmlns:wcm": WCM_NS,
    "xmlns:xsi": XSI_NS,
  });
}

function renderXml(node: XmlNode, depth: number): string {
  const pad = "  ".repeat(depth);
  const attrs = Object.entries(node.attrs)
    .map(([k, v]) => ` ${k}="${escapeXml(v)}"`)
    .join("");
  if (typeof node.content === "string")
    return `${pad}<${node.name}${attrs}>${escapeXml(node.content)}</${node.name}>\n`;
  const children = node.content.map((c) => renderXml(c, depth + 1)).join("");
  return `${pad}<${node.name}${attrs}>\n${children}${pad}</${node.name}>\n`;
}

const NAME = "[\\p{L}_][\\p{L}\\p{N}_.\\-\\u00B7]*";
const QNAME = new RegExp(`^${NAME}(?::${NAME})?$`, "u");
const TEXT_OK = /^(?:[^&<]|&(?:amp|lt|gt|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);)*$/;

/**
 * Why `xml` is not namespace-well-formed XML 1.0, or undefined. Covers what pasted answer files
 * get wrong (unclosed or crossed tags, bare `&` or `<`, undeclared prefixes such as `wcm:`,
 * duplicate attributes); it does not read DTDs.
 */
function xmlProblem(xml: string): string | undefined {
  if (XML_INVALID.test(xml)) return "it contains characters XML cannot carry";
  const stack: { name: string; prefixes: Set<string> }[] = [];
  let rootSeen = false;
  let at = xml.startsWith("\uFEFF") ? 1 : 0;
  const lineOf = (i: number) => xml.slice(0, i).split("\n").length;
  const token =
    /<!--([\s\S]*?)-->|<!\[CDATA\[[\s\S]*?\]\]>|<\?([^\s?]+)[\s\S]*?\?>|<!DOCTYPE|<\/([^\s>]*)\s*>|<([^\s/>!?]+)((?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>|</gy;
  while (at < xml.length) {
    const lt = xml.indexOf("<", at);
    const text = xml.slice(at, lt === -1 ? xml.length : lt);
    if (text.length > 0) {
      if (stack.length === 0 && text.trim() !== "") return `line ${lineOf(at)}: text outside the root element`;
      if (!TEXT_OK.test(text)) return `line ${lineOf(at)}: "&" must start an entity such as &amp;`;
      if (text.includes("]]>")) return `line ${lineOf(at)}: "]]>" is not allowed in text`;
    }
    if (lt === -1) break;
    token.lastIndex = lt;
    const m = token.exec(xml);
    if (m === null || m[0] === "<") return `line ${lineOf(lt)}: "<" does not start a well-formed tag`;
    if (m[0] === "<!DOCTYPE") return `line ${lineOf(lt)}: DOCTYPE declarations are not supported in answer files`;
    at = lt + m[0].length;
    if (m[1] !== undefined) {
      if (m[1].includes("--") || m[1].endsWith("-")) return `line ${lineOf(lt)}: "--" inside a comment`;
    } else if (m[2] !== undefined) {
      if (m[2].toLowerCase() === "xml" && lt !== (xml.startsWith("\uFEFF") ? 1 : 0)) {
        return `line ${lineOf(lt)}: the XML declaration must come first`;
      }
    } else if (m[0].startsWith("<![CDATA[")) {
      if (stack.length === 0) return `line ${lineOf(lt)}: CDATA outside the root element`;
    } else if (m[3] !== undefined) {
      const open = stack.pop();
      if (open === undefined || open.name !== m[3]) {
        return `line ${lineOf(lt)}: </${m[3]}> does not close ${open ? `<${open.name}>` : "any element"}`;
      }
    } else {
      const name = m[4]!;
      if (stack.length === 0 && rootSeen) return `line ${lineOf(lt)}: a second root element <${name}>`;
      const attrs = [...m[5]!.matchAll(/([^\s=]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)].map((a) => ({
        name: a[1]!,
        value: a[2] ?? a[3]!,
      }));
      const prefixes = new Set(stack.at(-1)?.prefixes ?? ["xml"]);
      const seen = new Set<string>();
      for (const a of attrs) {
        if (!QNAME.test(a.name)) return `line ${lineOf(lt)}: "${a.name}" is not an attribute name`;
        if (seen.has(a.name)) return `line ${lineOf(lt)}: attribute ${a.name} repeated on <${name}>`;
        seen.add(a.name);
        if (a.value.includes("<") || !TEXT_OK.test(a.value)) {
          return `line ${lineOf(lt)}: attribute ${a.name} has a bare "<" or "&"`;
        }
        if (a.name.startsWith("xmlns:")) prefixes.add(a.name.slice(6));
      }
      for (const qname of [name, ...attrs.map((a) => a.name).filter((n) => !n.startsWith("xmlns"))]) {
        if (!QNAME.test(qname)) return `line ${lineOf(lt)}: "${qname}" is not an element name`;
        const prefix = qname.includes(":") ? qname.slice(0, qname.indexOf(":")) : undefined;
        if (prefix !== undefined && !prefixes.has(prefix)) {
          return `line ${lineOf(lt)}: namespace prefix "${prefix}" of ${qname} is not declared (add xmlns:${prefix}="...")`;
        }
      }
      rootSeen = true;
      if (m[6] !== "/") stack.push({ name, prefixes });
    }
  }
  if (stack.length > 0) return `<${stack.at(-1)!.name}> is never closed`;
  if (!rootSeen) return "there is no root element";
  return undefined;
}
