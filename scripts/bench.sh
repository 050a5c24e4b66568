#!/usr/bin/env bash
# Benchmarks, on compiled JS; results go into docs/benchmarks.md with the machine line they print.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-node-deps.sh >&2
npm run build --silent
node dist/bench/synth.js
bash scripts/setup-system.sh >&2
bash scripts/libvirt-up.sh >&2
npx ts-node --transpile-only bench/driver.ts
npx ts-node --transpile-only bench/store.ts
npx ts-node --transpile-only bench/reconciler.ts
npx ts-node --transpile-only bench/cluster.ts
npx ts-node --transpile-only bench/cluster-hosts.ts
npx ts-node --transpile-only bench/attestation-cycle.ts
npx ts-node --transpile-only bench/attestation.ts
