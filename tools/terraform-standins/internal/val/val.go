// Package val reads and edits tftypes values by attribute path, so that the resource code can
// say "os.type_machine" instead of walking tftypes by hand.
package val

import (
	"fmt"
	"math/big"
	"strings"

	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

// Path builds an attribute path from a dotted name ("target.path"); list indexes are not
// expressible here and not needed: callers walk lists with Elems.
func Path(dotted string) *tftypes.AttributePath {
	p := tftypes.NewAttributePath()
	for _, part := range strings.Split(dotted, ".") {
		p = p.WithAttributeName(part)
	}
	return p
}

// Dotted renders a path as attribute names joined with dots, dropping list/map element keys,
// which is how the schema and the plan-modifier list name attributes.
func Dotted(p *tftypes.AttributePath) string {
	var parts []string
	for _, s := range p.Steps() {
		if n, ok := s.(tftypes.AttributeName); ok {
			parts = append(parts, string(n))
		}
	}
	return strings.Join(parts, ".")
}

// Display renders a path with list indexes, for error messages ("devices.disks[0].target").
func Display(p *tftypes.AttributePath) string {
	var b strings.Builder
	for _, s := range p.Steps() {
		switch s := s.(type) {
		case tftypes.AttributeName:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(string(s))
		case tftypes.ElementKeyInt:
			fmt.Fprintf(&b, "[%d]", int64(s))
		case tftypes.ElementKeyString:
			fmt.Fprintf(&b, "[%q]", string(s))
		default:
			b.WriteString("[?]")
		}
	}
	return b.String()
}

// At returns the value at path, and false when the path does not lead to a value (for example
// because a parent object is null).
func At(v tftypes.Value, p *tftypes.AttributePath) (tftypes.Value, bool) {
	x, _, err := tftypes.WalkAttributePath(v, p)
	if err != nil {
		return tftypes.Value{}, false
	}
	tv, ok := x.(tftypes.Value)
	return tv, ok
}

// Set returns v with the value at path replaced by nv (the path must exist).
func Set(v tftypes.Value, p *tftypes.AttributePath, nv tftypes.Value) (tftypes.Value, error) {
	return tftypes.Transform(v, func(q *tftypes.AttributePath, x tftypes.Value) (tftypes.Value, error) {
		if q.Equal(p) {
			return nv, nil
		}
		return x, nil
	})
}

// UnknownsToNull replaces every unknown value by null of the same type: what a provider
// returns after apply for computed attributes that it has no value for.
func UnknownsToNull(v tftypes.Value) (tftypes.Value, error) {
	return tftypes.Transform(v, func(_ *tftypes.AttributePath, x tftypes.Value) (tftypes.Value, error) {
		if !x.IsKnown() {
			return tftypes.NewValue(x.Type(), nil), nil
		}
		return x, nil
	})
}

// Obj is a read-only view on an object value; a null or unknown object reads as absent.
type Obj struct {
	m map[string]tftypes.Value
}

// AsObj views v as an object; ok is false when v is null or unknown.
func AsObj(v tftypes.Value) (Obj, bool) {
	if v.IsNull() || !v.IsKnown() {
		return Obj{}, false
	}
	var m map[string]tftypes.Value
	if err := v.As(&m); err != nil {
		return Obj{}, false
	}
	return Obj{m: m}, true
}

// Present reports whether the object exists (was not null).
func (o Obj) Present() bool { return o.m != nil }

// Get returns the raw value of an attribute (null when absent).
func (o Obj) Get(name string) tftypes.Value {
	if o.m == nil {
		return tftypes.Value{}
	}
	return o.m[name]
}

// Obj returns a nested single object.
func (o Obj) Obj(name string) Obj {
	x, _ := AsObj(o.Get(name))
	return x
}

// IsSet reports whether the attribute has a known non-null value.
func (o Obj) IsSet(name string) bool {
	v := o.Get(name)
	return v.Type() != nil && !v.IsNull() && v.IsKnown()
}

// Str returns a string attribute ("" when null).
func (o Obj) Str(name string) string {
	var s string
	if o.IsSet(name) {
		_ = o.Get(name).As(&s)
	}
	return s
}

// Bool returns a bool attribute and whether it was set.
func (o Obj) Bool(name string) (bool, bool) {
	var b bool
	if !o.IsSet(name) {
		return false, false
	}
	_ = o.Get(name).As(&b)
	return b, true
}

// True reports whether a bool attribute is set to true.
func (o Obj) True(name string) bool {
	b, _ := o.Bool(name)
	return b
}

// Int returns a number attribute as int64 and whether it was set; fractions are an error.
func (o Obj) Int(name string) (int64, bool, error) {
	if !o.IsSet(name) {
		return 0, false, nil
	}
	var f big.Float
	if err := o.Get(name).As(&f); err != nil {
		return 0, false, err
	}
	i, acc := f.Int64()
	if acc != big.Exact {
		return 0, false, fmt.Errorf("attribute %s: %s is not a whole number", name, f.String())
	}
	return i, true, nil
}

// Elems returns the objects of a list-of-objects attribute (nil when null).
func (o Obj) Elems(name string) []Obj {
	if !o.IsSet(name) {
		return nil
	}
	var xs []tftypes.Value
	if err := o.Get(name).As(&xs); err != nil {
		return nil
	}
	out := make([]Obj, 0, len(xs))
	for _, x := range xs {
		ob, _ := AsObj(x)
		out = append(out, ob)
	}
	return out
}

// Strs returns a list-of-string attribute.
func (o Obj) Strs(name string) []string {
	if !o.IsSet(name) {
		return nil
	}
	var xs []tftypes.Value
	if err := o.Get(name).As(&xs); err != nil {
		return nil
	}
	out := make([]string, 0, len(xs))
	for _, x := range xs {
		var s string
		if !x.IsNull() && x.IsKnown() {
			_ = x.As(&s)
		}
		out = append(out, s)
	}
	return out
}

// StrMap returns a map-of-string attribute.
func (o Obj) StrMap(name string) map[string]string {
	out := map[string]string{}
	if !o.IsSet(name) {
		return out
	}
	var m map[string]tftypes.Value
	if err := o.Get(name).As(&m); err != nil {
		return out
	}
	for k, x := range m {
		var s string
		if !x.IsNull() && x.IsKnown() {
			_ = x.As(&s)
		}
		out[k] = s
	}
	return out
}

// String, Number and Null build values of the given type.
func String(s string) tftypes.Value { return tftypes.NewValue(tftypes.String, s) }

// Number builds a number value.
func Number(i int64) tftypes.Value { return tftypes.NewValue(tftypes.Number, i) }

// Null builds a null of type t.
func Null(t tftypes.Type) tftypes.Value { return tftypes.NewValue(t, nil) }
