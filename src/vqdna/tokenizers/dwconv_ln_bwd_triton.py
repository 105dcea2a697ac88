"""Backward of depth-wise conv (odd k <= 7, stride 1, zero 'same' padding) + LayerNorm as one Triton
kernel, for the hand-written autograd function of `dwconv_ln.py` (`tokenizers.training.dwconv_ln: fused`).

Forward (saved: x, the taps, biases, and the per-row mean and 1/std of the conv output c):
    c[l] = b + Σ_j w[j]·x[l − k//2 + j],   y[l] = ln_w·(c[l] − mean[l])·rstd[l] + ln_b
Backward, per row l (reductions over the D channels):
    xhat = (c − mean)·rstd,  gx = dy·ln_w,  dc = rstd·(gx − mean(gx) − xhat·mean(gx·xhat))
    dx[m] = Σ_j w[j]·dc[m + k//2 − j],  d_w[j] = Σ_l dc[l]·x[l − k//2 + j],  d_b = Σ_l dc[l],
    d_ln_w = Σ_l dy·xhat,  d_ln_b = Σ_l dy
dc is rounded to the activations' dtype before dx, d_w and d_b, as `reference_backward` (the PyTorch
code) stores it: the same numbers as the PyTorch path, not a more precise variant of them.

Why a kernel: under torch.compile the PyTorch backward became ~4 Inductor kernels per block (recompute
c + norm backward, parameter column sums, the shifted sum for dx) reading x, dy and dc several times,
~1.4 ms per block at the paper's training shape. Here one program walks a strip of positions of one
sequence like the forward's 'strip' kernel (`dwconv_ln_triton.py`): a 7-row window of x in registers
(one new row per step) recomputes c[l] and dc[l] for the lead row l, a 7-row window of dc emits
dx[l − 3], so x and dy are read once (plus a halo), dx written once. Each strip recomputes dc on a
3-row halo on both sides (dx of its first/last rows needs its neighbours' dc) but emits dx and adds
to the parameter gradients only for its own rows. The parameter gradients are fp32 sums per program,
written as partials `[programs, 10, D]` and summed afterwards by torch.sum: deterministic (no atomics;
training runs in deterministic mode). A program walks `chunks_per_prog` consecutive chunks (programs =
a few per SM, tuned) so that the partials stay small (~8 MB at the training shape, not one row per chunk). Optionally (tuned,
`PREFETCH`) the loads of the next step are issued one step early: 0.72 instead of 1.04 ms per call at
the training shape on an H200, where the per-step load latency is otherwise exposed.

Registered as the custom op `vqdna::dwconv_ln_backward` (fake implementation included) so a compiled
model keeps it as one opaque call. CUDA + Triton: the kernel, configuration measured once per shape
with the forward's tuning code; everything else: `reference_backward`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import dwconv_ln_triton as fwd
from .dwconv_ln_triton import _up, shifted_conv, triton

if triton is not None:
    import triton.language as tl

MAX_K = fwd.STRIP_MAX_K     # the window has 7 slots
N_PARTIALS = 10             # rows of a program's partials: d_w window slots 0..6, d_b, d_ln_w, d_ln_b


def supported(x: Tensor, w: Tensor) -> bool:
    """Whether the kernel handles this call (else `reference_backward`): CUDA + Triton, odd k <= 7."""
    k = w.shape[0]
    return (k % 2 == 1 and k <= MAX_K and x.dtype in fwd.TRITON_DTYPES and x.dim() == 3
            and fwd.triton_available(x.device))


def reference_backward(dy: Tensor, x: Tensor, w: Tensor, b: Tensor, ln_w: Tensor, mean: Tensor,
                       rstd: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dx, d_w, d_b, d_ln_w, d_ln_b) in plain PyTorch, fp32 (or wider) inside; mean/rstd `[B, L]`;
    gradients in the dtypes of their inputs (d_ln_b in ln_w's, LayerNorm's weight and bias share one)."""
    k, length = w.shape[0], x.shape[1]
    mean, rstd = mean.unsqueeze(-1), rstd.unsqueeze(-1)
    wf = _up(w)
    xf = _up(x)
    c = shifted_conv(xf, wf, _up(b))  # recomputed: nothing of size [B, L, D] was saved
    xhat = (c - mean) * rstd
    g = _up(dy)
    reduce_dims = tuple(range(g.dim() - 1))
    d_ln_w = (g * xhat).sum(reduce_dims)
    d_ln_b = g.sum(reduce_dims)
    gx = g * _up(ln_w)
    dc = rstd * (gx - gx.mean(-1, keepdim=True) - xhat * (gx * xhat).mean(-1, keepdim=True))
    # stored at the activations' precision, as autograd of a bf16 model stores this gradient:
    # half the bytes for the two passes that read it (a no-op in fp32)
    dc = _up(dc.to(x.dtype))
    d_b = dc.sum(reduce_dims)
    xp = F.pad(xf, (0, 0, k // 2, k // 2))
    d_w = torch.stack([(dc * xp[:, j:j + length]).sum(reduce_dims) for j in range(k)])
    # dx[m] = Σ_j dc[m + k//2 − j] · w[j]: the same shifted sum with the taps reversed
    dx = shifted_conv(dc, wf.flip(0), torch.zeros((), device=dc.device, dtype=dc.dtype))
    return dx.to(x.dtype), d_w.to(w.dtype), d_b.to(b.dtype), d_ln_w.to(ln_w.dtype), d_ln_b.to(ln_w.dtype)


if triton is not None:

    @triton.jit
    def _add_pair(a0, b0, a1, b1):
        return a0 + a1, b0 + b1

    @triton.jit
    def _bwd_loads(xb, gb, mean_ptr, rstd_ptr, row0, lead, L, stride_xl, stride_gl, cols, col_ok):
        """What step `lead` reads: x[lead + 3] (the window's new row), dy[lead], mean/rstd[lead]; zeros
        outside [0, L)."""
        x_new = fwd._strip_rows(xb, lead + 3, L, stride_xl, cols, col_ok, cols, False)
        row_ok = (lead >= 0) & (lead < L)
        g = tl.load(gb + lead[:, None] * stride_gl + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
        mu = tl.load(mean_ptr + row0 + lead, mask=row_ok, other=0.0)
        rs = tl.load(rstd_ptr + row0 + lead, mask=row_ok, other=0.0)
        return x_new, g, mu, rs

    @triton.jit
    def _dwconv_ln_bwd_strip_kernel(x_ptr, dy_ptr, w_ptr, b_ptr, lnw_ptr, mean_ptr, rstd_ptr, dx_ptr, part_ptr,
                    L, D, stride_xb, stride_xl, stride_gb, stride_gl, stride_wk, stride_wd,
                    chunks_per_seq, n_chunks, chunks_per_prog,
                    K: tl.constexpr, ROWS: tl.constexpr, STEPS: tl.constexpr, BLOCK_D: tl.constexpr,
                    NUM_STAGES: tl.constexpr, PREFETCH: tl.constexpr):
        """A program walks chunks pid·chunks_per_prog … + chunks_per_prog − 1 (one chunk = ROWS lanes ×
        STEPS consecutive own positions of one sequence, lane r from chunk start + r·STEPS); per lane,
        the lead row l runs from the lane's start − 3 to its end + 3 (STEPS + 6 steps)."""
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_D)
        col_ok = cols < D
        bias = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        lnw = tl.load(lnw_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        # forward taps of window slots 0..6 (slot J = row l − 3 + J); dx takes slot J with tap 6 − J
        w0 = fwd._strip_tap(w_ptr, stride_wk, stride_wd, cols, col_ok, 0, K)
        w1 = fwd._strip_tap(w_ptr, stride_wk, stride_wd, cols, col_ok, 1, K)
        w2 = fwd._strip_tap(w_ptr, stride_wk, stride_wd, cols, col_ok, 2, K)
        w3 = fwd._strip_tap(w_ptr, stride_wk, stride_wd, cols, col_ok, 3, K)
        w4 = fwd._strip_tap(w_ptr, stride_wk, stride_wd, cols, col_ok, 4, K)
        w5 = fwd._strip_tap(w_ptr, stride_wk, stride_wd, cols, col_ok, 5, K)
        w6 = fwd._strip_tap(w_ptr, stride_wk, stride_wd, cols, col_ok, 6, K)
        zero = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)
        # fp32 partial sums per window slot of x (slot J -> d_w[J − 3 + k//2]), d_b, d_ln_w, d_ln_b
        a0 = zero
        a1 = zero
        a2 = zero
        a3 = zero
        a4 = zero
        a5 = zero
        a6 = zero
        a_b = zero
        a_lnw = zero
        a_lnb = zero
        for t in range(0, chunks_per_prog):
            chunk = pid * chunks_per_prog + t
            seq = chunk // chunks_per_seq
            start = (chunk % chunks_per_seq) * (ROWS * STEPS) + tl.arange(0, ROWS) * STEPS
            # the last program's chunks past the end: every row (halo included) lies past L, all masked
            start = tl.where(chunk < n_chunks, start, L + 8)
            xb = x_ptr + seq.to(tl.int64) * stride_xb
            gb = dy_ptr + seq.to(tl.int64) * stride_gb
            row0 = seq.to(tl.int64) * L
            # x window for the first lead row l = start − 3: rows start − 6 … start (the last loaded in the loop)
            x0 = fwd._strip_rows(xb, start - 6, L, stride_xl, cols, col_ok, bias, False)
            x1 = fwd._strip_rows(xb, start - 5, L, stride_xl, cols, col_ok, bias, False)
            x2 = fwd._strip_rows(xb, start - 4, L, stride_xl, cols, col_ok, bias, False)
            x3 = fwd._strip_rows(xb, start - 3, L, stride_xl, cols, col_ok, bias, False)
            x4 = fwd._strip_rows(xb, start - 2, L, stride_xl, cols, col_ok, bias, False)
            x5 = fwd._strip_rows(xb, start - 1, L, stride_xl, cols, col_ok, bias, False)
            # dc window: rows l − 6 … l. The first dx (step 6) only reads rows computed in this walk, so the
            # start values are never used; they are the x rows (same dtype) and not one zero tensor because
            # Triton's frontend carries a variable through the loop only if its value after the body differs
            # from the one before it: with d0 … d5 all the same tensor, `d0 = d1` looks unchanged and the
            # window silently stops shifting (wrong dx on the GPU; the interpreter runs plain Python)
            d0 = x0
            d1 = x1
            d2 = x2
            d3 = x3
            d4 = x4
            d5 = x5
            # PREFETCH: the loads of step i + 1 are issued in step i (held in registers), so their latency
            # hides behind one step's arithmetic instead of stalling the step that uses them
            nx, ng, nmu, nrs = _bwd_loads(xb, gb, mean_ptr, rstd_ptr, row0, start - 3, L, stride_xl, stride_gl,
                                          cols, col_ok)
            for i in tl.range(0, STEPS + 6, num_stages=NUM_STAGES):
                lead = start - 3 + i
                if PREFETCH:
                    x6 = nx
                    g_in = ng
                    mu = nmu
                    rs = nrs
                    nx, ng, nmu, nrs = _bwd_loads(xb, gb, mean_ptr, rstd_ptr, row0, lead + 1, L, stride_xl,
                                                  stride_gl, cols, col_ok)
                else:
                    x6, g_in, mu, rs = _bwd_loads(xb, gb, mean_ptr, rstd_ptr, row0, lead, L, stride_xl, stride_gl,
                                                  cols, col_ok)
                row_ok = (lead >= 0) & (lead < L)
                m2 = row_ok[:, None] & col_ok[None, :]
                g = g_in.to(tl.float32)
                c = fwd._strip_conv(bias, x0, x1, x2, x3, x4, x5, x6, w0, w1, w2, w3, w4, w5, w6)
                xhat = tl.where(m2, (c - mu[:, None]) * rs[:, None], 0.0)
                gx = g * lnw[None, :]  # 0 in padded channels and rows outside [0, L) (dy loads 0)
                # both row sums in one reduction: one exchange between the warps of a row instead of two
                sum_gx, sum_gxx = tl.reduce((gx, gx * xhat), 1, _add_pair)
                mean_gx = sum_gx / D
                mean_gxx = sum_gxx / D
                dc = tl.where(m2, rs[:, None] * (gx - mean_gx[:, None] - xhat * mean_gxx[:, None]), 0.0)
                d6 = dc.to(x_ptr.dtype.element_ty)  # rounded as the PyTorch backward stores it
                own = (row_ok & (i >= 3) & (i < STEPS + 3))[:, None]  # parameter gradients: own rows only
                dcf = tl.where(own, d6.to(tl.float32), 0.0)
                a_b += dcf
                a0 += dcf * x0.to(tl.float32)
                a1 += dcf * x1.to(tl.float32)
                a2 += dcf * x2.to(tl.float32)
                a3 += dcf * x3.to(tl.float32)
                a4 += dcf * x4.to(tl.float32)
                a5 += dcf * x5.to(tl.float32)
                a6 += dcf * x6.to(tl.float32)
                a_lnw += tl.where(own, g * xhat, 0.0)
                a_lnb += tl.where(own, g, 0.0)
                # dx[m], m = l − 3: Σ_J dc[m − 3 + J] · w[tap of slot 6 − J]
                dx = d0.to(tl.float32) * w6[None, :]
                dx += d1.to(tl.float32) * w5[None, :]
                dx += d2.to(tl.float32) * w4[None, :]
                dx += d3.to(tl.float32) * w3[None, :]
                dx += d4.to(tl.float32) * w2[None, :]
                dx += d5.to(tl.float32) * w1[None, :]
                dx += d6.to(tl.float32) * w0[None, :]
                m = lead - 3
                tl.store(dx_ptr + (row0 + m)[:, None] * D + cols[None, :], dx.to(dx_ptr.dtype.element_ty),
                         mask=((m < L) & (i >= 6))[:, None] & col_ok[None, :])
                x0 = x1
                x1 = x2
                x2 = x3
                x3 = x4
                x4 = x5
                x5 = x6
                d0 = d1
                d1 = d2
                d2 = d3
                d3 = d4
                d4 = d5
                d5 = d6
        base = part_ptr + pid.to(tl.int64) * (10 * D) + cols
        tl.store(base, tl.sum(a0, axis=0), mask=col_ok)
        tl.store(base + D, tl.sum(a1, axis=0), mask=col_ok)
        tl.store(base + 2 * D, tl.sum(a2, axis=0), mask=col_ok)
        tl.store(base + 3 * D, tl.sum(a3, axis=0), mask=col_ok)
        tl.store(base + 4 * D, tl.sum(a4, axis=0), mask=col_ok)
        tl.store(base + 5 * D, tl.sum(a5, axis=0), mask=col_ok)
        tl.store(base + 6 * D, tl.sum(a6, axis=0), mask=col_ok)
        tl.store(base + 7 * D, tl.sum(a_b, axis=0), mask=col_ok)
        tl.store(base + 8 * D, tl.sum(a_lnw, axis=0), mask=col_ok)
        tl.store(base + 9 * D, tl.sum(a_lnb, axis=0), mask=col_ok)


# ("bwd", lanes, steps per lane, warps, pipeline stages, programs per SM, prefetch). One lane of 384
# (512 padded) channels holds ~37 fp32-sized values per element (two 7-row windows, 7 taps, 10 partial
# sums): ~213 registers per thread at 4 warps, and 2 warps spill. Measured on an H200 at the training
# shape (docs/benchmarks.md, s4): without prefetch 1.01-1.04 ms per call whatever the strip or warps,
# with it 0.69-0.78 (4 warps), 0.84 (8 warps), 1.15-1.20 (2 warps, spilling), 1.27 (2 lanes); the
# 2-warp and 2-lane candidates of that call were dropped afterwards (each costs a compile at the first
# step), the reference stays as the tuning's correctness guard.
CANDIDATES = [("bwd", lanes, steps, warps, stages, per_sm, prefetch)
              for lanes, steps, warps, stages, per_sm, prefetch in (
                  (1, 64, 4, 2, 4, 0), (1, 128, 4, 2, 4, 0),
                  (1, 64, 4, 1, 4, 1), (1, 128, 4, 1, 4, 1), (1, 64, 4, 1, 8, 1), (1, 32, 4, 1, 4, 1),
                  (1, 64, 4, 2, 4, 1), (1, 64, 8, 1, 4, 1))]
REFERENCE = CANDIDATES[0]     # the tuning's correctness guard compares the others to it
INTERPRETER_CONFIG = ("bwd", 2, 4, 4, 1, 1, 1)   # CPU tensors (the tests): short strips, several chunks per program


def tune_key(x: Tensor, w: Tensor, dy: Tensor) -> tuple:
    """As the forward's (`dwconv_ln_triton.tune_key`): per k, D, L, row-count bucket and dtypes."""
    return ("bwd", w.shape[0], x.shape[2], x.shape[1], fwd.rows_bucket(x), x.dtype, dy.dtype)


def candidates(length: int) -> list[tuple]:
    return [c for c in CANDIDATES if c[1] * c[2] <= max(length, 16) * 2]  # no chunk mostly past the end


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2  # Triton's interpreter: two programs, so that each walks several chunks


def _launch(dy, x, w, mean, rstd, b, ln_w, dx, sums, cfg: tuple) -> None:
    """One kernel launch of configuration `cfg`, then the partials summed into `sums [10, D]` (fp32)."""
    _, lanes, steps, num_warps, stages, per_sm, prefetch = cfg
    batch, length, dim = x.shape
    chunks_per_seq = triton.cdiv(length, lanes * steps)
    n_chunks = batch * chunks_per_seq
    per_prog = triton.cdiv(n_chunks, min(n_chunks, per_sm * _sm_count(x.device)))
    programs = triton.cdiv(n_chunks, per_prog)
    part = torch.empty((programs, N_PARTIALS, dim), device=x.device, dtype=torch.float32)
    _dwconv_ln_bwd_strip_kernel[(programs,)](
        x, dy, w, b, ln_w, mean, rstd, dx, part, length, dim, x.stride(0), x.stride(1), dy.stride(0), dy.stride(1),
        w.stride(0), w.stride(1), chunks_per_seq, n_chunks, per_prog,
        K=w.shape[0], ROWS=lanes, STEPS=steps, BLOCK_D=triton.next_power_of_2(dim), NUM_STAGES=stages,
        PREFETCH=bool(prefetch), num_warps=num_warps)
    torch.sum(part, dim=0, out=sums)


def triton_backward(dy: Tensor, x: Tensor, w: Tensor, b: Tensor, ln_w: Tensor, mean: Tensor, rstd: Tensor,
                    config: tuple | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The kernel (odd k <= 7). x and dy `[B, L, D]` may be strided in batch and position (read in place),
    w `[k, D]` in any strides; mean/rstd `[B, L]` fp32. `config`: one of `CANDIDATES`; else on CUDA the
    fastest is measured once per `tune_key`, CPU tensors (Triton's interpreter) take `INTERPRETER_CONFIG`."""
    batch, length, dim = x.shape
    k = w.shape[0]
    if k % 2 != 1 or k > MAX_K:
        raise ValueError(f"dwconv_ln backward kernel: odd k <= {MAX_K} only, got {k}")
    x, dy = fwd.rows_in_place(x), fwd.rows_in_place(dy)
    mean, rstd = mean.float().contiguous(), rstd.float().contiguous()
    dx = torch.empty((batch, length, dim), device=x.device, dtype=x.dtype)
    sums = torch.zeros((N_PARTIALS, dim), device=x.device, dtype=torch.float32)
    if x.numel() > 0:
        def launch(cfg: tuple) -> None:
            _launch(dy, x, w, mean, rstd, b, ln_w, dx, sums, cfg)

        if config is None:
            if x.is_cuda:
                key = tune_key(x, w, dy)
                if key not in fwd._BEST:
                    fwd._BEST[key] = fwd._tune(launch, (dx, sums), key, candidates(length), reference=REFERENCE)
                config = fwd._BEST[key]
            else:
                config = INTERPRETER_CONFIG
        launch(config)
    first = 3 - k // 2  # window slot of tap 0
    # copies: a custom op's outputs may not be views of one tensor
    return (dx, sums[first:first + k].to(w.dtype, copy=True), sums[7].to(b.dtype, copy=True),
            sums[8].to(ln_w.dtype, copy=True), sums[9].to(ln_w.dtype, copy=True))


# ---- custom op: dispatch and fake tensors -------------------------------------------------------

@torch.library.custom_op("vqdna::dwconv_ln_backward", mutates_args=())
def dwconv_ln_backward(dy: Tensor, x: Tensor, w: Tensor, b: Tensor, ln_w: Tensor, mean: Tensor,
                       rstd: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dx, d_w, d_b, d_ln_w, d_ln_b) of LayerNorm(depth-wise conv(x)) given dy and the forward's
    mean/rstd `[B, L]`; dx in x's dtype, the others in their parameters' (d_ln_b in ln_w's)."""
    if supported(x, w):
        return triton_backward(dy, x, w, b, ln_w, mean, rstd)
    return tuple(t.contiguous() for t in reference_backward(dy, x, w, b, ln_w, mean, rstd))


@dwconv_ln_backward.register_fake
def _(dy, x, w, b, ln_w, mean, rstd):
    return (x.new_empty(x.shape), w.new_empty(w.shape), b.new_empty(b.shape), ln_w.new_empty(ln_w.shape),
            ln_w.new_empty(ln_w.shape))
