// The two serializers of a member domain (cdktf's Terraform JSON for the libvirt provider, and
// libvirt XML for members defined without an engine) say the same thing: read back into
// describeDomain's terms, both give the description, device for device, lock included.
import fc from "fast-check";
import {
  describeDomain,
  LIBVIRT_DEFAULT_LIFECYCLE,
  planPool,
  type DomainDescription,
  type DomainDisk,
  type VmPlan,
} from "../../../core";
import { memberJson, type MemberIds, type MemberJson } from "../../../engines/cdktf/terraform-json";
import { readDomainXml } from "../../../reconciler/libvirt-xml";
import { renderDomainXml } from "../../../reconciler/local/domain-xml";
import { poolPropsArb } from "../../core/pool-props";

type J = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const IDS: MemberIds = { system: "sys", media: "media", domain: "dom" };
const STORAGE_POOL = "images";

/** `${libvirt_volume.<id>.<attr>}` → the volume's attribute. */
function volumeAttr(json: MemberJson, ref: string, attr: "name" | "pool"): string {
  const m = /^\$\{libvirt_volume\.([^.]+)\.(name|pool)\}$/.exec(ref);
  if (!m || m[2] !== attr) throw new Error(`not a volume ${attr} reference: ${ref}`);
  return (json.libvirt_volume[m[1]!] as J).name === undefined ? "" : String((json.libvirt_volume[m[1]!] as J)[attr]);
}

/** The member's libvirt_domain attributes in describeDomain's terms (as readDomainXml does for XML). */
function readTerraformDomain(json: MemberJson) {
  const d = json.libvirt_domain[IDS.domain] as J;
  const dev = d.devices as J;
  const disks: J[] = dev.disks;
  const system =
    disks.find((k) => k.device === "disk" && k.boot?.order === 1) ??
    disks.find((k) => k.device === "disk" && k.target.dev === "vda") ??
    disks.find((k) => k.device === "disk");
  const spice = dev.graphics[0].spice as J;
  const unitMiB = (n: number, unit: string) => n * ({ KiB: 1 / 1024, MiB: 1, GiB: 1024 } as J)[unit];
  const description: DomainDescription = {
    name: d.name,
    type: d.type,
    description: d.description,
    memoryMiB: unitMiB(d.memory, d.memory_unit),
    vcpus: d.vcpu,
    cpu: d.cpu && {
      mode: d.cpu.mode,
      numaCells: (d.cpu.numa?.cell ?? []).map((c: J, i: number) => ({
        id: c.id ?? i,
        cpus: c.cpus,
        memoryMiB: unitMiB(c.memory, c.unit),
      })),
    },
    numaTune: d.numa_tune && {
      memory: { mode: d.numa_tune.memory.mode, nodeset: d.numa_tune.memory.nodeset },
      memNodes: (d.numa_tune.mem_nodes ?? []).map((n: J) => ({ cellId: n.cell_id, mode: n.mode, nodeset: n.nodeset })),
    },
    os: {
      type: d.os.type,
      machine: d.os.type_machine,
      smbios: d.os.sm_bios.mode,
      kernel: d.os.kernel && { path: d.os.kernel, initrd: d.os.initrd, cmdline: d.os.cmdline },
    },
    features: { acpi: d.features.acpi },
    sysinfo: {
      type: d.sys_info[0].smbios ? "smbios" : d.sys_info[0],
      oemStrings: d.sys_info[0].smbios.oem_strings.entry,
    },
    lifecycle: {
      onPoweroff: d.on_poweroff ?? LIBVIRT_DEFAULT_LIFECYCLE.onPoweroff,
      onReboot: d.on_reboot ?? LIBVIRT_DEFAULT_LIFECYCLE.onReboot,
      onCrash: d.on_crash ?? LIBVIRT_DEFAULT_LIFECYCLE.onCrash,
    },
    devices: {
      disks: disks.map((k): DomainDisk => ({
        role: k === system ? "system" : "config",
        device: k.device,
        volume: volumeAttr(json, k.source.volume.volume, "name"),
        driver: k.driver,
        target: k.target,
        readOnly: k.read_only ?? false,
        bootOrder: k.boot?.order,
      })),
      interfaces: dev.interfaces.map((n: J) => ({
        type: "network",
        network: n.source.network.network,
        model: n.model.type,
      })),
      graphics: {
        type: "spice",
        autoPort: spice.auto_port,
        listen: spice.listen,
        lock: { passwdValidTo: spice.passwd_valid_to },
      },
      videos: dev.videos.map((v: J) => ({ model: v.model.type, primary: v.model.primary === "yes" })),
      channels: dev.channels.map((c: J) => ({
        type: c.source.spice_vmc ? "spicevmc" : "?",
        target: c.target.virt_io ? "virtio" : "?",
        name: c.target.virt_io.name,
      })),
      serial: { port: dev.serials[0].target.port, console: dev.consoles[0].target.type },
    },
    metadataXml: d.metadata.xml,
  };
  return {
    description,
    storagePools: disks.map((k) => volumeAttr(json, k.source.volume.pool, "pool")),
    hasConsolePassword: typeof spice.passwd === "string" && spice.passwd.length > 0,
  };
}

const terraformOf = (vm: VmPlan) =>
  readTerraformDomain(
    memberJson(vm, IDS, {
      provider: "libvirt.localhost",
      storagePool: STORAGE_POOL,
      mediaUrl: vm.configMedia ? "/stack/assets/media.iso" : undefined,
      preventDestroy: false,
    }),
  );
const xmlOf = (vm: VmPlan) => readDomainXml(renderDomainXml(vm, { storagePool: STORAGE_POOL }))!;

test("for generated pools, the Terraform JSON and the libvirt XML read back to the same description", () => {
  fc.assert(
    fc.property(poolPropsArb, (props) => {
      for (const vm of planPool(props).members) {
        const described = describeDomain(vm);
        const tf = terraformOf(vm);
        const xml = xmlOf(vm);
        expect(xml.description).toEqual(described);
        expect(tf.description).toEqual(described);
        // The console lock, one rule in both: a password set, valid until before creation.
        expect(tf.hasConsolePassword && xml.hasConsolePassword).toBe(true);
        expect(tf.storagePools).toEqual(xml.storagePools);
      }
    }),
    { numRuns: 120 },
  );
});

test("the readers see a difference: a member rendered unlocked, without media or with another NIC differs", () => {
  const vm = planPool(fc.sample(poolPropsArb, { numRuns: 1, seed: 3 })[0]!).members[0]!;
  const described = describeDomain(vm);
  const other = { ...vm, nics: [{ network: "elsewhere", model: "e1000" }] };
  expect(xmlOf(other).description).not.toEqual(described);
  expect(terraformOf(other).description).not.toEqual(described);
  const json = memberJson(vm, IDS, { provider: "p", storagePool: STORAGE_POOL, preventDestroy: false });
  expect(readTerraformDomain(json).description.devices.disks).toHaveLength(1);
  const unlocked = renderDomainXml(vm, { storagePool: STORAGE_POOL }).replace(/ passwd="[^"]*"/, "");
  expect(readDomainXml(unlocked)!.hasConsolePassword).toBe(false);
});
