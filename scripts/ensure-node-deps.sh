#!/usr/bin/env bash
# npm dependencies and the generated provider bindings, installed only when missing or stale.
set -euo pipefail
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
if [ ! -f providers/gen/providers/libvirt/index.ts ] || [ -n "$(find providers/schema providers/generate.mjs -newer providers/gen/providers/libvirt/index.ts)" ]; then
  node providers/generate.mjs
fi
