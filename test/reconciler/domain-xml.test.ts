import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseMetadataXml } from "../../core/metadata";
import { describeDomain } from "../../core/domain";
import { planPool } from "../../core/plan";
import { VirshDriver } from "../../reconciler/driver/libvirt-driver";
import { readDomainXml, systemVolumeOf } from "../../reconciler/libvirt-xml";
import { renderDomainXml } from "../../reconciler/local/domain-xml";
import { TEST_URI } from "../support/libvirt";
import { validProps } from "../support/fixtures";

const dir = mkdtempSync(join(tmpdir(), "vmpools-domain-xml-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const validate = (xml: string): string => {
  const file = join(dir, `${randomBytes(4).toString("hex")}.xml`);
  writeFileSync(file, xml);
  const run = spawnSync("virt-xml-validate", [file, "domain"], { encoding: "utf8" });
  return `${run.stdout}${run.stderr}`;
};

const suffix = randomBytes(3).toString("hex");
const plan = planPool(
  validProps({
    name: `Xml${suffix}-??`,
    size: 2,
    description: `desk <&> "pool"`,
    host: {
      migration: { mode: "none" },
      passThroughHostCpu: true,
      startRunningOn: { hosts: ["localhost"] },
      numa: {
        nodeCount: 2,
        tuneMode: "interleave",
        pinning: [
          { virtualNode: 0, hostNodes: [0] },
          { virtualNode: 1, hostNodes: [1] },
        ],
      },
    },
  }),
);
const vm = plan.members[1]!;

test("renders every plan feature as libvirt XML that libvirt's schema accepts", () => {
  const xml = renderDomainXml(vm, { storagePool: "images", lockedSpicePassword: "s3cret'" });
  expect(validate(xml)).toMatch(/validates/);
  expect(xml).toContain(`<domain type="${vm.domainType}">`);
  expect(xml).toContain(`<name>${vm.name}</name>`);
  expect(xml).toContain("<description>desk &lt;&amp;&gt; &quot;pool&quot;</description>");
  expect(xml).toContain('<cpu mode="host-passthrough">');
  expect(xml).toContain('<cell id="1" cpus="1" memory="512" unit="MiB"/>');
  expect(xml).toContain('<memory mode="interleave" nodeset="0,1"/>');
  expect(xml).toContain('<memnode cellid="1" mode="interleave" nodeset="1"/>');
  expect(xml).toContain(`<source pool="images" volume="${vm.name}.qcow2"/>`);
  expect(xml).toContain('passwd="s3cret&apos;" passwdValidTo="1970-01-01T00:00:00"');
  expect(xml).toContain("<entry>vmpools:template-version=1</entry>");
  expect(parseMetadataXml(xml)).toEqual(vm.metadata);
  expect(systemVolumeOf(xml)).toEqual({ storagePool: "images", volume: `${vm.name}.qcow2` });
});

test("direct kernel boot, a serial log file and no network are options", () => {
  const xml = renderDomainXml(vm, {
    storagePool: "images",
    domainType: "qemu",
    directKernelBoot: { kernelPath: "/k/vmlinuz", initrdPath: "/k/initrd", cmdline: "console=ttyS0 a=<b>" },
    serialLogPath: "/var/log/m.log",
    withoutNetwork: true,
  });
  expect(validate(xml)).toMatch(/validates/);
  expect(xml).toContain('<domain type="qemu">');
  expect(xml).toContain("<cmdline>console=ttyS0 a=&lt;b&gt;</cmdline>");
  expect(xml).toMatch(/<serial type="file">\s*<source path="\/var\/log\/m.log" append="on"\/>/);
  expect(xml).not.toContain("<interface");
});

test("the console is locked without a password given: a random one, already expired", () => {
  const a = renderDomainXml(vm, { storagePool: "images" });
  const b = renderDomainXml(vm, { storagePool: "images" });
  const passwd = (xml: string) => /<graphics [^>]*passwd="([^"]+)" passwdValidTo="1970-01-01T00:00:00"/.exec(xml)?.[1];
  expect(passwd(a)).toMatch(/^[A-Za-z0-9_-]{32}$/);
  expect(passwd(b)).not.toBe(passwd(a));
  expect(readDomainXml(a)!.hasConsolePassword).toBe(true);
});

test("the plan's direct kernel boot is rendered (the option only overrides it)", () => {
  const booted = planPool(
    validProps({
      name: `Xml${suffix}-??`,
      size: 1,
      template: { ...validProps().template, directKernelBoot: { kernelPath: "/boot/vmlinuz", cmdline: "quiet" } },
    }),
  ).members[0]!;
  const xml = renderDomainXml(booted, { storagePool: "images", lockedSpicePassword: "p" });
  expect(validate(xml)).toMatch(/validates/);
  expect(xml).toContain("<kernel>/boot/vmlinuz</kernel>");
  expect(xml).toContain("<cmdline>quiet</cmdline>");
  expect(xml).not.toContain("<initrd>");
});

test("the same plan and password render the same bytes", () => {
  const render = () =>
    renderDomainXml(planPool(validProps({ name: `Xml${suffix}-??`, size: 2 })).members[0]!, {
      storagePool: "p",
      lockedSpicePassword: "same",
    });
  expect(render()).toBe(render());
});

test("libvirt's test hypervisor defines it and keeps our metadata and volume disks", async () => {
  const driver = new VirshDriver({ uri: TEST_URI });
  try {
    await driver.defineDomain(renderDomainXml(vm, { storagePool: "default-pool", domainType: "test" }));
    const back = await driver.domainXml(vm.name, { inactive: true, securityInfo: true });
    // What libvirt keeps is what was described: disks, NIC, the locked console, devices.
    const read = readDomainXml(back)!;
    expect(read.description.devices.disks).toEqual(describeDomain(vm).devices.disks);
    expect(read.description.devices.interfaces).toEqual(describeDomain(vm).devices.interfaces);
    expect(read.description.devices.graphics).toEqual(describeDomain(vm).devices.graphics);
    expect(read.hasConsolePassword).toBe(true);
    expect(read.description.lifecycle).toEqual(describeDomain(vm).lifecycle);
    expect(systemVolumeOf(back)).toEqual({ storagePool: "default-pool", volume: `${vm.name}.qcow2` });
    expect(parseMetadataXml((await driver.getMetadata(vm.name, "https://vmpools.dev/xmlns/pool/1"))!)).toEqual(
      vm.metadata,
    );
  } finally {
    await driver.undefineDomain(vm.name).catch(() => undefined);
    await driver.close();
  }
});
