"""`vqdna train-tokenizer --name <tok>`: train one tokenizer of `tokenizers.defs` into `results/tokenizers/<tok>/`.

Every kind writes the same layout: `config.json` (with `kind`), its weights/vocabulary
(`model.safetensors` for vq/hrq, `tokenizer.json` for bpe, nothing for kmer/onehot) and
`metrics.json` (held-out reconstruction accuracy, code usage % and perplexity per level).
vq/hrq train under torchrun as well (DDP); only rank 0 logs and writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_dir, write_json
from ..errors import ConfigError

log = logging.getLogger(__name__)

MODEL_KINDS = ("vq", "hrq")


def add_arguments(parser) -> None:
    parser.add_argument("--name", required=True, help="tokenizer name, a key of tokenizers.defs (e.g. vq, hrq, kmer6)")
    parser.add_argument("--shards", default="results/shards", help="shard directory (holds train/ and valid/)")
    parser.add_argument("--out", default=None, help="output directory (default results/tokenizers/<name>)")
    parser.add_argument("--work-dir", default=None,
                        help="checkpoint directory for resuming (default <out>.ckpt next to the output)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice); Snakemake passes the job's threads")


def definition(cfg: dict, name: str) -> dict:
    defs = cfg.get("tokenizers", {}).get("defs", {})
    if name not in defs:
        raise ConfigError(f"tokenizers.defs has no tokenizer {name!r}; defined: {sorted(defs)}")
    return dict(defs[name])


def training_settings(cfg: dict, definition_: dict) -> dict:
    """The `tokenizers.training` block with the definition's own `training:` overrides on top."""
    base = cfg["tokenizers"]["training"]
    overrides = definition_.get("training", {})
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ConfigError(f"tokenizers.defs.*.training: unknown keys {unknown}; known: {sorted(base)}")
    return {**base, **overrides}


def model_config(definition_: dict):
    from .model import VQModelConfig

    d = {k: v for k, v in definition_.items() if k != "training"}
    try:
        return VQModelConfig.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"tokenizer definition {definition_}: {exc}") from None


def build_baseline(kind: str, d: dict, shards_dir: Path, seed: int):
    """A baseline tokenizer (kmer/onehot built, bpe trained on the train shards)."""
    if kind == "kmer":
        from .kmer import KmerTokenizer

        return KmerTokenizer(k=d.get("k", 6), overlap=d.get("overlap", False))
    if kind == "onehot":
        from .onehot import OneHotTokenizer

        return OneHotTokenizer()
    if kind == "bpe":
        from .bpe import BPETokenizer

        return BPETokenizer.train(_train_texts(shards_dir, d.get("train_windows"), seed),
                                  vocab_size=d.get("vocab_size", 4096), min_frequency=d.get("min_frequency", 2))
    raise ConfigError(f"unknown tokenizer kind {kind!r}")


def _train_texts(shards_dir: Path, max_windows: int | None, seed: int):
    """Train windows as ASCII strings, at most `max_windows` (shards in a seeded order)."""
    from ..genomes.shards_io import list_shards
    from .data import ShardStream

    paths = list_shards(shards_dir, "train")
    stream = ShardStream(paths, seed=seed)
    total = sum(_shard_rows(p) for p in paths)
    n = total if not max_windows else min(total, int(max_windows))
    lut = np.frombuffer(b"ACGT", dtype=np.uint8)
    done = 0
    while done < n:
        rows = stream.next_rows(min(4096, n - done))
        done += len(rows)
        for row in lut[rows]:
            yield row.tobytes().decode("ascii")


def _shard_rows(path: Path) -> int:
    import pyarrow as pa

    with pa.memory_map(str(path), "r") as src:
        reader = pa.ipc.open_file(src)
        return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))


def run(args, cfg: dict) -> int:
    from ..tracking import start_run

    name = args.name
    d = definition(cfg, name)
    if args.threads:
        import torch

        # spin-waiting threads beyond the job's share of cores slow small models down many times
        torch.set_num_threads(max(1, args.threads // int(os.environ.get("WORLD_SIZE", "1"))))
    kind = d.get("kind")
    shards_dir = Path(args.shards)
    out_dir = Path(args.out or Path("results/tokenizers") / name)
    work_dir = Path(args.work_dir) if args.work_dir else out_dir.with_name(out_dir.name + ".ckpt")
    settings_dict = training_settings(cfg, d)
    seed = int(cfg.get("seed", 0))
    is_main = int(os.environ.get("RANK", "0")) == 0
    if kind not in MODEL_KINDS and not is_main:
        return 0  # under torchrun only rank 0 builds a baseline (the others would race on the output dir)
    params = {"name": name, "definition": {k: v for k, v in d.items() if k != "training"},
              "shards": str(shards_dir), "out": str(out_dir), "seed": seed}
    if kind in MODEL_KINDS:
        params["training"] = settings_dict
    ctx = (start_run(cfg, stage="train-tokenizer", name=f"train-tokenizer/{name}", params=params,
                     tags={"tokenizer": name, "kind": kind})
           if is_main else contextlib.nullcontext())
    with ctx as mlrun:
        if kind in MODEL_KINDS:
            from .model import VQVAE
            from .trainer import TrainSettings, train_vq_tokenizer

            mcfg = model_config(d)
            try:
                settings = TrainSettings.from_dict(settings_dict)
            except (KeyError, TypeError) as exc:
                raise ConfigError(f"tokenizers.training: {exc}") from None
            if mlrun is not None:
                mlrun.log_params({"parameters": VQVAE(mcfg).num_parameters()})
            metrics = train_vq_tokenizer(
                mcfg, settings, shards_dir, out_dir, work_dir=work_dir, seed=seed, device=cfg.get("device", "auto"),
                log_metrics=(lambda m, step: mlrun.log_metrics(m, step=step)) if mlrun is not None else None,
                progress=not args.no_progress,
            )
        else:
            from .evaluate import evaluate_tokenizer
            from .trainer import TrainSettings, valid_windows

            tok = build_baseline(kind, d, shards_dir, seed)
            vs = TrainSettings.from_dict(settings_dict)
            metrics = {"kind": kind, **evaluate_tokenizer(tok, valid_windows(shards_dir, vs), vs.eval_batch_rows)}
            with atomic_dir(out_dir) as tmp:
                tok.save_pretrained(tmp)
                write_json(Path(tmp) / "metrics.json", metrics)
        if mlrun is not None and metrics:
            summary = {"valid/reconstruction_accuracy": metrics["valid_reconstruction_accuracy"],
                       "valid/nucleotides_per_token": metrics["nucleotides_per_token"]}
            for level, lv in enumerate(metrics["levels"]):
                summary[f"valid/usage_pct_l{level}"] = lv["usage_pct"]
                summary[f"valid/perplexity_l{level}"] = lv["perplexity"]
            mlrun.log_metrics(summary, step=metrics.get("steps", 0))
            mlrun.log_artifact(out_dir / "config.json")
            mlrun.log_artifact(out_dir / "metrics.json")
        if metrics:
            log.info("%s: valid reconstruction %.4f, usage %s %%, perplexity %s", name,
                     metrics["valid_reconstruction_accuracy"], [round(u, 1) for u in metrics["usage_pct"]],
                     [round(p, 1) for p in metrics["perplexity"]])
    return 0
