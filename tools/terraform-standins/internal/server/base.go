// Package server holds what both stand-ins share: the protocol-6 methods that neither
// implements (each answers with a clear error, or an empty list) and diagnostics helpers.
package server

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

// Base implements the parts of tfprotov6.ProviderServer that the stand-ins do not offer.
// Name is the provider's display name used in messages.
type Base struct{ Name string }

// NotImplemented is the error diagnostic for anything a stand-in does not reproduce.
func (b Base) NotImplemented(what string) []*tfprotov6.Diagnostic {
	return []*tfprotov6.Diagnostic{Error(what+" is not implemented by the vmpools stand-in of "+b.Name, "")}
}

// Error builds an error diagnostic.
func Error(summary, detail string) *tfprotov6.Diagnostic {
	return &tfprotov6.Diagnostic{Severity: tfprotov6.DiagnosticSeverityError, Summary: summary, Detail: detail}
}

// Warning builds a warning diagnostic.
func Warning(summary, detail string) *tfprotov6.Diagnostic {
	return &tfprotov6.Diagnostic{Severity: tfprotov6.DiagnosticSeverityWarning, Summary: summary, Detail: detail}
}

// Errorf builds an error diagnostic from an error value.
func Errorf(summary string, err error) []*tfprotov6.Diagnostic {
	return []*tfprotov6.Diagnostic{Error(summary, err.Error())}
}

// Dynamic wraps a value for the wire.
func Dynamic(t tftypes.Type, v tftypes.Value) (*tfprotov6.DynamicValue, error) {
	dv, err := tfprotov6.NewDynamicValue(t, v)
	if err != nil {
		return nil, fmt.Errorf("encode value: %w", err)
	}
	return &dv, nil
}

// Decode unwraps a value from the wire; a missing value is null of type t.
func Decode(t tftypes.Type, dv *tfprotov6.DynamicValue) (tftypes.Value, error) {
	if dv == nil {
		return tftypes.NewValue(t, nil), nil
	}
	return dv.Unmarshal(t)
}

func (b Base) GetResourceIdentitySchemas(context.Context, *tfprotov6.GetResourceIdentitySchemasRequest) (*tfprotov6.GetResourceIdentitySchemasResponse, error) {
	return &tfprotov6.GetResourceIdentitySchemasResponse{}, nil
}

func (b Base) StopProvider(context.Context, *tfprotov6.StopProviderRequest) (*tfprotov6.StopProviderResponse, error) {
	return &tfprotov6.StopProviderResponse{}, nil
}

func (b Base) ImportResourceState(_ context.Context, r *tfprotov6.ImportResourceStateRequest) (*tfprotov6.ImportResourceStateResponse, error) {
	return &tfprotov6.ImportResourceStateResponse{Diagnostics: b.NotImplemented("import of " + r.TypeName)}, nil
}

func (b Base) MoveResourceState(_ context.Context, r *tfprotov6.MoveResourceStateRequest) (*tfprotov6.MoveResourceStateResponse, error) {
	return &tfprotov6.MoveResourceStateResponse{Diagnostics: b.NotImplemented("moved blocks into " + r.TargetTypeName)}, nil
}

func (b Base) UpgradeResourceIdentity(_ context.Context, r *tfprotov6.UpgradeResourceIdentityRequest) (*tfprotov6.UpgradeResourceIdentityResponse, error) {
	return &tfprotov6.UpgradeResourceIdentityResponse{Diagnostics: b.NotImplemented("resource identity of " + r.TypeName)}, nil
}

func (b Base) GenerateResourceConfig(_ context.Context, r *tfprotov6.GenerateResourceConfigRequest) (*tfprotov6.GenerateResourceConfigResponse, error) {
	return &tfprotov6.GenerateResourceConfigResponse{Diagnostics: b.NotImplemented("config generation for " + r.TypeName)}, nil
}

func (b Base) CallFunction(_ context.Context, r *tfprotov6.CallFunctionRequest) (*tfprotov6.CallFunctionResponse, error) {
	return &tfprotov6.CallFunctionResponse{Error: &tfprotov6.FunctionError{Text: "function " + r.Name + " is not implemented by the vmpools stand-in of " + b.Name}}, nil
}

func (b Base) GetFunctions(context.Context, *tfprotov6.GetFunctionsRequest) (*tfprotov6.GetFunctionsResponse, error) {
	return &tfprotov6.GetFunctionsResponse{Functions: map[string]*tfprotov6.Function{}}, nil
}

func (b Base) ValidateEphemeralResourceConfig(_ context.Context, r *tfprotov6.ValidateEphemeralResourceConfigRequest) (*tfprotov6.ValidateEphemeralResourceConfigResponse, error) {
	return &tfprotov6.ValidateEphemeralResourceConfigResponse{Diagnostics: b.NotImplemented("ephemeral resource " + r.TypeName)}, nil
}

func (b Base) OpenEphemeralResource(_ context.Context, r *tfprotov6.OpenEphemeralResourceRequest) (*tfprotov6.OpenEphemeralResourceResponse, error) {
	return &tfprotov6.OpenEphemeralResourceResponse{Diagnostics: b.NotImplemented("ephemeral resource " + r.TypeName)}, nil
}

func (b Base) RenewEphemeralResource(_ context.Context, r *tfprotov6.RenewEphemeralResourceRequest) (*tfprotov6.RenewEphemeralResourceResponse, error) {
	return &tfprotov6.RenewEphemeralResourceResponse{Diagnostics: b.NotImplemented("ephemeral resource " + r.TypeName)}, nil
}

func (b Base) CloseEphemeralResource(_ context.Context, r *tfprotov6.CloseEphemeralResourceRequest) (*tfprotov6.CloseEphemeralResourceResponse, error) {
	return &tfprotov6.CloseEphemeralResourceResponse{Diagnostics: b.NotImplemented("ephemeral resource " + r.TypeName)}, nil
}
