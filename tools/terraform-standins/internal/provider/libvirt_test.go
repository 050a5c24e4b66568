package provider

import (
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"vmpools.dev/terraform-standins/internal/lv"
	"vmpools.dev/terraform-standins/internal/val"
)

// Runs the domain and volume code against libvirt's test driver served by the local libvirtd
// (test+unix:///default; the project's test scripts start it with scripts/libvirt-up.sh).
// Requirement: /var/run/libvirt/libvirt-sock; without it the test fails (never skips).
func TestDomainAndVolumeAgainstTestDriver(t *testing.T) {
	if _, err := os.Stat("/var/run/libvirt/libvirt-sock"); err != nil {
		t.Fatalf("libvirtd is required (start it with scripts/libvirt-up.sh): %v", err)
	}
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := lv.Connect("test+unix:///default")
	if err != nil {
		t.Fatal(err)
	}
	// the test driver's state lives as long as one connection is open: keep this one to the end
	defer conn.L.Disconnect()
	cleanup := func() { // leftovers of an earlier failed run (the daemon keeps them)
		if d, err := conn.L.DomainLookupByName("standin-unit-vm"); err == nil {
			_ = conn.L.DomainDestroy(d)
			_ = conn.L.DomainUndefine(d)
		}
		if p, err := conn.L.StoragePoolLookupByName("default-pool"); err == nil {
			if v, err := conn.L.StorageVolLookupByName(p, "standin-unit.qcow2"); err == nil {
				_ = conn.L.StorageVolDelete(v, 0)
			}
		}
	}
	cleanup()
	defer cleanup()

	volT := s.resources["libvirt_volume"].typ.(tftypes.Object)
	vol := obj(volT, map[string]tftypes.Value{
		"name": val.String("standin-unit.qcow2"), "pool": val.String("default-pool"), "capacity": val.Number(1 << 20),
		"id": unknown(tftypes.String), "key": unknown(tftypes.String), "path": unknown(tftypes.String),
		"allocation": unknown(tftypes.Number), "physical": unknown(tftypes.Number),
	})
	vstate, diags := applyVolume(conn, tftypes.NewValue(volT, nil), vol)
	if hasError(diags) {
		t.Fatalf("create volume: %v", diags[0])
	}
	vo, _ := val.AsObj(vstate)
	if vo.Str("key") == "" || vo.Str("path") == "" || !vstate.IsFullyKnown() {
		t.Fatalf("volume state: %v", vstate)
	}
	if _, d := applyVolume(conn, vstate, vstate); !hasError(d) || d[0].Summary != "Update Not Supported" {
		t.Errorf("volume update must fail with Update Not Supported: %v", d)
	}

	domT := s.resources["libvirt_domain"].typ.(tftypes.Object)
	dom := func(meta string) tftypes.Value {
		return obj(domT, map[string]tftypes.Value{
			"name": val.String("standin-unit-vm"), "type": val.String("test"), "running": tftypes.NewValue(tftypes.Bool, true),
			"memory": val.Number(64), "memory_unit": val.String("MiB"),
			"metadata": obj(domT.AttributeTypes["metadata"].(tftypes.Object), map[string]tftypes.Value{
				"xml": val.String(`<v:m xmlns:v="https://vmpools.dev/t">` + meta + `</v:m>`)}),
			"os": obj(domT.AttributeTypes["os"].(tftypes.Object), map[string]tftypes.Value{"type": val.String("hvm")}),
			"id": unknown(tftypes.Number), "uuid": unknown(tftypes.String),
		})
	}
	state, diags := applyDomain(conn, tftypes.NewValue(domT, nil), dom("one"))
	if hasError(diags) {
		t.Fatalf("create domain: %v", diags[0])
	}
	o, _ := val.AsObj(state)
	uuid := o.Str("uuid")
	if _, ok, _ := o.Int("id"); uuid == "" || !ok {
		t.Fatalf("running domain needs uuid and id: %v", state)
	}

	planned, _ := val.Set(dom("two"), val.Path("uuid"), val.String(uuid))
	planned, _ = val.Set(planned, val.Path("id"), o.Get("id"))
	state2, diags := applyDomain(conn, state, planned)
	if hasError(diags) {
		t.Fatalf("update domain: %v", diags[0])
	}
	d, err := conn.L.DomainLookupByName("standin-unit-vm")
	if err != nil {
		t.Fatal(err)
	}
	xml, _ := conn.L.DomainGetXMLDesc(d, 0)
	if !strings.Contains(xml, ">two<") {
		t.Errorf("update did not redefine the domain: %s", xml)
	}
	if o2, _ := val.AsObj(state2); o2.Str("uuid") != uuid {
		t.Errorf("update changed the uuid")
	}

	if st, d := readDomain(conn, state2); hasError(d) || st.IsNull() {
		t.Errorf("read of existing domain: %v %v", st, d)
	}
	if st, d := applyDomain(conn, state2, tftypes.NewValue(domT, nil)); hasError(d) || !st.IsNull() {
		t.Fatalf("delete domain: %v", d)
	}
	if st, d := readDomain(conn, state2); hasError(d) || !st.IsNull() {
		t.Errorf("read of deleted domain must drop it: %v %v", st, d)
	}
	if st, d := applyVolume(conn, vstate, tftypes.NewValue(volT, nil)); hasError(d) || !st.IsNull() {
		t.Fatalf("delete volume: %v", d)
	}
	if st, _ := readVolume(conn, vstate); !st.IsNull() {
		t.Errorf("read of deleted volume must drop it")
	}
}

func unknown(t tftypes.Type) tftypes.Value { return tftypes.NewValue(t, tftypes.UnknownValue) }

func obj(typ tftypes.Object, attrs map[string]tftypes.Value) tftypes.Value {
	vals := map[string]tftypes.Value{}
	for n, t := range typ.AttributeTypes {
		if v, ok := attrs[n]; ok {
			vals[n] = v
		} else {
			vals[n] = tftypes.NewValue(t, nil)
		}
	}
	return tftypes.NewValue(typ, vals)
}
