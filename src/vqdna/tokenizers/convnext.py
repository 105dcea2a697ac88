"""ConvNeXt-1D encoder and decoder of the VQ/HRQ tokenizer (paper §3.3).

No down-sampling anywhere: a window of L nucleotides gives L latent vectors, so the
tokenizer emits exactly one code per nucleotide. Blocks work channels-last (`[B, L, C]`)
so the two MLP layers are plain matrix products over B·L rows; only the depth-wise
convolution transposes to `[B, C, L]`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dwconv_ln import dwconv_layer_norm


class ConvNeXtBlock1d(nn.Module):
    """Depth-wise conv (k=7) -> LayerNorm -> Linear(C, r·C) -> GELU -> Linear(r·C, C), residual.

    `transposed=True` uses a 1D deconvolution for the depth-wise layer (the paper's decoder
    "uses 1D deconvolution layers instead"); with stride 1 it keeps the length.

    The depth-wise layer has two implementations of the same function (same parameters):
    cuDNN/ATen convolution on `[B, C, L]` (two transposes around it), or a sum of k shifted
    channels-last products that torch.compile fuses with the LayerNorm into one memory pass.
    `depthwise_impl`: "auto" (shifted sum while compiling, convolution in eager mode), "conv", "shift",
    or "fused": conv and LayerNorm as one autograd function with a hand-written backward that saves
    no conv output (`dwconv_ln.py`; the `tokenizers.training.dwconv_ln: fused` training path), its
    forward and backward Triton kernels where available (CUDA + Triton); "fused_fwd": the same with
    only the forward a Triton kernel (backward in PyTorch); "fused_torch": both always in PyTorch
    (`dwconv_ln: fused_fwd | fused_torch`, to turn the kernels off).
    """

    # depthwise_impl -> `dwconv_layer_norm` kernel
    FUSED_KERNELS = {"fused": "triton", "fused_fwd": "triton_fwd", "fused_torch": "torch"}

    depthwise_impl = "auto"

    def __init__(self, dim: int, kernel_size: int = 7, mlp_ratio: int = 4,
                 layer_scale_init: float = 1e-6, transposed: bool = False):
        super().__init__()
        conv = nn.ConvTranspose1d if transposed else nn.Conv1d
        self.dwconv = conv(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)
        # ConvNeXt layer scale: each block starts close to the identity
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init))) if layer_scale_init > 0 else None

    def taps(self) -> torch.Tensor:
        """The depth-wise weights as `[k, C]` taps: y[l] = b + Σ_j w[j]·x[l − k//2 + j].

        conv1d is exactly that; the stride-1 transposed conv is the same with the taps reversed."""
        weight = self.dwconv.weight[:, 0, :]
        if isinstance(self.dwconv, nn.ConvTranspose1d):
            weight = weight.flip(-1)
        return weight.t()

    def depthwise(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, C] -> [B, L, C]
        impl = self.depthwise_impl
        if impl == "auto":
            impl = "shift" if torch.compiler.is_compiling() else "conv"
        if impl == "conv":
            return self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        weight = self.taps()
        k = weight.shape[0]
        length = x.shape[1]
        padded = F.pad(x, (0, 0, k // 2, k // 2))
        y = self.dwconv.bias
        for j in range(k):  # k = 7 taps, not a loop over positions
            y = y + padded[:, j:j + length, :] * weight[j]
        return y

    def conv_norm(self, x: torch.Tensor) -> torch.Tensor:
        """LayerNorm(depth-wise conv(x)), the first half of the block."""
        kernel = self.FUSED_KERNELS.get(self.depthwise_impl)
        if kernel is not None:
            return dwconv_layer_norm(x, self.taps(), self.dwconv.bias, self.norm.weight, self.norm.bias,
                                     self.norm.eps, kernel=kernel)
        return self.norm(self.depthwise(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, L, C]
        y = self.fc2(F.gelu(self.fc1(self.conv_norm(x))))
        if self.gamma is not None:
            y = y * self.gamma
        return x + y


class Encoder(nn.Module):
    """One-hot DNA `[B, L]` codes -> latents after the blocks named in `taps` (1-based)."""

    def __init__(self, *, in_channels: int, stem_dim: int, dim: int, depth: int, stem_kernel: int,
                 block_kernel: int, mlp_ratio: int, layer_scale_init: float, taps: list[int]):
        super().__init__()
        self.in_channels = in_channels
        self.stem = nn.Conv1d(in_channels, stem_dim, stem_kernel, padding=stem_kernel // 2)
        self.stem_norm = nn.LayerNorm(stem_dim)
        # stem width (256 in the paper) differs from the block width D (384): a linear bridge
        self.proj = nn.Linear(stem_dim, dim) if stem_dim != dim else nn.Identity()
        self.blocks = nn.ModuleList(
            ConvNeXtBlock1d(dim, block_kernel, mlp_ratio, layer_scale_init) for _ in range(depth)
        )
        if sorted(set(taps)) != list(taps) or taps[-1] != depth or taps[0] < 1:
            raise ValueError(f"quantization taps {taps} must increase and end at the last block ({depth})")
        self.taps = list(taps)
        # a LayerNorm before every quantizer keeps latents on one scale across levels
        self.tap_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in taps)

    def forward(self, codes: torch.Tensor) -> list[torch.Tensor]:
        x = F.one_hot(codes.long(), self.in_channels).to(self.stem.weight.dtype).transpose(1, 2)
        x = F.gelu(self.stem_norm(self.stem(x).transpose(1, 2)))
        x = self.proj(x)
        outs = []
        tap_iter = iter(zip(self.taps, self.tap_norms))
        next_tap, norm = next(tap_iter)
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            if i == next_tap:
                outs.append(norm(x))
                next_tap, norm = next(tap_iter, (None, None))
        return outs


class Decoder(nn.Module):
    """Mirror of the encoder: blocks at width D, a bridge to the stem width, a k=5 deconvolution to 4 logits."""

    def __init__(self, *, out_channels: int, stem_dim: int, dim: int, depth: int, stem_kernel: int,
                 block_kernel: int, mlp_ratio: int, layer_scale_init: float):
        super().__init__()
        self.blocks = nn.ModuleList(
            ConvNeXtBlock1d(dim, block_kernel, mlp_ratio, layer_scale_init, transposed=True) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, stem_dim) if stem_dim != dim else nn.Identity()
        self.head = nn.ConvTranspose1d(stem_dim, out_channels, stem_kernel, padding=stem_kernel // 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # [B, L, D] -> logits [B, L, 4]
        for block in self.blocks:
            z = block(z)
        z = F.gelu(self.proj(self.norm(z)))
        return self.head(z.transpose(1, 2)).transpose(1, 2)
