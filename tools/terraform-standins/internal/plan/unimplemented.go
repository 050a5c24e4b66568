package plan

import (
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"vmpools.dev/terraform-standins/internal/val"
)

// Unimplemented returns the attributes that are set (non-null, or unknown: they will be set)
// in config but are not in implemented (dotted paths without list indexes). The stand-in must
// refuse them rather than drop them silently. Once an attribute is reported, its children are
// not visited.
func Unimplemented(config tftypes.Value, implemented map[string]bool) ([]*tftypes.AttributePath, error) {
	var out []*tftypes.AttributePath
	err := tftypes.Walk(config, func(p *tftypes.AttributePath, v tftypes.Value) (bool, error) {
		steps := p.Steps()
		if len(steps) == 0 {
			return true, nil
		}
		if _, ok := steps[len(steps)-1].(tftypes.AttributeName); !ok {
			return true, nil
		}
		if v.IsNull() {
			return false, nil
		}
		if !implemented[val.Dotted(p)] {
			out = append(out, p)
			return false, nil
		}
		return true, nil
	})
	return out, err
}

// UnimplementedSince is Unimplemented, less the attributes whose config value is the prior
// state's (a client that copied the prior state into config, as Pulumi's bridge does for
// ignoreChanges, sets nothing new there).
func UnimplementedSince(config, prior tftypes.Value, implemented map[string]bool) ([]*tftypes.AttributePath, error) {
	bad, err := Unimplemented(config, implemented)
	if err != nil || prior.IsNull() {
		return bad, err
	}
	var out []*tftypes.AttributePath
	for _, p := range bad {
		c, _, err1 := tftypes.WalkAttributePath(config, p)
		o, _, err2 := tftypes.WalkAttributePath(prior, p)
		if err1 == nil && err2 == nil {
			cv, ok1 := c.(tftypes.Value)
			ov, ok2 := o.(tftypes.Value)
			if ok1 && ok2 && cv.Equal(ov) {
				continue
			}
		}
		out = append(out, p)
	}
	return out, nil
}
