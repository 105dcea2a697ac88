"""Running Triton kernels under the CPU interpreter in the tests, and whether it can run ours.

Kernels that loop to a bound passed at run time (the conv+LN backward's chunk loop, the fused
add+dropout+LayerNorm backward's row loop) cannot run under Triton 3.6's interpreter with NumPy 2.x:
the bound arrives as a 1-element array ("only 0-dimensional arrays can be converted to Python
scalars"); Triton 3.9's interpreter runs them. An interpreter limitation, not the kernels': the CUDA
tests run the compiled kernels on such installs. A probe kernel decides, not a version check.
"""

import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"

RUNTIME_LOOP_PROBE = textwrap.dedent("""
    import torch, triton, triton.language as tl

    @triton.jit
    def count(out, n):
        acc = 0.0
        for t in range(0, n):
            acc += 1.0
        tl.store(out, acc)

    o = torch.zeros(1)
    count[(1,)](o, 5)
    assert o.item() == 5.0
    print("ok")
""")


def has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def interpreter_runs_runtime_loops() -> bool:
    if not has_triton():
        return False
    out = subprocess.run([sys.executable, "-c", RUNTIME_LOOP_PROBE], env=dict(os.environ, TRITON_INTERPRET="1"),
                         capture_output=True, text=True, timeout=300)
    return out.returncode == 0 and "ok" in out.stdout


def skip_unless_interpreter_runs_runtime_loops(what: str) -> None:
    if not interpreter_runs_runtime_loops():
        pytest.skip(f"this Triton's CPU interpreter cannot loop to a run-time bound (Triton 3.6 + NumPy 2.x); "
                    f"{what} needs it")


def run_interpreter_script(script: str, timeout: int = 900) -> None:
    """Run `script` in its own process with TRITON_INTERPRET=1 (Triton reads it when kernels are
    defined) and the package and tests importable; it must print "ok"."""
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join([str(SRC), str(TESTS), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
