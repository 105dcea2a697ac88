"""Single-nucleotide tokenizer: one token per base, vocabulary A,C,G,T (the 'one-hot' baseline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..dna import INVALID, to_ascii, to_codes
from .base import GenomeTokenizer


class OneHotTokenizer(GenomeTokenizer):
    kind = "onehot"

    @property
    def levels(self) -> int:
        return 1

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        return (4,)

    def encode(self, seqs: Sequence[str | bytes]) -> list[np.ndarray]:
        out = []
        for i, s in enumerate(seqs):
            codes = to_codes(s)
            if (codes == INVALID).any():
                raise ValueError(f"sequence {i} holds symbols other than A/C/G/T; apply the shard IUPAC policy first")
            out.append(codes.astype(np.int64)[:, None])
        return out

    def decode(self, ids: Sequence[np.ndarray]) -> list[str]:
        return [to_ascii(np.asarray(a).reshape(-1)) for a in ids]

    def save_pretrained(self, path: str | Path) -> None:
        self._write_config(Path(path))

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "OneHotTokenizer":
        cfg = json.loads((Path(path) / "config.json").read_text())
        assert cfg["kind"] == cls.kind, cfg
        return cls()
