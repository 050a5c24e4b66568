import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { planPool, secretFromEnv, secretFromFile, SysprepConfig } from "../../core";
import { validProps } from "../support/fixtures";
import { OVIRT_TEMPLATE } from "../support/ovirt-answer-file";

const dir = mkdtempSync(join(tmpdir(), "vmpools-secrets-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function secretFile(name: string, content: string, mode: number): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  chmodSync(path, mode);
  return path;
}

describe("secretFromEnv", () => {
  it("reads the variable, and refuses an unset or empty one without printing a value", () => {
    process.env.VMPOOLS_TEST_SECRET = "s3cr3t-env";
    expect(secretFromEnv("VMPOOLS_TEST_SECRET")).toBe("s3cr3t-env");
    process.env.VMPOOLS_TEST_SECRET = "";
    expect(() => secretFromEnv("VMPOOLS_TEST_SECRET")).toThrow(
      /secret VMPOOLS_TEST_SECRET is not set: export VMPOOLS_TEST_SECRET=… .* before synth/,
    );
    delete process.env.VMPOOLS_TEST_SECRET;
    expect(() => secretFromEnv("VMPOOLS_TEST_SECRET")).toThrow(/is not set/);
  });
});

describe("secretFromFile", () => {
  it("reads an owner-only file (0600 or 0400), dropping one trailing newline", () => {
    expect(secretFromFile(secretFile("a", "pass-a\n", 0o600))).toBe("pass-a");
    expect(secretFromFile(secretFile("b", "pass-b\r\n\n", 0o400))).toBe("pass-b\r\n");
  });

  it.each([0o640, 0o604, 0o644, 0o660, 0o666].map((m) => [m.toString(8), m] as const))(
    "refuses mode 0%s with the chmod that fixes it",
    (_, mode) => {
      const path = secretFile(`m${mode.toString(8)}`, "never-shown", mode);
      let message = "";
      try {
        secretFromFile(path);
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message).toBe(`secret file ${path} has mode 0${mode.toString(8)}; make it private: chmod 600 ${path}`);
      expect(message).not.toContain("never-shown");
    },
  );

  it("says why a missing file cannot be read", () => {
    expect(() => secretFromFile(join(dir, "missing"))).toThrow(/secret file .*missing cannot be read: ENOENT/);
  });
});

describe("SysprepConfig.fromOvirtAnswerFile", () => {
  it("fills the oVirt placeholders per member from props and secrets", () => {
    const path = secretFile("sysprep.ovirt", OVIRT_TEMPLATE, 0o600);
    const adminPassword = secretFromFile(secretFile("admin", "Adm]]>in<&pw\n", 0o600));
    const sysprep = SysprepConfig.fromOvirtAnswerFile(path, {
      domain: { name: "addomain.local", user: "Sarah_Smith", password: "12345678" },
      localAdministrator: { password: adminPassword },
      timeZone: "W. Europe Standard Time",
    });
    const plan = planPool(
      validProps({ name: "Desk-??", size: 2, operatingSystem: "windows-11", initialRun: { sysprep } }),
    );
    const media = plan.members[1]!.configMedia!;
    if (media.kind !== "sysprep") throw new Error("expected sysprep media");
    const xml = media.files[0]!.content;
    expect(xml).toContain("<ComputerName>DESK-02</ComputerName>");
    expect(xml).toContain("<Domain>addomain.local</Domain>");
    expect(xml).toContain("<Username>Sarah_Smith</Username>");
    expect(xml).toContain("<Password>12345678</Password>");
    expect(xml).toContain("<TimeZone>W. Europe Standard Time</TimeZone>");
    // CDATA keeps the password literal even with "]]>" in it.
    expect(xml).toContain("<![CDATA[Adm]]]]><![CDATA[>in<&pw]]>");
    // No product key given: the <ProductKey> block is removed, the template's key stays in effect.
    expect(xml.replace(/<!--[\s\S]*?-->/g, "")).not.toContain("ProductKey");
    expect(xml.replace(/<!--[\s\S]*?-->/g, "")).not.toMatch(/\$[A-Za-z]+\$/);
  });

  it("fails where it is written when the file is missing", () => {
    expect(() => SysprepConfig.fromOvirtAnswerFile(join(dir, "nope.xml"))).toThrow(
      /SysprepConfig: cannot read the answer file .*nope\.xml/,
    );
  });
});
