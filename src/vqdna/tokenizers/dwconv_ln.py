"""Depth-wise convolution (odd k, stride 1, zero padding) followed by LayerNorm, as one autograd
function with a hand-written backward (`tokenizers.training.dwconv_ln: fused`).

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

Forward kernel (`kernel`): "triton" runs the forward as one hand-written Triton kernel
(`dwconv_ln_triton.py`: reads x once with its halo, writes y, mean and 1/std) where it can — CUDA
tensors in fp32/bf16/fp16 with Triton importable — and the PyTorch code below everywhere else;
"torch" always runs the PyTorch code (under torch.compile: Inductor's fused pass). The backward is
the same hand-written one either way (it only needs mean and 1/std).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import dwconv_ln_triton

KERNELS = ("triton", "torch")
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


_up = dwconv_ln_triton._up
_conv = dwconv_ln_triton.shifted_conv


class DwConvLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, ln_w, ln_b, eps: float, kernel: str = "triton"):
        forward = dwconv_ln_triton.dwconv_ln_forward if use_triton(x, kernel) else dwconv_ln_triton.reference_forward
        y, mean, rstd = forward(x, None, w, b, ln_w, ln_b, eps, x.dtype)
        ctx.save_for_backward(x, w, b, ln_w, mean.unsqueeze(-1), rstd.unsqueeze(-1))
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, b, ln_w, mean, rstd = ctx.saved_tensors
        k, length = w.shape[0], x.shape[1]
        wf = _up(w)
        xf = _up(x)
        c = _conv(xf, wf, _up(b))  # recomputed: nothing of size [B, L, D] was saved
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
        dx = _conv(dc, wf.flip(0), torch.zeros((), device=dc.device, dtype=dc.dtype))
        return (dx.to(x.dtype), d_w.to(w.dtype), d_b.to(b.dtype), d_ln_w.to(ln_w.dtype), d_ln_b.to(ln_w.dtype),
                None, None)


def use_triton(x: torch.Tensor, kernel: str) -> bool:
    """Whether the forward runs the Triton kernel for this input (else the PyTorch code)."""
    return kernel == "triton" and x.dtype in _TRITON_DTYPES and dwconv_ln_triton.triton_available(x.device)


def dwconv_layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor,
                      eps: float, kernel: str = "triton") -> torch.Tensor:
    """LayerNorm(depth-wise conv(x)) for x `[B, L, D]`, taps `w [k, D]` (k odd), biases `[D]`;
    `kernel` "triton" (where available, see the module docstring) or "torch"."""
    if w.shape[0] % 2 != 1:
        raise ValueError(f"depth-wise kernel size must be odd to keep the length, not {w.shape[0]}")
    if kernel not in KERNELS:
        raise ValueError(f"dwconv_ln kernel must be one of {KERNELS}, not {kernel!r}")
    return DwConvLayerNorm.apply(x, w, b, ln_w, ln_b, eps, kernel)
