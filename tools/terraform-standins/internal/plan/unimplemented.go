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
