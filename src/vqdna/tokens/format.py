"""Token file layout and metadata (see the package docstring)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

FORMAT = "vqdna-tokens-v1"
# The backbone appends [PAD], [MASK], [CLS] after each level's ids; the file only ever holds
# tokenizer ids and [PAD], but the dtype leaves room for all three.
NUM_SPECIALS = 3


@dataclass
class TokenMeta:
    split: str
    tokenizer: str
    tokenizer_kind: str
    tokenizer_sha256: str
    dtype: str
    levels: int
    vocab_sizes: list[int]
    pad_ids: list[int]
    window_nt: int
    tokens_per_window: int
    fixed_rate: bool
    count: int
    shards: list[str] = field(default_factory=list)
    format: str = FORMAT

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.count, self.tokens_per_window, self.levels)

    def to_dict(self) -> dict:
        return asdict(self)


def token_paths(tokens_dir: str | Path, split: str) -> dict[str, Path]:
    d = Path(tokens_dir)
    return {"bin": d / f"{split}.bin", "lengths": d / f"{split}.lengths.bin", "meta": d / f"{split}.meta.json"}


def id_dtype(vocab_sizes) -> np.dtype:
    return np.dtype(np.uint16) if max(vocab_sizes) + NUM_SPECIALS <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def read_meta(tokens_dir: str | Path, split: str) -> TokenMeta:
    path = token_paths(tokens_dir, split)["meta"]
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, f"no token file for split {split!r}; run `vqdna tokenize` first") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON: {exc}") from None
    if data.get("format") != FORMAT:
        raise InputError(path, f"format {data.get('format')!r} is not {FORMAT!r}")
    try:
        return TokenMeta(**data)
    except TypeError as exc:
        raise InputError(path, f"token metadata does not match {FORMAT}: {exc}") from None


def directory_sha256(path: str | Path) -> str:
    """Checksum of a tokenizer directory: every file's relative name and content, in name order."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()
