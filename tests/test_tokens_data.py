"""Real DNA for the tokens/pretrain tests: lambda phage from ../shared, cut into Arrow shards.

Also imported by the other `test_tokens_*` / `test_pretrain_*` files (helpers below)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa

from vqdna.genomes.shards_io import read_codes, shard_schema

SHARED = Path(__file__).resolve().parents[2] / "shared"
GENOMES = SHARED / "data" / "genomes"


def genome_text(name: str = "NC_001416_lambda_phage.fa.gz") -> str:
    """Concatenated sequence of a gzipped FASTA (upper case, non-ACGT dropped)."""
    with gzip.open(GENOMES / name, "rt") as fh:
        seq = "".join(line.strip() for line in fh if not line.startswith(">"))
    seq = seq.upper()
    return "".join(c for c in seq if c in "ACGT")


def write_shards(root: Path, split: str, window: int, rows_per_shard: int, n_shards: int,
                 genome: str = "NC_001416_lambda_phage.fa.gz", offset: int = 0) -> list[Path]:
    """Non-overlapping windows of a real genome written as `root/split/00000.arrow`, ..."""
    seq = genome_text(genome)
    out = []
    pos = offset
    for s in range(n_shards):
        starts = [pos + i * window for i in range(rows_per_shard)]
        pos = starts[-1] + window
        if pos > len(seq):
            raise ValueError("genome too short for the requested shards")
        table = pa.table(
            {
                "sequence": pa.array([seq[a:a + window].encode() for a in starts], type=pa.binary(window)),
                "accession": ["NC_001416"] * len(starts),
                "species": ["lambda phage"] * len(starts),
                "record_id": ["NC_001416.1"] * len(starts),
                "start": starts,
            },
            schema=shard_schema(window),
        )
        path = root / split / f"{s:05d}.arrow"
        path.parent.mkdir(parents=True, exist_ok=True)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        out.append(path)
    return out


def tiny_token_dir(root: Path, window: int, train_rows: int, train_shards: int, valid_rows: int,
                   valid_offset: int, cfg: dict) -> Path:
    """Real-DNA shards (train + valid) tokenized by a tiny HRQ tokenizer: `root/tokens` holds the
    token files, `root/tok` the tokenizer. `valid_offset` is in windows (valid never overlaps train)."""
    from vqdna.tokens.tokenize import tokenize_split

    write_shards(root / "shards", "train", window=window, rows_per_shard=train_rows, n_shards=train_shards)
    write_shards(root / "shards", "valid", window=window, rows_per_shard=valid_rows, n_shards=1,
                 offset=window * valid_offset)
    tiny_vq_tokenizer("hrq").save_pretrained(root / "tok")
    for split in ("train", "valid"):
        tokenize_split(root / "tok", root / "shards", split, root / "tokens", cfg, name="hrq")
    return root


def tiny_vq_tokenizer(kind: str = "hrq", seed: int = 0):
    """A small untrained VQ/HRQ tokenizer (the real class; random codebooks)."""
    import torch

    from vqdna.tokenizers.model import VQModelConfig, VQVAE
    from vqdna.tokenizers.vq import VQTokenizer

    torch.manual_seed(seed)
    if kind == "hrq":
        cfg = VQModelConfig(kind="hrq", dim=16, stem_dim=16, depth=2, taps=[1, 2], codebook_sizes=[8, 16])
    else:
        cfg = VQModelConfig(kind="vq", dim=16, stem_dim=16, depth=2, taps=[2], codebook_sizes=[16])
    return VQTokenizer(VQVAE(cfg))


def test_written_shards_hold_the_genome(tmp_path):
    paths = write_shards(tmp_path, "train", window=64, rows_per_shard=5, n_shards=2)
    codes = np.concatenate([read_codes(p) for p in paths])
    seq = genome_text()[: 64 * 10]
    assert codes.shape == (10, 64)
    assert "".join("ACGT"[c] for c in codes.reshape(-1)) == seq
