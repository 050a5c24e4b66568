import { randomBytes } from "node:crypto";
import { describeDomain, type DomainDescription, type DomainDisk } from "../../core/domain";
import type { VmPlan } from "../../core/plan";
import { buildXml, el, parseXml, type XmlElement } from "../../core/xml";

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
  /** Boot this kernel instead of what the plan boots (the tests' tiny guest). @default the plan's */
  readonly directKernelBoot?: DirectKernelBoot;
  /** Write the serial console to this file. @default undefined: a pty */
  readonly serialLogPath?: string;
  /** Leave out the NICs, for hosts that lack the plan's network. @default false */
  readonly withoutNetwork?: boolean;
  /**
   * The console lock's SPICE password (rendered already expired, as every engine does; the
   * reconciler issues tickets). Pass one to get the same bytes for the same plan.
   * @default a random value per call: the console is never open
   */
  readonly lockedSpicePassword?: string;
}

function diskXml(d: DomainDisk, storagePool: string): XmlElement {
  return el(
    "disk",
    { type: "volume", device: d.device },
    el("driver", { name: d.driver.name, type: d.driver.type }),
    el("source", { pool: storagePool, volume: d.volume }),
    el("target", { dev: d.target.dev, bus: d.target.bus }),
    d.bootOrder !== undefined && el("boot", { order: d.bootOrder }),
    d.readOnly && el("readonly"),
  );
}

function devicesXml(d: DomainDescription, opts: RenderDomainOptions, password: string): XmlElement {
  const dev = d.devices;
  const g = dev.graphics;
  const [serialType, source] =
    opts.serialLogPath === undefined
      ? ["pty", undefined]
      : ["file", el("source", { path: opts.serialLogPath, append: "on" })];
  return el(
    "devices",
    {},
    ...dev.disks.map((k) => diskXml(k, opts.storagePool)),
    ...(opts.withoutNetwork ? [] : dev.interfaces).map((n) =>
      el("interface", { type: n.type }, el("source", { network: n.network }), el("model", { type: n.model })),
    ),
    el(
      "graphics",
      { type: g.type, autoport: "yes", listen: g.listen, passwd: password, passwdValidTo: g.lock.passwdValidTo },
      el("listen", { type: "address", address: g.listen }),
    ),
    ...dev.videos.map((v) => el("video", {}, el("model", { type: v.model, primary: v.primary ? "yes" : "no" }))),
    ...dev.channels.map((c) => el("channel", { type: c.type }, el("target", { type: c.target, name: c.name }))),
    el("serial", { type: serialType }, source, el("target", { port: dev.serial.port })),
    el("console", { type: serialType }, source, el("target", { type: dev.serial.console, port: dev.serial.port })),
  );
}

/**
 * libvirt domain XML for one planned member: core's domain description (`describeDomain`, the
 * one the engines render) as libvirt XML, with the pool metadata the reconciler reads. For
 * defining members without an engine (tests, the local example pool). Deterministic given
 * `lockedSpicePassword`.
 */
export function renderDomainXml(vm: VmPlan, opts: RenderDomainOptions): string {
  const d = describeDomain(vm);
  const password = opts.lockedSpicePassword ?? randomBytes(24).toString("base64url");
  const kernel = opts.directKernelBoot
    ? {
        path: opts.directKernelBoot.kernelPath,
        initrd: opts.directKernelBoot.initrdPath,
        cmdline: opts.directKernelBoot.cmdline,
      }
    : d.os.kernel;
  const metadata = parseXml(d.metadataXml);
  if (!metadata) throw new Error(`member ${vm.name}: its metadata is not well-formed XML (a vmpools bug)`);
  const cpu = d.cpu;
  const tune = d.numaTune;
  return buildXml(
    el(
      "domain",
      { type: opts.domainType ?? d.type },
      el("name", {}, d.name),
      d.description !== undefined && el("description", {}, d.description),
      el("metadata", {}, metadata),
      el("memory", { unit: "MiB" }, String(d.memoryMiB)),
      el("vcpu", {}, String(d.vcpus)),
      el(
        "sysinfo",
        { type: d.sysinfo.type },
        el("oemStrings", {}, ...d.sysinfo.oemStrings.map((s) => el("entry", {}, s))),
      ),
      el(
        "os",
        {},
        el("type", { machine: d.os.machine }, d.os.type),
        kernel && el("kernel", {}, kernel.path),
        kernel?.initrd !== undefined && el("initrd", {}, kernel.initrd),
        kernel?.cmdline !== undefined && el("cmdline", {}, kernel.cmdline),
        el("smbios", { mode: d.os.smbios }),
      ),
      el("features", {}, d.features.acpi && el("acpi")),
      cpu &&
        el(
          "cpu",
          { mode: cpu.mode },
          cpu.numaCells.length > 0 &&
            el(
              "numa",
              {},
              ...cpu.numaCells.map((c) => el("cell", { id: c.id, cpus: c.cpus, memory: c.memoryMiB, unit: "MiB" })),
            ),
        ),
      tune &&
        el(
          "numatune",
          {},
          el("memory", { mode: tune.memory.mode, nodeset: tune.memory.nodeset }),
          ...tune.memNodes.map((n) => el("memnode", { cellid: n.cellId, mode: n.mode, nodeset: n.nodeset })),
        ),
      el("on_poweroff", {}, d.lifecycle.onPoweroff),
      el("on_reboot", {}, d.lifecycle.onReboot),
      el("on_crash", {}, d.lifecycle.onCrash),
      devicesXml(d, opts, password),
    ),
    { pretty: true },
  );
}
