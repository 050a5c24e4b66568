// Command terraform-provider-libvirt is the vmpools stand-in for dmacvicar/libvirt 0.9.7:
// the real provider's schema and planning rules, libvirt_domain and libvirt_volume done
// against libvirtd with go-libvirt. Everything else it refuses with an error.
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6/tf6server"

	"vmpools.dev/terraform-standins/internal/provider"
)

func main() {
	s, err := provider.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "terraform-provider-libvirt (vmpools stand-in):", err)
		os.Exit(1)
	}
	if err := tf6server.Serve("registry.terraform.io/dmacvicar/libvirt", func() tfprotov6.ProviderServer { return s }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
