"""Held-out quality of any tokenizer: reconstruction accuracy, code usage %, perplexity per level."""

from __future__ import annotations

import numpy as np

from ..dna import to_ascii
from .base import GenomeTokenizer


def level_stats(ids: list[np.ndarray], vocab_sizes: tuple[int, ...]) -> list[dict]:
    """Per level: share of the vocabulary used at least once (%) and exp(entropy) of the id distribution."""
    out = []
    for level, size in enumerate(vocab_sizes):
        flat = np.concatenate([a[:, level] for a in ids]) if ids else np.zeros(0, dtype=np.int64)
        counts = np.bincount(flat, minlength=size).astype(np.float64)
        total = counts.sum()
        p = counts[counts > 0] / max(total, 1.0)
        out.append({
            "vocab_size": int(size),
            "usage_pct": float((counts > 0).mean() * 100),
            "perplexity": float(np.exp(-(p * np.log(p)).sum())) if total else 0.0,
            "tokens": int(total),
        })
    return out


def evaluate_tokenizer(tok: GenomeTokenizer, windows: np.ndarray, batch_rows: int = 256) -> dict:
    """Encode -> decode held-out windows `[N, W]` (codes 0..3); per-nucleotide accuracy and level statistics."""
    correct = 0
    total = 0
    all_ids: list[np.ndarray] = []
    encode_codes = getattr(tok, "encode_codes", None)
    for start in range(0, len(windows), batch_rows):
        batch = windows[start:start + batch_rows]
        if encode_codes is not None:  # learned tokenizers: one tensor batch, no string round trip
            import torch

            ids_t = encode_codes(torch.from_numpy(np.ascontiguousarray(batch)))
            recon = tok.decode_codes(ids_t).cpu().numpy()
            ids = list(ids_t.cpu().numpy())
            correct += int((recon == batch).sum())
            total += batch.size
        else:
            seqs = [to_ascii(row) for row in batch]
            ids = tok.encode(seqs)
            for orig, rec in zip(seqs, tok.decode(ids)):
                a = np.frombuffer(orig.encode(), dtype=np.uint8)
                b = np.frombuffer(rec.encode(), dtype=np.uint8)[: len(a)]
                correct += int((a[: len(b)] == b).sum())  # a shorter reconstruction counts its missing bases wrong
                total += len(a)
        all_ids.extend(ids)
    levels = level_stats(all_ids, tok.vocab_sizes)
    n_tokens = sum(len(a) for a in all_ids)
    return {
        "valid_reconstruction_accuracy": correct / max(total, 1),
        "valid_windows": int(len(windows)),
        "valid_nucleotides": int(total),
        "nucleotides_per_token": total / max(n_tokens, 1),
        "levels": levels,
        "usage_pct": [lv["usage_pct"] for lv in levels],
        "perplexity": [lv["perplexity"] for lv in levels],
    }
