"""`vqdna probe`: Table 1's analysis of one tokenizer on one dataset (covid; in the demo its
stand-in), plus the model cost of Table 2.

    vqdna probe --tok hrq --dataset covid --tokenizer-dir results/tokenizers/hrq \
        --pretrain-dir results/pretrain/hrq --dataset-dir results/datasets/covid \
        --out results/probe/hrq/covid.json

Writes: token usage % (share of the vocabulary the dataset's tokens use, all levels and per
level), a linear probe (logistic regression on mean-pooled frozen features, macro F1 on dev
and test), backbone/tokenizer parameters and FLOPs for one `report.probe.flops_length`-nt
sequence, and the pretraining token count when the pretrain stage recorded it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..atomic import write_json
from ..errors import ConfigError, InputError

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--tok", required=True, help="tokenizer name (results/tokenizers/{tok})")
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. covid")
    parser.add_argument("--tokenizer-dir", required=True)
    parser.add_argument("--pretrain-dir", default=None,
                        help="pretrained backbone (results/pretrain/{tok}); needed for features=backbone")
    parser.add_argument("--dataset-dir", required=True, help="prepared dataset (results/datasets/{dataset})")
    parser.add_argument("--features", choices=["backbone", "codebook"], default=None,
                        help="features of this probe; default report.probe.features (the Table 7/8 rule passes report.ablations.probe_features)")
    parser.add_argument("--out", required=True, help="output JSON, e.g. results/probe/hrq/covid.json")


def _device(cfg: dict) -> str:
    want = cfg.get("device", "auto")
    if want == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return want


def pretrain_tokens(pretrain_dir: Path | None, pcfg: dict) -> float | None:
    """Tokens seen in pretraining, from the file/key the pretrain stage writes (report.probe.pretrain_tokens)."""
    from .inputs import lookup, read_json

    if pretrain_dir is None:
        return None
    spec = pcfg["pretrain_tokens"]
    path = pretrain_dir / spec["file"]
    if not path.exists():
        return None
    return lookup(read_json(path), spec["key"])


def probe(tokenizer, splits: dict, pcfg: dict, *, model=None, device: str = "cpu", seed: int = 0) -> dict:
    """The whole measurement on in-memory inputs (what tests call): `splits` maps split name to
    an object with `.sequences` and `.labels`."""
    from .features import backbone_features, codebook_features, linear_probe, model_cost, token_usage

    features = pcfg["features"]
    tokens = {name: tokenizer.encode(split.sequences) for name, split in splits.items()}
    usage_arrays = [a for name in pcfg["usage_splits"] for a in tokens[name]]
    overall, per_level = token_usage(usage_arrays, tokenizer.vocab_sizes)

    if features == "backbone":
        if model is None:
            raise ConfigError("report.probe.features=backbone needs a pretrained backbone (--pretrain-dir)")
        feats = {name: backbone_features(model, arrs, batch_size=pcfg["batch_size"],
                                         max_tokens=pcfg["max_tokens"], device=device)
                 for name, arrs in tokens.items()}
    else:
        vectors = tokenizer.code_vectors()
        if vectors is None:
            raise ConfigError(f"report.probe.features=codebook: tokenizer {tokenizer.kind!r} has no code vectors")
        feats = {name: codebook_features(vectors, arrs) for name, arrs in tokens.items()}

    labels = {name: np.asarray(split.labels) for name, split in splits.items()}
    evals = {name: (feats[name], labels[name]) for name in ("dev", "test") if name in feats}
    lin = linear_probe(feats["train"], labels["train"], evals, C=pcfg["C"], max_iter=pcfg["max_iter"], seed=seed)
    result = {
        "token_usage_pct": overall,
        "token_usage_pct_per_level": per_level,
        "vocab_sizes": list(tokenizer.vocab_sizes),
        "usage_splits": list(pcfg["usage_splits"]),
        "features": features,
        "linear_probe": lin,
    }
    if model is not None:
        result["model"] = model_cost(model, tokenizer, length=pcfg["flops_length"], seed=seed)
    return result


def run(args, cfg) -> int:
    from ..datasets.store import read_meta, read_split
    from ..seeding import seed_everything
    from ..tokenizers import load_tokenizer
    from ..tracking import start_run

    pcfg = dict(cfg["report"]["probe"])
    if args.features:
        pcfg["features"] = args.features
    seed = int(cfg.get("seed", 0))
    seed_everything(seed)
    if pcfg.get("cpu_threads"):
        import torch

        torch.set_num_threads(int(pcfg["cpu_threads"]))
    device = _device(cfg)

    meta = read_meta(args.dataset_dir)
    if meta.get("task") == "regression":
        raise InputError(args.dataset_dir, f"{args.dataset} is a regression dataset; the linear probe needs classes")
    splits = {name: read_split(args.dataset_dir, name) for name in ("train", "dev", "test")}
    tokenizer = load_tokenizer(args.tokenizer_dir)
    pretrain_dir = Path(args.pretrain_dir) if args.pretrain_dir else None
    model = None
    if pretrain_dir is not None:
        from ..models import VQDNAModel

        model = VQDNAModel.from_pretrained(pretrain_dir)

    params = {"tokenizer": args.tok, "dataset": args.dataset, **{f"probe.{k}": v for k, v in pcfg.items()}}
    with start_run(cfg, stage="probe", name=f"probe/{args.tok}/{args.dataset}", params=params) as mlrun:
        result = probe(tokenizer, splits, pcfg, model=model, device=device, seed=seed)
        result.update({"tokenizer": args.tok, "dataset": args.dataset,
                       "demo_stand_in": bool(meta.get("demo_stand_in", False)),
                       "num_labels": meta.get("num_labels")})
        if model is not None:
            result["model"]["pretrain_tokens"] = pretrain_tokens(pretrain_dir, pcfg)
        write_json(args.out, result)
        mlrun.log_metrics({"token_usage_pct": result["token_usage_pct"],
                           **{f"linear_probe.{k}": v for k, v in result["linear_probe"].items()},
                           **{f"model.{k}": v for k, v in result.get("model", {}).items() if v is not None}})
        mlrun.log_artifact(args.out)
    log.info("probe %s/%s: usage %.1f%%, linear probe test F1 %.3f", args.tok, args.dataset,
             result["token_usage_pct"], result["linear_probe"].get("test_f1_macro", float("nan")))
    return 0
