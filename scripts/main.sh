#!/usr/bin/env bash
# The README's main command: synthesize the example pools and print their summary, then run the
# example pool's whole life on libvirt's test hypervisor (defined, prestarted, taken, returned).
set -euo pipefail
cd "$(dirname "$0")/.."
export CHECKPOINT_DISABLE=1
bash scripts/setup-system.sh >&2
bash scripts/ensure-node-deps.sh >&2
bash scripts/libvirt-up.sh >&2
npx ts-node --transpile-only stacks/summarize.ts
npx ts-node --transpile-only reconciler/local/demo.ts
