"""`vqdna prepare-dataset --dataset NAME --out results/datasets/NAME`: fetch (checksummed),
parse, validate and store one downstream dataset as parquet splits + meta.json."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError
from .fetch import fetch_dataset
from .registry import get_spec
from .splits import SPLITS

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset name (a row of the registry, or species_<len>)")
    parser.add_argument("--out", required=True, help="output directory, e.g. results/datasets/emp_H3")


def load_dataset(spec, cfg: dict):
    """Parse + validate one dataset -> ({split: Split}, stats, checksums)."""
    dcfg = cfg["datasets"]
    seed = int(cfg.get("seed", 0))
    if spec.format == "species":
        from .species import build_species
        from .species_genomes import species_genomes

        splits, stats = build_species(spec, {**dcfg["species"], "genomes": species_genomes(cfg)}, seed=seed)
        return splits, stats, {}
    directory, digests = fetch_dataset(spec, dcfg)
    if spec.format == "gue_csv":
        from .gue import load_gue

        splits, stats = load_gue(directory, spec, non_acgt=dcfg["non_acgt"], seed=seed)
    else:
        from .eep import load_eep

        splits, stats = load_eep(directory, spec, dcfg["eep"], non_acgt=dcfg["non_acgt"], seed=seed)
    return splits, stats, digests


def describe(splits, spec) -> dict:
    out = {}
    for name in SPLITS:
        s = splits[name]
        lengths = np.array([len(x) for x in s.sequences])
        info = {"n": len(s), "min_len": int(lengths.min()), "max_len": int(lengths.max())}
        if spec.is_regression:
            info["label_mean"] = float(s.labels.mean())
        else:
            info["label_counts"] = np.bincount(s.labels, minlength=spec.num_labels).tolist()
        out[name] = info
    return out


def run(args, cfg) -> int:
    from ..tracking import start_run
    from .store import write_prepared

    spec = get_spec(cfg, args.dataset)
    # parse and validate before touching the tracking store: a bad file fails fast and alone
    splits, stats, digests = load_dataset(spec, cfg)
    for name in SPLITS:
        if len(splits[name]) == 0:
            raise InputError(spec.source, f"{spec.name}: {name} split is empty")
    summary = describe(splits, spec)
    meta = {
        "dataset": spec.name, "family": spec.family, "task": spec.task, "metric": spec.metric,
        "num_labels": spec.num_labels, "length": spec.length, "format": spec.format,
        "source": spec.source, "sha256": digests, "demo_stand_in": spec.demo_stand_in,
        "description": spec.description, "splits": summary, "loader": stats,
    }
    with start_run(cfg, stage="prepare-dataset", name=f"prepare-dataset/{spec.name}",
                   params={"dataset": spec.name, "format": spec.format, "source": spec.source,
                           "demo_stand_in": spec.demo_stand_in, "non_acgt": cfg["datasets"]["non_acgt"]}) as run:
        write_prepared(args.out, splits, meta)
        run.log_metrics({f"{s}.n": summary[s]["n"] for s in SPLITS})
        run.log_dict(meta, "meta.json")
    log.info("%s: %s", spec.name, {s: summary[s]["n"] for s in SPLITS})
    return 0
