#!/usr/bin/env bash
# The README's main command: synthesize the example pool and print its summary.
set -euo pipefail
cd "$(dirname "$0")/.."
export CHECKPOINT_DISABLE=1
bash scripts/ensure-node-deps.sh >&2
npx ts-node --transpile-only stacks/summarize.ts
