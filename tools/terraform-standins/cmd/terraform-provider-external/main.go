// Command terraform-provider-external is the vmpools stand-in for hashicorp/external 2.3.5:
// the `external` data source with the real schema and behaviour.
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6/tf6server"

	"vmpools.dev/terraform-standins/internal/external"
)

func main() {
	s, err := external.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "terraform-provider-external (vmpools stand-in):", err)
		os.Exit(1)
	}
	if err := tf6server.Serve("registry.terraform.io/hashicorp/external", func() tfprotov6.ProviderServer { return s }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
