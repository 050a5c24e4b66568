// The baseline: what a competent user writes by hand with the same generated bindings, one
// `for_each` (TerraformIterator) per resource kind over a map of the members; no model, no
// validation, cloud-init media built by the provider.
import { App, TerraformIterator, TerraformStack } from "cdktf";
import * as cloudinitDisk from "vmpools/providers/libvirt/cloudinit-disk";
import * as domain from "vmpools/providers/libvirt/domain";
import * as provider from "vmpools/providers/libvirt/provider";
import * as volume from "vmpools/providers/libvirt/volume";
import { BASE, SIZE, timed } from "./timing";

timed(() => {
  const app = new App();
  const stack = new TerraformStack(app, "bench");
  const libvirt = new provider.LibvirtProvider(stack, "libvirt", { alias: "host_localhost", uri: "qemu:///system" });
  const members: Record<string, { name: string; hostname: string; index: number }> = {};
  for (let i = 1; i <= SIZE; i++) {
    const name = `Bench-${String(i).padStart(4, "0")}`;
    members[name] = { name, hostname: name.toLowerCase(), index: i };
  }
  const each = TerraformIterator.fromMap(members);
  const name = each.getString("name");
  const lifecycle = { ignoreChanges: "all" as const, preventDestroy: false };
  const system = new volume.Volume(stack, "system", {
    forEach: each,
    provider: libvirt,
    name: `${name}.qcow2`,
    pool: "default",
    capacity: 10,
    capacityUnit: "GiB",
    target: { format: { type: "qcow2" } },
    backingStore: { path: BASE, format: { type: "qcow2" } },
    lifecycle,
  });
  const seed = new cloudinitDisk.CloudinitDisk(stack, "seed", {
    forEach: each,
    provider: libvirt,
    name: `${name}-cloud-init`,
    metaData: `instance-id: ${name}.debian-12-v1\nlocal-hostname: ${each.getString("hostname")}\n`,
    userData: `#cloud-config\nhostname: ${each.getString("hostname")}\npreserve_hostname: false\n`,
    lifecycle,
  });
  const media = new volume.Volume(stack, "media", {
    forEach: each,
    provider: libvirt,
    name: `${name}-cloud-init.iso`,
    pool: "default",
    target: { format: { type: "raw" } },
    create: { content: { url: "${libvirt_cloudinit_disk.seed[each.key].path}" } },
    dependsOn: [seed],
    lifecycle,
  });
  new domain.Domain(stack, "domain", {
    forEach: each,
    provider: libvirt,
    name,
    type: "kvm",
    memory: 1024,
    memoryUnit: "MiB",
    vcpu: 2,
    os: { type: "hvm", typeMachine: "q35", smBios: { mode: "sysinfo" } },
    features: { acpi: true },
    sysInfo: [{ smbios: { oemStrings: { entry: ["vmpools:pool=Bench-????", "vmpools:template=debian-12"] } } }],
    devices: {
      disks: [
        {
          device: "disk",
          source: { volume: { pool: "default", volume: `${name}.qcow2` } },
          driver: { name: "qemu", type: "qcow2" },
          target: { dev: "vda", bus: "virtio" },
          boot: { order: 1 },
        },
        {
          device: "cdrom",
          readOnly: true,
          source: { volume: { pool: "default", volume: `${name}-cloud-init.iso` } },
          driver: { name: "qemu", type: "raw" },
          target: { dev: "sda", bus: "sata" },
        },
      ],
      interfaces: [{ source: { network: { network: "default" } }, model: { type: "virtio" } }],
      graphics: [
        {
          spice: {
            autoPort: true,
            listen: "0.0.0.0",
            passwd: "${sensitive(uuid())}",
            passwdValidTo: "1970-01-01T00:00:00",
          },
        },
      ],
      videos: [{ model: { type: "qxl", primary: "yes" } }],
      channels: [{ source: { spiceVmc: true }, target: { virtIo: { name: "com.redhat.spice.0" } } }],
      serials: [{ target: { port: 0 } }],
      consoles: [{ target: { type: "serial", port: 0 } }],
    },
    metadata: {
      xml: `<vmpools:member xmlns:vmpools="https://vmpools.dev/xmlns/pool/1" index="\${each.value.index}"/>`,
    },
    running: false,
    dependsOn: [system, media],
    lifecycle,
  });
  return app;
});
