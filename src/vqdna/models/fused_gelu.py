"""`a = GELU(h0 + b)` (exact, erf) as one op whose backward also sums the bias gradient.
(bf16/fp16 inputs: erf from a branch-free polynomial with an error below 2e-7, far under their
rounding; fp32 inputs: libdevice's erff. See `TILES["erf_poly"]`.)

The encoder's fc1 -> GELU: cuBLAS adds fc1's bias in its epilogue and torch.compile then writes
GELU(h) in one kernel, recomputes it in backward for fc2's weight gradient while computing
dh = da * GELU'(h), and sums the bias gradient in a third kernel that re-reads dh (session 4
profile: 331 + 443 + 101 us a layer at [65536 x 3072] bf16). Here fc1 runs without its bias,
the forward kernel reads h0 and b once and writes a, and the backward kernel reads da and h0
once, writes dh0 and keeps the bias gradient as per-program fp32 partial sums (reduced once
afterwards, in a fixed order: deterministic). `a` is not recomputed: fc2's autograd keeps it for
its weight gradient anyway; the price is that h0 is kept as well (Inductor's partitioner keeps
only h and recomputes GELU(h)): one more [rows x intermediate] activation per layer.

Registered as the custom op `vqdna::bias_gelu` (+ `_backward`) with an autograd formula and a
fake implementation, so torch.compile keeps it as one opaque call and CUDA graphs capture it.
CUDA with Triton: the kernels below. Everything else (CPU, or no Triton): the same math in plain
PyTorch (`reference_*`), fp32 inside as the kernels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import partial_sums
from .launch_shapes import tiles_setter

try:  # Triton ships with CUDA builds of PyTorch; CPU-only installs take the reference path
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

MAX_INT32 = 2**31 - 1
SQRT1_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)  # PyTorch's kBeta = M_2_SQRTPI * M_SQRT1_2 * 0.5


def triton_available(device: torch.device) -> bool:
    return triton is not None and device.type == "cuda"


# ---- reference (CPU / no Triton): the same function in plain PyTorch -------------------------

def _compute_dtype(h0: Tensor) -> torch.dtype:
    return torch.promote_types(h0.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs (tests)


def reference_forward(h0: Tensor, bias: Tensor) -> Tensor:
    # z in fp32, not rounded to h0's dtype before the GELU: what the kernel does (and what
    # Inductor does for F.gelu(h + b)); the two roundings differ by at most one bf16 ulp of z
    z = h0.to(_compute_dtype(h0)) + bias.to(_compute_dtype(h0))
    return torch.nn.functional.gelu(z).to(h0.dtype)


def reference_backward(da: Tensor, h0: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    z = h0.to(_compute_dtype(h0)) + bias.to(_compute_dtype(h0))
    dz = torch.ops.aten.gelu_backward(da.to(z.dtype), z)  # PyTorch's own GELU' (approximate="none")
    db = dz.reshape(-1, h0.shape[-1]).sum(0)
    return dz.to(h0.dtype), db.to(bias.dtype)


# ---- Triton kernels (CUDA) ----------------------------------------------------------------

if triton is not None:
    # Both kernels tile the [rows, cols] matrix into [BLOCK_M, BLOCK_N] blocks, the bias loaded
    # once a block. The backward grid is (row stripes, column blocks): a program walks ITERS
    # blocks down its stripe with a [BLOCK_M, BLOCK_N] fp32 register tile of bias-gradient sums,
    # reduced over rows once at the end into its row of the partial-sum matrix. ITERS is a
    # compile-time constant (a power of two, see `_backward_grid`): the loop also runs under
    # Triton 3.6's CPU interpreter, and few row counts compile distinct kernels.

    @triton.jit
    def _offsets(rows, cols, n_rows, n_cols, BIG: tl.constexpr):
        if BIG:  # more than 2**31 - 1 elements: int64 offsets
            rows = rows.to(tl.int64)
        m = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
        return rows[:, None] * n_cols + cols[None, :], m

    @triton.jit
    def _cdf(z, e, POLY: tl.constexpr):
        """Φ(z) = 0.5 (1 + erf(z / √2)); `e` = exp(-z²/2) (used by POLY only). POLY: Abramowitz &
        Stegun 7.1.26, |error of erf| <= 1.5e-7 (about 2 fp32 ulps near 1; libdevice erff: ~1 ulp),
        branch-free: one division, five FMAs and the exponential the backward needs anyway, where
        libdevice's erff runs two polynomial branches."""
        if POLY:
            t = 1.0 / (1.0 + 0.3275911 * 0.7071067811865476 * tl.abs(z))
            tail = 0.5 * e * (t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                                         + t * 1.061405429)))))
            return tl.where(z >= 0, 1.0 - tail, tail)  # tail = Φ(-|z|)
        return 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))

    @triton.jit
    def _gelu_fwd_kernel(h_ptr, b_ptr, a_ptr, n_rows, n_cols,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BIG: tl.constexpr, POLY: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        b = tl.load(b_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        offs, m = _offsets(rows, cols, n_rows, n_cols, BIG)
        z = tl.load(h_ptr + offs, mask=m, other=0.0).to(tl.float32) + b[None, :]
        if POLY:
            a = z * _cdf(z, tl.exp(-0.5 * z * z), POLY)
        else:
            a = z * _cdf(z, z, POLY)
        tl.store(a_ptr + offs, a.to(a_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _gelu_bwd_kernel(da_ptr, h_ptr, b_ptr, dh_ptr, db_ptr, n_rows, n_cols,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ITERS: tl.constexpr, BIG: tl.constexpr,
                    POLY: tl.constexpr):
        stripe = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < n_cols
        b = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for i in range(ITERS):
            rows = (stripe * ITERS + i) * BLOCK_M + tl.arange(0, BLOCK_M)
            offs, m = _offsets(rows, cols, n_rows, n_cols, BIG)
            z = tl.load(h_ptr + offs, mask=m, other=0.0).to(tl.float32) + b[None, :]
            da = tl.load(da_ptr + offs, mask=m, other=0.0).to(tl.float32)
            e = tl.exp(-0.5 * z * z)
            cdf = _cdf(z, e, POLY)
            pdf = e * 0.3989422804014327
            dz = da * (cdf + z * pdf)  # masked lanes: da = 0, so dz = 0 and the sums skip them
            tl.store(dh_ptr + offs, dz.to(dh_ptr.dtype.element_ty), mask=m)
            acc += dz
        tl.store(db_ptr + stripe * n_cols + cols, tl.sum(acc, axis=0), mask=col_ok)


# Launch shape. fwd/bwd rows x cols a block and warps; bwd_rows_per_stripe: rows a backward
# program walks (ITERS = bwd_rows_per_stripe / bwd_rows, fewer for small inputs). Defaults: the
# fastest of bench/gelu_kernel_check.py's sweep on an H200 at [65536 x 3072] bf16 (session 5,
# one do_bench each): forward 4 x 1024, 4 warps, 0.279 ms (16 x 256: 0.289; the nine shapes
# 0.28-0.41 ms); backward 16 x 256, 8 warps, 256-row stripes, 0.455 ms (4 warps: 0.467; 128- or
# 512-row stripes: 0.52-0.54). Flat across layouts at ~2.7-2.8 TB/s, as Inductor's own GELU
# kernels: the erf (and exp) arithmetic, not the layout, is the limit (the same kernels without
# the GELU arithmetic: forward 0.202, backward 0.333 ms; lead's call, session 5).
# `set_tiles` installs another shape. erf_poly: 1 = bf16/fp16 inputs take the branch-free erf of
# `_cdf` (its error, ~2 fp32 ulps, is far below their rounding: on an H200 at the training shape it
# changed 0.34% of the bf16 outputs by one rounding step, forward 0.231 vs 0.280 ms, backward
# 0.387 vs 0.448, step 82.3 vs 83.4 ms, loss curve within tolerance; docs/benchmarks.md session 5);
# fp32 and fp64 inputs take libdevice's erff. 0 = libdevice's erff for every dtype; 2 = the
# polynomial for every dtype (tests check its math in fp32).
TILES = {"fwd_rows": 4, "fwd_cols": 1024, "fwd_warps": 4,
         "bwd_rows": 16, "bwd_cols": 256, "bwd_warps": 8, "bwd_rows_per_stripe": 256,
         "erf_poly": 1}


def _poly(t: Tensor) -> bool:
    mode = TILES["erf_poly"]
    return mode == 2 or (mode == 1 and t.dtype in (torch.bfloat16, torch.float16))


set_tiles = tiles_setter(TILES)  # set_tiles(**changes) -> the previous launch shape


def _cols_block(n_cols: int, want: int) -> int:
    return min(want, triton.next_power_of_2(n_cols))


def _backward_grid(n_rows: int, block_m: int) -> tuple[int, int]:
    """(ITERS, stripes): ITERS the power of two <= rows_per_stripe / block_m that still leaves
    the rows split over stripes (small inputs: fewer iterations, not idle ones)."""
    iters = max(1, TILES["bwd_rows_per_stripe"] // block_m)
    iters = min(triton.next_power_of_2(iters), triton.next_power_of_2(triton.cdiv(n_rows, block_m)))
    return iters, triton.cdiv(n_rows, iters * block_m)


def _rows(t: Tensor, n_cols: int) -> Tensor:
    return t.reshape(-1, n_cols).contiguous()


def triton_forward(h0: Tensor, bias: Tensor) -> Tensor:
    H = h0.shape[-1]
    h2 = _rows(h0, H)
    N = h2.shape[0]
    a = torch.empty_like(h2)
    bm, bn = TILES["fwd_rows"], _cols_block(H, TILES["fwd_cols"])
    big = (triton.cdiv(N, bm) * bm) * H > MAX_INT32
    _gelu_fwd_kernel[(triton.cdiv(N, bm), triton.cdiv(H, bn))](
        h2, bias.contiguous(), a, N, H, BLOCK_M=bm, BLOCK_N=bn, BIG=big, POLY=_poly(h0),
        num_warps=TILES["fwd_warps"])
    return a.view(h0.shape)


def triton_backward(da: Tensor, h0: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    H = h0.shape[-1]
    h2, da2 = _rows(h0, H), _rows(da, H)
    N = h2.shape[0]
    dh = torch.empty_like(h2)
    bm, bn = TILES["bwd_rows"], _cols_block(H, TILES["bwd_cols"])
    iters, stripes = _backward_grid(N, bm)
    big = stripes * iters * bm * H > MAX_INT32
    db_part = torch.empty((stripes, H), device=h0.device, dtype=torch.float32)
    _gelu_bwd_kernel[(stripes, triton.cdiv(H, bn))](
        da2, h2, bias.contiguous(), dh, db_part, N, H,
        BLOCK_M=bm, BLOCK_N=bn, ITERS=iters, BIG=big, POLY=_poly(h0), num_warps=TILES["bwd_warps"])
    return dh.view(h0.shape), partial_sums.column_sums(db_part.view(stripes, 1, H), (bias.dtype,))[0]


# ---- custom ops: dispatch, fake tensors, autograd ---------------------------------------------

@torch.library.custom_op("vqdna::bias_gelu", mutates_args=())
def _op_forward(h0: Tensor, bias: Tensor) -> Tensor:
    if triton_available(h0.device):
        return triton_forward(h0, bias)
    return reference_forward(h0, bias)


@_op_forward.register_fake
def _(h0, bias):
    return torch.empty_like(h0, memory_format=torch.contiguous_format)


@torch.library.custom_op("vqdna::bias_gelu_backward", mutates_args=())
def _op_backward(da: Tensor, h0: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    if triton_available(h0.device):
        return triton_backward(da, h0, bias)
    return reference_backward(da, h0, bias)


@_op_backward.register_fake
def _(da, h0, bias):
    return torch.empty_like(h0, memory_format=torch.contiguous_format), torch.empty_like(bias)


def _setup_context(ctx, inputs, output):
    h0, bias = inputs
    ctx.save_for_backward(h0, bias)


def _autograd_backward(ctx, da):
    h0, bias = ctx.saved_tensors
    return _op_backward(da, h0, bias)


_op_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def bias_gelu(h0: Tensor, bias: Tensor) -> Tensor:
    """`F.gelu(h0 + bias)` (exact erf GELU, as approximate="none"), `bias` along the last
    dimension; computed in fp32 and stored in h0's dtype; gradients for h0 and bias."""
    if bias.dim() != 1 or bias.shape[0] != h0.shape[-1]:
        raise ValueError(f"bias_gelu: bias of shape {tuple(bias.shape)} for inputs of width {h0.shape[-1]}")
    return _op_forward(h0, bias)
