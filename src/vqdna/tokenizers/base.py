"""The interface every genome tokenizer implements (learned VQ/HRQ and the baselines).

Ids are per level: `encode` returns, for each input sequence, an int array of shape
`[T, levels]` with values in `0..vocab_sizes[level]-1`. Special tokens ([PAD], [MASK],
[CLS]) are not part of a tokenizer's vocabulary: the backbone adds them after the last id
of each level, so a learned codebook stays exactly the paper's K codes.
"""

from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np


class GenomeTokenizer(abc.ABC):
    kind: str = ""

    @property
    @abc.abstractmethod
    def levels(self) -> int:
        """Code ids per token (2 for HRQ, 1 otherwise)."""

    @property
    @abc.abstractmethod
    def vocab_sizes(self) -> tuple[int, ...]:
        """Vocabulary size of each level."""

    @property
    def fixed_rate(self) -> bool:
        """True when a window of L nucleotides always gives the same number of tokens."""
        return True

    def num_tokens(self, length: int) -> int | None:
        """Tokens for a sequence of `length` nt (None when it depends on content, e.g. BPE)."""
        return length

    @abc.abstractmethod
    def encode(self, seqs: Sequence[str | bytes]) -> list[np.ndarray]:
        """Sequences -> list of int64 arrays `[T_i, levels]`."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[np.ndarray]) -> list[str]:
        """Inverse of `encode` (exact for the baselines, a reconstruction for VQ/HRQ)."""

    def code_vectors(self) -> list[Any] | None:
        """Per level, the `[V, D]` tensor of learned code vectors; None for hand-made vocabularies."""
        return None

    def config(self) -> dict:
        return {"kind": self.kind}

    @abc.abstractmethod
    def save_pretrained(self, path: str | Path) -> None:
        ...

    @classmethod
    @abc.abstractmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "GenomeTokenizer":
        ...

    def _write_config(self, path: Path, extra: dict | None = None) -> None:
        path.mkdir(parents=True, exist_ok=True)
        cfg = self.config() | (extra or {})
        (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
