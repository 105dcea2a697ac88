"""The Triton forward of depth-wise conv + LayerNorm (`vqdna.tokenizers.dwconv_ln_triton`) computes
LayerNorm(Conv1d(x, groups=D, padding=k//2)) per sequence — edges zero-padded, no window crossing
into the next sequence of the `[B·L, D]` stream, L not a multiple of the tile, D not a power of
two — and is what the fused training function and the fast encode path run when selected. The
kernel runs under Triton's CPU interpreter in a subprocess (skipped without Triton); the PyTorch
fallback and the switches are tested directly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vqdna.tokenizers import dwconv_ln_bwd_triton, dwconv_ln_triton
from vqdna.tokenizers.convnext import ConvNeXtBlock1d
from vqdna.tokenizers.dwconv_ln import dwconv_layer_norm
from vqdna.tokenizers.fast_encode import FastEncodeSettings
from vqdna.tokenizers.model import VQModelConfig, VQVAE
from vqdna.tokenizers.train_path import set_dwconv_ln

from interpreter_probe import run_interpreter_script, skip_unless_interpreter_runs_runtime_loops

SRC = Path(__file__).resolve().parents[1] / "src"


def conv_ln(x, shift, w, b, ln_w, ln_b, eps):
    """The model's function, from torch's own conv1d and layer_norm in float64: x [B, L, D], taps w [k, D]."""
    xd = x.double() + (shift.double() if shift is not None else 0.0)
    k, dim = w.shape
    c = F.conv1d(xd.transpose(1, 2), w.double().t()[:, None, :], b.double(), padding=k // 2, groups=dim)
    return F.layer_norm(c.transpose(1, 2), (dim,), ln_w.double(), ln_b.double(), eps)


def inputs(batch, length, dim, k=7, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, dim, generator=g)
    x[0] += 5.0  # sequences on very different scales: any bleed across a boundary shows
    w, b = torch.randn(k, dim, generator=g) / k, torch.randn(dim, generator=g)
    ln_w, ln_b = 1 + 0.3 * torch.randn(dim, generator=g), 0.3 * torch.randn(dim, generator=g)
    shift = torch.randn(dim, generator=g)
    return [t.to(dtype) for t in (x, w, b, ln_w, ln_b)] + [shift]


@pytest.mark.parametrize("with_shift", [False, True])
def test_reference_and_op_on_cpu_equal_conv1d_then_layer_norm(with_shift):
    x, w, b, ln_w, ln_b, shift = inputs(3, 11, 20)
    sh = shift if with_shift else None
    ref = conv_ln(x, sh, w, b, ln_w, ln_b, 1e-5)
    y, mean, rstd = dwconv_ln_triton.dwconv_ln_forward(x, sh, w, b, ln_w, ln_b, 1e-5, torch.float32)
    assert y.shape == x.shape and mean.shape == rstd.shape == x.shape[:2] and mean.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref, atol=1e-5, rtol=1e-5)
    # mean/rstd are the conv output's row statistics (what the hand-written backward uses)
    c = conv_ln(x, sh, w, b, torch.ones(20), torch.zeros(20), 1e-5)  # normalised conv output
    torch.testing.assert_close(((y.double() - ln_b.double()) / ln_w.double()), c, atol=1e-5, rtol=1e-5)


def test_op_fake_and_schema():
    x, w, b, ln_w, ln_b, shift = inputs(2, 9, 12)
    torch.library.opcheck(dwconv_ln_triton.dwconv_ln_forward, (x, shift, w, b, ln_w, ln_b, 1e-5, torch.float32),
                          test_utils=("test_schema", "test_faketensor"))


def test_switches():
    x, w, b, ln_w, ln_b, _ = inputs(2, 9, 12)
    # CPU: both kernels take the PyTorch path, the same values
    torch.testing.assert_close(dwconv_layer_norm(x, w, b, ln_w, ln_b, 1e-5, kernel="triton"),
                               dwconv_layer_norm(x, w, b, ln_w, ln_b, 1e-5, kernel="torch"), atol=0, rtol=0)
    with pytest.raises(ValueError, match="kernel"):
        dwconv_layer_norm(x, w, b, ln_w, ln_b, 1e-5, kernel="cuda")
    with pytest.raises(ValueError, match="dwconv_kernel"):
        FastEncodeSettings.from_dict({"dwconv_kernel": "cudnn"})
    assert FastEncodeSettings.from_dict({"dwconv_kernel": "torch"}).dwconv_kernel == "torch"
    m = VQVAE(VQModelConfig(kind="vq", dim=16, stem_dim=16, depth=2, taps=[2], codebook_sizes=[8]))
    set_dwconv_ln(m, "fused_torch")
    assert all(blk.depthwise_impl == "fused_torch" for blk in m.modules() if isinstance(blk, ConvNeXtBlock1d))


def test_tuning_key_tells_batch_sizes_apart():
    """The kernel configuration is measured per shape: the codebook-initialisation batch (256 windows)
    and the training batch (1024) of the same length must not share a choice; dtype, shift and stats
    select other compiled variants, so they are part of the key too."""
    x, w, b, ln_w, ln_b, shift = inputs(2, 9, 12)
    key = dwconv_ln_triton.tune_key
    assert key(x, w, None, torch.float32, True) != key(torch.cat([x] * 4), w, None, torch.float32, True)
    assert key(x, w, None, torch.float32, True) == key(x[:, :, :], w, None, torch.float32, True)
    assert len({key(x, w, None, torch.float32, True), key(x, w, shift, torch.float32, True),
                key(x, w, None, torch.float32, False), key(x, w, None, torch.bfloat16, True),
                key(x.bfloat16(), w, None, torch.float32, True)}) == 5
    assert "L=9" in dwconv_ln_triton.key_name(key(x, w, shift, torch.float32, False))


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _skip_unless_interpreter_runs_the_backward():
    if not _has_triton():
        pytest.skip("Triton not installed")
    skip_unless_interpreter_runs_runtime_loops("the backward kernel's chunk loop")


INTERPRETER_SCRIPT = textwrap.dedent("""
    import torch
    import torch.nn.functional as F
    from vqdna.tokenizers import dwconv_ln_triton as kt
    from vqdna.tokenizers import fast_encode as fe
    from vqdna.tokenizers.dwconv_ln import dwconv_layer_norm
    from vqdna.tokenizers.model import VQModelConfig, VQVAE
    from test_tokenizers_dwconv_triton import conv_ln, inputs

    def rel(a, r):
        return ((a.double() - r.double()).norm() / r.double().norm()).item()

    # 1. the tile kernel: fp32, tiles shorter than / not dividing / longer than L, D not a power of two
    for (batch, length, dim, k, tile) in [(2, 13, 24, 7, 4), (3, 10, 20, 7, 8), (2, 5, 7, 7, 8), (2, 9, 16, 3, 4),
                                          (1, 3, 10, 7, 4)]:
        x, w, b, ln_w, ln_b, shift = inputs(batch, length, dim, k)
        for sh in (None, shift):
            ref = conv_ln(x, sh, w, b, ln_w, ln_b, 1e-5)
            y, mean, rstd = kt.triton_forward(x, sh, w, b, ln_w, ln_b, 1e-5, torch.float32, block_l=tile)
            assert (y.double() - ref).abs().max().item() < 1e-4, (batch, length, dim, tile)
            _, m_ref, r_ref = kt.reference_forward(x, sh, w, b, ln_w, ln_b, 1e-5, torch.float32)
            assert torch.allclose(mean, m_ref, atol=1e-5) and torch.allclose(rstd, r_ref, rtol=1e-5)
            y2 = kt.triton_forward(x, sh, w, b, ln_w, ln_b, 1e-5, torch.float32, stats=False, block_l=tile)[0]
            assert torch.equal(y, y2)

    # 1b. the strip kernel (a program walks `lanes` strips of `steps` positions, one new row per step into
    #     a 7-row register window): several chunks per sequence with the last one partly past L, lanes
    #     and chunks starting mid-sequence (their window is the real neighbours), batch boundaries (the
    #     sequences differ in scale), L shorter than one lane, k = 3 and 5 (slots without a tap), and
    #     strided inputs read in place: a window of a longer buffer, batch-major strides, transposed taps
    for (batch, length, dim, k, lanes, steps, stages) in [(3, 37, 20, 7, 4, 4, 3), (2, 29, 24, 7, 2, 8, 1),
                                                          (2, 13, 12, 7, 1, 4, 1), (2, 3, 10, 7, 2, 4, 1),
                                                          (3, 21, 16, 3, 2, 4, 1), (2, 17, 9, 5, 4, 2, 2)]:
        x, w, b, ln_w, ln_b, shift = inputs(batch, length, dim, k, seed=length)
        cfg = ("strip", lanes, steps, 4, stages)
        for sh in (None, shift):
            ref = conv_ln(x, sh, w, b, ln_w, ln_b, 1e-5)
            y, mean, rstd = kt.triton_forward(x, sh, w, b, ln_w, ln_b, 1e-5, torch.float32, config=cfg)
            assert (y.double() - ref).abs().max().item() < 1e-4, (batch, length, dim, cfg)
            _, m_ref, r_ref = kt.reference_forward(x, sh, w, b, ln_w, ln_b, 1e-5, torch.float32)
            assert torch.allclose(mean, m_ref, atol=1e-5) and torch.allclose(rstd, r_ref, rtol=1e-5), cfg
            assert torch.equal(y, kt.triton_forward(x, sh, w, b, ln_w, ln_b, 1e-5, torch.float32, stats=False,
                                                    config=cfg)[0])
    x, w, b, ln_w, ln_b, shift = inputs(3, 19, 24)
    big = torch.randn(3, 26, 24)
    big[:, 4:23] = x
    time_major = x.transpose(0, 1).contiguous().transpose(0, 1)  # strides (D, B*D, 1)
    w_t = w.t().contiguous().t()                                   # strides (1, k)
    ref = conv_ln(x, shift, w, b, ln_w, ln_b, 1e-5)
    for xs in (big[:, 4:23], time_major):
        assert not xs.is_contiguous()
        for cfg in (("strip", 2, 4, 4, 1), ("tile", 8, 4, 1)):
            y = kt.triton_forward(xs, shift, w_t, b, ln_w, ln_b, 1e-5, torch.float32, config=cfg)[0]
            assert (y.double() - ref).abs().max().item() < 1e-4, (xs.stride(), cfg)
    # a longer kernel than the strip's window takes the tile kernel by default, and is refused by the strip
    x, w, b, ln_w, ln_b, _ = inputs(2, 12, 8, k=9)
    y = kt.triton_forward(x, None, w, b, ln_w, ln_b, 1e-5, torch.float32)[0]
    assert (y.double() - conv_ln(x, None, w, b, ln_w, ln_b, 1e-5)).abs().max().item() < 1e-4
    try:
        kt.triton_forward(x, None, w, b, ln_w, ln_b, 1e-5, torch.float32, config=("strip", 2, 4, 4, 1))
        raise AssertionError("strip kernel accepted k = 9")
    except ValueError:
        pass

    # 2. bf16 in, bf16 out (fp32 accumulation): against float64 of the same bf16 inputs; the strip keeps
    #    its window in bf16 without a shift and in fp32 with one
    x, w, b, ln_w, ln_b, shift = inputs(2, 37, 48, dtype=torch.bfloat16)
    for sh in (None, shift):
        for cfg in (("tile", 8, 4, 1), ("strip", 4, 4, 4, 2)):
            y, _, _ = kt.triton_forward(x, sh, w, b, ln_w, ln_b, 1e-5, torch.bfloat16, config=cfg)
            assert y.dtype == torch.bfloat16
            assert rel(y, conv_ln(x, sh, w, b, ln_w, ln_b, 1e-5)) < 1e-2, cfg

    # 3. the training function with the kernel selected (Triton "available" for CPU tensors here):
    #    the kernel runs, values and gradients equal the PyTorch forward's
    calls = []
    kernel = kt.triton_forward
    kt.triton_forward = lambda *a, **kw: (calls.append(1), kernel(*a, **kw))[1]
    kt.triton_available = lambda device: True
    x, w, b, ln_w, ln_b, _ = inputs(3, 19, 24)
    dy = torch.randn_like(x)
    outs = {}
    for name in ("triton", "torch"):
        ins = [t.clone().requires_grad_() for t in (x, w, b, ln_w, ln_b)]
        y = dwconv_layer_norm(*ins, 1e-5, kernel=name)
        y.backward(dy)
        outs[name] = [y] + [t.grad for t in ins]
    assert len(calls) == 1
    for a, r in zip(outs["triton"], outs["torch"]):
        assert rel(a, r) < 1e-5

    # 4. the fast encode path with the kernel: same codes as with the PyTorch pass, kernel called per block
    torch.manual_seed(0)
    m = VQVAE(VQModelConfig(kind="hrq", dim=24, stem_dim=16, depth=2, taps=[1, 2], codebook_sizes=[16, 32],
                            layer_scale_init=0.5)).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.3)
    codes = torch.randint(0, 4, (3, 45))
    got = {}
    for name in ("triton", "torch"):
        calls.clear()
        fast = fe.FastEncoder.from_model(m, fe.FastEncodeSettings(distance="fp32", compile=False, dwconv_kernel=name),
                                         compute_dtype=torch.float32)
        got[name] = fast(codes)
        assert fe.PATHS["dwconv_ln"] == ("triton" if name == "triton" else "eager")
        assert len(calls) == (2 if name == "triton" else 0)
    assert torch.equal(got["triton"], got["torch"])
    assert torch.equal(got["torch"].long(), m.encode(codes))
    print("ok")
""")


@pytest.mark.skipif(not _has_triton(), reason="Triton not installed")
def test_triton_kernel_under_the_cpu_interpreter():
    """The kernel on CPU tensors (TRITON_INTERPRET=1, its own process: read when kernels are defined)."""
    _skip_unless_interpreter_runs_the_backward()
    run_interpreter_script(INTERPRETER_SCRIPT, timeout=900)


# ---- the backward kernel (`dwconv_ln_bwd_triton.py`) -------------------------------------------

def conv_ln_grads(x, w, b, ln_w, ln_b, dy, eps=1e-5):
    """Gradients (x, w, b, ln_w, ln_b) of torch's own conv1d + layer_norm in float64 (autograd)."""
    ins = [t.detach().double().requires_grad_() for t in (x, w, b, ln_w, ln_b)]
    y = conv_ln(ins[0], None, *ins[1:], eps)
    return torch.autograd.grad(y, ins, dy.double())


def test_backward_op_fake_schema_and_cpu_path():
    """The op on CPU is the PyTorch backward: autograd's gradients, each in its parameter's dtype."""
    x, w, b, ln_w, ln_b, _ = inputs(2, 9, 12, k=5)
    _, mean, rstd = dwconv_ln_triton.reference_forward(x, None, w, b, ln_w, ln_b, 1e-5, torch.float32)
    dy = torch.randn_like(x)
    torch.library.opcheck(dwconv_ln_bwd_triton.dwconv_ln_backward, (dy, x, w, b, ln_w, mean, rstd),
                          test_utils=("test_schema", "test_faketensor"))
    got = dwconv_ln_bwd_triton.dwconv_ln_backward(dy, x, w, b, ln_w, mean, rstd)
    for a, r in zip(got, conv_ln_grads(x, w, b, ln_w, ln_b, dy)):
        assert a.dtype == torch.float32 and a.shape == r.shape
        torch.testing.assert_close(a.double(), r, atol=1e-4, rtol=1e-4)
    assert not dwconv_ln_bwd_triton.supported(x, w)  # CPU: never the kernel outside the interpreter tests


def test_backward_tuning_key_and_names():
    x, w, b, ln_w, ln_b, _ = inputs(2, 9, 12)
    key = dwconv_ln_bwd_triton.tune_key
    assert key(x, w, x) != key(torch.cat([x] * 4), w, x) and key(x, w, x) != key(x, w, x.bfloat16())
    assert key(x, w, x) != dwconv_ln_triton.tune_key(x, w, None, torch.float32, True)
    assert dwconv_ln_triton.key_name(key(x, w, x)).startswith("backward k=7 D=12 L=9")
    assert "programs/SM" in dwconv_ln_triton.config_name(dwconv_ln_bwd_triton.CANDIDATES[0])
    assert all(len(c) == 7 for c in dwconv_ln_bwd_triton.CANDIDATES)
    # no candidate whose chunk is mostly past a short sequence's end
    assert all(c[1] * c[2] <= 32 for c in dwconv_ln_bwd_triton.candidates(9))


BACKWARD_SCRIPT = textwrap.dedent("""
    import torch
    from vqdna.tokenizers import dwconv_ln_bwd_triton as kb
    from vqdna.tokenizers import dwconv_ln_triton as kt
    from test_tokenizers_dwconv_triton import conv_ln_grads, inputs

    def rel(a, r):
        return ((a.double() - r.double()).norm() / r.double().norm()).item()

    def stats(x, w, b, ln_w, ln_b):
        return kt.reference_forward(x, None, w, b, ln_w, ln_b, 1e-5, torch.float32)[1:]

    # 1. fp32 against autograd of conv1d + layer_norm (float64): lanes of `steps` rows walking a sequence
    #    with a 3-row dc halo each side, chunks past L, L shorter than one lane and not a multiple of a
    #    chunk, two programs walking several chunks each (the last past the end), sequences on different
    #    scales (x[0] += 5: any bleed across a boundary shows), D not a power of two, k = 3, 5, 7
    #    (with and without the next step's loads prefetched)
    for (batch, length, dim, k, lanes, steps, stages, per_sm, prefetch) in [
            (3, 37, 20, 7, 2, 4, 2, 1, 0), (2, 29, 24, 7, 1, 8, 1, 2, 1), (2, 13, 12, 7, 1, 32, 1, 1, 0),
            (2, 3, 10, 7, 2, 4, 1, 1, 1), (1, 2, 7, 7, 1, 4, 1, 1, 0), (3, 21, 16, 3, 2, 4, 1, 1, 1),
            (2, 17, 7, 5, 4, 2, 2, 1, 0), (4, 9, 20, 5, 1, 4, 1, 8, 1)]:
        x, w, b, ln_w, ln_b, _ = inputs(batch, length, dim, k, seed=length)
        dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(dim))
        ref = conv_ln_grads(x, w, b, ln_w, ln_b, dy)
        cfg = ("bwd", lanes, steps, 4, stages, per_sm, prefetch)
        got = kb.triton_backward(dy, x, w, b, ln_w, *stats(x, w, b, ln_w, ln_b), config=cfg)
        for name, a, r in zip(("dx", "d_w", "d_b", "d_ln_w", "d_ln_b"), got, ref):
            assert a.dtype == torch.float32 and a.shape == r.shape, (name, cfg)
            assert rel(a, r) < 1e-5, (name, batch, length, dim, k, cfg, rel(a, r))
        # the interpreter's default configuration gives the same numbers up to summation order
        for a, r in zip(kb.triton_backward(dy, x, w, b, ln_w, *stats(x, w, b, ln_w, ln_b)), got):
            assert rel(a, r) < 1e-6

    # 2. strided inputs read in place: x a window of a longer buffer or time-major, dy time-major,
    #    transposed taps
    x, w, b, ln_w, ln_b, _ = inputs(3, 19, 24)
    dy = torch.randn_like(x)
    ref = conv_ln_grads(x, w, b, ln_w, ln_b, dy)
    big = torch.randn(3, 26, 24)
    big[:, 4:23] = x
    time_major = x.transpose(0, 1).contiguous().transpose(0, 1)
    dy_t = dy.transpose(0, 1).contiguous().transpose(0, 1)
    w_t = w.t().contiguous().t()
    for xs, dys in ((big[:, 4:23], dy), (time_major, dy_t), (x[:, :, :], dy[:, :, :].expand(3, 19, 24))):
        got = kb.triton_backward(dys, xs, w_t, b, ln_w, *stats(x, w, b, ln_w, ln_b))
        assert not xs.is_contiguous() or xs is not x
        for a, r in zip(got, ref):
            assert rel(a, r) < 1e-5, xs.stride()

    # 3. bf16 activations and parameters: dtypes kept, the PyTorch backward's numbers (both round dc to
    #    bf16 before dx, d_w and d_b) and autograd's within bf16 rounding. Loose: Triton's interpreter
    #    truncates fp32 -> bf16 (about half of its conversions differ from torch's round-to-nearest), the
    #    GPU rounds to nearest; bench/dwconv_ln_kernel_check.py compares the GPU's numbers tightly
    x, w, b, ln_w, ln_b, _ = inputs(2, 37, 48, dtype=torch.bfloat16)
    dy = torch.randn(x.shape).bfloat16()
    mean, rstd = stats(x, w, b, ln_w, ln_b)
    ref = kb.reference_backward(dy, x, w, b, ln_w, mean, rstd)
    exact = conv_ln_grads(x, w, b, ln_w, ln_b, dy)
    for cfg in (kb.INTERPRETER_CONFIG, ("bwd", 1, 8, 4, 2, 1, 0)):
        got = kb.triton_backward(dy, x, w, b, ln_w, mean, rstd, config=cfg)
        for name, a, r, e in zip(("dx", "d_w", "d_b", "d_ln_w", "d_ln_b"), got, ref, exact):
            assert a.dtype == r.dtype == torch.bfloat16, name
            assert rel(a, r) < 1.2e-2 and rel(a, e) < 1.2e-2, (name, cfg, rel(a, r), rel(a, e))

    # 4. longer kernels: not the kernel's (the autograd function takes the PyTorch backward)
    x, w, b, ln_w, ln_b, _ = inputs(2, 12, 8, k=9)
    try:
        kb.triton_backward(x, x, w, b, ln_w, *stats(x, w, b, ln_w, ln_b))
        raise AssertionError("backward kernel accepted k = 9")
    except ValueError:
        pass
    print("ok")
""")


@pytest.mark.skipif(not _has_triton(), reason="Triton not installed")
def test_triton_backward_kernel_under_the_cpu_interpreter():
    _skip_unless_interpreter_runs_the_backward()
    run_interpreter_script(BACKWARD_SCRIPT, timeout=900)


COMPILED_STEP_SCRIPT = textwrap.dedent("""
    import copy
    import torch
    from vqdna.tokenizers import dwconv_ln_bwd_triton as kb
    from vqdna.tokenizers import dwconv_ln_triton as kt
    from vqdna.tokenizers.convnext import ConvNeXtBlock1d
    from vqdna.tokenizers.dwconv_ln import dwconv_layer_norm
    from vqdna.tokenizers.model import VQModelConfig, VQVAE
    from vqdna.tokenizers.train_path import set_dwconv_ln
    from test_tokenizers_dwconv_triton import inputs

    def rel(a, r):
        return ((a.double() - r.double()).norm() / r.double().norm()).item()

    # Triton "available" for CPU tensors (the interpreter runs the kernels); count the kernel calls
    calls = {"fwd": 0, "bwd": 0}
    fwd_kernel, bwd_kernel = kt.triton_forward, kb.triton_backward
    def count_fwd(*a, **kw):
        calls["fwd"] += 1
        return fwd_kernel(*a, **kw)
    def count_bwd(*a, **kw):
        calls["bwd"] += 1
        return bwd_kernel(*a, **kw)
    kt.triton_forward, kb.triton_backward = count_fwd, count_bwd
    kt.triton_available = lambda device: True

    # 1. the autograd function: "triton" runs both kernels, "triton_fwd" only the forward, "torch"
    #    neither, k = 9 the PyTorch backward; values and gradients equal in fp32
    x, w, b, ln_w, ln_b, _ = inputs(3, 19, 24)
    dy = torch.randn_like(x)
    outs = {}
    for name, expect in (("triton", (1, 1)), ("triton_fwd", (1, 0)), ("torch", (0, 0))):
        calls.update(fwd=0, bwd=0)
        ins = [t.clone().requires_grad_() for t in (x, w, b, ln_w, ln_b)]
        y = dwconv_layer_norm(*ins, 1e-5, kernel=name)
        y.backward(dy)
        assert (calls["fwd"], calls["bwd"]) == expect, (name, calls)
        outs[name] = [y] + [t.grad for t in ins]
    for name in ("triton", "triton_fwd"):
        for a, r in zip(outs[name], outs["torch"]):
            assert rel(a, r) < 1e-5, name
    x9, w9, b9, lw9, lb9, _ = inputs(2, 12, 8, k=9)
    calls.update(fwd=0, bwd=0)
    ins = [t.clone().requires_grad_() for t in (x9, w9, b9, lw9, lb9)]
    dwconv_layer_norm(*ins, 1e-5, kernel="triton").sum().backward()
    assert calls["bwd"] == 0 and ins[1].grad.shape == (9, 8)

    # 2. a torch.compile'd training step of a small model (`dwconv_ln: fused`): the compiled encoder and
    #    decoder keep both ops (the kernels run once per block), and loss and gradients equal the eager
    #    model without kernels (`fused_torch`)
    torch.manual_seed(0)
    ref = VQVAE(VQModelConfig(kind="vq", dim=20, stem_dim=12, depth=2, taps=[2], codebook_sizes=[16],
                              layer_scale_init=0.5, ema_decay=0.8))
    model = copy.deepcopy(ref)
    set_dwconv_ln(ref, "fused_torch")
    set_dwconv_ln(model, "fused")
    codes = torch.randint(0, 4, (3, 21), generator=torch.Generator().manual_seed(1))
    for m in (ref, model):
        with torch.no_grad():
            m.quantizer.init_codebooks(m.encoder(codes), 3, torch.Generator().manual_seed(1))
    model.encoder.compile(dynamic=False)
    model.decoder.compile(dynamic=False)
    blocks = sum(isinstance(b, ConvNeXtBlock1d) for b in model.modules())
    calls.update(fwd=0, bwd=0)
    from torch._dynamo.utils import counters
    counters.clear()
    out = model(codes, update_codebooks=False)
    out["loss"].backward()
    assert calls == {"fwd": blocks, "bwd": blocks}, calls
    assert not counters["graph_break"], dict(counters["graph_break"])  # the ops are opaque calls in the graph
    out_ref = ref(codes, update_codebooks=False)
    out_ref["loss"].backward()
    assert abs(out["loss"].item() - out_ref["loss"].item()) < 1e-5 * abs(out_ref["loss"].item())
    for (name, p), p2 in zip(ref.named_parameters(), model.parameters()):
        assert p.grad is not None and p2.grad is not None, name
        assert rel(p2.grad, p.grad) < 1e-4, (name, rel(p2.grad, p.grad))
    print("ok")
""")


@pytest.mark.skipif(not _has_triton(), reason="Triton not installed")
def test_kernels_in_the_autograd_function_and_a_compiled_training_step():
    _skip_unless_interpreter_runs_the_backward()
    run_interpreter_script(COMPILED_STEP_SCRIPT, timeout=1200)


LOOP_CARRY_SCRIPT = textwrap.dedent(r"""
    import re
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from vqdna.tokenizers import dwconv_ln_bwd_triton as kb

    fn = kb._dwconv_ln_bwd_strip_kernel
    sig = dict(zip(fn.arg_names, ["*bf16"] * 5 + ["*fp32", "*fp32", "*bf16", "*fp32"] + ["i32"] * 12
                   + ["constexpr"] * 6))
    for prefetch in (False, True):
        consts = {"K": 7, "ROWS": 1, "STEPS": 64, "BLOCK_D": 512, "NUM_STAGES": 1, "PREFETCH": prefetch}
        src = ASTSource(fn=fn, signature=sig, constexprs=consts)
        ttir = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}).asm["ttir"]
        inner = [l for l in ttir.splitlines() if "scf.for %i" in l]
        assert len(inner) == 1, inner
        carried = re.search(r"iter_args\(([^)]*)\)", inner[0]).group(1).split(", ")
        # 10 partial sums, the 6 older rows of the x window and of the dc window, (+4 prefetched loads)
        assert len(carried) == 22 + 4 * prefetch, carried
    print("ok")
""")


@pytest.mark.skipif(not _has_triton(), reason="Triton not installed")
def test_backward_kernel_carries_both_windows_through_its_loop():
    """The GPU compilation (no GPU needed for Triton's IR) keeps all window rows as loop-carried values:
    Triton's frontend drops a variable from the loop when its value after the body looks unchanged,
    which a window started from one shared zero tensor did (`d0 = d1`), and the interpreter cannot show."""
    pytest.importorskip("triton.backends.nvidia")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    env.pop("TRITON_INTERPRET", None)
    out = subprocess.run([sys.executable, "-c", LOOP_CARRY_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
