"""FP8 matmuls for the encoder's linear layers (`pretrain.precision: fp8`, Hopper and newer).

Dynamic per-tensor scaling, the recipe of torchao's Float8Linear "tensorwise": every matmul of a
linear layer's forward and backward takes float8 operands, each scaled by `fp8_max / amax` of
its own tensor at that step (no history to keep or checkpoint):

    out    = x_e4m3    @ w_e4m3^T      (forward: e4m3, 3 mantissa bits, range 448)
    grad_x = g_e5m2    @ w_e4m3        (gradients: e5m2, 2 mantissa bits, range 57344)
    grad_w = g_e5m2^T  @ x_e4m3

with fp32 accumulation and the output in the activation dtype. Biases, LayerNorms, attention,
the embedding and the MLM head stay in bf16/fp32. Under torch.compile the amax reductions and
casts fuse into the neighbouring element-wise kernels (LayerNorm, GELU, dropout).

On CUDA the products run in `torch._scaled_mm`; elsewhere the same function is computed by
dequantising the float8 operands to fp32 (products of float8 values are exact in fp32), so CPU
tests exercise the scaling, casting and layout logic of the GPU path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
# cuBLASLt's float8 kernels need every matrix dimension a multiple of 16.
_ALIGN = 16
# An all-zero tensor has amax 0: keep its scale finite.
_AMAX_FLOOR = 1e-12


def to_float8(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """`x` scaled so that its largest magnitude lands on the float8 format's maximum, then cast.
    Returns the float8 tensor and the fp32 inverse scale (what the product is multiplied by)."""
    fmax = torch.finfo(dtype).max
    amax = x.detach().abs().amax().float().clamp(min=_AMAX_FLOOR)
    scale = fmax / amax
    x8 = (x.float() * scale).clamp(-fmax, fmax).to(dtype)
    return x8, scale.reciprocal()


def scaled_mm(a8: torch.Tensor, b8: torch.Tensor, inv_a: torch.Tensor, inv_b: torch.Tensor,
              out_dtype: torch.dtype) -> torch.Tensor:
    """`(a8 * inv_a) @ (b8 * inv_b)` for float8 `a8 [M, K]` (row-major) and `b8 [K, N]`
    (column-major, as cuBLASLt wants it), accumulated in fp32, returned in `out_dtype`."""
    if a8.is_cuda:
        return torch._scaled_mm(a8, b8, scale_a=inv_a, scale_b=inv_b, out_dtype=out_dtype)
    return ((a8.float() @ b8.float()) * (inv_a * inv_b)).to(out_dtype)


def fp8_supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Shapes the float8 kernels take: K, N and the token count all multiples of 16 (the token
    count is the inner dimension of the weight-gradient product)."""
    n, k = weight.shape
    m = x.numel() // max(x.shape[-1], 1)
    return k % _ALIGN == 0 and n % _ALIGN == 0 and m % _ALIGN == 0 and m > 0


class _Float8Matmul(torch.autograd.Function):
    """`x [..., K] @ weight[N, K]^T` with float8 operands in forward and backward (no bias)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        x8, inv_x = to_float8(x2, E4M3)
        w8, inv_w = to_float8(weight, E4M3)
        out = scaled_mm(x8, w8.t(), inv_x, inv_w, x.dtype)
        # float8 copies are what backward needs: half the bytes of bf16 activations
        ctx.save_for_backward(x8, inv_x, w8, inv_w)
        ctx.x_shape, ctx.x_dtype, ctx.w_dtype = x.shape, x.dtype, weight.dtype
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x8, inv_x, w8, inv_w = ctx.saved_tensors
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        g8, inv_g = to_float8(g2, E5M2)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            # [M, N] @ [N, K]: the weight as a column-major [N, K]
            grad_x = scaled_mm(g8, w8.t().contiguous().t(), inv_g, inv_w, ctx.x_dtype).view(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            # [N, M] @ [M, K]: gradient transposed row-major, activations column-major
            grad_w = scaled_mm(g8.t().contiguous(), x8.t().contiguous().t(), inv_g, inv_x, ctx.w_dtype)
        return grad_x, grad_w


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear` with float8 matmuls where the shapes allow (else plain `F.linear`, on any
    device alike, so CPU and GPU compute the same function). The bias is added in the output
    dtype after the product: under torch.compile it fuses into the consumer kernel."""
    if not fp8_supported(x, weight):
        return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))
    if torch.is_autocast_enabled(x.device.type):
        # autocast hands LayerNorm outputs over in fp32: the product comes back in the autocast dtype
        x = x.to(torch.get_autocast_dtype(x.device.type))
    out = _Float8Matmul.apply(x, weight)
    return out if bias is None else out + bias.to(out.dtype)


class Float8Linear(nn.Linear):
    """An `nn.Linear` whose matmuls run in float8 (same parameters, same state-dict keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp8_linear(x, self.weight, self.bias)


def convert_to_float8(module: nn.Module, names=("qkv", "out_proj", "fc1", "fc2")) -> int:
    """Switch the encoder blocks' linear layers (by attribute name) to float8 matmuls in place,
    keeping their parameters; returns how many were switched. Embedding and MLM head stay as
    they are (small products where the casts would cost more than they save)."""
    count = 0
    for name, child in module.named_modules():
        if type(child) is nn.Linear and name.rsplit(".", 1)[-1] in names and ".layers." in f".{name}":
            child.__class__ = Float8Linear
            count += 1
    return count


def linear(module: nn.Linear, x: torch.Tensor, rows: slice) -> torch.Tensor:
    """`module` applied with only its output rows `rows` (the sparse last block's q vs k/v)."""
    w = module.weight[rows]
    b = None if module.bias is None else module.bias[rows]
    if isinstance(module, Float8Linear):
        return fp8_linear(x, w, b)
    return F.linear(x, w, b)
