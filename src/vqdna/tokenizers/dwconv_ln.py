"""Depth-wise convolution (odd k, stride 1, zero padding) followed by LayerNorm, as one autograd
function with a hand-written backward (`tokenizers.training.dwconv_ln: fused | fused_fwd | fused_torch`).

Why: in a ConvNeXt block the conv output `c` only feeds the LayerNorm. Autograd of the two ops
saves `c` (an fp32 `[B, L, D]` tensor per block) for the norm's backward and runs the conv's
backward as separate reductions. Here the forward keeps only the per-position mean and 1/std
(8 bytes per position), and the backward recomputes `c` from the block input, which the
residual connection keeps alive anyway. Under torch.compile the forward is one pass (shifted
sum + norm) and the backward is: recompute `c` + LayerNorm backward (row reductions) + the
parameter-gradient column sums, then the input gradient as a shifted sum of dc with the taps
reversed. Same function as `LayerNorm(Conv1d(x))`: the tests compare values and gradients in
fp32 on the CPU.

Channels-last layout throughout: x `[B, L, D]`, taps `w [k, D]` (w[j] multiplies x[l − k//2 + j]).
Arithmetic is fp32 inside; outputs and gradients take the dtype of their inputs (bf16 weights
and activations stay bf16 between passes).

Kernels (`kernel`): "triton" runs the forward as one hand-written Triton kernel (`dwconv_ln_triton.py`:
reads x once with its halo, writes y, mean and 1/std) and the backward as another
(`dwconv_ln_bwd_triton.py`: recomputes c and dc in a sliding window, writes dx and per-program parameter
gradient partials) where they apply — CUDA tensors in fp32/bf16/fp16 with Triton importable, and for
the backward odd k <= 7 — and the PyTorch code everywhere else (each direction decided on its own);
"triton_fwd" the Triton forward with the PyTorch backward (under torch.compile: Inductor's passes);
"torch" always the PyTorch code. The PyTorch backward (`dwconv_ln_bwd_triton.reference_backward`)
and the kernel compute the same numbers (dc rounded to the activations' dtype in both).
"""

from __future__ import annotations

import torch

from . import dwconv_ln_bwd_triton as bwd
from . import dwconv_ln_triton

KERNELS = ("triton", "triton_fwd", "torch")


class DwConvLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, ln_w, ln_b, eps: float, kernel: str = "triton"):
        forward = dwconv_ln_triton.dwconv_ln_forward if use_triton(x, kernel) else dwconv_ln_triton.reference_forward
        y, mean, rstd = forward(x, None, w, b, ln_w, ln_b, eps, x.dtype)
        ctx.save_for_backward(x, w, b, ln_w, mean, rstd)
        ctx.kernel = kernel
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, b, ln_w, mean, rstd = ctx.saved_tensors
        if ctx.kernel == "triton" and bwd.supported(x, w):
            grads = bwd.dwconv_ln_backward(dy, x, w, b, ln_w, mean, rstd)
        else:
            grads = bwd.reference_backward(dy, x, w, b, ln_w, mean, rstd)
        return (*grads, None, None)


def use_triton(x: torch.Tensor, kernel: str) -> bool:
    """Whether the forward runs the Triton kernel for this input (else the PyTorch code)."""
    return kernel in ("triton", "triton_fwd") and x.dtype in dwconv_ln_triton.TRITON_DTYPES and dwconv_ln_triton.triton_available(x.device)


def dwconv_layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor,
                      eps: float, kernel: str = "triton") -> torch.Tensor:
    """LayerNorm(depth-wise conv(x)) for x `[B, L, D]`, taps `w [k, D]` (k odd), biases `[D]`;
    `kernel` "triton", "triton_fwd" (Triton where available, see the module docstring) or "torch"."""
    if w.shape[0] % 2 != 1:
        raise ValueError(f"depth-wise kernel size must be odd to keep the length, not {w.shape[0]}")
    if kernel not in KERNELS:
        raise ValueError(f"dwconv_ln kernel must be one of {KERNELS}, not {kernel!r}")
    return DwConvLayerNorm.apply(x, w, b, ln_w, ln_b, eps, kernel)
