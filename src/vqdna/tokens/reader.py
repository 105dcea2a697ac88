"""`TokenFile`: random windows out of a token split, read through a memmap (never loaded whole)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .format import TokenMeta, read_meta, token_paths


class TokenFile:
    """One split of one tokenizer: `[count, tokens_per_window, levels]` ids plus the metadata."""

    def __init__(self, tokens_dir: str | Path, split: str):
        self.meta: TokenMeta = read_meta(tokens_dir, split)
        paths = token_paths(tokens_dir, split)
        dtype = np.dtype(self.meta.dtype)
        expected = int(np.prod(self.meta.shape)) * dtype.itemsize
        size = paths["bin"].stat().st_size if paths["bin"].exists() else -1
        if size != expected:
            raise InputError(paths["bin"], f"{size} bytes, expected {expected} for shape {self.meta.shape} {dtype} "
                             "(missing or truncated; run `vqdna tokenize` again)")
        self.ids = np.memmap(paths["bin"], dtype=dtype, mode="r", shape=self.meta.shape)
        if self.meta.fixed_rate:
            self.lengths = None
        else:
            self.lengths = np.memmap(paths["lengths"], dtype=np.uint32, mode="r", shape=(self.meta.count,))

    def __len__(self) -> int:
        return self.meta.count

    @property
    def levels(self) -> int:
        return self.meta.levels

    def window(self, i: int) -> np.ndarray:
        """Window `i` as int64 `[T_i, levels]` (only its real tokens)."""
        n = self.meta.tokens_per_window if self.lengths is None else int(self.lengths[i])
        return np.asarray(self.ids[i, :n], dtype=np.int64)

    def row_lengths(self, rows: np.ndarray) -> np.ndarray:
        if self.lengths is None:
            return np.full(len(rows), self.meta.tokens_per_window, dtype=np.int64)
        return np.asarray(self.lengths[rows], dtype=np.int64)

    def sample(self, rng: np.random.Generator, batch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """`batch` random crops of at most `length` tokens: ids int64 `[batch, length', levels]` and
        the real length of each row (rows shorter than `length` are padded with [PAD]).

        `length' = min(length, tokens_per_window)`. Only the rows asked for are read."""
        length = min(length, self.meta.tokens_per_window)
        rows = rng.integers(0, self.meta.count, size=batch)
        real = self.row_lengths(rows)
        offsets = (rng.random(batch) * (np.maximum(real - length, 0) + 1)).astype(np.int64)
        return self._gather(rows, offsets, length), np.minimum(real, length)

    def sequential(self, start: int, batch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows `start..start+batch-1` from their first token (evaluation: same windows every time)."""
        length = min(length, self.meta.tokens_per_window)
        rows = np.arange(start, min(start + batch, self.meta.count))
        real = self.row_lengths(rows)
        return self._gather(rows, np.zeros(len(rows), dtype=np.int64), length), np.minimum(real, length)

    def _gather(self, rows: np.ndarray, offsets: np.ndarray, length: int) -> np.ndarray:
        # Visit rows in file order (sequential page reads), then restore the sampled order.
        order = np.argsort(rows, kind="stable")
        cols = offsets[order, None] + np.arange(length)[None, :]
        picked = self.ids[rows[order, None], cols]
        out = np.empty_like(picked, dtype=np.int64)
        out[order] = picked
        return out
