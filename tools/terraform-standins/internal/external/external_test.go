package external

import (
	"context"
	"testing"

	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"vmpools.dev/terraform-standins/internal/val"
)

func cfg(t *testing.T, program []string, query map[string]string) val.Obj {
	t.Helper()
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	typ := s.dsType.(tftypes.Object)
	p := []tftypes.Value{}
	for _, a := range program {
		p = append(p, val.String(a))
	}
	q := map[string]tftypes.Value{}
	for k, v := range query {
		q[k] = val.String(v)
	}
	v := tftypes.NewValue(typ, map[string]tftypes.Value{
		"program":     tftypes.NewValue(typ.AttributeTypes["program"], p),
		"query":       tftypes.NewValue(typ.AttributeTypes["query"], q),
		"working_dir": tftypes.NewValue(tftypes.String, nil),
		"result":      tftypes.NewValue(typ.AttributeTypes["result"], nil),
		"id":          tftypes.NewValue(tftypes.String, nil),
	})
	o, _ := val.AsObj(v)
	return o
}

func TestRunPassesQueryAndReadsResult(t *testing.T) {
	res, diags := Run(context.Background(), cfg(t, []string{"sh", "-c", `read q; echo "{\"echo\": $(echo "$q" | sed 's/.*"a":\(".*"\).*/\1/')}"`}, map[string]string{"a": "b"}))
	if diags != nil {
		t.Fatal(diags[0].Summary, diags[0].Detail)
	}
	if res["echo"] != "b" {
		t.Errorf("result %v", res)
	}
}

func TestRunFailureCarriesStderr(t *testing.T) {
	_, diags := Run(context.Background(), cfg(t, []string{"sh", "-c", "echo boom >&2; exit 3"}, nil))
	if diags == nil || diags[0].Summary != "External Program Execution Failed" {
		t.Fatalf("want execution failure, got %v", diags)
	}
	if want := "Error Message: boom"; !contains(diags[0].Detail, want) {
		t.Errorf("detail %q lacks %q", diags[0].Detail, want)
	}
}

func TestRunRejectsNonStringResult(t *testing.T) {
	_, diags := Run(context.Background(), cfg(t, []string{"sh", "-c", `echo '{"n": 1}'`}, nil))
	if diags == nil || diags[0].Summary != "Unexpected External Program Results" {
		t.Fatalf("want result error, got %v", diags)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
