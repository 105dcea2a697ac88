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
# --no-compile: pip byte-compiles serially (about 1.5 of the 2.5 minutes of a fresh install on
# 2 cores)...
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q --no-compile $TORCH_SPEC
.venv/bin/python -m pip install -q --no-compile -e ".[test]"
# ...then byte-compile everything on all cores (~1 min on 2): with PYTHONDONTWRITEBYTECODE set, as on
# this project's CI machines, imports never cache bytecode, so every pipeline job would recompile
# torch/mlflow/snakemake on import (~2 s CPU each, hundreds of jobs in the tests: a clean-clone
# suite took 19 min of tests without this, 12.4 min with the cache in place). compileall exits 1 on
# files some packages ship that are not Python 3 (templates, test data); none is ever imported.
.venv/bin/python -m compileall -q -j 0 .venv/lib/python*/site-packages > /dev/null || true
echo "vqdna installed in .venv (activate with: . .venv/bin/activate)"
