"""BERT masking for code ids: a fixed share of each row's real tokens, replaced 80/10/10.

All levels of a position are masked together (a position is one token; HRQ's levels are
its coarse and fine code). Exactly `round(ratio * n_real)` positions per row, so a batch of
equal-length windows always has the same number of targets (static shapes for compile).
"""

from __future__ import annotations

import torch

from .configuration import VQDNAConfig
from .modeling import IGNORE_INDEX


def mask_tokens(
    input_ids: torch.Tensor,
    config: VQDNAConfig,
    *,
    ratio: float,
    mask_share: float = 0.8,
    random_share: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`input_ids Long[B, T, levels]` (may hold [CLS]/[PAD], never masked) ->
    (`masked_ids`, `labels` with the original ids at masked positions and -100 elsewhere)."""
    B, T, levels = input_ids.shape
    device = input_ids.device
    vocab = torch.tensor(config.vocab_sizes, device=device)
    maskable = input_ids[..., 0] < vocab[0]  # specials sit above the tokenizer ids
    scores = torch.rand(B, T, generator=generator, device=device).masked_fill(~maskable, 2.0)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    n_real = maskable.sum(dim=1)
    k = (ratio * n_real.float()).round().long().clamp(min=1)
    k = torch.minimum(k, n_real)
    masked = (ranks < k[:, None]) & maskable

    choice = torch.rand(B, T, generator=generator, device=device)
    use_mask = masked & (choice < mask_share)
    use_random = masked & (choice >= mask_share) & (choice < mask_share + random_share)
    random_ids = (torch.rand(B, T, levels, generator=generator, device=device) * vocab).long()
    mask_ids = vocab + 1  # [MASK] = vocab_size + 1 at every level

    out = torch.where(use_mask[..., None], mask_ids.expand(B, T, levels), input_ids)
    out = torch.where(use_random[..., None], random_ids, out)
    labels = torch.where(masked[..., None], input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return out, labels


def targets_per_row(n_real: int, ratio: float) -> int:
    """Targets `mask_tokens` picks in a row of `n_real` maskable tokens (the same float32
    arithmetic): with full windows, every row's count, the static K of the training step."""
    n = torch.tensor([int(n_real)])
    k = (ratio * n.float()).round().long().clamp(min=1)
    return int(torch.minimum(k, n)[0])
