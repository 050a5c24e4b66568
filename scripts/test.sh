#!/usr/bin/env bash
# The whole test suite, from a fresh clone: system packages, npm packages, generated bindings,
# type check, lint, a running libvirtd, then every jest test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CHECKPOINT_DISABLE=1
bash scripts/setup-system.sh
bash scripts/ensure-node-deps.sh
echo "== typecheck" && npx tsc --noEmit -p .
echo "== lint" && npx eslint . && npx prettier --check . >/dev/null
echo "== libvirtd" && bash scripts/libvirt-up.sh
echo "== postgresql (test cluster)" && bash scripts/postgres-up.sh
# The Terraform provider stand-ins (built once, cached) and their own Go tests, which must find
# libvirtd (never skip).
echo "== terraform tools" && bash scripts/terraform-tools.sh >/dev/null
echo "== pulumi tools" && bash scripts/pulumi-tools.sh >/dev/null
echo "== go test (provider stand-ins)" &&
  (cd tools/terraform-standins && GOFLAGS=-mod=readonly go test ./...)
echo "== jest (parallel)" && npx jest --ci --testPathIgnorePatterns '\.serial\.test\.ts$' "$@"
# Tests that restart libvirtd run alone, after the rest.
echo "== jest (serial)" && npx jest --ci --runInBand --testPathPatterns '\.serial\.test\.ts$' "$@"
