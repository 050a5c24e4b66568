import { spawnSync } from "node:child_process";
import fc from "fast-check";
import { OVIRT_TEMPLATE } from "../support/ovirt-answer-file";
import { memberName, OPERATING_SYSTEMS, parseNameMask, PoolSpecError, type NameMask } from "../../core";
import {
  computerNameFor,
  computerNameProblem,
  fillOvirtAnswerFile,
  renderUnattend,
  sysprepMediaFiles,
  sysprepProblems,
  type OvirtValues,
  type SysprepProps,
  type WindowsVersion,
} from "../../core/initrun/sysprep";

// --- real libxml2 (xmllint) ----------------------------------------------------------------------

const NAMESPACES: Record<string, string> = {
  u: "urn:schemas-microsoft-com:unattend",
  wcm: "http://schemas.microsoft.com/WMIConfig/2002/State",
};

function xmllint(args: string[], input: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync("xmllint", [...args, "-"], { input, encoding: "utf8" });
  if (r.error !== undefined) {
    throw new Error(`xmllint is not installed (${r.error.message}): run \`bash scripts/setup-system.sh\``);
  }
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function expectWellFormed(xml: string): void {
  const r = xmllint(["--noout"], xml);
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
}

/**
 * XPath through `xmllint --xpath`. It cannot bind prefixes, so `u:` and `wcm:` steps are
 * rewritten to namespace-uri()/local-name() tests: the namespaces are checked, not ignored.
 */
function xpath(xml: string, expr: string): string {
  const namespaced = expr.replace(
    /(@?)\b(u|wcm):([A-Za-z]+)/g,
    (_, at: string, prefix: string, local: string) =>
      `${at}*[namespace-uri()='${NAMESPACES[prefix]}' and local-name()='${local}']`,
  );
  const r = xmllint(["--xpath", namespaced], xml);
  if (r.status !== 0 && !r.stderr.includes("XPath set is empty")) throw new Error(`xpath ${expr}: ${r.stderr}`);
  return r.stdout.replace(/\n$/, "");
}
const count = (xml: string, expr: string) => Number(xpath(xml, `count(${expr})`));
const text = (xml: string, expr: string) => xpath(xml, `string(${expr})`);

beforeAll(() => {
  // Fail loudly, not skip: these tests are the proof that the files are well-formed.
  xmllint(["--version"], "");
});

// --- fixtures ------------------------------------------------------------------------------------

const VERSIONS = OPERATING_SYSTEMS.filter((os): os is WindowsVersion => os !== "linux");
const SERVERS = VERSIONS.filter((v) => v.startsWith("windows-server"));
const CLIENTS = VERSIONS.filter((v) => !v.startsWith("windows-server"));

/** The seed's domain example and "Windows Product Key Example". */
const seedProps: SysprepProps = {
  productKey: "0000-000-000-000",
  domain: { name: "addomain.local", user: "Sarah_Smith", password: "12345678" },
  localAdministrator: { password: "Adm1n!pass" },
};

const SHELL_SETUP = (pass: string) =>
  `/u:unattend/u:settings[@pass='${pass}']/u:component[@name='Microsoft-Windows-Shell-Setup']`;
const JOIN = "/u:unattend/u:settings[@pass='specialize']/u:component[@name='Microsoft-Windows-UnattendedJoin']";
const INTERNATIONAL =
  "/u:unattend/u:settings[@pass='oobeSystem']/u:component[@name='Microsoft-Windows-International-Core']";
const LOCAL_ACCOUNT = `${SHELL_SETUP("oobeSystem")}/u:UserAccounts/u:LocalAccounts/u:LocalAccount`;

// --- generated Unattend.xml ----------------------------------------------------------------------

describe("renderUnattend", () => {
  it.each(VERSIONS)("%s: well-formed, specialize + oobeSystem, every component fully attributed", (os) => {
    const xml = renderUnattend(seedProps, os, "DESK-001");
    expectWellFormed(xml);
    expect(xml.startsWith('<?xml version="1.0" encoding="utf-8"?>\n')).toBe(true);
    expect(count(xml, "/u:unattend")).toBe(1);
    expect(xpath(xml, "/u:unattend/u:settings/@pass")).toBe(' pass="specialize"\n pass="oobeSystem"');
    const components = count(xml, "//u:component");
    expect(components).toBe(4);
    const attributed =
      "//u:component[@processorArchitecture='amd64' and @publicKeyToken='31bf3856ad364e35' " +
      "and @language='neutral' and @versionScope='nonSxS']";
    expect(count(xml, attributed)).toBe(components);
    // Every component declares wcm and xsi itself (Windows SIM's shape).
    expect(count(xml, "//u:component[namespace::wcm and namespace::xsi]")).toBe(components);
    expect(count(xml, "//u:component/namespace::wcm[.='http://schemas.microsoft.com/WMIConfig/2002/State']")).toBe(
      components,
    );
    expect(count(xml, "//u:component/namespace::xsi[.='http://www.w3.org/2001/XMLSchema-instance']")).toBe(components);
    // List items carry wcm:action="add"; nothing else carries wcm attributes.
    expect(count(xml, "//u:LocalAccounts/*")).toBe(1);
    expect(count(xml, "//u:LocalAccounts/*[@wcm:action='add']")).toBe(1);
    expect(count(xml, "//@wcm:action")).toBe(1);
    // Deprecated since Windows 8 on all six versions.
    expect(count(xml, "//u:SkipMachineOOBE | //u:SkipUserOOBE")).toBe(0);
  });

  it("puts the seed's domain credentials and product key where Windows reads them", () => {
    const xml = renderUnattend(seedProps, "windows-11", "DESK-001");
    expect(text(xml, `${JOIN}/u:Identification/u:Credentials/u:Domain`)).toBe("addomain.local");
    expect(text(xml, `${JOIN}/u:Identification/u:Credentials/u:Username`)).toBe("Sarah_Smith");
    expect(text(xml, `${JOIN}/u:Identification/u:Credentials/u:Password`)).toBe("12345678");
    expect(text(xml, `${JOIN}/u:Identification/u:JoinDomain`)).toBe("addomain.local");
    expect(count(xml, `${JOIN}/u:Identification/u:MachineObjectOU`)).toBe(0);
    // Modern Windows takes the key in specialize (a plain string, not windowsPE's <Key> block).
    expect(text(xml, `${SHELL_SETUP("specialize")}/u:ProductKey`)).toBe("0000-000-000-000");
    expect(text(xml, `${SHELL_SETUP("specialize")}/u:ComputerName`)).toBe("DESK-001");
  });

  it('applies the documented defaults: user "user", UTC, en-US', () => {
    const xml = renderUnattend({ localAdministrator: { password: "pw" } }, "windows-10", "DESK-001");
    expect(text(xml, `${LOCAL_ACCOUNT}/u:Name`)).toBe("user");
    expect(text(xml, `${LOCAL_ACCOUNT}/u:DisplayName`)).toBe("user");
    expect(text(xml, `${LOCAL_ACCOUNT}/u:Group`)).toBe("Administrators");
    expect(text(xml, `${LOCAL_ACCOUNT}/u:Password/u:PlainText`)).toBe("true");
    expect(text(xml, `${SHELL_SETUP("specialize")}/u:TimeZone`)).toBe("UTC");
    for (const e of ["InputLocale", "SystemLocale", "UILanguage", "UserLocale"]) {
      expect(text(xml, `${INTERNATIONAL}/u:${e}`)).toBe("en-US");
    }
    expect(count(xml, "//u:ProductKey | //u:RegisteredOrganization | //u:RegisteredOwner | //u:Identification")).toBe(
      0,
    );
    expect(count(xml, JOIN)).toBe(0);
  });

  it("passes every set prop through", () => {
    const props: SysprepProps = {
      domain: { ...seedProps.domain!, machineObjectOU: "OU=Pools,DC=addomain,DC=local" },
      localAdministrator: {
        name: "pooladmin",
        fullName: "Pool Admin",
        displayName: "Pool Administrator",
        password: "pw",
        group: "Administratoren",
      },
      timeZone: "W. Europe Standard Time",
      inputLocale: "0407:00000407;en-US",
      userLocale: "de-DE",
      systemLocale: "de-DE",
      uiLanguage: "de-DE",
      organizationName: "ACME",
    };
    const xml = renderUnattend(props, "windows-11", "DESK-001");
    expect(text(xml, `${JOIN}/u:Identification/u:MachineObjectOU`)).toBe("OU=Pools,DC=addomain,DC=local");
    expect(text(xml, `${LOCAL_ACCOUNT}/u:Name`)).toBe("pooladmin");
    expect(text(xml, `${LOCAL_ACCOUNT}/u:DisplayName`)).toBe("Pool Administrator");
    expect(text(xml, `${LOCAL_ACCOUNT}/u:Group`)).toBe("Administratoren");
    expect(text(xml, `${SHELL_SETUP("oobeSystem")}/u:RegisteredOwner`)).toBe("Pool Admin");
    expect(text(xml, `${SHELL_SETUP("specialize")}/u:RegisteredOrganization`)).toBe("ACME");
    expect(text(xml, `${SHELL_SETUP("specialize")}/u:TimeZone`)).toBe("W. Europe Standard Time");
    expect(text(xml, `${INTERNATIONAL}/u:InputLocale`)).toBe("0407:00000407;en-US");
    expect(text(xml, `${INTERNATIONAL}/u:UILanguage`)).toBe("de-DE");
  });

  it.each(CLIENTS)("%s: hides the client OOBE pages and creates the account", (os) => {
    const xml = renderUnattend(seedProps, os, "DESK-001");
    const oobe = `${SHELL_SETUP("oobeSystem")}/u:OOBE`;
    for (const e of [
      "HideEULAPage",
      "HideLocalAccountScreen",
      "HideOEMRegistrationScreen",
      "HideOnlineAccountScreens",
      "HideWirelessSetupInOOBE",
    ]) {
      expect(text(xml, `${oobe}/u:${e}`)).toBe("true");
    }
    expect(text(xml, `${oobe}/u:ProtectYourPC`)).toBe("3");
    expect(count(xml, "//u:AdministratorPassword")).toBe(0);
  });

  it.each(SERVERS)("%s: sets the built-in Administrator's password, no client-only OOBE elements", (os) => {
    const xml = renderUnattend(seedProps, os, "DESK-001");
    expect(count(xml, `${SHELL_SETUP("oobeSystem")}/u:OOBE/*`)).toBe(1);
    expect(text(xml, `${SHELL_SETUP("oobeSystem")}/u:OOBE/u:HideEULAPage`)).toBe("true");
    expect(text(xml, `${SHELL_SETUP("oobeSystem")}/u:UserAccounts/u:AdministratorPassword/u:Value`)).toBe("Adm1n!pass");
    expect(count(xml, LOCAL_ACCOUNT)).toBe(1);
  });

  it.each([
    ["markup characters", `<&"'>`],
    ["non-ASCII", "pässwörd€"],
    ["a CDATA terminator", "a]]>b"],
    ["everything together", `<&"'> ]]> pässwörd€ 😀 $AdminPassword$`],
  ])("escapes %s in passwords and names; they survive a round trip", (_, secret) => {
    const props: SysprepProps = {
      domain: { name: "addomain.local", user: `Sarah_Smith ${secret}`, password: secret },
      localAdministrator: { password: secret, fullName: secret, displayName: secret },
      organizationName: secret,
    };
    const xml = renderUnattend(props, "windows-server-2022", "DESK-001");
    expectWellFormed(xml);
    expect(text(xml, `${LOCAL_ACCOUNT}/u:Password/u:Value`)).toBe(secret);
    expect(text(xml, `${SHELL_SETUP("oobeSystem")}/u:UserAccounts/u:AdministratorPassword/u:Value`)).toBe(secret);
    expect(text(xml, `${JOIN}/u:Identification/u:Credentials/u:Password`)).toBe(secret);
    expect(text(xml, `${JOIN}/u:Identification/u:Credentials/u:Username`)).toBe(`Sarah_Smith ${secret}`);
    expect(text(xml, `${LOCAL_ACCOUNT}/u:DisplayName`)).toBe(secret);
    expect(text(xml, `${SHELL_SETUP("specialize")}/u:RegisteredOrganization`)).toBe(secret);
  });

  it("leaves out <ProductKey> for an empty or missing key", () => {
    for (const productKey of ["", undefined]) {
      const xml = renderUnattend({ ...seedProps, productKey }, "windows-11", "DESK-001");
      expect(count(xml, "//u:ProductKey")).toBe(0);
    }
  });

  it("is byte-identical across renders", () => {
    expect(renderUnattend(seedProps, "windows-11", "DESK-001")).toBe(
      renderUnattend(seedProps, "windows-11", "DESK-001"),
    );
  });

  it("refuses invalid props and computer names with PoolSpecError", () => {
    expect(() => renderUnattend(seedProps, "windows-11", "MY_POOL_DESKTOP_01")).toThrow(PoolSpecError);
    expect(() => renderUnattend({ localAdministrator: { password: "" } }, "windows-11", "DESK-001")).toThrow(
      /localAdministrator\.password = "<redacted>": is required/,
    );
    expect(() => renderUnattend(seedProps, "linux" as WindowsVersion, "DESK-001")).toThrow(/sysprep is for/);
  });
});

// --- validation ----------------------------------------------------------------------------------

describe("sysprepProblems", () => {
  it("accepts the seed example, including its short product key", () => {
    expect(sysprepProblems(seedProps)).toEqual([]);
    expect(sysprepProblems({ ...seedProps, productKey: "ABCDE-12345-FGHIJ-67890-KLMNO" })).toEqual([]);
  });

  const SECRET = "S3cr3t-Value!";
  it.each<[string, SysprepProps, string, RegExp]>([
    ["no local administrator", {}, "localAdministrator", /required without customAnswerFile/],
    ["empty admin password", { localAdministrator: { password: "" } }, "localAdministrator.password", /required/],
    [
      "admin password with control characters",
      { localAdministrator: { password: `${SECRET}\u0001` } },
      "localAdministrator.password",
      /control characters/,
    ],
    [
      "built-in Administrator",
      { localAdministrator: { name: "Administrator", password: SECRET } },
      "localAdministrator.name",
      /built-in account/,
    ],
    [
      "account name with forbidden characters",
      { localAdministrator: { name: "a/b", password: SECRET } },
      "localAdministrator.name",
      /must not contain/,
    ],
    [
      "account name over 20 characters",
      { localAdministrator: { name: "a".repeat(21), password: SECRET } },
      "localAdministrator.name",
      /at most 20/,
    ],
    [
      "domain without user",
      { ...seedProps, domain: { name: "addomain.local", user: "", password: SECRET } },
      "domain.user",
      /required/,
    ],
    [
      "domain without password",
      { ...seedProps, domain: { name: "addomain.local", user: "u", password: "" } },
      "domain.password",
      /required/,
    ],
    [
      "domain name with spaces",
      { ...seedProps, domain: { name: "ad domain", user: "u", password: SECRET } },
      "domain.name",
      /addomain\.local/,
    ],
    [
      "OU that is not a distinguished name",
      { ...seedProps, domain: { ...seedProps.domain!, machineObjectOU: "Pools" } },
      "domain.machineObjectOU",
      /OU=Pools,DC=addomain,DC=local/,
    ],
    ["lower-case product key", { ...seedProps, productKey: SECRET.toLowerCase() }, "productKey", /XXXXX-XXXXX/],
    ["product key with spaces", { ...seedProps, productKey: "AAAAA BBBBB" }, "productKey", /XXXXX-XXXXX/],
    ["empty time zone", { ...seedProps, timeZone: "" }, "timeZone", /required/],
    ["IANA time zone", { ...seedProps, timeZone: "Europe/Berlin" }, "timeZone", /tzutil \/l/],
    ["bad locale", { ...seedProps, userLocale: "english" }, "userLocale", /en-US/],
    ["bad UI language", { ...seedProps, uiLanguage: "en_US" }, "uiLanguage", /en-US/],
    ["bad input locale", { ...seedProps, inputLocale: "0409" }, "inputLocale", /0409:00000409/],
    ["pattern without #", { ...seedProps, computerNamePattern: "DESK" }, "computerNamePattern", /one run of "#"/],
    ["pattern with two # runs", { ...seedProps, computerNamePattern: "D#-#" }, "computerNamePattern", /one run/],
    [
      "pattern too long",
      { ...seedProps, computerNamePattern: "DESKTOP-POOL-###" },
      "computerNamePattern",
      /"DESKTOP-POOL-001", which is 16 characters, but Windows computer names are at most 15/,
    ],
    ["pattern with _", { ...seedProps, computerNamePattern: "DESK_##" }, "computerNamePattern", /letters, digits/],
    ["pattern of digits only", { ...seedProps, computerNamePattern: "###" }, "computerNamePattern", /all digits/],
    ["bad media", { ...seedProps, media: "usb" as "cdrom" }, "media", /"cdrom" or "floppy"/],
    [
      "custom file that is not an answer file",
      { customAnswerFile: "<root/>" },
      "customAnswerFile",
      /<unattend xmlns="urn:schemas-microsoft-com:unattend">/,
    ],
    [
      "custom file with an unknown placeholder",
      { customAnswerFile: `<unattend xmlns="urn:schemas-microsoft-com:unattend"><A>$Passwort$ $Foo$</A></unattend>` },
      "customAnswerFile",
      /unknown placeholder\(s\) \$Foo\$, \$Passwort\$; use oVirt's \$ProductKey\$/,
    ],
    [
      "custom file using $AdminPassword$ without localAdministrator",
      { customAnswerFile: `<unattend xmlns="urn:schemas-microsoft-com:unattend"><V>$AdminPassword$</V></unattend>` },
      "customAnswerFile",
      /uses \$AdminPassword\$ but localAdministrator is not set/,
    ],
    [
      "custom file using $DomainAdminPassword$ without domain",
      {
        customAnswerFile: `<unattend xmlns="urn:schemas-microsoft-com:unattend"><V>$DomainAdminPassword$</V></unattend>`,
      },
      "customAnswerFile",
      /uses \$DomainAdminPassword\$ but domain is not set/,
    ],
    [
      "custom file that is not well-formed",
      {
        customAnswerFile: `<unattend xmlns="urn:schemas-microsoft-com:unattend"><Password>${SECRET}</Passwrd></unattend>`,
      },
      "customAnswerFile",
      /not well-formed XML: line 1: <\/Passwrd> does not close <Password>/,
    ],
  ])("%s", (_, props, prop, message) => {
    const issues = sysprepProblems(props);
    const issue = issues.find((i) => i.prop === prop);
    expect(issue).toBeDefined();
    expect(issue!.message).toMatch(message);
    // Secrets never reach the error text, whichever prop is wrong.
    const error = new PoolSpecError("SysprepConfig", issues);
    expect(error.message).not.toContain(SECRET);
    expect(error.message).not.toContain(SECRET.toLowerCase());
    expect(error.message).not.toContain("12345678");
  });

  it("redacts every secret prop's value", () => {
    const issues = sysprepProblems({
      productKey: "not a key",
      domain: { name: "addomain.local", user: "u", password: "bad\u0000" },
      localAdministrator: { password: "bad\u0001" },
      customAnswerFile: "<unattend>Domain_Password</oops>",
    });
    for (const prop of ["productKey", "domain.password", "localAdministrator.password", "customAnswerFile"]) {
      expect(issues.find((i) => i.prop === prop)?.value).toBe("<redacted>");
    }
  });

  it("the well-formedness check agrees with libxml2", () => {
    const wrap = (body: string) => `<unattend xmlns="urn:schemas-microsoft-com:unattend">${body}</unattend>`;
    const wcm = 'xmlns:wcm="http://schemas.microsoft.com/WMIConfig/2002/State"';
    const docs = [
      `<?xml version="1.0" encoding="utf-8"?>\n${wrap("<A>x &amp; y</A>")}\n`,
      wrap("<A b='1' c=\"2\"/><!-- ok --><![CDATA[ <&> ]]><?pi data?>"),
      wrap(`<C ${wcm}><L wcm:action="add">&#233;&#x20AC;</L></C>`),
      wrap("<A>x & y</A>"),
      wrap("<A>a < b</A>"),
      wrap("<A><B></A></B>"),
      wrap("<A>"),
      wrap("<A b='1' b='2'/>"),
      wrap('<L wcm:action="add"/>'),
      wrap("<A b=1/>"),
      wrap("<!-- a -- b -->"),
      wrap("<A>]]></A>"),
      `${wrap("")}<second/>`,
      `text${wrap("")}`,
      `\n<?xml version="1.0"?>${wrap("")}`,
      wrap("<A>&nbsp;</A>"),
      wrap('<A b="1"c="2"/>'),
      wrap("<1A/>"),
      wrap("<A></A >"),
      wrap("<A\n  b = '1'\n/>"),
      wrap("<A b='<'/>"),
    ];
    for (const doc of docs) {
      // libxml2 reports namespace errors on stderr but still exits 0.
      const r = xmllint(["--noout"], doc);
      const libxml2 = r.status === 0 && r.stderr === "";
      const ours = !sysprepProblems({ customAnswerFile: doc }).some((i) => /well-formed/.test(i.message));
      expect([doc, ours]).toEqual([doc, libxml2]);
    }
  });
});

// --- oVirt-format answer files -------------------------------------------------------------------

const VALUES: OvirtValues = {
  productKey: "0000-000-000-000",
  adminPassword: `adm<&"'>]]>pässwörd€`,
  computerName: "DESK-007",
  joinDomain: "addomain.local",
  domainAdmin: "Sarah_Smith",
  domainAdminPassword: `dom<&"'>]]>€ $ComputerName$`,
  machineObjectOU: "OU=Pools,DC=addomain,DC=local",
  timeZone: "W. Europe Standard Time",
  orgName: "Smith & Sons <Ltd>",
  inputLocale: "0407:00000407",
  userLocale: "de-DE",
  systemLocale: "de-AT",
  uiLanguage: "de-CH",
  setupUiLanguageUiLanguage: "fr-FR",
};

const PE = "/u:unattend/u:settings[@pass='windowsPE']";
const PE_INTERNATIONAL = `${PE}/u:component[@name='Microsoft-Windows-International-Core-WinPE']`;
const PE_SETUP = `${PE}/u:component[@name='Microsoft-Windows-Setup']`;

describe("fillOvirtAnswerFile", () => {
  it("fills all 14 placeholders, escaping in text and keeping CDATA literal", () => {
    const xml = fillOvirtAnswerFile(OVIRT_TEMPLATE, VALUES);
    expectWellFormed(xml);
    // The only "$Word$" left outside comments is the one inside a value.
    expect(xml.replace(/<!--[\s\S]*?-->/g, "").match(/\$[A-Za-z]+\$/g)).toEqual(["$ComputerName$"]);
    expect(text(xml, `${PE_INTERNATIONAL}/u:SetupUILanguage/u:UILanguage`)).toBe("fr-FR");
    expect(text(xml, `${PE_INTERNATIONAL}/u:InputLocale`)).toBe("0407:00000407");
    expect(text(xml, `${PE_INTERNATIONAL}/u:SystemLocale`)).toBe("de-AT");
    expect(text(xml, `${PE_INTERNATIONAL}/u:UILanguage`)).toBe("de-CH");
    expect(text(xml, `${PE_INTERNATIONAL}/u:UserLocale`)).toBe("de-DE");
    expect(text(xml, `${PE_SETUP}/u:UserData/u:Organization`)).toBe("Smith & Sons <Ltd>");
    expect(text(xml, `${PE_SETUP}/u:UserData/u:ProductKey/u:Key`)).toBe("0000-000-000-000");
    expect(text(xml, `${SHELL_SETUP("specialize")}/u:ComputerName`)).toBe("DESK-007");
    expect(text(xml, `${SHELL_SETUP("specialize")}/u:ProductKey`)).toBe("0000-000-000-000");
    expect(text(xml, `${SHELL_SETUP("specialize")}/u:TimeZone`)).toBe("W. Europe Standard Time");
    expect(text(xml, `${JOIN}/u:Identification/u:Credentials/u:Domain`)).toBe("addomain.local");
    expect(text(xml, `${JOIN}/u:Identification/u:Credentials/u:Username`)).toBe("Sarah_Smith");
    // A value that looks like a placeholder is not expanded again.
    expect(text(xml, `${JOIN}/u:Identification/u:Credentials/u:Password`)).toBe(VALUES.domainAdminPassword);
    expect(text(xml, `${JOIN}/u:Identification/u:JoinDomain`)).toBe("addomain.local");
    expect(text(xml, `${JOIN}/u:Identification/u:MachineObjectOU`)).toBe("OU=Pools,DC=addomain,DC=local");
    expect(text(xml, `${LOCAL_ACCOUNT}/u:Password/u:Value`)).toBe(VALUES.adminPassword);
    expect(count(xml, "//u:LocalAccount[@wcm:action='add']")).toBe(1);
    // CDATA stays CDATA (no entities), with "]]>" split over two sections.
    expect(xml).toContain("<Value><![CDATA[adm<&\"'>]]]]><![CDATA[>pässwörd€]]></Value>");
    expect(xml).toContain("<Password>dom&lt;&amp;&quot;&apos;&gt;]]&gt;€ $ComputerName$</Password>");
    expect(xml).toContain("<!-- $ProductKey$ and $Unknown$ in comments are left alone -->");
  });

  it("removes every <ProductKey> holding $ProductKey$ when the key is empty", () => {
    const xml = fillOvirtAnswerFile(OVIRT_TEMPLATE, { ...VALUES, productKey: "" });
    expectWellFormed(xml);
    expect(count(xml, "//u:ProductKey | //u:Key")).toBe(0);
    expect(text(xml, `${PE_SETUP}/u:UserData/u:AcceptEula`)).toBe("true");
    expect(text(xml, `${SHELL_SETUP("specialize")}/u:ComputerName`)).toBe("DESK-007");
    expect(xml).not.toMatch(/^\s*$\n^\s*$/m);
  });

  it('keeps a hard-coded key (the seed\'s "replace $ProductKey$ with a valid product key")', () => {
    const template = OVIRT_TEMPLATE.replace("<![CDATA[$ProductKey$]]>", "0000-000-000-000");
    const xml = fillOvirtAnswerFile(template, { ...VALUES, productKey: "" });
    expect(text(xml, `${PE_SETUP}/u:UserData/u:ProductKey/u:Key`)).toBe("0000-000-000-000");
    expect(count(xml, `${SHELL_SETUP("specialize")}/u:ProductKey`)).toBe(0);
  });

  it("escapes values in attributes", () => {
    const template = `<unattend xmlns="urn:schemas-microsoft-com:unattend"><A v="$OrgName$" w='$OrgName$'/></unattend>`;
    const xml = fillOvirtAnswerFile(template, VALUES);
    expectWellFormed(xml);
    expect(text(xml, "/u:unattend/u:A/@v")).toBe(VALUES.orgName);
    expect(text(xml, "/u:unattend/u:A/@w")).toBe(VALUES.orgName);
  });

  it("throws on unknown placeholders, naming them", () => {
    expect(() => fillOvirtAnswerFile("<a>$ProductKey$ $Password$ $Domain$</a>", VALUES)).toThrow(
      /unknown placeholder\(s\) \$Domain\$, \$Password\$; use oVirt's \$ProductKey\$ \$AdminPassword\$/,
    );
  });

  it("throws on values XML cannot carry, without showing them", () => {
    expect(() => fillOvirtAnswerFile("<a>$AdminPassword$</a>", { ...VALUES, adminPassword: "x\u0007y" })).toThrow(
      /value for \$AdminPassword\$ contains characters XML cannot carry/,
    );
  });

  it("renderUnattend fills customAnswerFile from the props", () => {
    const props: SysprepProps = {
      ...seedProps,
      productKey: "",
      customAnswerFile: OVIRT_TEMPLATE,
      timeZone: "GMT Standard Time",
      uiLanguage: "en-GB",
    };
    expect(sysprepProblems(props)).toEqual([]);
    const xml = renderUnattend(props, "windows-11", "DESK-042");
    expectWellFormed(xml);
    expect(text(xml, `${SHELL_SETUP("specialize")}/u:ComputerName`)).toBe("DESK-042");
    expect(text(xml, `${SHELL_SETUP("specialize")}/u:TimeZone`)).toBe("GMT Standard Time");
    expect(text(xml, `${PE_INTERNATIONAL}/u:SetupUILanguage/u:UILanguage`)).toBe("en-GB");
    expect(text(xml, `${PE_INTERNATIONAL}/u:UserLocale`)).toBe("en-US");
    expect(text(xml, `${JOIN}/u:Identification/u:Credentials/u:Username`)).toBe("Sarah_Smith");
    expect(text(xml, `${JOIN}/u:Identification/u:Credentials/u:Password`)).toBe("12345678");
    expect(text(xml, `${JOIN}/u:Identification/u:MachineObjectOU`)).toBe("");
    expect(text(xml, `${LOCAL_ACCOUNT}/u:Password/u:Value`)).toBe("Adm1n!pass");
    expect(count(xml, "//u:ProductKey")).toBe(0);
  });
});

// --- computer names ------------------------------------------------------------------------------

describe("computer names", () => {
  it("derives from the VM name: allowed characters only, upper case", () => {
    expect(computerNameFor("MyPool-1", 1)).toBe("MYPOOL-1");
    expect(computerNameFor("my_pool.lab-007", 7)).toBe("MYPOOLLAB-007");
    expect(computerNameFor("-x-1-", 1)).toBe("X-1");
  });

  it("never truncates: a long VM name asks for a pattern", () => {
    expect(() => computerNameFor("Engineering-Desktops-12", 12)).toThrow(
      /"ENGINEERING-DESKTOPS-12" \(from VM "Engineering-Desktops-12"\) is 23 characters.*computerNamePattern such as "DESK-###"/,
    );
  });

  it("fills a pattern with the zero-padded index, never widening it", () => {
    expect(computerNameFor("ignored", 7, "DESK-###")).toBe("DESK-007");
    expect(computerNameFor("ignored", 999, "DESK-###")).toBe("DESK-999");
    expect(computerNameFor("ignored", 3, "LAB##-A")).toBe("LAB03-A");
    expect(() => computerNameFor("ignored", 1000, "DESK-###")).toThrow(
      /member 1000 does not fit computerNamePattern "DESK-###" \(at most 999 members\); use #### in the pattern/,
    );
    expect(() => computerNameFor("ignored", 0, "DESK-###")).toThrow(/integer >= 1/);
  });

  it.each([
    ["", /is empty/],
    ["DESK_01", /only letters, digits and hyphens/],
    ["DESK.01", /only letters, digits and hyphens/],
    ["DESK 01", /only letters, digits and hyphens/],
    ["ABCDEFGHIJKLMNOP", /16 characters.*at most 15/],
    ["12345", /all digits/],
    ["-DESK1", /hyphen/],
    ["DESK1-", /hyphen/],
  ])("%j is not a computer name", (name, message) => {
    const problem = computerNameProblem(name);
    expect(problem).toMatch(message);
    expect(problem).toMatch(/set sysprep computerNamePattern such as "DESK-###"/);
  });

  it("accepts 15 characters", () => {
    expect(computerNameProblem("ABCDEFGHIJKLMNO")).toBeUndefined();
  });

  it("property: names from a valid pattern are valid and unique for indexes 1..N", () => {
    const pattern = fc
      .record({
        prefix: fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,7}$/),
        width: fc.integer({ min: 1, max: 4 }),
        suffix: fc.stringMatching(/^(?:[A-Za-z0-9-]{0,3}[A-Za-z0-9])?$/),
      })
      .filter((p) => p.prefix.length + p.width + p.suffix.length <= 15)
      .map((p) => `${p.prefix}${"#".repeat(p.width)}${p.suffix}`);
    fc.assert(
      fc.property(pattern, fc.integer({ min: 1, max: 300 }), (pattern, wanted) => {
        expect(sysprepProblems({ ...seedProps, computerNamePattern: pattern })).toEqual([]);
        const width = pattern.match(/#+/)![0].length;
        const n = Math.min(wanted, 10 ** width - 1);
        const names = Array.from({ length: n }, (_, i) => computerNameFor("ignored", i + 1, pattern));
        for (const name of names) expect(computerNameProblem(name)).toBeUndefined();
        expect(new Set(names.map((name) => name.toUpperCase())).size).toBe(n);
      }),
    );
  });

  it("property: names derived from pool member names are valid and unique, or refused", () => {
    const mask = (pattern: string): NameMask => parseNameMask(pattern) as NameMask;
    fc.assert(
      fc.property(
        fc.stringMatching(/^[A-Za-z][A-Za-z0-9._-]{0,12}(?:\?{1,3}[A-Za-z0-9._-]{0,2})?$/),
        fc.integer({ min: 1, max: 150 }),
        (poolName, size) => {
          const m = mask(poolName);
          const n = m.width === 0 ? size : Math.min(size, 10 ** m.width - 1);
          const names: string[] = [];
          for (let i = 1; i <= n; i++) {
            try {
              names.push(computerNameFor(memberName(m, i), i));
            } catch (e) {
              expect(String(e)).toMatch(/computerNamePattern such as "DESK-###"/);
              return;
            }
          }
          for (const name of names) expect(computerNameProblem(name)).toBeUndefined();
          expect(new Set(names).size).toBe(n);
        },
      ),
    );
  });
});

describe("sysprepMediaFiles", () => {
  it("puts Unattend.xml at the media root", () => {
    const xml = renderUnattend(seedProps, "windows-11", "DESK-001");
    expect(sysprepMediaFiles(xml)).toEqual([{ name: "Unattend.xml", content: xml }]);
  });
});
