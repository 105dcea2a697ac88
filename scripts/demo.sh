#!/usr/bin/env bash
# Set up (idempotent) and run the whole pipeline on the embedded demo (CPU, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
snakemake -c2 all "$@"
