#!/usr/bin/env bash
# Builds (once, cached) the Pulumi engine that vmpools' Pulumi path runs on, from the Go module
# proxy only (no GitHub, no get.pulumi.com here):
#   - the pulumi CLI 3.276.0 (the release of the npm package @pulumi/pulumi we use),
#   - pulumi-resource-terraform-provider, the parameterized "terraform-provider" plugin, from
#     pulumi-terraform-bridge v3.120.0's ./dynamic,
# both from the pinned wrapper modules in tools/pulumi-build (its README says why they exist),
# and lays the Terraform provider stand-ins of scripts/terraform-tools.sh out as an OpenTofu
# plugin cache, where the plugin finds registry.opentofu.org/dmacvicar/libvirt 0.9.7 and
# hashicorp/external 2.3.5 without a registry.
#
# Usage: scripts/pulumi-tools.sh [PULUMI_HOME_DIR]
# The last line of stdout is an env file; callers run
#   . "$(scripts/pulumi-tools.sh | tail -n1)"
# It holds only `export KEY='VALUE'` lines, except PATH, which it prepends with
# VMPOOLS_PULUMI_BIN (a caller that cannot source a shell file reads the other lines and
# prepends that directory itself). PULUMI_HOME is PULUMI_HOME_DIR when given (the env file is
# then written there), else a directory in the cache. Everything else goes to stderr.
#
# The Node language host (pulumi-language-nodejs) is not built: its module is not served by the
# proxy, so `pulumi up` in a directory whose Pulumi.yaml says `runtime: nodejs` cannot run.
# Automation API inline programs do not need it (@pulumi/pulumi runs the program in-process and
# hands the CLI its address).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod="$root/tools/pulumi-build"
cache="${VMPOOLS_TOOLS_CACHE:-/var/cache/vmpools-tools}"
pulumi_version=v3.276.0 # = the require in tools/pulumi-build/cli/go.mod
bridge_version=v3.120.0 # = the require in tools/pulumi-build/terraform-provider/go.mod
# The version the plugin reports (GetPluginInfo, and baseProvider.version in the schemas it
# generates). Upstream stamps its own release number (1.x); ours names the bridge it is built
# from. Pulumi runs the plugin it finds on PATH whatever version a program asks for; only a
# copy installed in PULUMI_HOME/plugins must match the requested version exactly.
plugin_version="$bridge_version"
build_rev=1 # bump when the go build flags below change, so the cache key changes
log() { echo "pulumi-tools: $*" >&2; }

[ $# -le 1 ] || { log "usage: $0 [PULUMI_HOME_DIR]"; exit 2; }
mkdir -p "$cache"

# (a) The Terraform provider stand-ins, built (or found) by terraform-tools.sh; their mirror
# lies next to the CLI config it prints last.
tf_mirror="$(dirname "$(bash "$root/scripts/terraform-tools.sh" | tail -n1)")/mirror"
libvirt_bin="$tf_mirror/registry.terraform.io/dmacvicar/libvirt/0.9.7/linux_amd64/terraform-provider-libvirt_v0.9.7"
external_bin="$tf_mirror/registry.terraform.io/hashicorp/external/2.3.5/linux_amd64/terraform-provider-external_v2.3.5"
if [ ! -x "$libvirt_bin" ] || [ ! -x "$external_bin" ]; then log "no provider stand-ins under $tf_mirror"; exit 1; fi

# (b) The two binaries, keyed by the wrapper modules (go.mod, go.sum), the versions stamped in,
# build_rev and the Go toolchain.
key="$( { (cd "$mod" && find . -type f \( -name go.mod -o -name go.sum \) | LC_ALL=C sort | xargs sha256sum)
          echo "$pulumi_version $plugin_version $build_rev"; go version; } | sha256sum | cut -c1-16)"
out="$cache/pulumi-$key"
if [ ! -d "$out" ]; then
  log "building pulumi $pulumi_version and the terraform-provider plugin (bridge $bridge_version) into $out"
  tmp="$out.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp/bin"
  # -mod=readonly: a build never edits go.mod / go.sum; all modules come from the proxy by name.
  # -s -w: no symbol tables (pulumi is 170 MB with them, 120 MB without).
  export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
  start=$SECONDS
  # The Automation API refuses a CLI whose version it cannot parse: stamp it as releases do.
  (cd "$mod/cli" && nice -n 10 go build -trimpath \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$pulumi_version" \
    -o "$tmp/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi) >&2
  log "pulumi built in $((SECONDS - start)) s"
  start=$SECONDS
  # The same ldflags as upstream's release of the plugin (pulumi-terraform-provider's
  # .goreleaser.yml), with the bridge's package path for the version.
  (cd "$mod/terraform-provider" && nice -n 10 go build -trimpath \
    -ldflags "-s -w -X google.golang.org/protobuf/reflect/protoregistry.conflictPolicy=ignore -X github.com/pulumi/pulumi-terraform-bridge/v3/dynamic/version.version=$plugin_version" \
    -o "$tmp/bin/pulumi-resource-terraform-provider" github.com/pulumi/pulumi-terraform-bridge/v3/dynamic) >&2
  log "pulumi-resource-terraform-provider built in $((SECONDS - start)) s"
  got="$(PULUMI_SKIP_UPDATE_CHECK=true PULUMI_HOME="$tmp/probe-home" "$tmp/bin/pulumi" version)"
  rm -rf "$tmp/probe-home"
  [ "$got" = "$pulumi_version" ] || { log "built pulumi reports '$got', expected $pulumi_version"; exit 1; }
  mv -T "$tmp" "$out" 2>/dev/null || rm -rf "$tmp" # -T: a concurrent run that finished first wins
fi

# (c) The OpenTofu-layout plugin cache the plugin reads (PULUMI_DYNAMIC_TF_PLUGIN_CACHE_DIR):
# HOST/NAMESPACE/TYPE/VERSION/OS_ARCH/terraform-provider-TYPE[_...] (the bridge's vendored
# opentofu providercache). The provider name `dmacvicar/libvirt` means registry.opentofu.org.
# Links to the stand-ins, one directory per stand-in build (named after it), made once.
tf_cache="$out/tf-plugins-$(basename "$(dirname "$tf_mirror")")"
if [ ! -d "$tf_cache" ]; then
  tmp="$tf_cache.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp/registry.opentofu.org/dmacvicar/libvirt/0.9.7/linux_amd64" \
    "$tmp/registry.opentofu.org/hashicorp/external/2.3.5/linux_amd64"
  ln -s "$libvirt_bin" "$tmp/registry.opentofu.org/dmacvicar/libvirt/0.9.7/linux_amd64/"
  ln -s "$external_bin" "$tmp/registry.opentofu.org/hashicorp/external/2.3.5/linux_amd64/"
  mv -T "$tmp" "$tf_cache" 2>/dev/null || rm -rf "$tmp"
fi

# (d) PULUMI_HOME, with the plugin also in its plugin cache (a link): the engine prefers the one
# on PATH (and warns "using pulumi-resource-terraform-provider from $PATH"), but `pulumi package
# get-schema|add terraform-provider[@VERSION] ...` look only there (else they ask GitHub for the
# latest release or download it), as does the engine with PULUMI_IGNORE_AMBIENT_PLUGINS=true.
home="${1:-$out/home}"
mkdir -p "$home"
home="$(cd "$home" && pwd)"
plugin_dir="$home/plugins/resource-terraform-provider-$plugin_version"
mkdir -p "$plugin_dir"
ln -sfn "$out/bin/pulumi-resource-terraform-provider" "$plugin_dir/pulumi-resource-terraform-provider"
env_file="$home/pulumi-tools.env"
# The env file, written whole, then moved into place.
cat >"$env_file.tmp.$$" <<EOF
export VMPOOLS_PULUMI_BIN='$out/bin'
export PATH='$out/bin':"\$PATH"
export PULUMI_HOME='$home'
export PULUMI_SKIP_UPDATE_CHECK='true'
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION='true'
export PULUMI_DISABLE_REGISTRY_RESOLVE='true'
export PULUMI_DYNAMIC_TF_PLUGIN_CACHE_DIR='$tf_cache'
EOF
mv -f "$env_file.tmp.$$" "$env_file"
echo "$env_file"
