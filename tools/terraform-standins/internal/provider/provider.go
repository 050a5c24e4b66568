// Package provider is the protocol-6 server of the dmacvicar/libvirt 0.9.7 stand-in: the
// real schema, the framework's planning rules, and libvirt_domain / libvirt_volume done
// against libvirtd. libvirt_pool and libvirt_cloudinit_disk are in the schema (so that
// configurations validate as against the real provider) but refused when planned.
package provider

import (
	"context"
	"fmt"
	"sync"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"vmpools.dev/terraform-standins/internal/lv"
	"vmpools.dev/terraform-standins/internal/plan"
	"vmpools.dev/terraform-standins/internal/schema"
	"vmpools.dev/terraform-standins/internal/server"
	"vmpools.dev/terraform-standins/internal/val"
)

// Name is how the stand-in names the provider it replaces in its messages.
const Name = "dmacvicar/libvirt 0.9.7"

type resourceType struct {
	schema      *schema.Schema
	proto       *tfprotov6.Schema
	typ         tftypes.Type
	implemented map[string]bool // nil: the whole resource type is not implemented
}

// Server is the provider instance Terraform talks to.
type Server struct {
	server.Base
	providerSchema *tfprotov6.Schema
	providerType   tftypes.Type
	resources      map[string]*resourceType
	mods           schema.Modifiers

	mu   sync.Mutex
	uri  string
	conn *lv.Conn
}

// New loads the embedded schema and plan modifiers.
func New() (*Server, error) {
	p, err := schema.Libvirt()
	if err != nil {
		return nil, err
	}
	mods, err := schema.LibvirtModifiers()
	if err != nil {
		return nil, err
	}
	s := &Server{Base: server.Base{Name: Name}, resources: map[string]*resourceType{}, mods: mods}
	if s.providerSchema, err = p.Provider.Proto(); err != nil {
		return nil, err
	}
	if s.providerType, err = p.Provider.ValueType(); err != nil {
		return nil, err
	}
	implemented := map[string]map[string]bool{
		"libvirt_domain": lv.DomainAttributes,
		"libvirt_volume": lv.VolumeAttributes,
	}
	for name, rs := range p.ResourceSchemas {
		rt := &resourceType{schema: rs, implemented: implemented[name]}
		if rt.proto, err = rs.Proto(); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if rt.typ, err = rs.ValueType(); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		s.resources[name] = rt
	}
	for name, attrs := range implemented {
		rt := s.resources[name]
		if rt == nil {
			return nil, fmt.Errorf("resource %s missing from the schema", name)
		}
		for path := range attrs {
			if rt.schema.Lookup(path) == nil {
				return nil, fmt.Errorf("%s: implemented attribute %s is not in the schema", name, path)
			}
		}
	}
	return s, nil
}

func (s *Server) GetMetadata(context.Context, *tfprotov6.GetMetadataRequest) (*tfprotov6.GetMetadataResponse, error) {
	r := &tfprotov6.GetMetadataResponse{ServerCapabilities: &tfprotov6.ServerCapabilities{GetProviderSchemaOptional: true}}
	for name := range s.resources {
		r.Resources = append(r.Resources, tfprotov6.ResourceMetadata{TypeName: name})
	}
	return r, nil
}

func (s *Server) GetProviderSchema(context.Context, *tfprotov6.GetProviderSchemaRequest) (*tfprotov6.GetProviderSchemaResponse, error) {
	r := &tfprotov6.GetProviderSchemaResponse{
		ServerCapabilities: &tfprotov6.ServerCapabilities{GetProviderSchemaOptional: true},
		Provider:           s.providerSchema,
		ResourceSchemas:    map[string]*tfprotov6.Schema{},
		DataSourceSchemas:  map[string]*tfprotov6.Schema{},
	}
	for name, rt := range s.resources {
		r.ResourceSchemas[name] = rt.proto
	}
	return r, nil
}

func (s *Server) ValidateProviderConfig(_ context.Context, r *tfprotov6.ValidateProviderConfigRequest) (*tfprotov6.ValidateProviderConfigResponse, error) {
	return &tfprotov6.ValidateProviderConfigResponse{PreparedConfig: r.Config}, nil
}

// ConfigureProvider connects, as the real provider does in Configure: a plan against an
// unreachable libvirtd fails here, not later.
func (s *Server) ConfigureProvider(_ context.Context, r *tfprotov6.ConfigureProviderRequest) (*tfprotov6.ConfigureProviderResponse, error) {
	cfg, err := server.Decode(s.providerType, r.Config)
	if err != nil {
		return &tfprotov6.ConfigureProviderResponse{Diagnostics: server.Errorf("Invalid provider configuration", err)}, nil
	}
	o, _ := val.AsObj(cfg)
	uri := lv.ResolveURI(o.Str("uri"))
	conn, err := lv.Connect(uri)
	if err != nil {
		return &tfprotov6.ConfigureProviderResponse{Diagnostics: []*tfprotov6.Diagnostic{
			server.Error("Unable to Connect to Libvirt", "An error occurred while connecting to libvirt.\n\nURI: "+uri+"\nError: "+err.Error()),
		}}, nil
	}
	s.mu.Lock()
	s.uri, s.conn = uri, conn
	s.mu.Unlock()
	return &tfprotov6.ConfigureProviderResponse{}, nil
}

func (s *Server) libvirt() (*lv.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil, fmt.Errorf("provider is not configured")
	}
	return s.conn, nil
}

func (s *Server) ValidateResourceConfig(_ context.Context, r *tfprotov6.ValidateResourceConfigRequest) (*tfprotov6.ValidateResourceConfigResponse, error) {
	if s.resources[r.TypeName] == nil {
		return &tfprotov6.ValidateResourceConfigResponse{Diagnostics: s.NotImplemented("resource type " + r.TypeName)}, nil
	}
	return &tfprotov6.ValidateResourceConfigResponse{}, nil
}

func (s *Server) UpgradeResourceState(_ context.Context, r *tfprotov6.UpgradeResourceStateRequest) (*tfprotov6.UpgradeResourceStateResponse, error) {
	rt := s.resources[r.TypeName]
	if rt == nil {
		return &tfprotov6.UpgradeResourceStateResponse{Diagnostics: s.NotImplemented("resource type " + r.TypeName)}, nil
	}
	if r.Version != rt.schema.Version {
		return &tfprotov6.UpgradeResourceStateResponse{Diagnostics: s.NotImplemented(fmt.Sprintf("upgrading %s state from schema version %d", r.TypeName, r.Version))}, nil
	}
	v, err := r.RawState.UnmarshalWithOpts(rt.typ, tfprotov6.UnmarshalOpts{ValueFromJSONOpts: tftypes.ValueFromJSONOpts{IgnoreUndefinedAttributes: true}})
	if err != nil {
		return &tfprotov6.UpgradeResourceStateResponse{Diagnostics: server.Errorf("Failed to read prior state", err)}, nil
	}
	dv, err := server.Dynamic(rt.typ, v)
	if err != nil {
		return nil, err
	}
	return &tfprotov6.UpgradeResourceStateResponse{UpgradedState: dv}, nil
}

// PlanResourceChange refuses what the stand-in does not implement, then plans as the
// framework does (see package plan).
func (s *Server) PlanResourceChange(_ context.Context, r *tfprotov6.PlanResourceChangeRequest) (*tfprotov6.PlanResourceChangeResponse, error) {
	rt := s.resources[r.TypeName]
	if rt == nil {
		return &tfprotov6.PlanResourceChangeResponse{Diagnostics: s.NotImplemented("resource type " + r.TypeName)}, nil
	}
	prior, err1 := server.Decode(rt.typ, r.PriorState)
	proposed, err2 := server.Decode(rt.typ, r.ProposedNewState)
	config, err3 := server.Decode(rt.typ, r.Config)
	for _, err := range []error{err1, err2, err3} {
		if err != nil {
			return &tfprotov6.PlanResourceChangeResponse{Diagnostics: server.Errorf("Failed to decode plan request", err)}, nil
		}
	}
	if !proposed.IsNull() {
		if rt.implemented == nil {
			return &tfprotov6.PlanResourceChangeResponse{Diagnostics: s.NotImplemented("resource " + r.TypeName)}, nil
		}
		bad, err := plan.UnimplementedSince(config, prior, rt.implemented)
		if err != nil {
			return nil, err
		}
		if len(bad) > 0 {
			resp := &tfprotov6.PlanResourceChangeResponse{}
			for _, p := range bad {
				d := server.Error("attribute "+val.Display(p)+" is not implemented by the vmpools stand-in of "+Name,
					"The stand-in refuses attributes it does not implement instead of dropping them. Implemented attributes of "+r.TypeName+" are listed in tools/terraform-standins/internal/lv.")
				d.Attribute = p
				resp.Diagnostics = append(resp.Diagnostics, d)
			}
			return resp, nil
		}
	}
	res, err := plan.Resource(rt.schema, s.mods, r.TypeName, prior, proposed, config)
	if err != nil {
		return &tfprotov6.PlanResourceChangeResponse{Diagnostics: server.Errorf("Failed to plan "+r.TypeName, err)}, nil
	}
	dv, err := server.Dynamic(rt.typ, res.Planned)
	if err != nil {
		return nil, err
	}
	return &tfprotov6.PlanResourceChangeResponse{PlannedState: dv, RequiresReplace: res.RequiresReplace}, nil
}

func (s *Server) ApplyResourceChange(_ context.Context, r *tfprotov6.ApplyResourceChangeRequest) (*tfprotov6.ApplyResourceChangeResponse, error) {
	rt := s.resources[r.TypeName]
	if rt == nil || rt.implemented == nil {
		return &tfprotov6.ApplyResourceChangeResponse{Diagnostics: s.NotImplemented("resource " + r.TypeName)}, nil
	}
	prior, err1 := server.Decode(rt.typ, r.PriorState)
	planned, err2 := server.Decode(rt.typ, r.PlannedState)
	if err1 != nil || err2 != nil {
		return &tfprotov6.ApplyResourceChangeResponse{Diagnostics: server.Errorf("Failed to decode apply request", fmt.Errorf("%v %v", err1, err2))}, nil
	}
	conn, err := s.libvirt()
	if err != nil {
		return &tfprotov6.ApplyResourceChangeResponse{Diagnostics: server.Errorf("Libvirt not configured", err)}, nil
	}
	var newState tftypes.Value
	var diags []*tfprotov6.Diagnostic
	switch r.TypeName {
	case "libvirt_domain":
		newState, diags = applyDomain(conn, prior, planned)
	case "libvirt_volume":
		newState, diags = applyVolume(conn, prior, planned)
	}
	resp := &tfprotov6.ApplyResourceChangeResponse{Diagnostics: diags}
	if hasError(diags) {
		// keep the prior state: nothing was changed, or (create) nothing was kept
		newState = prior
	}
	if resp.NewState, err = server.Dynamic(rt.typ, newState); err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *Server) ReadResource(_ context.Context, r *tfprotov6.ReadResourceRequest) (*tfprotov6.ReadResourceResponse, error) {
	rt := s.resources[r.TypeName]
	if rt == nil || rt.implemented == nil {
		return &tfprotov6.ReadResourceResponse{Diagnostics: s.NotImplemented("resource " + r.TypeName)}, nil
	}
	current, err := server.Decode(rt.typ, r.CurrentState)
	if err != nil {
		return &tfprotov6.ReadResourceResponse{Diagnostics: server.Errorf("Failed to decode state", err)}, nil
	}
	conn, err := s.libvirt()
	if err != nil {
		return &tfprotov6.ReadResourceResponse{Diagnostics: server.Errorf("Libvirt not configured", err)}, nil
	}
	var newState tftypes.Value
	var diags []*tfprotov6.Diagnostic
	switch r.TypeName {
	case "libvirt_domain":
		newState, diags = readDomain(conn, current)
	case "libvirt_volume":
		newState, diags = readVolume(conn, current)
	}
	if hasError(diags) {
		return &tfprotov6.ReadResourceResponse{Diagnostics: diags}, nil
	}
	dv, err := server.Dynamic(rt.typ, newState)
	if err != nil {
		return nil, err
	}
	return &tfprotov6.ReadResourceResponse{NewState: dv, Private: r.Private, Diagnostics: diags}, nil
}

func (s *Server) ValidateDataResourceConfig(_ context.Context, r *tfprotov6.ValidateDataResourceConfigRequest) (*tfprotov6.ValidateDataResourceConfigResponse, error) {
	return &tfprotov6.ValidateDataResourceConfigResponse{Diagnostics: s.NotImplemented("data source " + r.TypeName)}, nil
}

func (s *Server) ReadDataSource(_ context.Context, r *tfprotov6.ReadDataSourceRequest) (*tfprotov6.ReadDataSourceResponse, error) {
	return &tfprotov6.ReadDataSourceResponse{Diagnostics: s.NotImplemented("data source " + r.TypeName)}, nil
}

func hasError(ds []*tfprotov6.Diagnostic) bool {
	for _, d := range ds {
		if d.Severity == tfprotov6.DiagnosticSeverityError {
			return true
		}
	}
	return false
}

// setAll applies attribute → value replacements (dotted paths) to a state value.
func setAll(v tftypes.Value, values map[string]tftypes.Value) (tftypes.Value, error) {
	for path, nv := range values {
		p := val.Path(path)
		if _, ok := val.At(v, p); !ok {
			continue // parent object is null: the attribute does not exist in this value
		}
		var err error
		if v, err = val.Set(v, p, nv); err != nil {
			return v, fmt.Errorf("set %s: %w", path, err)
		}
	}
	return val.UnknownsToNull(v)
}

func errDiag(summary string, err error) []*tfprotov6.Diagnostic {
	return server.Errorf(summary, err)
}
