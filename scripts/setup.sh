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
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q $TORCH_SPEC
.venv/bin/python -m pip install -q -e ".[test]"
echo "vqdna installed in .venv (activate with: . .venv/bin/activate)"
