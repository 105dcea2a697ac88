"""Finishing the per-program partial sums of the fused ops' backward kernels, deterministically.

The backward kernels of the fused ops (add+dropout+LayerNorm, qkv bias + RoPE, fc1 bias + GELU)
sum their weight/bias gradients per persistent program and write one fp32 row per program; the
gradient is the column sum of those rows. No atomics: a fixed summation order, so a step repeats
bitwise. This module finishes them: `column_sums(part, dtypes)` reads a `[programs, K, H]` buffer
(K gradients of width H side by side in one row per program) and returns K separate tensors
(a custom op's outputs must not alias each other, so never views of one result).

Two ways, chosen by `MODE` (the bench's tile sweep times both and installs the faster):
  "torch"  one `sum(0)` over the whole buffer (one reduction launch for all K gradients instead
           of K), then one cast/copy per gradient.
  "triton" one Triton kernel: each program owns a block of columns of one gradient and walks all
           rows in order, writing the result in its output dtype (no separate casts).
Both sum the same fp32 values; they differ from each other only in summation order.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

MODE = "torch"
# columns a program owns (32 fp32 = one 128-byte line per row) and rows a loop iteration loads
BLOCK_N = 32
BLOCK_P = 64

if triton is not None:
    @triton.jit
    def _colsum_kernel(part_ptr, out0_ptr, out1_ptr, out2_ptr, n_rows, n_cols, row_stride,
                       BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr):
        k = tl.program_id(1)
        cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < n_cols
        acc = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
        for r0 in range(0, n_rows, BLOCK_P):
            rows = r0 + tl.arange(0, BLOCK_P)
            m = (rows < n_rows)[:, None] & col_ok[None, :]
            acc += tl.load(part_ptr + rows[:, None] * row_stride + k * n_cols + cols[None, :], mask=m, other=0.0)
        total = tl.sum(acc, axis=0)
        if k == 0:
            tl.store(out0_ptr + cols, total.to(out0_ptr.dtype.element_ty), mask=col_ok)
        elif k == 1:
            tl.store(out1_ptr + cols, total.to(out1_ptr.dtype.element_ty), mask=col_ok)
        else:
            tl.store(out2_ptr + cols, total.to(out2_ptr.dtype.element_ty), mask=col_ok)


def column_sums(part: Tensor, dtypes: tuple[torch.dtype, ...]) -> tuple[Tensor, ...]:
    """`part`: contiguous fp32 `[P, K, H]` (K = len(dtypes) <= 3); returns K tensors `[H]`, the
    column sums of `part[:, k]` in `dtypes[k]`."""
    P, K, H = part.shape
    if K != len(dtypes) or not 1 <= K <= 3:
        raise ValueError(f"column_sums: {K} gradients in the buffer, {len(dtypes)} dtypes")
    if MODE == "triton" and triton is not None and (part.is_cuda or _interpreting()):
        outs = [torch.empty(H, device=part.device, dtype=dt) for dt in dtypes]
        ptrs = outs + [outs[0]] * (3 - K)  # valid pointers, never written
        _colsum_kernel[(triton.cdiv(H, BLOCK_N), K)](part, *ptrs, P, H, K * H, BLOCK_P=BLOCK_P, BLOCK_N=BLOCK_N,
                                                     num_warps=4)
        return tuple(outs)
    total = part.sum(0)
    return tuple(total[k].to(dt) if dt != torch.float32 else total[k].clone() for k, dt in enumerate(dtypes))


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET") == "1"


def set_mode(mode: str) -> str:
    """Install "torch" or "triton"; returns the previous mode."""
    global MODE
    if mode not in ("torch", "triton"):
        raise ValueError(f"partial_sums mode must be 'torch' or 'triton', not {mode!r}")
    old, MODE = MODE, mode
    return old
