"""Finishing the fused ops' per-program partial sums (vqdna.models.partial_sums): both modes give
the column sums in the requested dtypes as separate tensors; the Triton kernel under Triton's CPU
interpreter (its own process) and on CUDA."""

import textwrap

import pytest
import torch

from interpreter_probe import has_triton, run_interpreter_script, skip_unless_interpreter_runs_runtime_loops
from vqdna.models import partial_sums


@pytest.fixture
def torch_mode():
    old = partial_sums.set_mode("torch")
    yield
    partial_sums.set_mode(old)


@pytest.mark.parametrize("K", [1, 2, 3])
def test_torch_mode_column_sums_in_their_dtypes(torch_mode, K):
    part = torch.randn(37, K, 50, dtype=torch.float32)
    dtypes = (torch.bfloat16, torch.float32, torch.float16)[:K]
    outs = partial_sums.column_sums(part, dtypes)
    assert len(outs) == K
    for k, (o, dt) in enumerate(zip(outs, dtypes)):
        assert o.dtype == dt and o.shape == (50,)
        torch.testing.assert_close(o.float(), part[:, k].sum(0).to(dt).float())
    # separate storage, none a view of the buffer or of each other (a custom op's outputs must not alias)
    ptrs = {o.untyped_storage().data_ptr() for o in outs}
    assert len(ptrs) == K and part.untyped_storage().data_ptr() not in ptrs


def test_bad_arguments_are_rejected(torch_mode):
    with pytest.raises(ValueError):
        partial_sums.column_sums(torch.zeros(3, 2, 4), (torch.float32,))
    with pytest.raises(ValueError):
        partial_sums.column_sums(torch.zeros(3, 4, 4), (torch.float32,) * 4)
    with pytest.raises(ValueError):
        partial_sums.set_mode("atomic")


@pytest.mark.skipif(not has_triton(), reason="Triton not installed")
def test_triton_mode_under_the_cpu_interpreter():
    """Rows not a multiple of the row block, widths not a multiple of the column block, K = 1..3,
    output dtypes per gradient; equal to the fp64 column sums up to fp32 rounding, and the same
    bits on a second call (fixed summation order)."""
    skip_unless_interpreter_runs_runtime_loops("the finishing kernel's row loop")
    script = textwrap.dedent("""
        import torch
        from vqdna.models import partial_sums as ps
        ps.set_mode("triton")
        for P, K, H in [(1, 1, 5), (130, 3, 70), (64, 2, 32), (200, 3, 768)]:
            part = torch.randn(P, K, H)
            dtypes = (torch.float32, torch.bfloat16, torch.float32)[:K]
            outs = ps.column_sums(part, dtypes)
            again = ps.column_sums(part, dtypes)
            for k, (o, dt) in enumerate(zip(outs, dtypes)):
                ref = part[:, k].double().sum(0)
                assert o.dtype == dt and o.shape == (H,)
                tol = 1e-6 if dt == torch.float32 else 1e-2
                assert ((o.double() - ref).norm() / ref.norm()).item() < tol, (P, K, H, k)
                assert torch.equal(o, again[k])
            assert len({o.data_ptr() for o in outs}) == K
        print("ok")
    """)
    run_interpreter_script(script, timeout=600)


@pytest.mark.skipif(not torch.cuda.is_available() or not has_triton(), reason="needs CUDA and Triton")
def test_triton_mode_equals_torch_mode_on_cuda():
    part = torch.randn(2112, 3, 768, device="cuda")
    dtypes = (torch.bfloat16, torch.bfloat16, torch.float32)
    old = partial_sums.set_mode("torch")
    try:
        ref = partial_sums.column_sums(part, dtypes)
        partial_sums.set_mode("triton")
        got = partial_sums.column_sums(part, dtypes)
        again = partial_sums.column_sums(part, dtypes)
    finally:
        partial_sums.set_mode(old)
    for g, r, a, dt in zip(got, ref, again, dtypes):
        assert g.dtype == dt
        tol = 1e-5 if dt == torch.float32 else 1e-2
        assert ((g.double() - r.double()).norm() / r.double().norm()).item() < tol
        assert torch.equal(g, a)
