"""Resumable streaming of training windows out of the Arrow shards.

One shard is in memory at a time. The order (shards per epoch, rows per shard) is a pure
function of (seed, epoch, shard), so the stream's whole state is three integers
(`epoch`, `shard_pos`, `row_pos`) that a checkpoint stores to resume exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..genomes.shards_io import read_codes


class ShardStream:
    def __init__(self, paths: list[Path], seed: int, shuffle: bool = True):
        if not paths:
            raise ValueError("no shards to stream")
        self.paths = [Path(p) for p in paths]
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.shard_pos = 0
        self.row_pos = 0
        self._loaded: tuple[tuple[int, int], np.ndarray] | None = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "shard_pos": self.shard_pos, "row_pos": self.row_pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.shard_pos, self.row_pos = int(state["epoch"]), int(state["shard_pos"]), int(state["row_pos"])

    def _shard_order(self) -> np.ndarray:
        n = len(self.paths)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n)

    def _rows(self) -> np.ndarray:
        key = (self.epoch, self.shard_pos)
        if self._loaded is None or self._loaded[0] != key:
            shard = int(self._shard_order()[self.shard_pos])
            path = self.paths[shard]
            codes = read_codes(path)
            if codes.size and codes.max() > 3:
                bad = int(np.argwhere(codes > 3)[0, 0])
                raise InputError(path, "window holds symbols other than A/C/G/T (shards must be ACGT only)", record=str(bad))
            if self.shuffle:
                codes = codes[np.random.default_rng([self.seed, self.epoch, shard]).permutation(len(codes))]
            self._loaded = (key, codes)
        return self._loaded[1]

    def next_rows(self, n: int) -> np.ndarray:
        """The next n windows `[n, window]` uint8, crossing shard and epoch borders as needed."""
        parts, need = [], n
        empty_shards = 0
        while need > 0:
            rows = self._rows()
            take = rows[self.row_pos:self.row_pos + need]
            if len(take):
                parts.append(take)
                need -= len(take)
                self.row_pos += len(take)
                empty_shards = 0
            else:
                empty_shards += 1
                if empty_shards > len(self.paths):
                    raise InputError(self.paths[0].parent, "all shards are empty")
            if self.row_pos >= len(rows):
                self.row_pos = 0
                self.shard_pos += 1
                if self.shard_pos >= len(self.paths):
                    self.shard_pos = 0
                    self.epoch += 1
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


def random_crops(windows: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """One random sub-window of `length` from each row (the whole row when it is not longer)."""
    n, width = windows.shape
    if length >= width:
        return windows
    starts = rng.integers(0, width - length + 1, size=n)
    idx = starts[:, None] + np.arange(length)[None, :]
    return np.take_along_axis(windows, idx, axis=1)
