"""A small randomly initialised backbone saved like stage 2's output, for tests and `--tiny`
bench runs (never for results: a real run loads results/pretrain/{tok})."""

from __future__ import annotations

from pathlib import Path

TINY_ARCH = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def save_tiny_backbone(out_dir: str | Path, tokenizer, seed: int = 0, **arch) -> Path:
    import torch

    from ..models import VQDNAForMaskedLM

    torch.manual_seed(seed)
    model = VQDNAForMaskedLM.from_tokenizer(tokenizer, **{**TINY_ARCH, **arch})
    model.save_pretrained(out_dir)
    return Path(out_dir)
