"""One split of a downstream dataset in memory: sequences (upper-case ACGT str) and labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "dev", "test")


@dataclass
class Split:
    sequences: list[str]
    labels: np.ndarray  # int64 for classification, float64 for regression

    def __len__(self) -> int:
        return len(self.sequences)

    def subset(self, index) -> "Split":
        index = np.asarray(index, dtype=np.int64)
        return Split([self.sequences[i] for i in index], self.labels[index])
