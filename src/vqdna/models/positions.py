"""Position encodings that extrapolate past the pretraining length: RoPE and ALiBi.

Both are functions of relative offsets only, computed for whatever length comes in, so a
model pretrained on 256 tokens runs on 1 kb fine-tuning inputs and 32 kb inference.
"""

from __future__ import annotations

import math

import torch


def rope_tables(length: int, head_dim: int, theta: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin `[length, head_dim]` for rotate-half RoPE (computed in fp32, cast once)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x `[..., d]`; cos/sin `[..., d]` broadcasting against it (e.g. `[T, 1, 1, d]` for
    `x [B, T, 2, heads, d]`)."""
    # tables follow x's dtype (bf16 under autocast) so q, k and v reach SDPA in one dtype
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Press et al. (2021): geometric slopes 2^(-8/n), ..., also for head counts not a power of two."""
    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(length: int, slopes: torch.Tensor, dtype) -> torch.Tensor:
    """Symmetric (bidirectional) ALiBi bias `[heads, T, T]` = -slope * |i - j|."""
    pos = torch.arange(length, device=slopes.device)
    dist = (pos[None, :] - pos[:, None]).abs().to(torch.float32)
    return (-slopes[:, None, None] * dist).to(dtype)
