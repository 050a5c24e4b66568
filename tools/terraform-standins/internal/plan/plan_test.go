package plan

import (
	"testing"

	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"vmpools.dev/terraform-standins/internal/schema"
	"vmpools.dev/terraform-standins/internal/val"
)

func load(t *testing.T, typ string) (*schema.Schema, schema.Modifiers, tftypes.Object) {
	t.Helper()
	p, err := schema.Libvirt()
	if err != nil {
		t.Fatal(err)
	}
	m, err := schema.LibvirtModifiers()
	if err != nil {
		t.Fatal(err)
	}
	s := p.ResourceSchemas[typ]
	vt, err := s.ValueType()
	if err != nil {
		t.Fatal(err)
	}
	return s, m, vt.(tftypes.Object)
}

// obj builds a value of the resource type with the given top-level attributes, null elsewhere.
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

func sub(typ tftypes.Object, name string, attrs map[string]tftypes.Value) tftypes.Value {
	return obj(typ.AttributeTypes[name].(tftypes.Object), attrs)
}

func at(t *testing.T, v tftypes.Value, path string) tftypes.Value {
	t.Helper()
	x, ok := val.At(v, val.Path(path))
	if !ok {
		t.Fatalf("no value at %s", path)
	}
	return x
}

func TestCreateMarksComputedUnknown(t *testing.T) {
	s, m, typ := load(t, "libvirt_domain")
	cfg := obj(typ, map[string]tftypes.Value{"name": val.String("a"), "type": val.String("test")})
	res, err := Resource(s, m, "libvirt_domain", tftypes.NewValue(typ, nil), cfg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"id", "uuid"} {
		if at(t, res.Planned, p).IsKnown() {
			t.Errorf("%s should be unknown on create", p)
		}
	}
	if v := at(t, res.Planned, "memory"); !v.IsNull() {
		t.Errorf("optional non-computed memory must stay null, got %v", v)
	}
	if len(res.RequiresReplace) != 0 {
		t.Errorf("no replacement on create: %v", res.RequiresReplace)
	}
}

func domainState(typ tftypes.Object, meta string) tftypes.Value {
	return obj(typ, map[string]tftypes.Value{
		"name": val.String("a"), "type": val.String("test"), "id": val.Number(3), "uuid": val.String("u-1"),
		"metadata": sub(typ, "metadata", map[string]tftypes.Value{"xml": val.String(meta)}),
	})
}

func TestNoChangeReturnsPrior(t *testing.T) {
	s, m, typ := load(t, "libvirt_domain")
	prior := domainState(typ, "<a/>")
	res, err := Resource(s, m, "libvirt_domain", prior, prior, prior)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Planned.Equal(prior) || len(res.RequiresReplace) != 0 {
		t.Errorf("unchanged plan must be the prior state: %v %v", res.Planned, res.RequiresReplace)
	}
}

func TestUpdateKeepsStateForUnknown(t *testing.T) {
	s, m, typ := load(t, "libvirt_domain")
	prior := domainState(typ, "<a/>")
	proposed := domainState(typ, "<b/>") // Terraform copies computed values into the proposal
	config, _ := val.Set(proposed, val.Path("id"), tftypes.NewValue(tftypes.Number, nil))
	config, _ = val.Set(config, val.Path("uuid"), tftypes.NewValue(tftypes.String, nil))
	res, err := Resource(s, m, "libvirt_domain", prior, proposed, config)
	if err != nil {
		t.Fatal(err)
	}
	if !at(t, res.Planned, "id").Equal(val.Number(3)) || !at(t, res.Planned, "uuid").Equal(val.String("u-1")) {
		t.Errorf("UseStateForUnknown must keep id/uuid: %v", res.Planned)
	}
	if len(res.RequiresReplace) != 0 {
		t.Errorf("metadata change must be an in-place update: %v", res.RequiresReplace)
	}
}

func TestRequiresReplace(t *testing.T) {
	s, m, typ := load(t, "libvirt_domain")
	prior := domainState(typ, "<a/>")
	proposed, _ := val.Set(prior, val.Path("name"), val.String("b"))
	config, _ := val.Set(proposed, val.Path("id"), tftypes.NewValue(tftypes.Number, nil))
	config, _ = val.Set(config, val.Path("uuid"), tftypes.NewValue(tftypes.String, nil))
	res, err := Resource(s, m, "libvirt_domain", prior, proposed, config)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.RequiresReplace) != 1 || !res.RequiresReplace[0].Equal(val.Path("name")) {
		t.Errorf("name change must force replacement: %v", res.RequiresReplace)
	}
}

// Computed attributes without UseStateForUnknown (volume allocation, capacity when not
// configured) become unknown on any change; nested target.path keeps its prior value.
func TestVolumeUpdatePlan(t *testing.T) {
	s, m, typ := load(t, "libvirt_volume")
	targetT := typ.AttributeTypes["target"].(tftypes.Object)
	target := func(path tftypes.Value) tftypes.Value {
		return obj(targetT, map[string]tftypes.Value{
			"path":   path,
			"format": obj(targetT.AttributeTypes["format"].(tftypes.Object), map[string]tftypes.Value{"type": val.String("qcow2")}),
		})
	}
	prior := obj(typ, map[string]tftypes.Value{
		"name": val.String("v"), "pool": val.String("p"), "capacity": val.Number(10), "allocation": val.Number(1),
		"id": val.String("k"), "key": val.String("k"), "path": val.String("/p/v"), "target": target(val.String("/p/v")),
	})
	proposed, _ := val.Set(prior, val.Path("pool"), val.String("q"))
	config := obj(typ, map[string]tftypes.Value{
		"name": val.String("v"), "pool": val.String("q"), "target": target(tftypes.NewValue(tftypes.String, nil)),
	})
	res, err := Resource(s, m, "libvirt_volume", prior, proposed, config)
	if err != nil {
		t.Fatal(err)
	}
	if at(t, res.Planned, "allocation").IsKnown() || at(t, res.Planned, "capacity").IsKnown() {
		t.Error("allocation and unconfigured capacity must be unknown on change")
	}
	for p, want := range map[string]string{"id": "k", "key": "k", "path": "/p/v", "target.path": "/p/v"} {
		if !at(t, res.Planned, p).Equal(val.String(want)) {
			t.Errorf("%s = %v, want kept %q", p, at(t, res.Planned, p), want)
		}
	}
	if len(res.RequiresReplace) != 1 || !res.RequiresReplace[0].Equal(val.Path("pool")) {
		t.Errorf("pool change must force replacement: %v", res.RequiresReplace)
	}
}

func TestDestroyPlansNull(t *testing.T) {
	s, m, typ := load(t, "libvirt_domain")
	res, err := Resource(s, m, "libvirt_domain", domainState(typ, "<a/>"), tftypes.NewValue(typ, nil), tftypes.NewValue(typ, nil))
	if err != nil || !res.Planned.IsNull() {
		t.Errorf("destroy: %v %v", res.Planned, err)
	}
}

func TestUnimplemented(t *testing.T) {
	_, _, typ := load(t, "libvirt_domain")
	devT := typ.AttributeTypes["devices"].(tftypes.Object)
	hostdevs := tftypes.NewValue(devT.AttributeTypes["hostdevs"], []tftypes.Value{})
	cfg := obj(typ, map[string]tftypes.Value{
		"name":    val.String("a"),
		"devices": obj(devT, map[string]tftypes.Value{"hostdevs": hostdevs}),
		"title":   val.String("t"),
	})
	bad, err := Unimplemented(cfg, map[string]bool{"name": true, "devices": true, "title": true})
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 1 || val.Display(bad[0]) != "devices.hostdevs" {
		t.Errorf("want devices.hostdevs refused, got %v", bad)
	}
}

// Pulumi's bridge applies ignoreChanges by copying the prior state, computed attributes
// included, into the config it plans with: what equals the prior state sets nothing new.
func TestUnimplementedSinceIgnoresPriorValues(t *testing.T) {
	_, _, typ := load(t, "libvirt_volume")
	prior := obj(typ, map[string]tftypes.Value{"name": val.String("v"), "key": val.String("/pool/v"), "path": val.String("/pool/v")})
	implemented := map[string]bool{"name": true}
	copied := obj(typ, map[string]tftypes.Value{"name": val.String("v"), "key": val.String("/pool/v"), "path": val.String("/pool/v")})
	bad, err := UnimplementedSince(copied, prior, implemented)
	if err != nil || len(bad) != 0 {
		t.Errorf("config equal to the prior state: want nothing refused, got %v (%v)", bad, err)
	}
	changed := obj(typ, map[string]tftypes.Value{"name": val.String("v"), "key": val.String("/pool/v"), "path": val.String("/elsewhere")})
	bad, err = UnimplementedSince(changed, prior, implemented)
	if err != nil || len(bad) != 1 || val.Display(bad[0]) != "path" {
		t.Errorf("a changed value: want path refused, got %v (%v)", bad, err)
	}
	// On create there is no prior state: everything set counts.
	bad, err = UnimplementedSince(copied, tftypes.NewValue(typ, nil), implemented)
	if err != nil || len(bad) != 2 {
		t.Errorf("no prior state: want key and path refused, got %v (%v)", bad, err)
	}
}
