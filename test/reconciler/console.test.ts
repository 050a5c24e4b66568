import {
  ConsoleOptionsError,
  renderVvFile,
  ticketedGraphicsXml,
  validateConsoleOptions,
} from "../../reconciler/console";
import { planPool } from "../../core/plan";
import {
  attributes,
  overlayFactsOf,
  readDomainXml,
  spiceDisplayOf,
  systemVolumeOf,
  withDiskVolume,
} from "../../reconciler/libvirt-xml";
import { renderDomainXml } from "../../reconciler/local/domain-xml";
import { validProps } from "../support/fixtures";

// As `virsh dumpxml` prints a running qemu domain.
const LIVE = `<domain type='qemu' id='7'>
  <devices>
    <disk type='volume' device='cdrom'>
      <source pool='images' volume='m-1-cloud-init.iso'/>
      <target dev='sda' bus='sata'/>
    </disk>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool='images' volume='m-1.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
    </disk>
    <graphics type='vnc' port='5901' autoport='yes'/>
    <graphics type='spice' port='5900' autoport='yes' listen='127.0.0.1' passwdValidTo='1970-01-01T00:00:00'>
      <listen type='address' address='127.0.0.1'/>
    </graphics>
  </devices>
</domain>`;

describe("reading libvirt XML", () => {
  it("finds the boot disk's volume, not the config media", () => {
    expect(systemVolumeOf(LIVE)).toEqual({ storagePool: "images", volume: "m-1.qcow2" });
    const fileDisk = LIVE.replace("type='volume' device='disk'", "type='file' device='disk'");
    expect(systemVolumeOf(fileDisk)).toBeUndefined();
  });

  it("reads an overlay's capacity, format and backing file, and refuses a volume without one", () => {
    const xml = `<volume type='file'><name>m-1.qcow2</name><capacity unit='bytes'>107374182400</capacity>
      <allocation unit='bytes'>200704</allocation><target><path>/i/m-1.qcow2</path><format type='qcow2'/></target>
      <backingStore><path>/i/base &amp; co.raw</path><format type='raw'/></backingStore></volume>`;
    expect(overlayFactsOf(xml)).toEqual({
      capacityBytes: 107374182400,
      format: "qcow2",
      backingPath: "/i/base & co.raw",
      backingFormat: "raw",
    });
    expect(overlayFactsOf(xml.replace(/<backingStore>[\s\S]*<\/backingStore>/, ""))).toBeUndefined();
  });

  it("reads the SPICE display, skipping other graphics", () => {
    const d = spiceDisplayOf(LIVE)!;
    expect(d).toMatchObject({ port: 5900, listen: "127.0.0.1" });
    expect(d.tlsPort).toBeUndefined();
    expect(d.element).toMatch(/^<graphics type='spice'[\s\S]*<\/graphics>$/);
    expect(spiceDisplayOf("<domain><devices/></domain>")).toBeUndefined();
  });
});

test("a ticket replaces the password and its expiry, keeps the rest, and keeps clients connected", () => {
  const element = spiceDisplayOf(LIVE)!.element;
  const xml = ticketedGraphicsXml(element, `p"w&<`, Date.UTC(2030, 0, 2, 3, 4, 5, 678));
  const open = attributes(/^<graphics[^>]*>/.exec(xml)![0]);
  expect(open).toEqual({
    type: "spice",
    port: "5900",
    autoport: "yes",
    listen: "127.0.0.1",
    passwd: `p"w&<`,
    passwdValidTo: "2030-01-02T03:04:05",
    connected: "keep",
  });
  expect(xml).toContain("<listen type='address' address='127.0.0.1'/>");
  expect(ticketedGraphicsXml("<graphics type='spice' passwd='old'/>", "new", 0)).toBe(
    `<graphics type='spice' passwd="new" passwdValidTo="1970-01-01T00:00:00" connected="keep"/>`,
  );
});

describe("virt-viewer files", () => {
  it("carry host, port, ticket, proxy, self-deletion and the user's options", () => {
    const vv = renderVvFile({
      host: "h1.example",
      port: 5900,
      password: "tkt",
      proxy: "http://proxy.example:3128",
      title: "m-1 (Pool)",
      options: { fullscreen: true, enableUsbAutoshare: false, title: "Mine" },
    });
    expect(vv).toBe(
      [
        "[virt-viewer]",
        "type=spice",
        "host=h1.example",
        "port=5900",
        "password=tkt",
        "delete-this-file=1",
        "proxy=http://proxy.example:3128",
        "title=Mine",
        "fullscreen=1",
        "enable-usb-autoshare=0",
        "",
      ].join("\n"),
    );
  });

  it("omit the proxy when the pool has none", () => {
    const vv = renderVvFile({ host: "h", port: 1, password: "p", title: "t", options: {} });
    expect(vv).not.toMatch(/proxy/);
  });

  it("refuse unknown options and values that would break the file", () => {
    expect(() => validateConsoleOptions({ fullscreen: true, secureAttention: "ctrl+alt+end" })).not.toThrow();
    const error = (() => {
      try {
        validateConsoleOptions({ fullScreen: true, title: "a\nhost=evil", fullscreen: "yes" });
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(ConsoleOptionsError);
    expect((error as ConsoleOptionsError).problems).toEqual([
      'unknown option "fullScreen"',
      'title must be a single-line string, got "a\\nhost=evil"',
      'fullscreen must be a single-line boolean, got "yes"',
    ]);
  });
});

describe("withDiskVolume", () => {
  it("switches only the system disk's volume, keeps everything else, and says when there is nothing to switch", () => {
    const plan = planPool(validProps({ name: "Sw-?", size: 1, prestarted: 0 }));
    const xml = renderDomainXml(plan.members[0]!, { storagePool: "sp", domainType: "test" });
    const from = systemVolumeOf(xml)!.volume;
    const switched = withDiskVolume(xml, "sp", from, "other.qcow2")!;
    expect(systemVolumeOf(switched)).toEqual({ storagePool: "sp", volume: "other.qcow2" });
    const before = readDomainXml(xml)!.description;
    const after = readDomainXml(switched)!.description;
    const disks = (d: typeof before) => d.devices.disks.map((k) => k.volume);
    expect(disks(after)).toEqual(disks(before).map((v) => (v === from ? "other.qcow2" : v)));
    const withoutDisks = (d: typeof before) => ({ ...d, devices: { ...d.devices, disks: [] } });
    expect(withoutDisks(after)).toEqual(withoutDisks(before));
    // The console lock (a password attribute) survives the round trip.
    expect(switched).toMatch(/passwd="[^"]+"/);
    expect(withDiskVolume(xml, "sp", "no-such.qcow2", "x")).toBeUndefined();
    expect(withDiskVolume(xml, "elsewhere", from, "x")).toBeUndefined();
  });
});
