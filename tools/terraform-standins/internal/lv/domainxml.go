package lv

import (
	"fmt"

	"libvirt.org/go/libvirtxml"

	"vmpools.dev/terraform-standins/internal/val"
)

// DomainAttributes lists every libvirt_domain attribute the stand-in implements (dotted paths,
// list indexes dropped). Any other attribute set in a configuration is refused at plan time.
// The XML mapping below follows the real provider's generated conversion: attribute names are
// libvirtxml's Go field names in snake_case; a "<x>_unit" attribute is the unit of the value
// attribute <x>; a bool attribute that stands for an empty XML element (features.acpi,
// disks.read_only, channel source.spice_vmc) adds the element when true; a bool attribute
// that stands for a yes/no XML attribute (graphics auto_port) writes "yes" or "no".
var DomainAttributes = set(
	"name", "type", "description", "title", "memory", "memory_unit", "vcpu", "running",
	"on_poweroff", "on_reboot", "on_crash", "autostart",
	"metadata", "metadata.xml",
	"create", "create.paused", "create.autodestroy", "create.bypass_cache", "create.force_boot",
	"create.validate", "create.reset_nvram",
	"update", "update.shutdown", "update.shutdown.timeout",
	"destroy", "destroy.graceful", "destroy.shutdown", "destroy.shutdown.timeout",
	"cpu", "cpu.mode", "cpu.numa", "cpu.numa.cell", "cpu.numa.cell.id", "cpu.numa.cell.cpus",
	"cpu.numa.cell.memory", "cpu.numa.cell.unit",
	"numa_tune", "numa_tune.memory", "numa_tune.memory.mode", "numa_tune.memory.nodeset",
	"numa_tune.memory.placement",
	"numa_tune.mem_nodes", "numa_tune.mem_nodes.cell_id", "numa_tune.mem_nodes.mode",
	"numa_tune.mem_nodes.nodeset",
	"os", "os.type", "os.type_arch", "os.type_machine", "os.sm_bios", "os.sm_bios.mode",
	"os.kernel", "os.initrd", "os.cmdline", "os.boot_devices", "os.boot_devices.dev",
	"features", "features.acpi", "features.apic", "features.apic.eoi",
	"sys_info", "sys_info.smbios", "sys_info.smbios.oem_strings", "sys_info.smbios.oem_strings.entry",
	"devices",
	"devices.disks", "devices.disks.device", "devices.disks.read_only",
	"devices.disks.source", "devices.disks.source.volume", "devices.disks.source.volume.pool",
	"devices.disks.source.volume.volume", "devices.disks.source.file", "devices.disks.source.file.file",
	"devices.disks.driver", "devices.disks.driver.name", "devices.disks.driver.type",
	"devices.disks.target", "devices.disks.target.dev", "devices.disks.target.bus",
	"devices.disks.boot", "devices.disks.boot.order",
	"devices.interfaces", "devices.interfaces.source", "devices.interfaces.source.network",
	"devices.interfaces.source.network.network", "devices.interfaces.model",
	"devices.interfaces.model.type", "devices.interfaces.mac", "devices.interfaces.mac.address",
	"devices.graphics",
	"devices.graphics.spice", "devices.graphics.spice.auto_port", "devices.graphics.spice.port",
	"devices.graphics.spice.listen", "devices.graphics.spice.passwd", "devices.graphics.spice.passwd_valid_to",
	"devices.graphics.vnc", "devices.graphics.vnc.auto_port", "devices.graphics.vnc.port",
	"devices.graphics.vnc.listen", "devices.graphics.vnc.passwd", "devices.graphics.vnc.passwd_valid_to",
	"devices.videos", "devices.videos.model", "devices.videos.model.type", "devices.videos.model.primary",
	"devices.channels", "devices.channels.source", "devices.channels.source.spice_vmc",
	"devices.channels.target", "devices.channels.target.virt_io", "devices.channels.target.virt_io.name",
	"devices.serials", "devices.serials.source", "devices.serials.source.file",
	"devices.serials.source.file.path", "devices.serials.target", "devices.serials.target.port",
	"devices.consoles", "devices.consoles.target", "devices.consoles.target.type",
	"devices.consoles.target.port",
)

func set(xs ...string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

// xmlBuilder collects the first number-conversion error so the mapping reads straight.
type xmlBuilder struct{ err error }

func (b *xmlBuilder) uint(o val.Obj, name string) (uint, bool) {
	i, ok, err := o.Int(name)
	if err != nil && b.err == nil {
		b.err = err
	}
	if i < 0 && b.err == nil {
		b.err = fmt.Errorf("attribute %s: %d is negative", name, i)
	}
	return uint(i), ok
}

func (b *xmlBuilder) uintPtr(o val.Obj, name string) *uint {
	u, ok := b.uint(o, name)
	if !ok {
		return nil
	}
	return &u
}

func yesNo(o val.Obj, name string) string {
	b, ok := o.Bool(name)
	switch {
	case !ok:
		return ""
	case b:
		return "yes"
	default:
		return "no"
	}
}

// DomainXML renders the libvirt domain definition for a planned libvirt_domain value; uuid
// is kept on update so that the redefined domain is the same domain.
func DomainXML(m val.Obj, uuid string) (string, error) {
	b := &xmlBuilder{}
	d := &libvirtxml.Domain{
		Type:        m.Str("type"),
		Name:        m.Str("name"),
		UUID:        uuid,
		Title:       m.Str("title"),
		Description: m.Str("description"),
		OnPoweroff:  m.Str("on_poweroff"),
		OnReboot:    m.Str("on_reboot"),
		OnCrash:     m.Str("on_crash"),
	}
	if md := m.Obj("metadata"); md.Present() {
		// raw XML placed inside <metadata>; libvirt wants namespaced child elements
		d.Metadata = &libvirtxml.DomainMetadata{XML: md.Str("xml")}
	}
	if v, ok := b.uint(m, "memory"); ok {
		d.Memory = &libvirtxml.DomainMemory{Value: v, Unit: m.Str("memory_unit")}
	}
	if v, ok := b.uint(m, "vcpu"); ok {
		d.VCPU = &libvirtxml.DomainVCPU{Value: v}
	}
	if c := m.Obj("cpu"); c.Present() {
		d.CPU = &libvirtxml.DomainCPU{Mode: c.Str("mode")}
		if n := c.Obj("numa"); n.Present() {
			d.CPU.Numa = &libvirtxml.DomainNuma{}
			for _, cell := range n.Elems("cell") {
				mem, _ := b.uint(cell, "memory")
				d.CPU.Numa.Cell = append(d.CPU.Numa.Cell, libvirtxml.DomainCell{
					ID: b.uintPtr(cell, "id"), CPUs: cell.Str("cpus"), Memory: mem, Unit: cell.Str("unit"),
				})
			}
		}
	}
	if nt := m.Obj("numa_tune"); nt.Present() {
		d.NUMATune = &libvirtxml.DomainNUMATune{}
		if mem := nt.Obj("memory"); mem.Present() {
			d.NUMATune.Memory = &libvirtxml.DomainNUMATuneMemory{
				Mode: mem.Str("mode"), Nodeset: mem.Str("nodeset"), Placement: mem.Str("placement"),
			}
		}
		for _, mn := range nt.Elems("mem_nodes") {
			id, _ := b.uint(mn, "cell_id")
			d.NUMATune.MemNodes = append(d.NUMATune.MemNodes, libvirtxml.DomainNUMATuneMemNode{
				CellID: id, Mode: mn.Str("mode"), Nodeset: mn.Str("nodeset"),
			})
		}
	}
	if os := m.Obj("os"); os.Present() {
		d.OS = &libvirtxml.DomainOS{Kernel: os.Str("kernel"), Initrd: os.Str("initrd"), Cmdline: os.Str("cmdline")}
		if os.IsSet("type") || os.IsSet("type_arch") || os.IsSet("type_machine") {
			d.OS.Type = &libvirtxml.DomainOSType{Type: os.Str("type"), Arch: os.Str("type_arch"), Machine: os.Str("type_machine")}
		}
		if sm := os.Obj("sm_bios"); sm.Present() {
			d.OS.SMBios = &libvirtxml.DomainSMBios{Mode: sm.Str("mode")}
		}
		for _, bd := range os.Elems("boot_devices") {
			d.OS.BootDevices = append(d.OS.BootDevices, libvirtxml.DomainBootDevice{Dev: bd.Str("dev")})
		}
	}
	if f := m.Obj("features"); f.Present() {
		d.Features = &libvirtxml.DomainFeatureList{}
		if f.True("acpi") {
			d.Features.ACPI = &libvirtxml.DomainFeature{}
		}
		if apic := f.Obj("apic"); apic.Present() {
			d.Features.APIC = &libvirtxml.DomainFeatureAPIC{EOI: apic.Str("eoi")}
		}
	}
	for _, si := range m.Elems("sys_info") {
		info := libvirtxml.DomainSysInfo{}
		if sm := si.Obj("smbios"); sm.Present() {
			info.SMBIOS = &libvirtxml.DomainSysInfoSMBIOS{}
			if oem := sm.Obj("oem_strings"); oem.Present() {
				info.SMBIOS.OEMStrings = &libvirtxml.DomainSysInfoOEMStrings{Entry: oem.Strs("entry")}
			}
		}
		d.SysInfo = append(d.SysInfo, info)
	}
	if dev := m.Obj("devices"); dev.Present() {
		d.Devices = devicesXML(b, dev)
	}
	if b.err != nil {
		return "", b.err
	}
	return d.Marshal()
}

func devicesXML(b *xmlBuilder, dev val.Obj) *libvirtxml.DomainDeviceList {
	out := &libvirtxml.DomainDeviceList{}
	for _, dk := range dev.Elems("disks") {
		disk := libvirtxml.DomainDisk{Device: dk.Str("device")}
		if dk.True("read_only") {
			disk.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
		}
		if src := dk.Obj("source"); src.Present() {
			disk.Source = &libvirtxml.DomainDiskSource{}
			if v := src.Obj("volume"); v.Present() {
				disk.Source.Volume = &libvirtxml.DomainDiskSourceVolume{Pool: v.Str("pool"), Volume: v.Str("volume")}
			}
			if f := src.Obj("file"); f.Present() {
				disk.Source.File = &libvirtxml.DomainDiskSourceFile{File: f.Str("file")}
			}
		}
		if drv := dk.Obj("driver"); drv.Present() {
			disk.Driver = &libvirtxml.DomainDiskDriver{Name: drv.Str("name"), Type: drv.Str("type")}
		}
		if t := dk.Obj("target"); t.Present() {
			disk.Target = &libvirtxml.DomainDiskTarget{Dev: t.Str("dev"), Bus: t.Str("bus")}
		}
		if bt := dk.Obj("boot"); bt.Present() {
			order, _ := b.uint(bt, "order")
			disk.Boot = &libvirtxml.DomainDeviceBoot{Order: order}
		}
		out.Disks = append(out.Disks, disk)
	}
	for _, in := range dev.Elems("interfaces") {
		iface := libvirtxml.DomainInterface{}
		if src := in.Obj("source"); src.Present() {
			iface.Source = &libvirtxml.DomainInterfaceSource{}
			if n := src.Obj("network"); n.Present() {
				iface.Source.Network = &libvirtxml.DomainInterfaceSourceNetwork{Network: n.Str("network")}
			}
		}
		if mo := in.Obj("model"); mo.Present() {
			iface.Model = &libvirtxml.DomainInterfaceModel{Type: mo.Str("type")}
		}
		if mac := in.Obj("mac"); mac.Present() {
			iface.MAC = &libvirtxml.DomainInterfaceMAC{Address: mac.Str("address")}
		}
		out.Interfaces = append(out.Interfaces, iface)
	}
	for _, g := range dev.Elems("graphics") {
		gr := libvirtxml.DomainGraphic{}
		if s := g.Obj("spice"); s.Present() {
			port, _ := b.uint(s, "port")
			gr.Spice = &libvirtxml.DomainGraphicSpice{
				AutoPort: yesNo(s, "auto_port"), Port: int(port), Listen: s.Str("listen"),
				Passwd: s.Str("passwd"), PasswdValidTo: s.Str("passwd_valid_to"),
			}
		}
		if v := g.Obj("vnc"); v.Present() {
			port, _ := b.uint(v, "port")
			gr.VNC = &libvirtxml.DomainGraphicVNC{
				AutoPort: yesNo(v, "auto_port"), Port: int(port), Listen: v.Str("listen"),
				Passwd: v.Str("passwd"), PasswdValidTo: v.Str("passwd_valid_to"),
			}
		}
		out.Graphics = append(out.Graphics, gr)
	}
	for _, v := range dev.Elems("videos") {
		vid := libvirtxml.DomainVideo{}
		if mo := v.Obj("model"); mo.Present() {
			vid.Model = libvirtxml.DomainVideoModel{Type: mo.Str("type"), Primary: mo.Str("primary")}
		}
		out.Videos = append(out.Videos, vid)
	}
	for _, c := range dev.Elems("channels") {
		ch := libvirtxml.DomainChannel{}
		if src := c.Obj("source"); src.Present() {
			ch.Source = &libvirtxml.DomainChardevSource{}
			if src.True("spice_vmc") {
				ch.Source.SpiceVMC = &libvirtxml.DomainChardevSourceSpiceVMC{}
			}
		}
		if t := c.Obj("target"); t.Present() {
			ch.Target = &libvirtxml.DomainChannelTarget{}
			if vio := t.Obj("virt_io"); vio.Present() {
				ch.Target.VirtIO = &libvirtxml.DomainChannelTargetVirtIO{Name: vio.Str("name")}
			}
		}
		out.Channels = append(out.Channels, ch)
	}
	for _, s := range dev.Elems("serials") {
		se := libvirtxml.DomainSerial{}
		if src := s.Obj("source"); src.Present() {
			se.Source = &libvirtxml.DomainChardevSource{}
			if f := src.Obj("file"); f.Present() {
				se.Source.File = &libvirtxml.DomainChardevSourceFile{Path: f.Str("path")}
			}
		}
		if t := s.Obj("target"); t.Present() {
			se.Target = &libvirtxml.DomainSerialTarget{Port: b.uintPtr(t, "port")}
		}
		out.Serials = append(out.Serials, se)
	}
	for _, c := range dev.Elems("consoles") {
		co := libvirtxml.DomainConsole{}
		if t := c.Obj("target"); t.Present() {
			co.Target = &libvirtxml.DomainConsoleTarget{Type: t.Str("type"), Port: b.uintPtr(t, "port")}
		}
		out.Consoles = append(out.Consoles, co)
	}
	return out
}
