"""Token batches for fine-tuning: tokenize once at full length; training crops each sequence
to at most `train_max_tokens` tokens at a random (seeded) offset, inference runs at full length."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def encode_all(tokenizer, sequences: Sequence[str], batch: int = 256) -> list[np.ndarray]:
    """Token arrays `[T, levels]` as int32 (ids are < 2^31; halves memory for 32k-nt species
    windows); `collate` widens each batch to int64."""
    out: list[np.ndarray] = []
    for i in range(0, len(sequences), batch):
        out.extend(np.asarray(a, dtype=np.int32) for a in tokenizer.encode(list(sequences[i:i + batch])))
    return out


def random_crop(tokens: np.ndarray, max_tokens: int, rng: np.random.Generator) -> np.ndarray:
    if max_tokens <= 0 or len(tokens) <= max_tokens:
        return tokens
    start = int(rng.integers(0, len(tokens) - max_tokens + 1))
    return tokens[start:start + max_tokens]


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Index batches of similar length (less padding at inference); order restored by the caller."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
