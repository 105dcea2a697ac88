"""FP8 matmuls for the encoder's linear layers (`pretrain.precision: fp8`, Hopper and newer).

Dynamic per-tensor scaling, the recipe of torchao's Float8Linear "tensorwise": every matmul of a
linear layer's forward and backward takes float8 operands, each scaled by `fp8_max / amax` of
its own tensor at that step (no history to keep or checkpoint):

    out    = x_e4m3    @ w_e4m3^T      (forward: e4m3, 3 mantissa bits, range 448)
    grad_x = g_e5m2    @ w_e4m3        (gradients: e5m2, 2 mantissa bits, range 57344)
    grad_w = g_e5m2^T  @ x_e4m3

with fp32 accumulation and the output in the activation dtype ("tensorwise"). The "rowwise"
recipe (torchao's "rowwise with high-precision grad_weight") scales every row of an operand on
its own: one scale per token of the activations and gradients (a per-row reduction that fuses
into the kernel producing the row, no extra pass over the tensor), per output feature of the
weight in forward and per input feature in backward, e4m3 throughout; the weight gradient stays
a bf16 product of the saved bf16 activations:

    out    = x_e4m3[row]  @ w_e4m3[row]^T
    grad_x = g_e4m3[row]  @ w_e4m3[col]
    grad_w = g^T @ x      (bf16)
 Biases, LayerNorms, attention,
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


def to_float8_rows(x: torch.Tensor, dtype: torch.dtype, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`to_float8` with one scale per slice along `dim` of a 2-D tensor (dim=1: one per row).
    The inverse scales keep that dim as size 1 (`[M, 1]` for rows, `[1, N]` for columns)."""
    fmax = torch.finfo(dtype).max
    amax = x.detach().abs().amax(dim=dim, keepdim=True).float().clamp(min=_AMAX_FLOOR)
    scale = fmax / amax
    x8 = (x.float() * scale).clamp(-fmax, fmax).to(dtype)
    return x8, scale.reciprocal()


def scaled_mm(a8: torch.Tensor, b8: torch.Tensor, inv_a: torch.Tensor, inv_b: torch.Tensor,
              out_dtype: torch.dtype, fast_accum: bool = False) -> torch.Tensor:
    """`(a8 * inv_a) @ (b8 * inv_b)` for float8 `a8 [M, K]` (row-major) and `b8 [K, N]`
    (column-major, as cuBLASLt wants it), accumulated in fp32, returned in `out_dtype`. Scales:
    scalars (tensorwise) or `inv_a [M, 1]` and `inv_b [1, N]` (rowwise). `fast_accum`: Hopper's
    faster float8 accumulation without periodic promotion to full fp32 (the forward product only,
    as torchao does; gradients keep the exact accumulation); the CPU path always accumulates in fp32."""
    if a8.is_cuda:
        return torch._scaled_mm(a8, b8, scale_a=inv_a, scale_b=inv_b, out_dtype=out_dtype, use_fast_accum=fast_accum)
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
        out = scaled_mm(x8, w8.t(), inv_x, inv_w, x.dtype, fast_accum=True)
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


class _Float8MatmulRowwise(torch.autograd.Function):
    """The rowwise recipe: float8 forward and input gradient, bf16 weight gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        x8, inv_x = to_float8_rows(x2, E4M3, dim=1)           # one scale per token
        w8, inv_w = to_float8_rows(weight, E4M3, dim=1)       # one per output feature
        out = scaled_mm(x8, w8.t(), inv_x, inv_w.reshape(1, -1), x.dtype, fast_accum=True)
        ctx.save_for_backward(x2, weight)
        ctx.x_shape = x.shape
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x2, weight = ctx.saved_tensors
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            g8, inv_g = to_float8_rows(g2, E4M3, dim=1)                  # one scale per token
            w8c, inv_wc = to_float8_rows(weight.to(g2.dtype), E4M3, dim=0)  # one per input feature
            grad_x = scaled_mm(g8, w8c.t().contiguous().t(), inv_g, inv_wc, x2.dtype).view(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            grad_w = (g2.t() @ x2.to(g2.dtype)).to(weight.dtype)
        return grad_x, grad_w


RECIPES = {"tensorwise": _Float8Matmul, "rowwise": _Float8MatmulRowwise}


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               recipe: str = "tensorwise") -> torch.Tensor:
    """`F.linear` with float8 matmuls where the shapes allow (else plain `F.linear`, on any
    device alike, so CPU and GPU compute the same function). The bias is added in the output
    dtype after the product: under torch.compile it fuses into the consumer kernel."""
    if not fp8_supported(x, weight):
        return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))
    if torch.is_autocast_enabled(x.device.type):
        # autocast hands LayerNorm outputs over in fp32: the product comes back in the autocast dtype
        x = x.to(torch.get_autocast_dtype(x.device.type))
    out = RECIPES[recipe].apply(x, weight)
    return out if bias is None else out + bias.to(out.dtype)


class Float8Linear(nn.Linear):
    """An `nn.Linear` whose matmuls run in float8 (same parameters, same state-dict keys)."""

    fp8_recipe = "tensorwise"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp8_linear(x, self.weight, self.bias, self.fp8_recipe)


def convert_to_float8(module: nn.Module, recipe: str = "tensorwise",
                      names=("qkv", "out_proj", "fc1", "fc2")) -> int:
    """Switch the encoder blocks' linear layers (by attribute name) to float8 matmuls in place,
    keeping their parameters; returns how many were switched. Embedding and MLM head stay as
    they are (small products where the casts would cost more than they save)."""
    if recipe not in RECIPES:
        raise ValueError(f"fp8 recipe must be one of {sorted(RECIPES)}, not {recipe!r}")
    count = 0
    for name, child in module.named_modules():
        if type(child) in (nn.Linear, Float8Linear) and name.rsplit(".", 1)[-1] in names and ".layers." in f".{name}":
            child.__class__ = Float8Linear
            child.fp8_recipe = recipe
            count += 1
    return count


def linear(module: nn.Linear, x: torch.Tensor, rows: slice) -> torch.Tensor:
    """`module` applied with only its output rows `rows` (the sparse last block's q vs k/v)."""
    w = module.weight[rows]
    b = None if module.bias is None else module.bias[rows]
    if isinstance(module, Float8Linear):
        return fp8_linear(x, w, b, module.fp8_recipe)
    return F.linear(x, w, b)


def bias_foldable(module: nn.Module) -> bool:
    """Whether a fused op may take `module`'s bias and its product without it: only a plain
    linear layer (or its float8 form). A wrapper around one - peft's LoRA layers above all - adds
    its own terms in `forward`, which a product of `module.weight` alone would silently drop."""
    return type(module) in (nn.Linear, Float8Linear) and module.bias is not None


def linear_without_bias(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`module`'s product without its bias (float8 where the module is), for a caller that adds
    the bias inside a fused op. Only for `bias_foldable` modules."""
    if not bias_foldable(module):
        raise TypeError(f"{type(module).__name__} is not a plain linear layer with a bias: its product without "
                        "the bias is not module.weight @ x (check bias_foldable first)")
    if isinstance(module, Float8Linear):
        return fp8_linear(x, module.weight, None, module.fp8_recipe)
    return F.linear(x, module.weight)
