package schema

import (
	"encoding/json"
	"testing"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

func TestCtyType(t *testing.T) {
	cases := map[string]tftypes.Type{
		`"string"`:                  tftypes.String,
		`"number"`:                  tftypes.Number,
		`["list","string"]`:         tftypes.List{ElementType: tftypes.String},
		`["map","string"]`:          tftypes.Map{ElementType: tftypes.String},
		`["set",["list","bool"]]`:   tftypes.Set{ElementType: tftypes.List{ElementType: tftypes.Bool}},
		`["object",{"a":"string"}]`: tftypes.Object{AttributeTypes: map[string]tftypes.Type{"a": tftypes.String}},
	}
	for in, want := range cases {
		got, err := CtyType(json.RawMessage(in))
		if err != nil || !got.Equal(want) {
			t.Errorf("CtyType(%s) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := CtyType(json.RawMessage(`"tuple"`)); err == nil {
		t.Error("unknown type accepted")
	}
}

func find(attrs []*tfprotov6.SchemaAttribute, name string) *tfprotov6.SchemaAttribute {
	for _, a := range attrs {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// The converted libvirt schema keeps the real provider's nesting, flags and types.
func TestLibvirtSchema(t *testing.T) {
	p, err := Libvirt()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"libvirt_domain", "libvirt_volume", "libvirt_pool", "libvirt_cloudinit_disk"} {
		if p.ResourceSchemas[want] == nil {
			t.Errorf("resource %s missing", want)
		}
	}
	prov, err := p.Provider.Proto()
	if err != nil {
		t.Fatal(err)
	}
	if uri := find(prov.Block.Attributes, "uri"); uri == nil || !uri.Optional || !uri.Type.Equal(tftypes.String) {
		t.Errorf("provider uri: %+v", uri)
	}
	dom, err := p.ResourceSchemas["libvirt_domain"].Proto()
	if err != nil {
		t.Fatal(err)
	}
	name := find(dom.Block.Attributes, "name")
	if name == nil || !name.Required {
		t.Errorf("domain name not required: %+v", name)
	}
	id := find(dom.Block.Attributes, "id")
	if id == nil || !id.Computed || id.Optional || !id.Type.Equal(tftypes.Number) {
		t.Errorf("domain id: %+v", id)
	}
	devices := find(dom.Block.Attributes, "devices")
	if devices.NestedType == nil || devices.NestedType.Nesting != tfprotov6.SchemaObjectNestingModeSingle {
		t.Fatalf("devices nesting: %+v", devices.NestedType)
	}
	disks := find(devices.NestedType.Attributes, "disks")
	if disks.NestedType == nil || disks.NestedType.Nesting != tfprotov6.SchemaObjectNestingModeList {
		t.Fatalf("disks nesting: %+v", disks.NestedType)
	}
	src := find(disks.NestedType.Attributes, "source")
	if find(src.NestedType.Attributes, "volume") == nil {
		t.Error("devices.disks[].source.volume missing")
	}
	s := p.ResourceSchemas["libvirt_domain"]
	for _, path := range []string{"os.type_machine", "os.sm_bios.mode", "sys_info.smbios.oem_strings.entry", "update.shutdown.timeout"} {
		if s.Lookup(path) == nil {
			t.Errorf("Lookup(%s) = nil", path)
		}
	}
	if a := s.Lookup("sys_info.smbios.oem_strings.entry"); a.NestedType != nil {
		t.Errorf("oem_strings.entry should be a list of strings: %+v", a)
	}
	typ, err := s.ValueType()
	if err != nil {
		t.Fatal(err)
	}
	obj := typ.(tftypes.Object)
	dl, ok := obj.AttributeTypes["devices"].(tftypes.Object).AttributeTypes["disks"].(tftypes.List)
	if !ok {
		t.Fatalf("devices.disks type: %T", obj.AttributeTypes["devices"].(tftypes.Object).AttributeTypes["disks"])
	}
	if _, ok := dl.ElementType.(tftypes.Object); !ok {
		t.Errorf("disks element type: %T", dl.ElementType)
	}
	vol := p.ResourceSchemas["libvirt_volume"]
	if c := vol.Lookup("capacity"); !c.Optional || !c.Computed {
		t.Errorf("volume capacity should be optional+computed: %+v", c)
	}
	if tp := vol.Lookup("target.path"); !tp.Computed || tp.Optional {
		t.Errorf("volume target.path should be computed only: %+v", tp)
	}
}

func TestExternalSchema(t *testing.T) {
	p, err := External()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := p.DataSourceSchemas["external"].Proto()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]bool{"program": {true, false}, "query": {false, false}, "working_dir": {false, false}, "result": {false, true}, "id": {false, true}}
	for n, f := range want {
		a := find(ds.Block.Attributes, n)
		if a == nil || a.Required != f[0] || a.Computed != f[1] {
			t.Errorf("%s: %+v", n, a)
		}
	}
}

func TestModifiers(t *testing.T) {
	m, err := LibvirtModifiers()
	if err != nil {
		t.Fatal(err)
	}
	if !m.Has("libvirt_domain", "name", "RequiresReplace") || !m.Has("libvirt_volume", "target.path", "UseStateForUnknown") {
		t.Error("modifiers not loaded")
	}
	if m.Has("libvirt_domain", "memory", "RequiresReplace") {
		t.Error("memory must not force replacement")
	}
}
