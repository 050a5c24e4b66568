package lv

import (
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"vmpools.dev/terraform-standins/internal/val"
)

// DomainResult is what the resource code needs back from libvirt after create/update/read:
// the domain's UUID and its runtime id (nil when the domain is not running, like the real
// provider, which reads `id` from the id attribute of the live XML).
type DomainResult struct {
	UUID string
	ID   *int64
}

// Libvirt versions from which the undefine flags exist (values as in the real provider).
const (
	versionUndefineNvram     = 1_002_009
	versionUndefineKeepNvram = 2_003_000
	versionUndefineTpm       = 8_009_000
)

// Wait between state polls, as in the real provider (1 s).
var pollInterval = time.Second

func uuidString(u golibvirt.UUID) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func parseUUID(s string) (golibvirt.UUID, error) {
	var u golibvirt.UUID
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != len(u) {
		return u, fmt.Errorf("invalid domain UUID %q", s)
	}
	copy(u[:], b)
	return u, nil
}

func (c *Conn) result(dom golibvirt.Domain) DomainResult {
	r := DomainResult{UUID: uuidString(dom.UUID)}
	// re-look-up: the handle returned by define/create may carry a stale id
	if d, err := c.L.DomainLookupByUUID(dom.UUID); err == nil && d.ID >= 0 {
		id := int64(d.ID)
		r.ID = &id
	}
	return r
}

// startFlags maps the `create` block to virDomainCreateWithFlags flags (real provider's
// domainStartFlagsFromCreate).
func startFlags(create val.Obj) uint32 {
	var f uint32
	if create.True("paused") {
		f |= uint32(golibvirt.DomainStartPaused)
	}
	if create.True("autodestroy") {
		f |= uint32(golibvirt.DomainStartAutodestroy)
	}
	if create.True("bypass_cache") {
		f |= uint32(golibvirt.DomainStartBypassCache)
	}
	if create.True("force_boot") {
		f |= uint32(golibvirt.DomainStartForceBoot)
	}
	if create.True("validate") {
		f |= uint32(golibvirt.DomainStartValidate)
	}
	if create.True("reset_nvram") {
		f |= uint32(golibvirt.DomainStartResetNvram)
	}
	return f
}

func (c *Conn) setAutostart(dom golibvirt.Domain, m val.Obj) error {
	if b, ok := m.Bool("autostart"); ok {
		v := int32(0)
		if b {
			v = 1
		}
		if err := c.L.DomainSetAutostart(dom, v); err != nil {
			return fmt.Errorf("set autostart: %w", err)
		}
	}
	return nil
}

// CreateDomain defines the domain from the planned value and starts it only when `running`
// is true. On a failure after define the domain is removed again (as the real provider).
func (c *Conn) CreateDomain(m val.Obj) (DomainResult, error) {
	xml, err := DomainXML(m, "")
	if err != nil {
		return DomainResult{}, fmt.Errorf("invalid domain configuration: %w", err)
	}
	dom, err := c.L.DomainDefineXML(xml)
	if err != nil {
		return DomainResult{}, fmt.Errorf("failed to define domain in libvirt: %w", err)
	}
	cleanup := func() {
		if m.True("running") {
			_ = c.L.DomainDestroy(dom)
		}
		_ = c.L.DomainUndefine(dom)
	}
	if m.True("running") {
		if _, err := c.L.DomainCreateWithFlags(dom, startFlags(m.Obj("create"))); err != nil {
			cleanup()
			return DomainResult{}, fmt.Errorf("domain was defined but failed to start: %w", err)
		}
	}
	if err := c.setAutostart(dom, m); err != nil {
		cleanup()
		return DomainResult{}, err
	}
	return c.result(dom), nil
}

type stopOptions struct {
	shutdown       bool
	timeout        time.Duration
	forceOnTimeout bool
	flags          golibvirt.DomainDestroyFlagsValues
}

func shutdownTimeout(o val.Obj, def time.Duration) (time.Duration, error) {
	t, ok, err := o.Obj("shutdown").Int("timeout")
	if err != nil {
		return 0, err
	}
	if ok && t > 0 {
		return time.Duration(t) * time.Second, nil
	}
	return def, nil
}

// stopIfRunning is the real provider's stopDomainIfRunning: nothing when not running; with
// shutdown enabled an ACPI shutdown and a wait for shutoff, then (if allowed) a forced stop;
// otherwise a forced stop right away. timedOut reports a shutdown that did not finish.
func (c *Conn) stopIfRunning(dom golibvirt.Domain, o stopOptions) (timedOut bool, err error) {
	state, _, err := c.L.DomainGetState(dom, 0)
	if err != nil {
		return false, fmt.Errorf("check domain state: %w", err)
	}
	if state != int32(golibvirt.DomainRunning) {
		return false, nil
	}
	if o.shutdown {
		if err := c.L.DomainShutdown(dom); err != nil {
			return false, fmt.Errorf("request guest shutdown: %w", err)
		}
		if err := c.waitShutoff(dom, o.timeout); err != nil {
			if !o.forceOnTimeout {
				return true, fmt.Errorf("wait for shutdown: %w", err)
			}
			if err := c.L.DomainDestroyFlags(dom, o.flags); err != nil {
				return false, fmt.Errorf("force stop after shutdown timeout: %w", err)
			}
		}
		return false, nil
	}
	if err := c.L.DomainDestroyFlags(dom, o.flags); err != nil {
		return false, fmt.Errorf("force stop running domain: %w", err)
	}
	return false, nil
}

func (c *Conn) waitShutoff(dom golibvirt.Domain, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		state, _, err := c.L.DomainGetState(dom, 0)
		if err != nil {
			return fmt.Errorf("failed to get domain state: %w", err)
		}
		if state == int32(golibvirt.DomainShutoff) {
			return nil
		}
		time.Sleep(pollInterval)
	}
	return fmt.Errorf("timeout waiting for domain to reach state %d", golibvirt.DomainShutoff)
}

// undefine uses the flags the real provider picks for the connected libvirt version; when the
// driver rejects them (libvirt's test driver accepts fewer flags than qemu) it falls back to a
// plain undefine, which for a domain without nvram/TPM state does the same.
func (c *Conn) undefine(dom golibvirt.Domain, flags golibvirt.DomainUndefineFlagsValues) error {
	if flags != 0 {
		err := c.L.DomainUndefineFlags(dom, flags)
		if err == nil || !IsUnsupported(err) {
			return err
		}
	}
	return c.L.DomainUndefine(dom)
}

// UpdateDomain is the real provider's Update: guest shutdown (ACPI), wait
// update.shutdown.timeout seconds (default 30), force off, undefine (keeping nvram/TPM),
// define again from the planned value with the same UUID, start only if planned `running`
// is true. A failed start is a warning there, returned here as warning text.
func (c *Conn) UpdateDomain(uuid string, m val.Obj) (DomainResult, string, error) {
	u, err := parseUUID(uuid)
	if err != nil {
		return DomainResult{}, "", err
	}
	dom, err := c.L.DomainLookupByUUID(u)
	if err != nil {
		return DomainResult{}, "", fmt.Errorf("failed to look up existing domain: %w", err)
	}
	timeout, err := shutdownTimeout(m.Obj("update"), 30*time.Second)
	if err != nil {
		return DomainResult{}, "", err
	}
	if _, err := c.stopIfRunning(dom, stopOptions{shutdown: true, timeout: timeout, forceOnTimeout: true}); err != nil {
		return DomainResult{}, "", fmt.Errorf("domain must be stopped before updating: %w", err)
	}
	xml, err := DomainXML(m, uuid)
	if err != nil {
		return DomainResult{}, "", fmt.Errorf("invalid domain configuration: %w", err)
	}
	var flags golibvirt.DomainUndefineFlagsValues
	if c.LibVersion >= versionUndefineKeepNvram {
		flags |= golibvirt.DomainUndefineKeepNvram
	}
	if c.LibVersion >= versionUndefineTpm {
		flags |= golibvirt.DomainUndefineKeepTpm
	}
	if err := c.undefine(dom, flags); err != nil {
		return DomainResult{}, "", fmt.Errorf("failed to undefine existing domain: %w", err)
	}
	dom, err = c.L.DomainDefineXML(xml)
	if err != nil {
		return DomainResult{}, "", fmt.Errorf("failed to define updated domain in libvirt: %w", err)
	}
	if err := c.setAutostart(dom, m); err != nil {
		return DomainResult{}, "", err
	}
	warning := ""
	if m.True("running") {
		if _, err := c.L.DomainCreateWithFlags(dom, startFlags(m.Obj("create"))); err != nil {
			warning = "Domain was updated but failed to start: " + err.Error()
		}
	}
	return c.result(dom), warning, nil
}

// DeleteDomain stops the domain (forced, or by guest shutdown when destroy.shutdown is set,
// with an error if it does not finish in time) and undefines it, dropping nvram and TPM
// state. A domain that is already gone is fine.
func (c *Conn) DeleteDomain(uuid string, m val.Obj) error {
	u, err := parseUUID(uuid)
	if err != nil {
		return err
	}
	dom, err := c.L.DomainLookupByUUID(u)
	if err != nil {
		if IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up domain: %w", err)
	}
	o := stopOptions{flags: golibvirt.DomainDestroyDefault}
	destroy := m.Obj("destroy")
	if destroy.True("graceful") {
		o.flags |= golibvirt.DomainDestroyGraceful
	}
	if destroy.Obj("shutdown").Present() {
		o.shutdown = true
		if o.timeout, err = shutdownTimeout(destroy, 30*time.Second); err != nil {
			return err
		}
	}
	if timedOut, err := c.stopIfRunning(dom, o); err != nil {
		if timedOut {
			return fmt.Errorf("domain did not reach shutoff state within %s: %w", o.timeout, err)
		}
		return fmt.Errorf("failed to stop running domain: %w", err)
	}
	var flags golibvirt.DomainUndefineFlagsValues
	if c.LibVersion >= versionUndefineNvram {
		flags |= golibvirt.DomainUndefineNvram
	}
	if c.LibVersion >= versionUndefineTpm {
		flags |= golibvirt.DomainUndefineTpm
	}
	if err := c.undefine(dom, flags); err != nil {
		return fmt.Errorf("failed to undefine domain: %w", err)
	}
	return nil
}

// ReadDomain reports whether the domain still exists and its runtime id. found is false only
// when libvirt says there is no such domain; other errors are returned (the real provider
// drops the resource from state on any lookup error, which would hide a broken connection).
func (c *Conn) ReadDomain(uuid string) (DomainResult, bool, error) {
	u, err := parseUUID(uuid)
	if err != nil {
		return DomainResult{}, false, nil // as the real one: no usable UUID → removed
	}
	dom, err := c.L.DomainLookupByUUID(u)
	if err != nil {
		if IsNotFound(err) {
			return DomainResult{}, false, nil
		}
		return DomainResult{}, false, fmt.Errorf("look up domain: %w", err)
	}
	r := DomainResult{UUID: uuidString(dom.UUID)}
	if dom.ID >= 0 {
		id := int64(dom.ID)
		r.ID = &id
	}
	return r, true, nil
}
