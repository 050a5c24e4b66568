// Package lv is the stand-in's libvirt side: the connection, the domain XML and the domain and
// volume operations, done with github.com/digitalocean/go-libvirt as the real provider does.
package lv

import (
	"errors"
	"fmt"
	"net/url"
	"os"

	golibvirt "github.com/digitalocean/go-libvirt"
)

// DefaultURI is the URI used when the provider block sets none and LIBVIRT_DEFAULT_URI is
// empty, as in the real provider.
const DefaultURI = "qemu:///system"

// Conn is a connection to libvirtd for one provider instance.
type Conn struct {
	L          *golibvirt.Libvirt
	URI        string
	LibVersion uint64
}

// ResolveURI applies the real provider's precedence: provider config, then
// LIBVIRT_DEFAULT_URI, then qemu:///system.
func ResolveURI(configured string) string {
	if configured != "" {
		return configured
	}
	if env := os.Getenv("LIBVIRT_DEFAULT_URI"); env != "" {
		return env
	}
	return DefaultURI
}

// Connect opens uri. go-libvirt picks the transport from the scheme like libvirt's own
// client: "qemu:///system" and "test+unix:///default" go over the local unix socket
// (/var/run/libvirt/libvirt-sock) and then open "qemu:///system" / "test:///default" on the
// daemon; "qemu+tcp://host/system" dials host:16509. Same as the real provider, which builds
// its dialer from the URI the same way and asks the daemon for scheme-without-transport:///path.
func Connect(uri string) (*Conn, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("invalid libvirt URI %q: %w", uri, err)
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("invalid libvirt URI %q: no scheme", uri)
	}
	l, err := golibvirt.ConnectToURI(u)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", uri, err)
	}
	v, err := l.ConnectGetLibVersion()
	if err != nil {
		_ = l.Disconnect()
		return nil, fmt.Errorf("connected to %s but the connection test failed: %w", uri, err)
	}
	return &Conn{L: l, URI: uri, LibVersion: v}, nil
}

// IsNotFound reports whether err is libvirt's "no such domain / volume / pool".
func IsNotFound(err error) bool {
	var le golibvirt.Error
	if errors.As(err, &le) {
		switch golibvirt.ErrorNumber(le.Code) {
		case golibvirt.ErrNoDomain, golibvirt.ErrNoStorageVol, golibvirt.ErrNoStoragePool:
			return true
		}
	}
	return false
}

// IsUnsupported reports whether err says a flag or call is not supported by the driver.
func IsUnsupported(err error) bool {
	var le golibvirt.Error
	if errors.As(err, &le) {
		switch golibvirt.ErrorNumber(le.Code) {
		case golibvirt.ErrInvalidArg, golibvirt.ErrNoSupport, golibvirt.ErrArgumentUnsupported:
			return true
		}
	}
	return false
}
