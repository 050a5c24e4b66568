#!/usr/bin/env bash
# Builds (once, cached) the vmpools stand-ins for the Terraform providers dmacvicar/libvirt
# 0.9.7 and hashicorp/external 2.3.5 from tools/terraform-standins, lays them out as a
# Terraform filesystem mirror and writes a CLI config that installs providers from that mirror
# only. The last line of stdout is the CLI config's absolute path: callers run
#   export TF_CLI_CONFIG_FILE="$(scripts/terraform-tools.sh | tail -n1)"
# Everything else goes to stderr. The real providers cannot be had here (the Go module proxy
# refuses both), see tools/terraform-standins.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod="$root/tools/terraform-standins"
cache="${VMPOOLS_TOOLS_CACHE:-/var/cache/vmpools-tools}"
terraform_version=1.11.4 # the version the project was checked with
log() { echo "terraform-tools: $*" >&2; }

mkdir -p "$cache"

# (a) Terraform 1.11 or newer: the machine's, or one built once from the Go module proxy and
# kept in the cache (a few minutes cold; scripts/build-terraform.sh says how and why).
if [ -x /usr/local/bin/terraform ]; then
  tf=/usr/local/bin/terraform
else
  [ -x "$cache/terraform-$terraform_version/terraform" ] ||
    log "terraform not found at /usr/local/bin/terraform; building $terraform_version from the Go module proxy"
  TERRAFORM_VERSION="$terraform_version" bash "$root/scripts/build-terraform.sh" "$cache/terraform-$terraform_version"
  tf="$cache/terraform-$terraform_version/terraform"
fi
ver="$(TF_CLI_CONFIG_FILE=/dev/null "$tf" version -json 2>/dev/null | sed -n 's/.*"terraform_version": *"\([0-9.]*\)".*/\1/p' | head -n1)"
case "$ver" in
  1.1[1-9].*|1.[2-9][0-9].*|[2-9].*) ;;
  *) log "terraform at $tf is '$ver'; 1.11 or newer is needed"; exit 1 ;;
esac

# (b) The stand-ins, keyed by their sources, go.sum and the Go toolchain. They embed the pinned
# schemas, whose one committed copy is in providers/schema/.
for f in dmacvicar-libvirt-0.9.7.code-schema.json dmacvicar-libvirt-0.9.7.plan-modifiers.json \
  hashicorp-external-2.3.5.schema.json; do
  cmp -s "$root/providers/schema/$f" "$mod/internal/schema/$f" || cp "$root/providers/schema/$f" "$mod/internal/schema/$f"
done
key="$( { (cd "$mod" && find . -type f \( -name '*.go' -o -name '*.json' -o -name go.mod -o -name go.sum \) \
          -not -path './.*' | LC_ALL=C sort | xargs sha256sum); go version; } | sha256sum | cut -c1-16)"
out="$cache/standins-$key"
if [ ! -d "$out" ]; then
  log "building the provider stand-ins into $out"
  tmp="$out.tmp.$$"
  rm -rf "$tmp"
  libvirt_dir="$tmp/mirror/registry.terraform.io/dmacvicar/libvirt/0.9.7/linux_amd64"
  external_dir="$tmp/mirror/registry.terraform.io/hashicorp/external/2.3.5/linux_amd64"
  mkdir -p "$libvirt_dir" "$external_dir" "$tmp/plugin-cache"
  # -mod=readonly: a build never edits go.mod / go.sum; all modules come from the proxy by name
  (cd "$mod" && export CGO_ENABLED=0 GOFLAGS=-mod=readonly &&
    go build -trimpath -o "$libvirt_dir/terraform-provider-libvirt_v0.9.7" ./cmd/terraform-provider-libvirt &&
    go build -trimpath -o "$external_dir/terraform-provider-external_v2.3.5" ./cmd/terraform-provider-external) >&2
  # (d) the CLI config: the mirror is the only installation method, nothing is downloaded
  cat >"$tmp/terraformrc" <<EOF
provider_installation {
  filesystem_mirror {
    path    = "$out/mirror"
    include = ["registry.terraform.io/dmacvicar/libvirt", "registry.terraform.io/hashicorp/external"]
  }
}
plugin_cache_dir = "$out/plugin-cache"
EOF
  mv "$tmp" "$out"
fi

# (e) the terraform binary and, on the last line, the CLI config
echo "$tf"
echo "$out/terraformrc"
