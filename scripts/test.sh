#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, CPU only.
# Three pytest-xdist workers, one test file at a time each, longest files first
# (tests/conftest.py): on the 2-core CI machine the Slurm tests mostly wait on the scheduler,
# so the other two workers keep both cores busy. Serial run: `bash scripts/test.sh -n 0`;
# another worker count: VQDNA_TEST_WORKERS=N.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# One intra-op thread per test process: three workers already fill the two cores (not measured on
# its own: the speed-up first credited to it came from bytecode, see scripts/setup.sh).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
exec python -m pytest -ra -n "${VQDNA_TEST_WORKERS:-3}" --dist loadfile --no-loadscope-reorder --durations=25 "$@"
