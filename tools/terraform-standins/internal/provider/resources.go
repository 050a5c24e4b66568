package provider

import (
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"vmpools.dev/terraform-standins/internal/lv"
	"vmpools.dev/terraform-standins/internal/server"
	"vmpools.dev/terraform-standins/internal/val"
)

// domainID is the computed `id`: libvirt's runtime domain id, null while the domain is not
// running (the real provider reads it from the live XML's id attribute).
func domainID(r lv.DomainResult) tftypes.Value {
	if r.ID == nil {
		return val.Null(tftypes.Number)
	}
	return val.Number(*r.ID)
}

// applyDomain creates, updates or deletes a libvirt_domain.
//
// The new state is the planned value with the computed attributes filled in. The real
// provider instead reads the domain XML back and keeps user-set values where it can; the
// stand-in does not read attributes back, so libvirt's canonicalisation of a value (which
// could make the real provider report an inconsistent result) is not reproduced.
func applyDomain(c *lv.Conn, prior, planned tftypes.Value) (tftypes.Value, []*tfprotov6.Diagnostic) {
	if planned.IsNull() {
		p, _ := val.AsObj(prior)
		if err := c.DeleteDomain(p.Str("uuid"), p); err != nil {
			return prior, errDiag("Failed to Destroy Domain", err)
		}
		return planned, nil
	}
	m, _ := val.AsObj(planned)
	if prior.IsNull() {
		res, err := c.CreateDomain(m)
		if err != nil {
			return prior, errDiag("Domain Creation Failed", err)
		}
		st, err := setAll(planned, map[string]tftypes.Value{"uuid": val.String(res.UUID), "id": domainID(res)})
		if err != nil {
			return prior, errDiag("Failed to set state", err)
		}
		return st, nil
	}
	p, _ := val.AsObj(prior)
	res, warning, err := c.UpdateDomain(p.Str("uuid"), m)
	if err != nil {
		return prior, errDiag("Domain Update Failed", err)
	}
	id := domainID(res)
	if res.ID == nil {
		id = p.Get("id") // as the real provider: a null id read back keeps the prior one
	}
	st, err := setAll(planned, map[string]tftypes.Value{"uuid": val.String(res.UUID), "id": id})
	if err != nil {
		return prior, errDiag("Failed to set state", err)
	}
	var diags []*tfprotov6.Diagnostic
	if warning != "" {
		diags = append(diags, server.Warning("Failed to Start Domain", warning))
	}
	return st, diags
}

// readDomain drops the resource when the domain is gone; otherwise it returns the prior
// state, refreshing only the computed runtime `id` when the domain runs. The stand-in does
// not read the other attributes back from libvirt (the real provider does, keeping the
// user's values where libvirt agrees); `running` is never refreshed, in the real one either.
func readDomain(c *lv.Conn, current tftypes.Value) (tftypes.Value, []*tfprotov6.Diagnostic) {
	o, _ := val.AsObj(current)
	res, found, err := c.ReadDomain(o.Str("uuid"))
	if err != nil {
		return current, errDiag("Failed to Read Domain", err)
	}
	if !found {
		return val.Null(current.Type()), nil
	}
	if res.ID != nil {
		st, err := setAll(current, map[string]tftypes.Value{"id": domainID(res)})
		if err != nil {
			return current, errDiag("Failed to set state", err)
		}
		return st, nil
	}
	return current, nil
}

func volumeComputed(info lv.VolumeInfo, planned tftypes.Value) map[string]tftypes.Value {
	values := map[string]tftypes.Value{
		"id":          val.String(info.Key),
		"key":         val.String(info.Key),
		"path":        val.String(info.Path),
		"allocation":  val.Number(int64(info.Allocation)),
		"physical":    val.Null(tftypes.Number),
		"target.path": val.String(info.Path), // only where the plan has a target object
	}
	if info.Physical != nil {
		values["physical"] = val.Number(int64(*info.Physical))
	}
	// capacity is optional+computed: the user's value is kept, else libvirt's (bytes)
	if cv, ok := val.At(planned, val.Path("capacity")); ok && !cv.IsKnown() {
		values["capacity"] = val.Number(int64(info.Capacity))
	}
	return values
}

// applyVolume creates or deletes a libvirt_volume; an update is refused like the real one.
func applyVolume(c *lv.Conn, prior, planned tftypes.Value) (tftypes.Value, []*tfprotov6.Diagnostic) {
	if planned.IsNull() {
		p, _ := val.AsObj(prior)
		if err := c.DeleteVolume(p.Str("key")); err != nil {
			return prior, errDiag("Failed to Delete Volume", err)
		}
		return planned, nil
	}
	if !prior.IsNull() {
		return prior, []*tfprotov6.Diagnostic{server.Error("Update Not Supported", "Storage volumes cannot be updated. All changes require replacement.")}
	}
	m, _ := val.AsObj(planned)
	info, err := c.CreateVolume(m)
	if err != nil {
		return prior, errDiag("Volume Creation Failed", err)
	}
	st, err := setAll(planned, volumeComputed(info, planned))
	if err != nil {
		return prior, errDiag("Failed to set state", err)
	}
	return st, nil
}

// readVolume drops the resource when the volume is gone (with the real provider's warning),
// else refreshes what libvirt computes: allocation and physical size, path.
func readVolume(c *lv.Conn, current tftypes.Value) (tftypes.Value, []*tfprotov6.Diagnostic) {
	o, _ := val.AsObj(current)
	info, found, err := c.ReadVolume(o.Str("key"))
	if err != nil {
		return current, errDiag("Failed to Read Volume", err)
	}
	if !found {
		return val.Null(current.Type()), []*tfprotov6.Diagnostic{server.Warning("Volume Not Found", "Storage volume not found, removing from state")}
	}
	values := volumeComputed(info, current)
	delete(values, "capacity")
	st, err := setAll(current, values)
	if err != nil {
		return current, errDiag("Failed to set state", err)
	}
	return st, nil
}
