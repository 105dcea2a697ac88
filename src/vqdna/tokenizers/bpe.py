"""Byte-pair-encoding baseline in the DNABERT-2 style (Hugging Face `tokenizers`, vocab 4096).

Trained on the same train shards as the learned tokenizers, on whole windows (no
pre-tokenization: DNA has no words). No special tokens in the vocabulary (the backbone
appends [PAD]/[MASK]/[CLS]); ids are 0..vocab_size−1 and `decode` concatenates the pieces,
so the round trip is exact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..atomic import atomic_path, write_json
from ..dna import INVALID, to_codes
from ..errors import InputError
from .base import GenomeTokenizer

TOKENIZER_FILE = "tokenizer.json"


class BPETokenizer(GenomeTokenizer):
    kind = "bpe"

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer
        vocab = self.hf.get_vocab()
        self._pieces = np.empty(len(vocab), dtype=object)
        for piece, i in vocab.items():
            self._pieces[i] = piece

    @classmethod
    def train(cls, sequences: Iterable[str], vocab_size: int, min_frequency: int = 2) -> "BPETokenizer":
        from tokenizers import Tokenizer, models, trainers

        tok = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[],
                                      initial_alphabet=list("ACGT"), show_progress=False)
        tok.train_from_iterator(sequences, trainer=trainer)
        return cls(tok)

    @property
    def levels(self) -> int:
        return 1

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        return (self.hf.get_vocab_size(),)

    @property
    def fixed_rate(self) -> bool:
        return False

    def num_tokens(self, length: int) -> None:
        return None

    def config(self) -> dict:
        return {"kind": self.kind, "vocab_sizes": list(self.vocab_sizes)}

    def encode(self, seqs: Sequence[str | bytes]) -> list[np.ndarray]:
        texts = []
        for i, s in enumerate(seqs):
            text = s.decode("ascii", errors="replace") if isinstance(s, (bytes, bytearray)) else str(s)
            if (to_codes(text) == INVALID).any():
                raise ValueError(f"sequence {i} holds symbols other than A/C/G/T; apply the shard IUPAC policy first")
            texts.append(text.upper())
        return [np.asarray(e.ids, dtype=np.int64)[:, None] for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[np.ndarray]) -> list[str]:
        return ["".join(self._pieces[np.asarray(a, dtype=np.int64).reshape(-1)]) for a in ids]

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / TOKENIZER_FILE) as tmp:
            self.hf.save(str(tmp))
        write_json(path / "config.json", self.config())

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "BPETokenizer":
        from tokenizers import Tokenizer

        path = Path(path)
        cfg = json.loads((path / "config.json").read_text())
        if cfg.get("kind") != cls.kind:
            raise InputError(path / "config.json", "not a BPE tokenizer config")
        try:
            return cls(Tokenizer.from_file(str(path / TOKENIZER_FILE)))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a plain Exception
            raise InputError(path / TOKENIZER_FILE, f"cannot read the BPE model: {exc}") from None
