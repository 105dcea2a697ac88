#!/usr/bin/env bash
# Create .venv and install vqdna with everything the pipeline and tests need.
# torch is pinned: unpinned, pip pulls several GB of CUDA wheels onto CPU machines.
# Override with TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0 --index-url ...") on GPU hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# --no-compile: pip would byte-compile every installed module (about 1.5 of the 2.5 minutes of a
# fresh install on 2 cores); Python compiles the modules actually imported on first use instead.
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q --no-compile $TORCH_SPEC
.venv/bin/python -m pip install -q --no-compile -e ".[test]"
echo "vqdna installed in .venv (activate with: . .venv/bin/activate)"
