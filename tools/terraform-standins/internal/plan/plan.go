// Package plan computes a planned state the way terraform-plugin-framework does for the real
// dmacvicar/libvirt 0.9.7 provider, so that `terraform plan` against the stand-in shows the same
// diffs, the same "(known after apply)" and the same forced replacements.
//
// The framework's rules (fwserver PlanResourceChange), reproduced here:
//  1. destroy (proposed null): the plan is the proposed null.
//  2. proposed equal to prior: nothing changes, the prior state is the plan.
//  3. otherwise every computed attribute that is null in the configuration becomes unknown
//     (MarkComputedNilsAsUnknown), then the attribute plan modifiers run:
//     UseStateForUnknown puts back the prior value of an attribute that is unknown in the plan
//     (not on create, not when the prior value is null, not when the config is unknown);
//     RequiresReplace asks for replacement when the planned value differs from the prior one
//     (not on create or destroy).
package plan

import (
	"fmt"
	"sort"

	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"vmpools.dev/terraform-standins/internal/schema"
	"vmpools.dev/terraform-standins/internal/val"
)

// Result is a planned state and the attributes that force replacement.
type Result struct {
	Planned         tftypes.Value
	RequiresReplace []*tftypes.AttributePath
}

// Resource plans one resource of type typ.
func Resource(s *schema.Schema, mods schema.Modifiers, typ string, prior, proposed, config tftypes.Value) (Result, error) {
	if proposed.IsNull() {
		return Result{Planned: proposed}, nil
	}
	if !prior.IsNull() && proposed.Equal(prior) {
		return Result{Planned: prior}, nil
	}

	planned, err := tftypes.Transform(proposed, func(p *tftypes.AttributePath, v tftypes.Value) (tftypes.Value, error) {
		steps := p.Steps()
		if len(steps) == 0 {
			return v, nil
		}
		// Only attributes have flags; list elements and values inside an attribute of a
		// collection type (e.g. oem_strings.entry[0]) are left alone, as in the framework.
		if _, ok := steps[len(steps)-1].(tftypes.AttributeName); !ok {
			return v, nil
		}
		a := s.Lookup(val.Dotted(p))
		if a == nil {
			return v, fmt.Errorf("attribute %s is not in the schema", val.Display(p))
		}
		if !a.Computed {
			return v, nil
		}
		if cv, ok := val.At(config, p); ok && !cv.IsNull() {
			return v, nil
		}
		return tftypes.NewValue(v.Type(), tftypes.UnknownValue), nil
	})
	if err != nil {
		return Result{}, err
	}

	res := Result{Planned: planned}
	paths := make([]string, 0, len(mods[typ]))
	for p := range mods[typ] {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, dotted := range paths {
		p := val.Path(dotted)
		for _, m := range mods[typ][dotted] {
			switch m {
			case "UseStateForUnknown":
				if prior.IsNull() {
					continue
				}
				pv, ok := val.At(prior, p)
				if !ok || pv.IsNull() {
					continue
				}
				cur, ok := val.At(res.Planned, p)
				if !ok || cur.IsKnown() {
					continue
				}
				if cv, ok := val.At(config, p); ok && !cv.IsKnown() {
					continue
				}
				if res.Planned, err = val.Set(res.Planned, p, pv); err != nil {
					return Result{}, err
				}
			case "RequiresReplace":
				if prior.IsNull() {
					continue
				}
				pv, _ := val.At(prior, p)
				cur, _ := val.At(res.Planned, p)
				if pv.Type() == nil && cur.Type() == nil {
					continue // both parents absent
				}
				if pv.Type() == nil || cur.Type() == nil || !cur.Equal(pv) {
					res.RequiresReplace = append(res.RequiresReplace, p)
				}
			default:
				// TrailingSlashPlanModifier / OctalModePlanModifier: they only reconcile the
				// user's spelling with what libvirt reads back; the stand-in never reads those
				// attributes back, so the planned value is already the user's.
			}
		}
	}
	return res, nil
}
