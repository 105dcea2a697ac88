"""Shard step 2: fix which windows go into which shard.

The number of shards per split comes from the config (`shards.num_shards`), so the shard
files are known before any genome is read. The plan is small JSON: per genome the window
counts per split. Shard `i` of `k` holds rows `[i*n//k, (i+1)*n//k)` of the split's window
order, which is genome-table order, or a seeded permutation of it (`shards.shuffle`, so each
shard mixes species). Each shard writer recomputes the permutation from the seed, so the plan
stays small at any scale and every shard can be (re)written on its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .prepare import SPLITS, load_split_meta, prep_paths
from .table import GenomeRow

PLAN_FORMAT = "vqdna-shard-plan-v1"


def build_plan(rows: list[GenomeRow], prep_dir: str | Path, shards_cfg: dict) -> dict:
    genomes = []
    totals = {s: 0 for s in SPLITS}
    for row in rows:
        seq_path, index_path = prep_paths(prep_dir, row.accession)
        split, meta = load_split_meta(index_path)
        counts = {s: int((split == i).sum()) for i, s in enumerate(SPLITS)}
        for s in SPLITS:
            totals[s] += counts[s]
        genomes.append({
            "accession": row.accession, "species": row.species, "category": row.category,
            "seq": str(seq_path), "index": str(index_path), "windows": counts,
            "bases": meta["bases"], "records": meta["records"],
        })
    splits = {}
    for s in SPLITS:
        k = int(shards_cfg["num_shards"][s])
        if totals[s] < k:
            raise ConfigError(
                f"shards: split {s!r} gets {totals[s]} windows from these genomes, fewer than "
                f"shards.num_shards.{s} = {k} (window {shards_cfg['window']}, valid_fraction "
                f"{shards_cfg['split']['valid_fraction']}); lower num_shards or change shards.split")
        splits[s] = {"windows": totals[s], "shards": k}
    return {
        "format": PLAN_FORMAT, "window": int(shards_cfg["window"]), "stride": int(shards_cfg["stride"]),
        "shuffle": bool(shards_cfg["shuffle"]),
        "shuffle_seed": int(shards_cfg["split"]["seed"]), "genomes": genomes, "splits": splits,
    }


def shard_names(plan: dict) -> list[tuple[str, int]]:
    return [(s, i) for s in SPLITS for i in range(plan["splits"][s]["shards"])]


def split_order(plan: dict, split: str) -> np.ndarray | None:
    """The split's window permutation, or None for table order."""
    if not plan["shuffle"]:
        return None
    n = plan["splits"][split]["windows"]
    salt = SPLITS.index(split)
    return np.random.default_rng([plan["shuffle_seed"], salt]).permutation(n)


def shard_rows(plan: dict, split: str, index: int, order: np.ndarray | None = None) -> np.ndarray:
    n = plan["splits"][split]["windows"]
    k = plan["splits"][split]["shards"]
    if not 0 <= index < k:
        raise ConfigError(f"shard {split}/{index:05d} is not in the plan ({k} shards)")
    lo, hi = index * n // k, (index + 1) * n // k
    if order is None:
        order = split_order(plan, split)
    return np.arange(lo, hi, dtype=np.int64) if order is None else order[lo:hi]
