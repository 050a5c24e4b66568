// Package external is the protocol-6 server of the hashicorp/external 2.3.5 stand-in: the
// data source `external`, with the real schema and the real Read (data_source.go at v2.3.5):
// empty program elements are dropped, null query values are left out, the program runs in
// working_dir (default: Terraform's working directory) with the query as a JSON object on
// stdin, its stdout must be a JSON object of strings, a failure carries its stderr.
package external

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"strings"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"vmpools.dev/terraform-standins/internal/schema"
	"vmpools.dev/terraform-standins/internal/server"
	"vmpools.dev/terraform-standins/internal/val"
)

// Server is the provider instance.
type Server struct {
	server.Base
	provider *tfprotov6.Schema
	ds       *tfprotov6.Schema
	dsType   tftypes.Type
}

// New loads the embedded schema.
func New() (*Server, error) {
	p, err := schema.External()
	if err != nil {
		return nil, err
	}
	s := &Server{Base: server.Base{Name: "hashicorp/external 2.3.5"}}
	if s.provider, err = p.Provider.Proto(); err != nil {
		return nil, err
	}
	ds := p.DataSourceSchemas["external"]
	if ds == nil {
		return nil, fmt.Errorf("data source external missing from the schema")
	}
	if s.ds, err = ds.Proto(); err != nil {
		return nil, err
	}
	if s.dsType, err = ds.ValueType(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) GetMetadata(context.Context, *tfprotov6.GetMetadataRequest) (*tfprotov6.GetMetadataResponse, error) {
	return &tfprotov6.GetMetadataResponse{
		ServerCapabilities: &tfprotov6.ServerCapabilities{GetProviderSchemaOptional: true},
		DataSources:        []tfprotov6.DataSourceMetadata{{TypeName: "external"}},
	}, nil
}

func (s *Server) GetProviderSchema(context.Context, *tfprotov6.GetProviderSchemaRequest) (*tfprotov6.GetProviderSchemaResponse, error) {
	return &tfprotov6.GetProviderSchemaResponse{
		ServerCapabilities: &tfprotov6.ServerCapabilities{GetProviderSchemaOptional: true},
		Provider:           s.provider,
		ResourceSchemas:    map[string]*tfprotov6.Schema{},
		DataSourceSchemas:  map[string]*tfprotov6.Schema{"external": s.ds},
	}, nil
}

func (s *Server) ValidateProviderConfig(_ context.Context, r *tfprotov6.ValidateProviderConfigRequest) (*tfprotov6.ValidateProviderConfigResponse, error) {
	return &tfprotov6.ValidateProviderConfigResponse{PreparedConfig: r.Config}, nil
}

func (s *Server) ConfigureProvider(context.Context, *tfprotov6.ConfigureProviderRequest) (*tfprotov6.ConfigureProviderResponse, error) {
	return &tfprotov6.ConfigureProviderResponse{}, nil
}

func (s *Server) ValidateResourceConfig(_ context.Context, r *tfprotov6.ValidateResourceConfigRequest) (*tfprotov6.ValidateResourceConfigResponse, error) {
	return &tfprotov6.ValidateResourceConfigResponse{Diagnostics: s.NotImplemented("resource " + r.TypeName)}, nil
}

func (s *Server) UpgradeResourceState(_ context.Context, r *tfprotov6.UpgradeResourceStateRequest) (*tfprotov6.UpgradeResourceStateResponse, error) {
	return &tfprotov6.UpgradeResourceStateResponse{Diagnostics: s.NotImplemented("resource " + r.TypeName)}, nil
}

func (s *Server) ReadResource(_ context.Context, r *tfprotov6.ReadResourceRequest) (*tfprotov6.ReadResourceResponse, error) {
	return &tfprotov6.ReadResourceResponse{Diagnostics: s.NotImplemented("resource " + r.TypeName)}, nil
}

func (s *Server) PlanResourceChange(_ context.Context, r *tfprotov6.PlanResourceChangeRequest) (*tfprotov6.PlanResourceChangeResponse, error) {
	return &tfprotov6.PlanResourceChangeResponse{Diagnostics: s.NotImplemented("resource " + r.TypeName)}, nil
}

func (s *Server) ApplyResourceChange(_ context.Context, r *tfprotov6.ApplyResourceChangeRequest) (*tfprotov6.ApplyResourceChangeResponse, error) {
	return &tfprotov6.ApplyResourceChangeResponse{Diagnostics: s.NotImplemented("resource " + r.TypeName)}, nil
}

func (s *Server) ValidateDataResourceConfig(_ context.Context, r *tfprotov6.ValidateDataResourceConfigRequest) (*tfprotov6.ValidateDataResourceConfigResponse, error) {
	if r.TypeName != "external" {
		return &tfprotov6.ValidateDataResourceConfigResponse{Diagnostics: s.NotImplemented("data source " + r.TypeName)}, nil
	}
	return &tfprotov6.ValidateDataResourceConfigResponse{}, nil
}

func attrError(attr, summary, detail string) []*tfprotov6.Diagnostic {
	d := server.Error(summary, detail)
	d.Attribute = tftypes.NewAttributePath().WithAttributeName(attr)
	return []*tfprotov6.Diagnostic{d}
}

func (s *Server) ReadDataSource(ctx context.Context, r *tfprotov6.ReadDataSourceRequest) (*tfprotov6.ReadDataSourceResponse, error) {
	if r.TypeName != "external" {
		return &tfprotov6.ReadDataSourceResponse{Diagnostics: s.NotImplemented("data source " + r.TypeName)}, nil
	}
	cfg, err := server.Decode(s.dsType, r.Config)
	if err != nil {
		return &tfprotov6.ReadDataSourceResponse{Diagnostics: server.Errorf("Failed to decode config", err)}, nil
	}
	o, _ := val.AsObj(cfg)
	state, diags := Run(ctx, o)
	if diags != nil {
		return &tfprotov6.ReadDataSourceResponse{Diagnostics: diags}, nil
	}
	st, err := tftypes.Transform(cfg, func(p *tftypes.AttributePath, v tftypes.Value) (tftypes.Value, error) {
		switch val.Display(p) {
		case "id":
			return val.String("-"), nil
		case "result":
			m := map[string]tftypes.Value{}
			for k, x := range state {
				m[k] = val.String(x)
			}
			return tftypes.NewValue(tftypes.Map{ElementType: tftypes.String}, m), nil
		}
		return v, nil
	})
	if err != nil {
		return nil, err
	}
	dv, err := server.Dynamic(s.dsType, st)
	if err != nil {
		return nil, err
	}
	return &tfprotov6.ReadDataSourceResponse{State: dv}, nil
}

// Run executes the program of a data source config and returns its result map.
func Run(ctx context.Context, o val.Obj) (map[string]string, []*tfprotov6.Diagnostic) {
	var program []string
	for _, a := range o.Strs("program") {
		if a != "" { // null and empty elements are dropped, as in 2.3.5
			program = append(program, a)
		}
	}
	if len(program) == 0 {
		return nil, attrError("program", "External Program Missing",
			"The data source was configured without a program to execute. Verify the configuration contains at least one non-empty value.")
	}
	query := map[string]string{}
	if o.IsSet("query") {
		var m map[string]tftypes.Value
		_ = o.Get("query").As(&m)
		for k, v := range m {
			if v.IsNull() {
				continue // null query values are left out, as in 2.3.5
			}
			var s string
			_ = v.As(&s)
			query[k] = s
		}
	}
	queryJSON, err := json.Marshal(query)
	if err != nil {
		return nil, attrError("query", "Query Handling Failed", err.Error())
	}
	if _, err := exec.LookPath(program[0]); err != nil && !errors.Is(err, exec.ErrDot) {
		return nil, attrError("program", "External Program Lookup Failed",
			"The data source received an unexpected error while attempting to find the program.\n\n"+
				"The program must be accessible according to the platform where Terraform is running.\n"+
				fmt.Sprintf("\nPlatform: %s\nProgram: %s\nError: %s", runtime.GOOS, program[0], err))
	}
	cmd := exec.CommandContext(ctx, program[0], program[1:]...)
	if errors.Is(cmd.Err, exec.ErrDot) {
		cmd.Err = nil
	}
	cmd.Dir = o.Str("working_dir") // "" = the provider's (Terraform's) working directory
	cmd.Stdin = bytes.NewReader(queryJSON)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if stderr.Len() > 0 {
			return nil, attrError("program", "External Program Execution Failed",
				"The data source received an unexpected error while attempting to execute the program."+
					fmt.Sprintf("\n\nProgram: %s\nError Message: %s\nState: %s", cmd.Path, stderr.String(), err))
		}
		return nil, attrError("program", "External Program Execution Failed",
			"The data source received an unexpected error while attempting to execute the program.\n\n"+
				"The program was executed, however it returned no additional error messaging."+
				fmt.Sprintf("\n\nProgram: %s\nState: %s", cmd.Path, err))
	}
	result := map[string]string{}
	if err := json.Unmarshal(out, &result); err != nil {
		return nil, attrError("program", "Unexpected External Program Results",
			"The data source received unexpected results after executing the program.\n\n"+
				"Program output must be a JSON encoded map of string keys and string values.\n"+
				fmt.Sprintf("\nProgram: %s\nResult Error: %s", cmd.Path, err))
	}
	return result, nil
}
