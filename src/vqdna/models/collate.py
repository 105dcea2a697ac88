"""Special token ids and padding of tokenizer output into model batches."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .configuration import SPECIAL_TOKENS, VQDNAConfig


def special_token_ids(config: VQDNAConfig) -> dict[str, list[int]]:
    """`{"pad": [...], "mask": [...], "cls": [...]}`, one id per level (right after the tokenizer ids)."""
    return {name: [config.special_id(name, l) for l in range(config.levels)] for name in SPECIAL_TOKENS}


def collate(
    token_arrays: Sequence[np.ndarray],
    config: VQDNAConfig,
    max_len: int | None = None,
    add_cls: bool = True,
) -> dict[str, torch.Tensor]:
    """Pad `[T_i, levels]` arrays (from `GenomeTokenizer.encode`) into
    `input_ids Long[B, T, levels]` and `attention_mask Long[B, T]` (1 = real token).

    `max_len` counts the [CLS] token; longer inputs are cut at the end."""
    specials = special_token_ids(config)
    rows = []
    for i, arr in enumerate(token_arrays):
        arr = np.asarray(arr, dtype=np.int64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.shape[1] != config.levels:
            raise ValueError(f"token array {i} has {arr.shape[1]} levels, the model {config.levels}")
        if add_cls:
            arr = np.concatenate([np.asarray(specials["cls"], dtype=np.int64)[None], arr])
        if max_len is not None:
            arr = arr[:max_len]
        rows.append(arr)
    T = max((len(r) for r in rows), default=0)
    input_ids = np.empty((len(rows), T, config.levels), dtype=np.int64)
    input_ids[:] = np.asarray(specials["pad"], dtype=np.int64)
    attention_mask = np.zeros((len(rows), T), dtype=np.int64)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = r
        attention_mask[i, : len(r)] = 1
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
