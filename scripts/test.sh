#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, CPU only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python -m pytest -ra "$@"
