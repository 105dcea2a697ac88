"""`(s, h) = (x + dropout(y + b), LayerNorm(x + dropout(y + b)))` as one op: one pass forward, one backward.

Every residual add of the encoder is followed by a LayerNorm (pre-LN: the next sub-layer's input
norm, the next block's, or the final norm; post-LN: the norm of the same sub-layer), so the
residual stream pays one read/write pass for add + dropout + norm instead of several. Why a
hand-written op rather than leaving it to torch.compile: the dropout mask is regenerated in the
backward pass from a seed (counter-based Philox: element index -> random number) instead of
being stored and re-read, and the backward pass computes the LayerNorm weight/bias gradients in
the same pass that writes the input gradients (per-program partial sums) instead of re-reading
the activations in separate reductions. The optional bias `b` (`y_bias`) is the bias of the linear
layer that produced y (out_proj, fc2), taken out of that layer so that its gradient (column sums of
the gradient w.r.t. y + b) is another partial sum of the same backward pass, not one more
reduction over y's gradient per layer.

Registered as the custom op `vqdna::dropout_add_layer_norm` (+ `_backward`) with an autograd
formula and a fake (meta) implementation, so torch.compile keeps it as one opaque kernel call.
CUDA with Triton: the Triton kernels below. Everything else (CPU, or no Triton): the same math in
plain PyTorch (`reference_*`), with the mask drawn from a CPU generator seeded by the same seed,
also regenerated in backward; the two paths draw different masks for the same seed (different
generators), each one consistent between its own forward and backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import partial_sums
from .launch_shapes import persistent_grid, tiles_setter

try:  # Triton ships with CUDA builds of PyTorch; CPU-only installs take the reference path
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

# int32 element offsets in the pointer arithmetic and the Philox counter
MAX_ELEMENTS = 2**31 - 1


def triton_available(device: torch.device) -> bool:
    return triton is not None and device.type == "cuda"


# ---- reference (CPU / no Triton): the same function in plain PyTorch -------------------------

def reference_keep_mask(seed: int, shape, p: float, device) -> Tensor:
    """Keep mask of the reference path: a CPU generator seeded with `seed` (so backward can
    draw it again), True with probability 1 - p."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return (torch.rand(tuple(shape), generator=gen) >= p).to(device)


def _stats(s: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    var, mean = torch.var_mean(s, dim=-1, unbiased=False)
    return mean, torch.rsqrt(var + eps)


def reference_forward(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor, seed: Tensor, p: float, eps: float,
                      y_bias: Tensor | None = None):
    out_dtype = torch.promote_types(x.dtype, y.dtype)
    yf = y.float() if y_bias is None else y.float() + y_bias.float()
    if p > 0:
        keep = reference_keep_mask(int(seed.reshape(-1)[0]), y.shape, p, y.device)
        yf = torch.where(keep, yf / (1.0 - p), 0.0)
    # s is rounded to its storage dtype before the norm, as the kernel does: backward reads the
    # stored s, so forward and backward see the same values
    s = (x.float() + yf).to(out_dtype)
    sf = s.float()
    mean, rstd = _stats(sf, eps)
    h = (sf - mean[..., None]) * rstd[..., None] * weight.float() + bias.float()
    return s, h.to(out_dtype), mean, rstd


def reference_backward(dh: Tensor, ds: Tensor | None, s: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor,
                       seed: Tensor, p: float, x_dtype: torch.dtype, y_dtype: torch.dtype,
                       y_bias_dtype: torch.dtype | None = None):
    """(dx, dy, dweight, dbias, dy_bias); dy_bias is empty `[0]` without a y bias (a custom op
    cannot return None)."""
    H = s.shape[-1]
    xhat = (s.float() - mean[..., None]) * rstd[..., None]
    dhf = dh.float()
    g = dhf * weight.float()
    c1 = (xhat * g).sum(-1, keepdim=True) / H
    c2 = g.sum(-1, keepdim=True) / H
    dsum = (g - c2 - xhat * c1) * rstd[..., None]
    if ds is not None:
        dsum = dsum + ds.float()
    if p > 0:
        keep = reference_keep_mask(int(seed.reshape(-1)[0]), s.shape, p, s.device)
        dy = torch.where(keep, dsum / (1.0 - p), 0.0)
    else:
        dy = dsum.clone()  # a custom op's outputs must not alias each other
    rows = dhf.reshape(-1, H)
    dw = (rows * xhat.reshape(-1, H)).sum(0)
    db = rows.sum(0)
    dyb = (dy.reshape(-1, H).sum(0).to(y_bias_dtype) if y_bias_dtype is not None
           else dy.new_empty(0, dtype=weight.dtype))
    return dsum.to(x_dtype), dy.to(y_dtype), dw.to(weight.dtype), db.to(weight.dtype), dyb


# ---- Triton kernels (CUDA) ----------------------------------------------------------------

if triton is not None:
    # Layout: a row of width H is NCHUNK (<= 4) column chunks of Q lanes, Q = 32 threads x one
    # 16-byte vector each (256 lanes for bf16), and a program holds BLOCK_M rows with one warp per
    # row by default: every load and store is a full 16-byte vector and the row sums are warp
    # shuffles, no shared-memory round trip (what Triton's LayerNorm tutorial and Apex's
    # dropout_add_layer_norm do; session 3's 2-row tiles over 8 warps gave each thread 4-byte
    # accesses and a cross-warp reduction per row pair). One Philox call (tl.rand4x) gives four
    # random numbers, one for the same lane of each chunk; the counter is row * Q + lane, the same
    # in forward and backward, so backward regenerates the forward's mask.

    @triton.jit
    def _load_add(x_ptr, y_ptr, yb_ptr, s_ptr, rows, row_ok, lanes, chunk: tl.constexpr, Q: tl.constexpr,
                  n_cols, r, p, scale, HAS_DROPOUT: tl.constexpr, HAS_YB: tl.constexpr):
        cols = chunk * Q + lanes
        m = row_ok[:, None] & (cols < n_cols)[None, :]
        offs = rows[:, None] * n_cols + cols[None, :]
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + offs, mask=m, other=0.0).to(tl.float32)
        if HAS_YB:
            y += tl.load(yb_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)[None, :]
        if HAS_DROPOUT:
            y = tl.where(r >= p, y * scale, 0.0)
        s = (x + y).to(s_ptr.dtype.element_ty)
        tl.store(s_ptr + offs, s, mask=m)
        return tl.where(m, s.to(tl.float32), 0.0), m, offs, cols

    @triton.jit
    def _store_norm(h_ptr, w_ptr, b_ptr, s, m, offs, cols, n_cols, mean, rstd):
        w = tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        h = (s - mean[:, None]) * rstd[:, None] * w[None, :] + b[None, :]
        tl.store(h_ptr + offs, h.to(h_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _fwd_kernel(x_ptr, y_ptr, yb_ptr, w_ptr, b_ptr, s_ptr, h_ptr, mean_ptr, rstd_ptr, seed_ptr,
                    n_rows, n_cols, p, scale, eps,
                    BLOCK_M: tl.constexpr, Q: tl.constexpr, NCHUNK: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                    ROUNDS: tl.constexpr, HAS_YB: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        lanes = tl.arange(0, Q)
        row_ok = rows < n_rows
        if HAS_DROPOUT:
            seed = tl.load(seed_ptr)
            r0, r1, r2, r3 = tl.rand4x(seed, rows[:, None] * Q + lanes[None, :], ROUNDS)
        else:
            r0, r1, r2, r3 = 0.0, 0.0, 0.0, 0.0
        # chunks past NCHUNK are skipped at compile time (constexpr ifs): no dead lanes for a
        # width of 3 x 256 (BERT-base)
        s0, m0, o0, c0 = _load_add(x_ptr, y_ptr, yb_ptr, s_ptr, rows, row_ok, lanes, 0, Q, n_cols, r0, p, scale, HAS_DROPOUT, HAS_YB)
        acc = tl.sum(s0, axis=1)
        if NCHUNK > 1:
            s1, m1, o1, c1 = _load_add(x_ptr, y_ptr, yb_ptr, s_ptr, rows, row_ok, lanes, 1, Q, n_cols, r1, p, scale, HAS_DROPOUT, HAS_YB)
            acc += tl.sum(s1, axis=1)
        if NCHUNK > 2:
            s2, m2, o2, c2 = _load_add(x_ptr, y_ptr, yb_ptr, s_ptr, rows, row_ok, lanes, 2, Q, n_cols, r2, p, scale, HAS_DROPOUT, HAS_YB)
            acc += tl.sum(s2, axis=1)
        if NCHUNK > 3:
            s3, m3, o3, c3 = _load_add(x_ptr, y_ptr, yb_ptr, s_ptr, rows, row_ok, lanes, 3, Q, n_cols, r3, p, scale, HAS_DROPOUT, HAS_YB)
            acc += tl.sum(s3, axis=1)
        mean = acc / n_cols
        d0 = tl.where(m0, s0 - mean[:, None], 0.0)
        var = tl.sum(d0 * d0, axis=1)
        if NCHUNK > 1:
            d1 = tl.where(m1, s1 - mean[:, None], 0.0)
            var += tl.sum(d1 * d1, axis=1)
        if NCHUNK > 2:
            d2 = tl.where(m2, s2 - mean[:, None], 0.0)
            var += tl.sum(d2 * d2, axis=1)
        if NCHUNK > 3:
            d3 = tl.where(m3, s3 - mean[:, None], 0.0)
            var += tl.sum(d3 * d3, axis=1)
        rstd = 1.0 / tl.sqrt(var / n_cols + eps)
        _store_norm(h_ptr, w_ptr, b_ptr, s0, m0, o0, c0, n_cols, mean, rstd)
        if NCHUNK > 1:
            _store_norm(h_ptr, w_ptr, b_ptr, s1, m1, o1, c1, n_cols, mean, rstd)
        if NCHUNK > 2:
            _store_norm(h_ptr, w_ptr, b_ptr, s2, m2, o2, c2, n_cols, mean, rstd)
        if NCHUNK > 3:
            _store_norm(h_ptr, w_ptr, b_ptr, s3, m3, o3, c3, n_cols, mean, rstd)
        tl.store(mean_ptr + rows, mean, mask=row_ok)
        tl.store(rstd_ptr + rows, rstd, mask=row_ok)

    @triton.jit
    def _load_row(ptr, rows, row_ok, lanes, chunk: tl.constexpr, Q: tl.constexpr, n_cols):
        """One chunk of a block of rows as stored (no conversion): what the prefetch carries."""
        cols = chunk * Q + lanes
        m = row_ok[:, None] & (cols < n_cols)[None, :]
        return tl.load(ptr + rows[:, None] * n_cols + cols[None, :], mask=m, other=0.0)

    @triton.jit
    def _load_grad(dh_ptr, s_ptr, w_ptr, rows, row_ok, lanes, chunk: tl.constexpr, Q: tl.constexpr, n_cols, mean, rstd,
                   s_raw, dh_raw, LOADED: tl.constexpr):
        # LOADED: s and dh of this chunk were loaded earlier (s_raw, dh_raw: the prefetch)
        cols = chunk * Q + lanes
        col_ok = cols < n_cols
        m = row_ok[:, None] & col_ok[None, :]
        offs = rows[:, None] * n_cols + cols[None, :]
        if LOADED:
            s = s_raw.to(tl.float32)
        else:
            s = tl.load(s_ptr + offs, mask=m, other=0.0).to(tl.float32)
        xhat = tl.where(m, (s - mean[:, None]) * rstd[:, None], 0.0)
        if LOADED:
            dh = dh_raw.to(tl.float32)
        else:
            dh = tl.load(dh_ptr + offs, mask=m, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        return xhat, dh, dh * w[None, :], m, offs

    @triton.jit
    def _store_grad(ds_ptr, dx_ptr, dy_ptr, xhat, g, m, offs, c1, c2, rstd, r, p, scale, ds_raw,
                    HAS_DROPOUT: tl.constexpr, HAS_DS: tl.constexpr, DS_LOADED: tl.constexpr):
        dsum = (g - c2[:, None] - xhat * c1[:, None]) * rstd[:, None]
        if HAS_DS:
            if DS_LOADED:
                dsum += ds_raw.to(tl.float32)
            else:
                dsum += tl.load(ds_ptr + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(dx_ptr + offs, dsum.to(dx_ptr.dtype.element_ty), mask=m)
        if HAS_DROPOUT:
            dsum = tl.where(r >= p, dsum * scale, 0.0)
        tl.store(dy_ptr + offs, dsum.to(dy_ptr.dtype.element_ty), mask=m)
        return dsum  # the gradient w.r.t. y + b in fp32 (zero on masked-off lanes): the y-bias partial sums

    @triton.jit
    def _load_rows(s_ptr, dh_ptr, ds_ptr, rows, row_ok, lanes, chunk: tl.constexpr, Q: tl.constexpr, n_cols,
                   HAS_DS: tl.constexpr, NCHUNK: tl.constexpr):
        """s, dh, ds of one chunk as stored (ds: 0.0 without it, or past the row's chunks)."""
        if chunk < NCHUNK:
            s = _load_row(s_ptr, rows, row_ok, lanes, chunk, Q, n_cols)
            dh = _load_row(dh_ptr, rows, row_ok, lanes, chunk, Q, n_cols)
            if HAS_DS:
                ds = _load_row(ds_ptr, rows, row_ok, lanes, chunk, Q, n_cols)
            else:
                ds = 0.0
        else:
            s, dh, ds = 0.0, 0.0, 0.0
        return s, dh, ds

    @triton.jit
    def _bwd_kernel(dh_ptr, ds_ptr, s_ptr, w_ptr, mean_ptr, rstd_ptr, seed_ptr,
                    dx_ptr, dy_ptr, dw_ptr, db_ptr, dyb_ptr,
                    n_rows, n_cols, rows_per_prog, part_stride, p, scale,
                    BLOCK_M: tl.constexpr, Q: tl.constexpr, NCHUNK: tl.constexpr,
                    HAS_DROPOUT: tl.constexpr, HAS_DS: tl.constexpr, ROUNDS: tl.constexpr, HAS_YB: tl.constexpr,
                    STAGES: tl.constexpr, LOADS: tl.constexpr, RAND_FIRST: tl.constexpr):
        # a persistent program walks a stripe of rows, BLOCK_M at a time; its weight/bias-gradient
        # partial sums stay [BLOCK_M, Q] register tiles (reduced over rows once, at the end: no
        # cross-warp reduction inside the loop).
        # When the loads are issued (TILES bwd_loads, bwd_stages, bwd_rand_first; same arithmetic
        # in every combination). LOADS 0: s and dh chunk by chunk before the row sums, ds chunk by
        # chunk after them, each behind the previous chunk's stores, which the compiler cannot move
        # a load above (they may alias): up to NCHUNK + 1 memory latencies a row, one after the
        # other. 1: ds loaded with s and dh. 2: s, dh, ds of all chunks issued at the top of the
        # iteration, before any arithmetic (loading the next rows' a whole iteration ahead in
        # registers was slower: spills, session 6). STAGES > 1: Triton's pipeliner stages the
        # loop's loads through shared memory STAGES - 1 iterations ahead. RAND_FIRST: the Philox
        # draws right after the loads are issued (ALU work while they are in flight) instead of
        # after the row sums.
        pid = tl.program_id(0)
        lanes = tl.arange(0, Q)
        dw0 = tl.zeros([BLOCK_M, Q], dtype=tl.float32)
        db0 = tl.zeros([BLOCK_M, Q], dtype=tl.float32)
        dw1 = tl.zeros([BLOCK_M, Q], dtype=tl.float32)
        db1 = tl.zeros([BLOCK_M, Q], dtype=tl.float32)
        dw2 = tl.zeros([BLOCK_M, Q], dtype=tl.float32)
        db2 = tl.zeros([BLOCK_M, Q], dtype=tl.float32)
        dw3 = tl.zeros([BLOCK_M, Q], dtype=tl.float32)
        db3 = tl.zeros([BLOCK_M, Q], dtype=tl.float32)
        # y-bias gradient partial sums (only used with HAS_YB; dead code for the compiler otherwise)
        dyb0 = tl.zeros([BLOCK_M, Q], dtype=tl.float32)
        dyb1 = tl.zeros([BLOCK_M, Q], dtype=tl.float32)
        dyb2 = tl.zeros([BLOCK_M, Q], dtype=tl.float32)
        dyb3 = tl.zeros([BLOCK_M, Q], dtype=tl.float32)
        first = pid * rows_per_prog
        end = tl.minimum(first + rows_per_prog, n_rows)
        seed = tl.load(seed_ptr)
        for r0_ in tl.range(first, end, BLOCK_M, num_stages=STAGES):
            rows = r0_ + tl.arange(0, BLOCK_M)
            row_ok = rows < end
            mean = tl.load(mean_ptr + rows, mask=row_ok, other=0.0)
            rstd = tl.load(rstd_ptr + rows, mask=row_ok, other=0.0)
            if LOADS == 2:
                s0r, h0r, d0r = _load_rows(s_ptr, dh_ptr, ds_ptr, rows, row_ok, lanes, 0, Q, n_cols, HAS_DS, NCHUNK)
                s1r, h1r, d1r = _load_rows(s_ptr, dh_ptr, ds_ptr, rows, row_ok, lanes, 1, Q, n_cols, HAS_DS, NCHUNK)
                s2r, h2r, d2r = _load_rows(s_ptr, dh_ptr, ds_ptr, rows, row_ok, lanes, 2, Q, n_cols, HAS_DS, NCHUNK)
                s3r, h3r, d3r = _load_rows(s_ptr, dh_ptr, ds_ptr, rows, row_ok, lanes, 3, Q, n_cols, HAS_DS, NCHUNK)
            else:  # s and dh loaded by _load_grad; ds here (LOADS 1) or by _store_grad (0)
                s0r, s1r, s2r, s3r = 0.0, 0.0, 0.0, 0.0
                h0r, h1r, h2r, h3r = 0.0, 0.0, 0.0, 0.0
                d0r, d1r, d2r, d3r = 0.0, 0.0, 0.0, 0.0
                if LOADS == 1:
                    _, _, d0r = _load_rows(s_ptr, dh_ptr, ds_ptr, rows, row_ok, lanes, 0, Q, n_cols, HAS_DS, NCHUNK)
                    _, _, d1r = _load_rows(s_ptr, dh_ptr, ds_ptr, rows, row_ok, lanes, 1, Q, n_cols, HAS_DS, NCHUNK)
                    _, _, d2r = _load_rows(s_ptr, dh_ptr, ds_ptr, rows, row_ok, lanes, 2, Q, n_cols, HAS_DS, NCHUNK)
                    _, _, d3r = _load_rows(s_ptr, dh_ptr, ds_ptr, rows, row_ok, lanes, 3, Q, n_cols, HAS_DS, NCHUNK)
            if RAND_FIRST:
                if HAS_DROPOUT:
                    q0, q1, q2, q3 = tl.rand4x(seed, rows[:, None] * Q + lanes[None, :], ROUNDS)
                else:
                    q0, q1, q2, q3 = 0.0, 0.0, 0.0, 0.0
            SD_LOADED: tl.constexpr = LOADS >= 2
            DS_LOADED: tl.constexpr = LOADS >= 1
            x0, h0, g0, m0, o0 = _load_grad(dh_ptr, s_ptr, w_ptr, rows, row_ok, lanes, 0, Q, n_cols, mean, rstd,
                                            s0r, h0r, SD_LOADED)
            c1 = tl.sum(x0 * g0, axis=1)
            c2 = tl.sum(g0, axis=1)
            if NCHUNK > 1:
                x1, h1, g1, m1, o1 = _load_grad(dh_ptr, s_ptr, w_ptr, rows, row_ok, lanes, 1, Q, n_cols, mean, rstd,
                                                s1r, h1r, SD_LOADED)
                c1 += tl.sum(x1 * g1, axis=1)
                c2 += tl.sum(g1, axis=1)
            if NCHUNK > 2:
                x2, h2, g2, m2, o2 = _load_grad(dh_ptr, s_ptr, w_ptr, rows, row_ok, lanes, 2, Q, n_cols, mean, rstd,
                                                s2r, h2r, SD_LOADED)
                c1 += tl.sum(x2 * g2, axis=1)
                c2 += tl.sum(g2, axis=1)
            if NCHUNK > 3:
                x3, h3, g3, m3, o3 = _load_grad(dh_ptr, s_ptr, w_ptr, rows, row_ok, lanes, 3, Q, n_cols, mean, rstd,
                                                s3r, h3r, SD_LOADED)
                c1 += tl.sum(x3 * g3, axis=1)
                c2 += tl.sum(g3, axis=1)
            c1 = c1 / n_cols
            c2 = c2 / n_cols
            if not RAND_FIRST:
                if HAS_DROPOUT:
                    q0, q1, q2, q3 = tl.rand4x(seed, rows[:, None] * Q + lanes[None, :], ROUNDS)
                else:
                    q0, q1, q2, q3 = 0.0, 0.0, 0.0, 0.0
            gy0 = _store_grad(ds_ptr, dx_ptr, dy_ptr, x0, g0, m0, o0, c1, c2, rstd, q0, p, scale, d0r,
                              HAS_DROPOUT, HAS_DS, DS_LOADED)
            if HAS_YB:
                dyb0 += gy0
            dw0 += h0 * x0
            db0 += h0
            if NCHUNK > 1:
                gy1 = _store_grad(ds_ptr, dx_ptr, dy_ptr, x1, g1, m1, o1, c1, c2, rstd, q1, p, scale, d1r,
                                  HAS_DROPOUT, HAS_DS, DS_LOADED)
                if HAS_YB:
                    dyb1 += gy1
                dw1 += h1 * x1
                db1 += h1
            if NCHUNK > 2:
                gy2 = _store_grad(ds_ptr, dx_ptr, dy_ptr, x2, g2, m2, o2, c1, c2, rstd, q2, p, scale, d2r,
                                  HAS_DROPOUT, HAS_DS, DS_LOADED)
                if HAS_YB:
                    dyb2 += gy2
                dw2 += h2 * x2
                db2 += h2
            if NCHUNK > 3:
                gy3 = _store_grad(ds_ptr, dx_ptr, dy_ptr, x3, g3, m3, o3, c1, c2, rstd, q3, p, scale, d3r,
                                  HAS_DROPOUT, HAS_DS, DS_LOADED)
                if HAS_YB:
                    dyb3 += gy3
                dw3 += h3 * x3
                db3 += h3
        base = pid * part_stride  # the program's row of the [programs, K, H] partial-sum buffer
        if HAS_YB:
            tl.store(dyb_ptr + base + lanes, tl.sum(dyb0, axis=0), mask=lanes < n_cols)
            if NCHUNK > 1:
                tl.store(dyb_ptr + base + Q + lanes, tl.sum(dyb1, axis=0), mask=Q + lanes < n_cols)
            if NCHUNK > 2:
                tl.store(dyb_ptr + base + 2 * Q + lanes, tl.sum(dyb2, axis=0), mask=2 * Q + lanes < n_cols)
            if NCHUNK > 3:
                tl.store(dyb_ptr + base + 3 * Q + lanes, tl.sum(dyb3, axis=0), mask=3 * Q + lanes < n_cols)
        tl.store(dw_ptr + base + lanes, tl.sum(dw0, axis=0), mask=lanes < n_cols)
        tl.store(db_ptr + base + lanes, tl.sum(db0, axis=0), mask=lanes < n_cols)
        if NCHUNK > 1:
            tl.store(dw_ptr + base + Q + lanes, tl.sum(dw1, axis=0), mask=Q + lanes < n_cols)
            tl.store(db_ptr + base + Q + lanes, tl.sum(db1, axis=0), mask=Q + lanes < n_cols)
        if NCHUNK > 2:
            tl.store(dw_ptr + base + 2 * Q + lanes, tl.sum(dw2, axis=0), mask=2 * Q + lanes < n_cols)
            tl.store(db_ptr + base + 2 * Q + lanes, tl.sum(db2, axis=0), mask=2 * Q + lanes < n_cols)
        if NCHUNK > 3:
            tl.store(dw_ptr + base + 3 * Q + lanes, tl.sum(dw3, axis=0), mask=3 * Q + lanes < n_cols)
            tl.store(db_ptr + base + 3 * Q + lanes, tl.sum(db3, axis=0), mask=3 * Q + lanes < n_cols)


# Launch shape: rows per program (forward), rows per loop iteration (backward), warps, persistent
# backward programs per multiprocessor. Defaults: the fastest of
# the bench's sweep on an H200 at [65536 x 768] bf16 (session 4: one warp = one row, forward 120
# us, backward 247 us a call; 4-row / 4-warp tiles 124 / 311 us). Session 5 (final call, Triton
# 3.6, backward with the folded y bias, finish included): 12 programs an SM with registers capped
# at 168 (24 spilled) 220 us vs 237 us for 16 uncapped (222 registers: 9 resident warps an SM, so
# 16 ran as two waves); every multi-warp-per-row shape was slower (1x2 318-453, 1x4 359-538 us).
# The bench's --tile-sweep times a grid of these (bench/pretrain_bench.py FWD_TILES, BWD_TILES)
# and `set_tiles` installs the fastest for the rest of that process. Session 6
# (bench/norm_rope_bwd_check.py, GPU time in a CUDA graph, finish included, [65536 x 768] bf16
# with ds and the y bias, Triton 3.6): the backward's load order, same launch shape: session 5's
# 210.6 us, bwd_loads 2 + bwd_stages 2 + bwd_rand_first 181.8 us (the default; bwd_loads 1 +
# stages 2: 182.7, stages 2 alone 187.3, bwd_loads 2 alone 193.7, stages 3: 203-243; 8 programs
# an SM uncapped 182.3-182.8, 10 x 200 regs 286, 16 x 128 regs 275-280); the same kernel without
# dropout 152.9 us, with 7 Philox rounds 160.9 us: the generator is now a visible part of it.
TILES = {"fwd_rows": 1, "fwd_warps": 1, "bwd_rows": 1, "bwd_warps": 1, "bwd_progs_per_sm": 12,
         # Philox rounds (10 = curand's and Triton's default); the bench times 7 (the fewest
         # Random123 reports as crush-resistant) only to see whether the generator bounds the kernels
         "philox_rounds": 10,
         # register cap of the backward kernel (ptxas .maxnreg; 0 = the compiler's choice). Why a
         # knob: at one warp a row the backward kernel holds three [row] fp32 partial-sum tiles and
         # the row's s, dh, ds in registers: 222 registers a thread under Triton 3.6 on an H200
         # (254 + 112 bytes spilled under Triton 3.9's ptxas), so at most 9 of its warps fit on a
         # multiprocessor. A cap trades a few spills for resident warps; measured, not derived
         # (the comment above TILES). The Triton interpreter ignores it.
         "bwd_maxnreg": 168,
         # when the backward kernel issues its loads (the comment in _bwd_kernel; same arithmetic
         # in every combination): bwd_loads 0-2 (0 = session 5's order), bwd_stages = the row
         # loop's num_stages (1 = not pipelined), bwd_rand_first = 1: Philox draws while the
         # loads are in flight
         "bwd_loads": 2, "bwd_stages": 2, "bwd_rand_first": 1}


# the compiled backward kernel of the last call (its n_regs / n_spills, for the bench's sweep)
LAST_BWD_KERNEL: dict = {}


set_tiles = tiles_setter(TILES)  # set_tiles(**changes) -> the previous launch shape


def _chunks(n_cols: int, elem_bytes: int) -> tuple[int, int]:
    """(Q, NCHUNK): Q = lanes of one chunk = 32 threads x one 16-byte vector (256 for bf16, 128
    for fp32), at most 4 chunks a row (one rand4x call covers a lane of each); wider rows get
    wider chunks (several vectors per thread)."""
    q = 32 * max(1, 16 // elem_bytes)
    while 4 * q < n_cols:
        q *= 2
    if n_cols < q:  # narrow rows (tests, tiny models): one chunk of the row's width
        q = triton.next_power_of_2(n_cols)
    return q, triton.cdiv(n_cols, q)


def _check_size(n: int) -> None:
    if n > MAX_ELEMENTS:
        raise ValueError(f"dropout_add_layer_norm: {n} elements exceed the kernel's int32 offsets "
                         f"({MAX_ELEMENTS}); use a smaller micro-batch or fused_dropout_norm: false")


def triton_forward(x, y, weight, bias, seed, p, eps, y_bias=None):
    out_dtype = torch.promote_types(x.dtype, y.dtype)
    H = x.shape[-1]
    x2, y2 = x.reshape(-1, H).contiguous(), y.reshape(-1, H).contiguous()
    N = x2.shape[0]
    s = torch.empty((N, H), device=x.device, dtype=out_dtype)
    h = torch.empty_like(s)
    mean = torch.empty(N, device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    q, nchunk = _chunks(H, s.element_size())
    _check_size(N * max(H, q * nchunk))
    block_m = TILES["fwd_rows"]
    _fwd_kernel[(triton.cdiv(N, block_m),)](
        x2, y2, y_bias.contiguous() if y_bias is not None else bias, weight.contiguous(), bias.contiguous(),
        s, h, mean, rstd, seed, N, H, p, 1.0 / (1.0 - p) if p < 1 else 0.0, eps,
        BLOCK_M=block_m, Q=q, NCHUNK=nchunk, HAS_DROPOUT=p > 0, ROUNDS=TILES["philox_rounds"],
        HAS_YB=y_bias is not None, num_warps=TILES["fwd_warps"])
    shape = x.shape[:-1]
    return s.view(*shape, H), h.view(*shape, H), mean.view(shape), rstd.view(shape)


def triton_backward(dh, ds, s, weight, mean, rstd, seed, p, x_dtype, y_dtype, y_bias_dtype=None):
    """(dx, dy, dweight, dbias, dy_bias) as `reference_backward`."""
    H = s.shape[-1]
    dh2 = dh.reshape(-1, H).contiguous()
    ds2 = ds.reshape(-1, H).contiguous() if ds is not None else dh2  # dh2: a valid pointer, never read
    s2 = s.reshape(-1, H)
    N = s2.shape[0]
    dx = torch.empty((N, H), device=s.device, dtype=x_dtype)
    dy = torch.empty((N, H), device=s.device, dtype=y_dtype)
    q, nchunk = _chunks(H, s.element_size())
    _check_size(N * max(H, q * nchunk))
    block_m = TILES["bwd_rows"]
    # persistent programs, each looping over a stripe of rows with its weight/bias-gradient
    # partial sums in registers; one small sum over programs at the end (CPU tensors only under
    # Triton's interpreter, in the kernel tests)
    n_prog, rows_per_prog = persistent_grid(N, block_m, TILES["bwd_progs_per_sm"], s.device)
    has_yb = y_bias_dtype is not None
    # the weight, bias (and y-bias) gradient partials side by side, one row per program: one
    # finishing reduction for all of them (partial_sums), not one per gradient
    part = torch.empty((n_prog, 3 if has_yb else 2, H), device=s.device, dtype=torch.float32)
    dw_part, db_part = part[:, 0], part[:, 1]
    dyb_part = part[:, 2] if has_yb else db_part  # db_part: a valid pointer, never written
    maxnreg = TILES["bwd_maxnreg"]
    if TILES["bwd_loads"] not in (0, 1, 2):
        raise ValueError(f"fused_norm TILES bwd_loads must be 0, 1 or 2, not {TILES['bwd_loads']}")
    LAST_BWD_KERNEL["kernel"] = _bwd_kernel[(n_prog,)](
        dh2, ds2, s2, weight.contiguous(), mean.reshape(-1), rstd.reshape(-1), seed, dx, dy, dw_part, db_part,
        dyb_part, N, H, rows_per_prog, part.stride(0), p, 1.0 / (1.0 - p) if p < 1 else 0.0,
        BLOCK_M=block_m, Q=q, NCHUNK=nchunk, HAS_DROPOUT=p > 0, HAS_DS=ds is not None,
        ROUNDS=TILES["philox_rounds"], HAS_YB=has_yb, STAGES=TILES["bwd_stages"], LOADS=TILES["bwd_loads"],
        RAND_FIRST=TILES["bwd_rand_first"] > 0, num_warps=TILES["bwd_warps"],
        **({"maxnreg": maxnreg} if maxnreg else {}))
    # separate tensors: a custom op's outputs must not alias each other
    sums = partial_sums.column_sums(part, (weight.dtype, weight.dtype) + ((y_bias_dtype,) if has_yb else ()))
    dyb = sums[2] if has_yb else dx.new_empty(0, dtype=weight.dtype)
    return dx.view(s.shape), dy.view(s.shape), sums[0], sums[1], dyb


# ---- custom ops: dispatch, fake tensors, autograd ---------------------------------------------

@torch.library.custom_op("vqdna::dropout_add_layer_norm", mutates_args=())
def _op_forward(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor, y_bias: Tensor | None, seed: Tensor,
                p: float, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if triton_available(x.device):
        return triton_forward(x, y, weight, bias, seed, p, eps, y_bias)
    return reference_forward(x, y, weight, bias, seed, p, eps, y_bias)


@_op_forward.register_fake
def _(x, y, weight, bias, y_bias, seed, p, eps):
    dtype = torch.promote_types(x.dtype, y.dtype)
    stats = x.new_empty(x.shape[:-1], dtype=torch.float32)
    return x.new_empty(x.shape, dtype=dtype), x.new_empty(x.shape, dtype=dtype), stats, torch.empty_like(stats)


@torch.library.custom_op("vqdna::dropout_add_layer_norm_backward", mutates_args=())
def _op_backward(dh: Tensor, ds: Tensor | None, s: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor,
                 seed: Tensor, p: float, x_dtype: torch.dtype, y_dtype: torch.dtype,
                 y_bias_dtype: torch.dtype | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    if triton_available(s.device):
        return triton_backward(dh, ds, s, weight, mean, rstd, seed, p, x_dtype, y_dtype, y_bias_dtype)
    return reference_backward(dh, ds, s, weight, mean, rstd, seed, p, x_dtype, y_dtype, y_bias_dtype)


@_op_backward.register_fake
def _(dh, ds, s, weight, mean, rstd, seed, p, x_dtype, y_dtype, y_bias_dtype):
    dyb = (s.new_empty(s.shape[-1:], dtype=y_bias_dtype) if y_bias_dtype is not None
           else s.new_empty(0, dtype=weight.dtype))
    return (s.new_empty(s.shape, dtype=x_dtype), s.new_empty(s.shape, dtype=y_dtype),
            torch.empty_like(weight), torch.empty_like(weight), dyb)


def _setup_context(ctx, inputs, output):
    x, y, weight, bias, y_bias, seed, p, eps = inputs
    s, _, mean, rstd = output
    ctx.save_for_backward(s, weight, mean, rstd, seed)
    ctx.p = p
    ctx.dtypes = (x.dtype, y.dtype, None if y_bias is None else y_bias.dtype)


def _autograd_backward(ctx, ds, dh, _dmean, _drstd):
    s, weight, mean, rstd, seed = ctx.saved_tensors
    if dh is None:
        dh = torch.zeros_like(s)
    dx, dy, dw, db, dyb = _op_backward(dh, ds, s, weight, mean, rstd, seed, ctx.p, *ctx.dtypes)
    return dx, dy, dw, db, (dyb if ctx.dtypes[2] is not None else None), None, None, None


_op_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def dropout_add_layer_norm(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor, p: float, eps: float,
                           seed: Tensor | None = None, y_bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`(s, LayerNorm(s))` with `s = x + dropout(y + y_bias, p)` (inverted dropout, as nn.Dropout in
    training; no y_bias: `x + dropout(y)`). `seed`: int64 tensor `[1]` on x's device; by default
    drawn from torch's generator of that device, so `torch.manual_seed` makes a run repeatable."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout_add_layer_norm: p must be in [0, 1), not {p}")
    if seed is None:
        if p > 0:
            seed = torch.randint(0, 2**31 - 1, (1,), device=x.device, dtype=torch.int64)
        else:
            seed = torch.zeros(1, device=x.device, dtype=torch.int64)
    s, h, _, _ = _op_forward(x, y, weight, bias, y_bias, seed, float(p), float(eps))
    return s, h


def keep_mask(shape, p: float, seed: Tensor, device, dtype=torch.float32) -> Tensor:
    """The keep mask the op draws for `seed` (True = kept), read back through the op itself
    (x = 0, y = 1: s = keep / (1 - p)); for tests and mask statistics."""
    y = torch.ones(shape, device=device, dtype=dtype)
    H = shape[-1]
    w = torch.ones(H, device=device, dtype=dtype)
    s, _ = dropout_add_layer_norm(torch.zeros_like(y), y, w, torch.zeros_like(w), p, 1e-5, seed=seed)
    return s > 0
