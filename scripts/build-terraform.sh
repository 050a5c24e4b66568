#!/usr/bin/env bash
# Build the HashiCorp Terraform CLI from source served by the Go module proxy.
#
# Usage: scripts/build-terraform.sh CACHE_DIR
#   Leaves an executable CACHE_DIR/terraform. A no-op when it is already there.
#   TERRAFORM_VERSION (default 1.11.4) picks the release tag to build.
#
# Why not plain `go install github.com/hashicorp/terraform@vX`: Terraform's
# go.mod has replace directives pointing at nested modules
# (./internal/backend/remote-state/*, ./internal/legacy) that are not part of
# the main module's zip, so `go install` refuses it and a build inside the
# downloaded source cannot find them. Each nested module is, however, served
# by the proxy under its own path at the release commit, so this script
# downloads them and lays them back where the replace directives expect them.
# It also drops `godebug tlskyber=0`, a setting newer Go versions reject.
#
# Needs only `go` (>= the version in Terraform's go.mod) and the Go module
# proxy. On 2 cores a cold build (empty module and build caches) takes about
# 4-8 minutes and fills ~2.1 GB of GOMODCACHE plus ~1.3 GB of GOCACHE; with
# warm caches it takes seconds. GOFLAGS from the environment is overridden.
set -euo pipefail

log() { printf 'build-terraform: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -eq 1 && -n $1 ]] || die "usage: $0 CACHE_DIR"
dest=$1
version=${TERRAFORM_VERSION:-1.11.4}
version=${version#v}
module=github.com/hashicorp/terraform

if [[ -x $dest/terraform ]]; then
    log "$dest/terraform already present; nothing to do"
    exit 0
fi

GO=$(command -v go || true)
[[ -n $GO ]] || GO=/usr/local/go/bin/go
[[ -x $GO ]] || die "no go toolchain found (looked in PATH and /usr/local/go/bin)"
export CGO_ENABLED=0
export GOFLAGS=-buildvcs=false

mkdir -p "$dest"
work=$(mktemp -d "${TMPDIR:-/tmp}/build-terraform.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null || true; rm -rf "$work"' EXIT

# `go mod download -json MOD@VER` -> value of the first "KEY": "..." field.
json_field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}$/\1/p" | head -n 1; }

log "downloading $module@v$version ($("$GO" version))"
main_json=$(cd "$work" && "$GO" mod download -json "$module@v$version") \
    || die "go mod download $module@v$version failed: $main_json"
main_dir=$(json_field Dir <<<"$main_json")
commit=$(json_field Hash <<<"$main_json")
[[ -d $main_dir ]] || die "no source dir in: $main_json"
[[ -n $commit ]] || die "proxy gave no Origin commit for $module@v$version"
log "v$version is commit $commit"

src=$work/src
cp -R "$main_dir" "$src"
chmod -R u+w "$src"

# Every `replace X => ./path` names a nested module missing from the zip.
sed -n 's/^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]\{1,\}\)[[:space:]]*=>[[:space:]]*\(\.\/[^[:space:]]*\)[[:space:]]*$/\2 \3/p' \
    "$src/go.mod" >"$work/nested"
[[ -s $work/nested ]] || log "warning: no local replace directives found in go.mod"
while read -r path rel; do
    [[ -e $src/$rel/go.mod ]] && continue
    log "fetching nested module $path@$commit"
    nested_json=$(cd "$work" && "$GO" mod download -json "$path@$commit") \
        || die "go mod download $path@$commit failed: $nested_json"
    nested_dir=$(json_field Dir <<<"$nested_json")
    [[ -d $nested_dir ]] || die "no source dir for $path in: $nested_json"
    mkdir -p "$(dirname "$src/$rel")"
    rm -rf "${src:?}/$rel"
    cp -R "$nested_dir" "$src/$rel"
    chmod -R u+w "$src/$rel"
done <"$work/nested"

# Go 1.26 removed the tlskyber GODEBUG setting and refuses a go.mod naming it.
sed -i '/^[[:space:]]*\(godebug[[:space:]]\{1,\}\)\{0,1\}tlskyber=/d' "$src/go.mod"

log "compiling (CGO_ENABLED=0); this takes a few minutes"
start=$SECONDS
(cd "$src" && "$GO" build -trimpath \
    -ldflags "-s -w -X '$module/version.dev=no'" \
    -o "$work/terraform" .)
log "compiled in $((SECONDS - start))s"

# Check it runs before installing; unset the CLI config so a missing
# TF_CLI_CONFIG_FILE does not clutter the log.
got=$(TF_CLI_CONFIG_FILE='' CHECKPOINT_DISABLE=1 "$work/terraform" version | head -n 1)
[[ $got == "Terraform v$version" ]] || die "built binary reports '$got', expected 'Terraform v$version'"

# Install atomically so a concurrent or interrupted run never leaves a partial file.
cp "$work/terraform" "$dest/.terraform.tmp.$$"
chmod 0755 "$dest/.terraform.tmp.$$"
mv -f "$dest/.terraform.tmp.$$" "$dest/terraform"
log "installed $got at $dest/terraform"
