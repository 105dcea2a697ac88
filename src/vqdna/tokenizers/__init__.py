"""Genome tokenizers behind one interface (`base.GenomeTokenizer`).

`load_tokenizer(dir)` reads `config.json` there and returns the right class; the classes
are imported lazily so that loading a k-mer tokenizer does not import torch.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from ..errors import InputError
from .base import GenomeTokenizer

# config.json "kind" -> "module:Class"
REGISTRY: dict[str, str] = {
    "onehot": "vqdna.tokenizers.onehot:OneHotTokenizer",
    "kmer": "vqdna.tokenizers.kmer:KmerTokenizer",
    "bpe": "vqdna.tokenizers.bpe:BPETokenizer",
    "vq": "vqdna.tokenizers.vq:VQTokenizer",
    "hrq": "vqdna.tokenizers.vq:VQTokenizer",
}


def tokenizer_class(kind: str) -> type[GenomeTokenizer]:
    try:
        module, cls = REGISTRY[kind].split(":")
    except KeyError:
        raise KeyError(f"unknown tokenizer kind {kind!r}; known: {sorted(REGISTRY)}") from None
    return getattr(importlib.import_module(module), cls)


def load_tokenizer(path: str | Path, **kwargs) -> GenomeTokenizer:
    path = Path(path)
    cfg_file = path / "config.json"
    try:
        kind = json.loads(cfg_file.read_text())["kind"]
    except FileNotFoundError:
        raise InputError(cfg_file, "no tokenizer here (config.json missing); train it first") from None
    except (json.JSONDecodeError, KeyError) as exc:
        raise InputError(cfg_file, f"not a tokenizer config: {exc}") from None
    return tokenizer_class(kind).from_pretrained(path, **kwargs)


__all__ = ["GenomeTokenizer", "load_tokenizer", "tokenizer_class", "REGISTRY"]
