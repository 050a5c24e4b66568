import type { DiskPlan, VmPlan } from "../../core/plan";
import { escapeXml } from "../../core/xml";

export interface DirectKernelBoot {
  readonly kernelPath: string;
  readonly initrdPath: string;
  readonly cmdline: string;
}

export interface RenderDomainOptions {
  /** Storage pool that holds the member's volumes (the plan leaves that choice to the engine). */
  readonly storagePool: string;
  /** Overrides the plan's domain type, e.g. "test" for libvirt's test hypervisor. @default vm.domainType */
  readonly domainType?: "kvm" | "qemu" | "test";
  /** Boot this kernel instead of the disks (the tests' tiny guest). @default undefined: boot from disk */
  readonly directKernelBoot?: DirectKernelBoot;
  /** Write the serial console to this file. @default undefined: a pty */
  readonly serialLogPath?: string;
  /** Leave out the NICs, for hosts that lack the plan's network. @default false */
  readonly withoutNetwork?: boolean;
  /**
   * SPICE password that locks the console until the reconciler issues a ticket (it is rendered
   * already expired). Pass a random value per member; omitted, the console is open.
   * @default undefined
   */
  readonly lockedSpicePassword?: string;
}

const attr = (name: string, value: string | number | undefined) =>
  value === undefined ? "" : ` ${name}="${escapeXml(String(value))}"`;

function diskXml(d: DiskPlan, storagePool: string): string {
  return (
    `    <disk type="volume" device="${d.device}">\n` +
    `      <driver name="qemu" type="${d.format}"/>\n` +
    `      <source${attr("pool", storagePool)}${attr("volume", d.volumeName)}/>\n` +
    `      <target${attr("dev", d.targetDev)}${attr("bus", d.bus)}/>\n` +
    (d.bootOrder === undefined ? "" : `      <boot order="${d.bootOrder}"/>\n`) +
    (d.readOnly ? "      <readonly/>\n" : "") +
    `    </disk>\n`
  );
}

function cpuXml(vm: VmPlan): string {
  if (!vm.cpuMode && vm.numaCells.length === 0) return "";
  const cells = vm.numaCells
    .map((c, id) => `      <cell id="${id}"${attr("cpus", c.cpus)} memory="${c.memoryMiB}" unit="MiB"/>\n`)
    .join("");
  const numa = cells ? `    <numa>\n${cells}    </numa>\n` : "";
  return `  <cpu${attr("mode", vm.cpuMode)}>\n${numa}  </cpu>\n`;
}

function numaTuneXml(vm: VmPlan): string {
  if (!vm.numaTune) return "";
  const nodes = vm.numaTune.memNodes
    .map((n) => `    <memnode cellid="${n.cellId}" mode="${n.mode}"${attr("nodeset", n.nodeset)}/>\n`)
    .join("");
  return `  <numatune>\n    <memory mode="${vm.numaTune.mode}"${attr("nodeset", vm.numaTune.nodeset)}/>\n${nodes}  </numatune>\n`;
}

function osXml(vm: VmPlan, boot: DirectKernelBoot | undefined): string {
  const kernel = boot
    ? `    <kernel>${escapeXml(boot.kernelPath)}</kernel>\n` +
      `    <initrd>${escapeXml(boot.initrdPath)}</initrd>\n` +
      `    <cmdline>${escapeXml(boot.cmdline)}</cmdline>\n`
    : "";
  return (
    `  <os>\n    <type${attr("machine", vm.machine)}>hvm</type>\n${kernel}` + `    <smbios mode="sysinfo"/>\n  </os>\n`
  );
}

function serialXml(logPath: string | undefined): string {
  const [type, source] = logPath === undefined ? ["pty", ""] : ["file", `<source${attr("path", logPath)}/>`];
  return (
    `    <serial type="${type}">${source}<target port="0"/></serial>\n` +
    `    <console type="${type}">${source}<target type="serial" port="0"/></console>\n`
  );
}

function graphicsXml(vm: VmPlan, lockedPassword: string | undefined): string {
  const lock =
    lockedPassword === undefined ? "" : `${attr("passwd", lockedPassword)} passwdValidTo="1970-01-01T00:00:00"`;
  return (
    `    <graphics type="spice" autoport="yes"${attr("listen", vm.graphics.listen)}${lock}>\n` +
    `      <listen type="address"${attr("address", vm.graphics.listen)}/>\n` +
    `    </graphics>\n` +
    `    <video><model type="qxl" primary="yes"/></video>\n` +
    `    <channel type="spicevmc"><target type="virtio" name="com.redhat.spice.0"/></channel>\n`
  );
}

/**
 * libvirt domain XML for one planned member, with the pool metadata the reconciler reads. For
 * defining members without an engine (tests, the local example pool); the engines render the
 * same plan through their providers. Pure: the same plan and options give the same bytes.
 */
export function renderDomainXml(vm: VmPlan, opts: RenderDomainOptions): string {
  const nics = opts.withoutNetwork
    ? ""
    : vm.nics
        .map(
          (n) =>
            `    <interface type="network"><source${attr("network", n.network)}/><model${attr("type", n.model)}/></interface>\n`,
        )
        .join("");
  const oem = vm.oemStrings.map((s) => `        <entry>${escapeXml(s)}</entry>\n`).join("");
  return (
    `<domain type="${opts.domainType ?? vm.domainType}">\n` +
    `  <name>${escapeXml(vm.name)}</name>\n` +
    (vm.description ? `  <description>${escapeXml(vm.description)}</description>\n` : "") +
    `  <metadata>\n    ${vm.metadataXml}\n  </metadata>\n` +
    `  <memory unit="MiB">${vm.memoryMiB}</memory>\n` +
    `  <vcpu>${vm.vcpus}</vcpu>\n` +
    `  <sysinfo type="smbios">\n    <oemStrings>\n${oem}    </oemStrings>\n  </sysinfo>\n` +
    osXml(vm, opts.directKernelBoot) +
    `  <features>\n    <acpi/>\n  </features>\n` +
    cpuXml(vm) +
    numaTuneXml(vm) +
    `  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n` +
    `  <devices>\n` +
    vm.disks.map((d) => diskXml(d, opts.storagePool)).join("") +
    nics +
    graphicsXml(vm, opts.lockedSpicePassword) +
    serialXml(opts.serialLogPath) +
    `  </devices>\n` +
    `</domain>\n`
  );
}
