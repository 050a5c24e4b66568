// One synth measurement in a fresh process: `node dist/bench/synth-one.js <vmpool|windows|plain> <size>`.
// Prints JSON { variant, size, synthMs, maxRssMiB, resources }.
import { App, TerraformStack } from "cdktf";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VmPool } from "../constructs";
import { SysprepConfig } from "../core";
import { CloudinitDisk } from "../providers/gen/providers/libvirt/cloudinit-disk";
import { Domain } from "../providers/gen/providers/libvirt/domain";
import { Volume } from "../providers/gen/providers/libvirt/volume";
import { LibvirtProvider } from "../providers/gen/providers/libvirt/provider";

const [variant, sizeArg] = process.argv.slice(2);
const size = Number(sizeArg);
const BASE = "/var/lib/libvirt/images/debian-12.qcow2";

/** The same member resources as VmPool writes, by hand, without the model or validation. */
function plainLoop(stack: TerraformStack): void {
  const provider = new LibvirtProvider(stack, "libvirt", { alias: "host_localhost", uri: "qemu:///system" });
  for (let i = 1; i <= size; i++) {
    const name = `Bench-${String(i).padStart(4, "0")}`;
    const host = name.toLowerCase();
    const system = new Volume(stack, `${name}-system`, {
      provider,
      name: `${name}.qcow2`,
      pool: "default",
      capacity: 10,
      capacityUnit: "GiB",
      target: { format: { type: "qcow2" } },
      backingStore: { path: BASE, format: { type: "qcow2" } },
      lifecycle: { ignoreChanges: "all", preventDestroy: false },
    });
    const iso = new CloudinitDisk(stack, `${name}-ci`, {
      provider,
      name: `${name}-cloud-init`,
      metaData: `instance-id: ${name}.debian-12-v1\nlocal-hostname: ${host}\n`,
      userData: `#cloud-config\nhostname: ${host}\npreserve_hostname: false\n`,
      lifecycle: { ignoreChanges: "all" },
    });
    const config = new Volume(stack, `${name}-civol`, {
      provider,
      name: `${name}-cloud-init.iso`,
      pool: "default",
      target: { format: { type: "raw" } },
      create: { content: { url: iso.path } },
      lifecycle: { ignoreChanges: "all", preventDestroy: false },
    });
    new Domain(stack, `${name}-domain`, {
      provider,
      name,
      type: "kvm",
      memory: 1024,
      memoryUnit: "MiB",
      vcpu: 2,
      os: { type: "hvm", typeMachine: "q35", smBios: { mode: "sysinfo" } },
      features: { acpi: true },
      sysInfo: [
        {
          smbios: {
            oemStrings: {
              entry: ["vmpools:pool=Bench-????", "vmpools:template=debian-12", "vmpools:template-version=1"],
            },
          },
        },
      ],
      devices: {
        disks: [
          {
            device: "disk",
            source: { volume: { pool: system.pool, volume: system.name } },
            driver: { name: "qemu", type: "qcow2" },
            target: { dev: "vda", bus: "virtio" },
            boot: { order: 1 },
          },
          {
            device: "cdrom",
            readOnly: true,
            source: { volume: { pool: config.pool, volume: config.name } },
            driver: { name: "qemu", type: "raw" },
            target: { dev: "sda", bus: "sata" },
          },
        ],
        interfaces: [{ source: { network: { network: "default" } }, model: { type: "virtio" } }],
        graphics: [
          { spice: { autoPort: true, listen: "0.0.0.0", passwd: "${uuid()}", passwdValidTo: "1970-01-01T00:00:00" } },
        ],
        videos: [{ model: { type: "qxl", primary: "yes" } }],
        channels: [{ source: { spiceVmc: true }, target: { virtIo: { name: "com.redhat.spice.0" } } }],
        serials: [{ target: { port: 0 } }],
        consoles: [{ target: { type: "serial", port: 0 } }],
      },
      metadata: {
        xml: `<vmpools:member xmlns:vmpools="https://vmpools.dev/xmlns/pool/1" pool="Bench-????" index="${i}"/>`,
      },
      running: false,
      lifecycle: { ignoreChanges: ["running", "devices", "memory", "vcpu", "cpu", "os"], preventDestroy: false },
    });
  }
}

const outdir = mkdtempSync(join(tmpdir(), "vmpools-bench-"));
const started = process.hrtime.bigint();
const app = new App({ outdir });
const stack = new TerraformStack(app, "bench");
const template = { name: "debian-12", version: 1, baseImagePath: BASE, diskSizeGiB: 10, memoryMiB: 1024, vcpus: 2 };
if (variant === "plain") plainLoop(stack);
else if (variant === "windows")
  // Same pool as Windows Server 2022 members joining a domain: per member an Unattend.xml on an ISO.
  new VmPool(stack, "Bench", {
    name: "Bench-????",
    template: { ...template, operatingSystem: "windows-server-2022" },
    size,
    maxVmsInPool: Math.max(size, 1000),
    initialRun: {
      sysprep: new SysprepConfig({
        domain: { name: "addomain.local", user: "Sarah_Smith", password: "bench-only" },
        localAdministrator: { password: "bench-only" },
      }),
    },
  });
else new VmPool(stack, "Bench", { name: "Bench-????", template, size, maxVmsInPool: Math.max(size, 1000) });
app.synth();
const synthMs = Number(process.hrtime.bigint() - started) / 1e6;
rmSync(outdir, { recursive: true, force: true });
console.log(
  JSON.stringify({
    variant,
    size,
    synthMs: Math.round(synthMs),
    maxRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
  }),
);
