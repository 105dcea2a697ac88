"""Suite-wide test ordering.

scripts/test.sh runs the suite on three pytest-xdist workers, one test file at a time per worker
(`--dist loadfile --no-loadscope-reorder`: a file's module fixtures are built once, on one
worker). The workers take files in collection order, so the files that take longest start first
(longest first keeps the workers busy until the end); every other file keeps its place.
Inside the Slurm file the demo pipeline test goes first: it waits on the scheduler most of the
time, and the worker only asks for its next file when a test there ends.
"""

from __future__ import annotations

# nodeid prefixes, longest first (pytest --durations on the 2-core CI machine)
SLOW_FIRST = [
    "tests/test_cluster_slurm.py::test_demo_pipeline_through_slurm_profile",
    "tests/test_cluster_slurm.py",
    "tests/test_report_table9_workflow.py",
    "tests/test_genomes_snakemake.py",
    "tests/test_cluster_mlflow.py",
    "tests/test_cluster_paper_dag.py",
    "tests/test_bench_central_claim.py",
]


def _rank(nodeid: str) -> int:
    for i, prefix in enumerate(SLOW_FIRST):
        if nodeid.startswith(prefix):
            return i
    return len(SLOW_FIRST)


def pytest_collection_modifyitems(session, config, items):
    items[:] = sorted(items, key=lambda item: _rank(item.nodeid))  # stable: the rest keep their order
