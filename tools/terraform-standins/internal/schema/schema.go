// Package schema loads a provider schema in the format of `terraform providers schema -json`
// and turns it into the protocol-6 schema and the tftypes type that the stand-ins serve.
//
// The schema is not written by hand: the libvirt stand-in embeds the schema obtained from the
// real dmacvicar/libvirt 0.9.7 code, the external stand-in the one of hashicorp/external 2.3.5,
// so that Terraform sees exactly the attributes, nesting and flags of the real providers.
package schema

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

//go:embed dmacvicar-libvirt-0.9.7.code-schema.json
var libvirtSchemaJSON []byte

//go:embed dmacvicar-libvirt-0.9.7.plan-modifiers.json
var libvirtModifiersJSON []byte

//go:embed hashicorp-external-2.3.5.schema.json
var externalSchemaJSON []byte

// Attr is one attribute as written in the JSON schema.
type Attr struct {
	Type        json.RawMessage `json:"type,omitempty"` // cty type JSON: "string", ["list","string"], …
	NestedType  *Nested         `json:"nested_type,omitempty"`
	Description string          `json:"description,omitempty"`
	Required    bool            `json:"required,omitempty"`
	Optional    bool            `json:"optional,omitempty"`
	Computed    bool            `json:"computed,omitempty"`
	Sensitive   bool            `json:"sensitive,omitempty"`
	Deprecated  bool            `json:"deprecated,omitempty"`
}

// Nested is a nested attribute type (protocol 6 only).
type Nested struct {
	Attributes  map[string]*Attr `json:"attributes"`
	NestingMode string           `json:"nesting_mode"` // single, list, set, map
}

// Block is the top-level block of a resource, data source or provider. The schemas used
// here have no nested blocks (the libvirt provider uses nested attributes only, external has
// none); Load refuses a schema with block_types so that nothing is silently dropped.
type Block struct {
	Attributes  map[string]*Attr `json:"attributes"`
	BlockTypes  json.RawMessage  `json:"block_types,omitempty"`
	Description string           `json:"description,omitempty"`
}

// Schema is one resource's (or the provider's) schema.
type Schema struct {
	Version int64  `json:"version"`
	Block   *Block `json:"block"`
}

// Provider is what the JSON says about one provider.
type Provider struct {
	Provider          *Schema            `json:"provider"`
	ResourceSchemas   map[string]*Schema `json:"resource_schemas"`
	DataSourceSchemas map[string]*Schema `json:"data_source_schemas"`
}

type document struct {
	ProviderSchemas map[string]*Provider `json:"provider_schemas"`
}

// Load parses a providers-schema JSON document and returns the schema of the named provider
// (for example "registry.terraform.io/dmacvicar/libvirt").
func Load(doc []byte, source string) (*Provider, error) {
	var d document
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("parse provider schema JSON: %w", err)
	}
	p := d.ProviderSchemas[source]
	if p == nil {
		return nil, fmt.Errorf("provider %s not in schema JSON", source)
	}
	if p.Provider == nil {
		p.Provider = &Schema{Block: &Block{}}
	}
	all := map[string]*Schema{"provider": p.Provider}
	for n, s := range p.ResourceSchemas {
		all[n] = s
	}
	for n, s := range p.DataSourceSchemas {
		all["data."+n] = s
	}
	for n, s := range all {
		if s.Block == nil {
			s.Block = &Block{}
		}
		if len(s.Block.BlockTypes) > 0 && string(s.Block.BlockTypes) != "{}" {
			return nil, fmt.Errorf("%s: nested blocks are not supported by this loader", n)
		}
	}
	return p, nil
}

// Libvirt returns the embedded dmacvicar/libvirt 0.9.7 schema.
func Libvirt() (*Provider, error) {
	return Load(libvirtSchemaJSON, "registry.terraform.io/dmacvicar/libvirt")
}

// External returns the embedded hashicorp/external 2.3.5 schema.
func External() (*Provider, error) {
	return Load(externalSchemaJSON, "registry.terraform.io/hashicorp/external")
}

// Modifiers maps resource type → attribute path ("target.path") → plan modifier names, as
// listed in the plan-modifiers JSON taken from the real provider's Schema() code.
type Modifiers map[string]map[string][]string

// LibvirtModifiers returns the embedded plan modifiers of dmacvicar/libvirt 0.9.7.
func LibvirtModifiers() (Modifiers, error) {
	var m Modifiers
	if err := json.Unmarshal(libvirtModifiersJSON, &m); err != nil {
		return nil, fmt.Errorf("parse plan modifiers JSON: %w", err)
	}
	return m, nil
}

// Has reports whether the attribute at path (dotted, without list indexes) of resource typ
// carries the named modifier.
func (m Modifiers) Has(typ, path, modifier string) bool {
	for _, x := range m[typ][path] {
		if x == modifier {
			return true
		}
	}
	return false
}

// CtyType converts a cty type in JSON form into a tftypes.Type.
func CtyType(raw json.RawMessage) (tftypes.Type, error) {
	var prim string
	if err := json.Unmarshal(raw, &prim); err == nil {
		switch prim {
		case "string":
			return tftypes.String, nil
		case "number":
			return tftypes.Number, nil
		case "bool":
			return tftypes.Bool, nil
		case "dynamic":
			return tftypes.DynamicPseudoType, nil
		}
		return nil, fmt.Errorf("unknown primitive type %q", prim)
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil || len(parts) != 2 {
		return nil, fmt.Errorf("bad type %s", raw)
	}
	var kind string
	if err := json.Unmarshal(parts[0], &kind); err != nil {
		return nil, fmt.Errorf("bad type %s", raw)
	}
	switch kind {
	case "list", "set", "map":
		el, err := CtyType(parts[1])
		if err != nil {
			return nil, err
		}
		switch kind {
		case "list":
			return tftypes.List{ElementType: el}, nil
		case "set":
			return tftypes.Set{ElementType: el}, nil
		default:
			return tftypes.Map{ElementType: el}, nil
		}
	case "object":
		var attrs map[string]json.RawMessage
		if err := json.Unmarshal(parts[1], &attrs); err != nil {
			return nil, fmt.Errorf("bad object type %s", raw)
		}
		out := map[string]tftypes.Type{}
		for n, t := range attrs {
			tt, err := CtyType(t)
			if err != nil {
				return nil, err
			}
			out[n] = tt
		}
		return tftypes.Object{AttributeTypes: out}, nil
	}
	return nil, fmt.Errorf("unsupported type kind %q", kind)
}

// ValueType is the tftypes type of values of this attribute.
func (a *Attr) ValueType() (tftypes.Type, error) {
	if a.NestedType == nil {
		return CtyType(a.Type)
	}
	obj, err := objectType(a.NestedType.Attributes)
	if err != nil {
		return nil, err
	}
	switch a.NestedType.NestingMode {
	case "single":
		return obj, nil
	case "list":
		return tftypes.List{ElementType: obj}, nil
	case "set":
		return tftypes.Set{ElementType: obj}, nil
	case "map":
		return tftypes.Map{ElementType: obj}, nil
	}
	return nil, fmt.Errorf("unknown nesting mode %q", a.NestedType.NestingMode)
}

func objectType(attrs map[string]*Attr) (tftypes.Object, error) {
	out := map[string]tftypes.Type{}
	for n, a := range attrs {
		t, err := a.ValueType()
		if err != nil {
			return tftypes.Object{}, fmt.Errorf("%s: %w", n, err)
		}
		out[n] = t
	}
	return tftypes.Object{AttributeTypes: out}, nil
}

// ValueType is the tftypes type of a whole resource / data source / provider config value.
func (s *Schema) ValueType() (tftypes.Type, error) {
	return objectType(s.Block.Attributes)
}

// Proto converts the schema to its protocol-6 form.
func (s *Schema) Proto() (*tfprotov6.Schema, error) {
	attrs, err := protoAttrs(s.Block.Attributes)
	if err != nil {
		return nil, err
	}
	return &tfprotov6.Schema{
		Version: s.Version,
		Block: &tfprotov6.SchemaBlock{
			Attributes:      attrs,
			Description:     s.Block.Description,
			DescriptionKind: tfprotov6.StringKindPlain,
		},
	}, nil
}

func protoAttrs(attrs map[string]*Attr) ([]*tfprotov6.SchemaAttribute, error) {
	names := make([]string, 0, len(attrs))
	for n := range attrs {
		names = append(names, n)
	}
	sort.Strings(names) // Terraform does not care, but a stable order keeps tests simple
	out := make([]*tfprotov6.SchemaAttribute, 0, len(attrs))
	for _, n := range names {
		a := attrs[n]
		pa := &tfprotov6.SchemaAttribute{
			Name:            n,
			Description:     a.Description,
			DescriptionKind: tfprotov6.StringKindPlain,
			Required:        a.Required,
			Optional:        a.Optional,
			Computed:        a.Computed,
			Sensitive:       a.Sensitive,
			Deprecated:      a.Deprecated,
		}
		if a.NestedType != nil {
			inner, err := protoAttrs(a.NestedType.Attributes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", n, err)
			}
			obj := &tfprotov6.SchemaObject{Attributes: inner}
			switch a.NestedType.NestingMode {
			case "single":
				obj.Nesting = tfprotov6.SchemaObjectNestingModeSingle
			case "list":
				obj.Nesting = tfprotov6.SchemaObjectNestingModeList
			case "set":
				obj.Nesting = tfprotov6.SchemaObjectNestingModeSet
			case "map":
				obj.Nesting = tfprotov6.SchemaObjectNestingModeMap
			default:
				return nil, fmt.Errorf("%s: unknown nesting mode %q", n, a.NestedType.NestingMode)
			}
			pa.NestedType = obj
		} else {
			t, err := CtyType(a.Type)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", n, err)
			}
			pa.Type = t
		}
		out = append(out, pa)
	}
	return out, nil
}

// Lookup returns the attribute at a dotted path without list indexes ("devices.disks.target").
func (s *Schema) Lookup(path string) *Attr {
	attrs := s.Block.Attributes
	var a *Attr
	for _, part := range strings.Split(path, ".") {
		if attrs == nil {
			return nil
		}
		a = attrs[part]
		if a == nil {
			return nil
		}
		attrs = nil
		if a.NestedType != nil {
			attrs = a.NestedType.Attributes
		}
	}
	return a
}
