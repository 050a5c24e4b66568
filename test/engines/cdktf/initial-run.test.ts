import { App, Testing, TerraformStack } from "cdktf";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { VmPool, readStackDir, synthStack } from "../../../engines/cdktf";
import { PoolSpecError, SysprepConfig, type VmPoolProps } from "../../../core";
import { WindowsServerPoolStack } from "../../../examples/windows-server-pool";
import { validProps, withWindowsSecrets } from "../../support/fixtures";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const DOMAIN_PASSWORD = `Dom<&"'>pässwörd€-${process.pid}`;
const ADMIN_PASSWORD = `Adm!n-${process.pid}-ünïcode`;
const PRODUCT_KEY = "ABCDE-FGHIJ-KLMNO-PQRST-UVWXY";

const withSecrets = <T>(fn: () => T): T =>
  withWindowsSecrets({ domainPassword: DOMAIN_PASSWORD, adminPassword: ADMIN_PASSWORD, productKey: PRODUCT_KEY }, fn);

function allFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((e) =>
    statSync(join(dir, e)).isDirectory() ? allFiles(join(dir, e)) : [join(dir, e)],
  );
}

const windowsProps = (overrides: Partial<VmPoolProps> = {}): VmPoolProps =>
  validProps({
    name: "Win-??",
    size: 3,
    operatingSystem: "windows-11",
    initialRun: { sysprep: new SysprepConfig({ localAdministrator: { password: ADMIN_PASSWORD } }) },
    ...overrides,
  });

function expectIssue(make: () => unknown, prop: string, message: RegExp): PoolSpecError {
  let err: unknown;
  try {
    make();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(PoolSpecError);
  const issue = (err as PoolSpecError).issues.find((i) => i.prop === prop);
  expect(issue?.message).toMatch(message);
  return err as PoolSpecError;
}

describe("Windows pool media (the example, synthesized for real)", () => {
  let outdir: string;
  let stackDir: string;
  let json: Json;

  beforeAll(() => {
    outdir = mkdtempSync(join(tmpdir(), "vmpools-win-"));
    withSecrets(() => {
      const app = new App({ outdir });
      new WindowsServerPoolStack(app, "windows-server-pool");
      app.synth();
    });
    stackDir = join(outdir, "stacks/windows-server-pool");
    json = readStackDir(stackDir);
  });
  afterAll(() => rmSync(outdir, { recursive: true, force: true }));

  const isoOf = (vm: string): string => {
    const volume = Object.values<Json>(json.resource.libvirt_volume).find((v) => v.name === `${vm}-sysprep.iso`)!;
    const url: string = volume.create.content.url;
    expect(url).toMatch(/^\$\{abspath\(path\.module\)\}\/assets\/.*\/WinSrv-\d\d-sysprep\.iso$/);
    return join(stackDir, url.replace("${abspath(path.module)}/", ""));
  };
  const unattendOf = (vm: string) =>
    execFileSync("isoinfo", ["-J", "-x", "/Unattend.xml", "-i", isoOf(vm)], { encoding: "utf8" });

  it("gives every member its own answer file with its ComputerName, on a CD-ROM", () => {
    for (const [vm, computer] of [
      ["WinSrv-01", "WINSRV-01"],
      ["WinSrv-07", "WINSRV-07"],
      ["WinSrv-20", "WINSRV-20"],
    ] as const) {
      const xml = unattendOf(vm);
      expect(xml).toContain(`<ComputerName>${computer}</ComputerName>`);
      expect(xml.match(/<ComputerName>/g)).toHaveLength(1);
    }
    const d = Object.values<Json>(json.resource.libvirt_domain).find((x) => x.name === "WinSrv-07")!;
    expect(d.devices.disks[1]).toMatchObject({ device: "cdrom", read_only: true });
    expect(execFileSync("isoinfo", ["-d", "-i", isoOf("WinSrv-07")], { encoding: "utf8" })).toMatch(
      /Volume id: UNATTEND/,
    );
  });

  it("joins addomain.local as Sarah_Smith (the seed's example) and is well-formed XML", () => {
    const xml = unattendOf("WinSrv-03");
    expect(xml).toMatch(/<Credentials>\s*<Domain>addomain.local<\/Domain>\s*<Password>/);
    expect(xml).toMatch(/<Username>Sarah_Smith<\/Username>/);
    expect(xml).toMatch(/<JoinDomain>addomain.local<\/JoinDomain>/);
    expect(xml).toContain(`<ProductKey>${PRODUCT_KEY}</ProductKey>`);
    execFileSync("xmllint", ["--noout", "-"], { input: xml });
    const password = execFileSync(
      "xmllint",
      ["--xpath", "string(//*[local-name()='Credentials']/*[local-name()='Password'])", "-"],
      { input: xml, encoding: "utf8" },
    );
    expect(password.replace(/\n$/, "")).toBe(DOMAIN_PASSWORD);
  });

  it("names media assets by non-secret facts, so the plan gives no hash to guess passwords against", () => {
    const urls = (json: Json) =>
      Object.values<Json>(json.resource.libvirt_volume)
        .map((v) => v.create?.content?.url)
        .filter(Boolean);
    const other = mkdtempSync(join(tmpdir(), "vmpools-win2-"));
    try {
      const saved = { ...process.env };
      process.env.VMPOOLS_ADMIN_PASSWORD = "a-completely-different-password";
      try {
        const app = new App({ outdir: other });
        new WindowsServerPoolStack(app, "windows-server-pool");
        app.synth();
      } finally {
        process.env = saved;
      }
      const json2 = readStackDir(join(other, "stacks/windows-server-pool")) as Json;
      expect(urls(json2)).toEqual(urls(json));
      expect(
        readFileSync(isoOf("WinSrv-05")).equals(
          readFileSync(
            join(
              other,
              "stacks/windows-server-pool",
              urls(json)
                .find((u) => u.includes("WinSrv-05"))!
                .replace("${abspath(path.module)}/", ""),
            ),
          ),
        ),
      ).toBe(false);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });

  it("writes media files with mode 0600", () => {
    for (const vm of ["WinSrv-01", "WinSrv-20"]) expect(statSync(isoOf(vm)).mode & 0o777).toBe(0o600);
  });

  it("never puts a secret in clear text in the synthesized JSON or any other non-media file", () => {
    const secrets = [DOMAIN_PASSWORD, ADMIN_PASSWORD, PRODUCT_KEY, "demo-only"];
    const files = allFiles(outdir).filter((f) => !/-sysprep\.(iso|img)$/.test(f));
    expect(files.some((f) => f.endsWith("cdk.tf.json"))).toBe(true);
    for (const f of files) {
      const text = readFileSync(f, "utf8");
      for (const s of secrets)
        expect({ file: relative(outdir, f), leaks: text.includes(s) }).toEqual({
          file: relative(outdir, f),
          leaks: false,
        });
    }
  });
});

describe("initial-run rules", () => {
  const synth = (props: VmPoolProps) => {
    const stack = new TerraformStack(Testing.app(), "t");
    new VmPool(stack, "P", props);
    return JSON.parse(synthStack(stack)) as Json;
  };

  it("Windows pools need a SysprepConfig; Linux pools cannot have one", () => {
    expectIssue(
      () => synth(windowsProps({ initialRun: {} })),
      "initialRun.sysprep",
      /need a SysprepConfig.*new SysprepConfig/,
    );
    expectIssue(
      () =>
        synth(validProps({ initialRun: { sysprep: new SysprepConfig({ localAdministrator: { password: "x" } }) } })),
      "initialRun.sysprep",
      /sysprep is for Windows/,
    );
    expectIssue(
      () => synth(windowsProps({ initialRun: { sysprep: { props: {} } as SysprepConfig } })),
      "initialRun.sysprep",
      /must be a SysprepConfig/,
    );
  });

  it("a member name that cannot be a ComputerName fails at synth with the fix", () => {
    const err = expectIssue(
      () => synth(windowsProps({ name: "EngineeringDesk-??" })),
      "name",
      /15|computerNamePattern/,
    );
    expect(err.message).toContain("computerNamePattern");
    const sysprep = new SysprepConfig({
      localAdministrator: { password: ADMIN_PASSWORD },
      computerNamePattern: "ENG-###",
    });
    const json = synth(windowsProps({ name: "EngineeringDesk-??", initialRun: { sysprep } }));
    expect(Object.keys(json.resource.libvirt_domain)).toHaveLength(3);
  });

  it("a bad SysprepConfig fails where it is written, without showing secrets", () => {
    let message = "";
    try {
      new SysprepConfig({
        domain: { name: "addomain.local", user: "", password: DOMAIN_PASSWORD },
        localAdministrator: { password: ADMIN_PASSWORD },
      });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/^SysprepConfig: invalid pool definition/);
    expect(message).toMatch(/domain\.user/);
    expect(message).not.toContain(DOMAIN_PASSWORD);
    expect(message).not.toContain(ADMIN_PASSWORD);
  });

  it("floppy media: a FAT image with Unattend.xml on a floppy drive, only on machines with a controller", () => {
    expectIssue(
      () =>
        synth(
          windowsProps({
            initialRun: { sysprep: new SysprepConfig({ localAdministrator: { password: "p" }, media: "floppy" }) },
          }),
        ),
      "initialRun.sysprep.media",
      /"q35" machine has no floppy controller/,
    );
    const outdir = mkdtempSync(join(tmpdir(), "vmpools-floppy-"));
    try {
      const app = new App({ outdir });
      const stack = new TerraformStack(app, "f");
      new VmPool(
        stack,
        "P",
        windowsProps({
          template: { ...validProps().template, machine: "pc" },
          initialRun: { sysprep: new SysprepConfig({ localAdministrator: { password: "p" }, media: "floppy" }) },
        }),
      );
      app.synth();
      const json = readStackDir(join(outdir, "stacks/f")) as Json;
      const d = Object.values<Json>(json.resource.libvirt_domain).find((x) => x.name === "Win-02")!;
      expect(d.devices.disks[1]).toMatchObject({ device: "floppy", target: { dev: "fda", bus: "fdc" } });
      const vol = Object.values<Json>(json.resource.libvirt_volume).find((v) => v.name === "Win-02-sysprep.img")!;
      const img = join(outdir, "stacks/f", vol.create.content.url.replace("${abspath(path.module)}/", ""));
      const env = { ...process.env, MTOOLS_SKIP_CHECK: "1" };
      expect(execFileSync("mdir", ["-i", img, "::"], { encoding: "utf8", env })).toMatch(/Unattend\.xml/i);
      expect(execFileSync("mtype", ["-i", img, "::Unattend.xml"], { encoding: "utf8", env })).toContain(
        "<ComputerName>WIN-02</ComputerName>",
      );
    } finally {
      rmSync(outdir, { recursive: true, force: true });
    }
  });

  it("two stacks with same-named members each ship their own media", () => {
    const outdir = mkdtempSync(join(tmpdir(), "vmpools-twostacks-"));
    try {
      const app = new App({ outdir });
      const zones = [
        ["staging", "Europe/Berlin"],
        ["prod", "Asia/Tokyo"],
      ] as const;
      for (const [id, zone] of zones) {
        new VmPool(
          new TerraformStack(app, id),
          "P",
          validProps({ size: 1, initialRun: { cloudInit: { timeZone: zone } } }),
        );
      }
      app.synth();
      for (const [id, zone] of zones) {
        const json = readStackDir(join(outdir, `stacks/${id}`)) as Json;
        const vol = Object.values<Json>(json.resource.libvirt_volume).find(
          (v) => v.name === "MyPool-001-cloud-init.iso",
        )!;
        const iso = join(outdir, `stacks/${id}`, vol.create.content.url.replace("${abspath(path.module)}/", ""));
        const userData = execFileSync("isoinfo", ["-J", "-i", iso, "-x", "/user-data"], { encoding: "utf8" });
        expect(userData).toContain(`timezone: ${zone}\n`);
      }
    } finally {
      rmSync(outdir, { recursive: true, force: true });
    }
  });

  it("Linux members get a NoCloud image of our own with the typed cloud-config; clear-text passwords are refused", () => {
    const outdir = mkdtempSync(join(tmpdir(), "vmpools-nocloud-"));
    try {
      const app = new App({ outdir });
      const stack = new TerraformStack(app, "l");
      const props = validProps({
        initialRun: { cloudInit: { timeZone: "Europe/Berlin", packages: ["htop"], runCommands: ["echo hi"] } },
      });
      new VmPool(stack, "P", props);
      app.synth();
      const json = readStackDir(join(outdir, "stacks/l")) as Json;
      expect(json.resource.libvirt_cloudinit_disk).toBeUndefined();
      const vol = Object.values<Json>(json.resource.libvirt_volume).find(
        (v) => v.name === "MyPool-004-cloud-init.iso",
      )!;
      const iso = join(outdir, "stacks/l", vol.create.content.url.replace("${abspath(path.module)}/", ""));
      // Read back with Debian's isoinfo: volume label cidata, NoCloud files at the root (Joliet).
      expect(execFileSync("isoinfo", ["-d", "-i", iso], { encoding: "utf8" })).toMatch(/^Volume id: cidata$/m);
      const file = (name: string) => execFileSync("isoinfo", ["-J", "-i", iso, "-x", `/${name}`], { encoding: "utf8" });
      const userData = file("user-data");
      expect(userData).toMatch(/^#cloud-config\n/);
      expect(userData).toContain("hostname: mypool-004\n");
      expect(userData).toContain("timezone: Europe/Berlin\n");
      expect(userData).toMatch(/packages:\n\s*- htop\n/);
      expect(file("meta-data")).toBe("instance-id: MyPool-004.debian-12-v1\nlocal-hostname: mypool-004\n");
      expect(statSync(iso).mode & 0o777).toBe(0o600);
    } finally {
      rmSync(outdir, { recursive: true, force: true });
    }
    const err = expectIssue(
      () => synth(validProps({ initialRun: { cloudInit: { passwordHash: "hunter2" } } })),
      "initialRun.cloudInit.passwordHash",
      /clear-text password.*mkpasswd/,
    );
    expect(err.message).not.toContain("hunter2");
  });
});
