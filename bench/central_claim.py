#!/usr/bin/env python
"""The paper's central claim at small scale: vq vs hrq vs bpe, equal compute, real DNA, real labels.

One chain per tokenizer, every stage through the project's own code:
  stage 1  `vqdna.tokenizers.trainer.train_vq_tokenizer` (vq, hrq; GPU) /
           `vqdna.tokenizers.train.build_baseline` (bpe; CPU), `evaluate_tokenizer` on the valid split
  tokens   `vqdna.tokens.tokenize.tokenize_split` (train + valid shards)
  stage 2  `vqdna.models.pretrain.pretrain` (MLM; no MLflow: `track=False`)
  stage 3  `vqdna.finetune.run.finetune_once` per (task, grid point, seed), `grid.select_best` on dev,
           metrics from `vqdna.finetune.metrics`

    # 1. here (CPU; needs biopython): shards + task files + the validated config -> a git-ignored folder
    python bench/central_claim.py prepare --out bench_data/central_claim
    # 2. on the device (two GPUs: vq and hrq side by side, bpe in the gaps; the folder carried along)
    PYTHONPATH=src python3 bench/central_claim.py run --data bench_data/central_claim --out $OUT
    # smoke test on CPU (tests/test_bench_central_claim.py): both steps at toy size
    python bench/central_claim.py prepare --tiny --out /tmp/cc && \
        python bench/central_claim.py run --data /tmp/cc --out /tmp/cc-out --device cpu

Data (all real): the pretraining corpus is the Drosophila dm3 2 kb-upstream set WITHOUT the
chromosome arms chr2L and chr3L (dev and test arms of task 1), plus human chr1 (first 240 kb),
phage lambda and the Y. pestis plasmid; the Arabidopsis chloroplast (task 2) is left out whole.
So no dev/test sequence of either task was seen by a tokenizer or a backbone.
  task 1 `promoter_300`: last 300 nt before a dm3 TSS (1) vs the distal 300 nt at -2000 (0);
         train = other arms, dev = chr2L, test = chr3L (the demo stand-in's construction, bench size).
  task 2 `cp_coding_200`: 200-nt chloroplast windows, >= 80% inside CDS exons (1) vs no CDS base
         (0); contiguous regions: dev 0-15 %, test 15-30 %, train the rest, of the genome without
         inverted repeat B (it copies IR A); classes balanced per split.

Equal compute: one backbone size; the same optimizer steps and nucleotides per batch in stage 2
(every sample is one whole 512-nt window for every tokenizer: bpe's ~100 tokens a window are
padded to its longest window, vq/hrq see 512 tokens); the same stage-1 budget for vq and hrq;
the same fine-tune grid, seeds and selection (dev only) for all three.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

TOKENIZERS = ("vq", "hrq", "bpe")
TASKS = ("promoter_300", "cp_coding_200")
HOLDOUT_ARMS = {"chr2L": "dev", "chr3L": "test"}  # and their Het parts: never in pretraining
GENOMES = ("dm3_upstream2000.fa.gz", "NC_001416_lambda_phage.fa.gz", "NC_005816_yersinia_pestis_plasmid.fna.gz",
           "human_GRCh37_chr1_first240kb.fasta.gz", "NC_000932_arabidopsis_chloroplast.gb.gz")

# ---- budgets -----------------------------------------------------------------------------------
# `full` = the device run (two H200s, ~450 s in all); `tiny` = the CPU smoke test.
BUDGETS = {
    "full": {
        "tokenizer_model": {"dim": 256, "stem_dim": 256, "depth": 6},
        "tokenizer_training": {"batch_size": 512, "max_steps": 400, "warmup_steps": 40, "seq_len_warmup": 128,
                               "seq_len": 256, "lr": 1.0e-3, "min_lr": 1.0e-5, "valid_windows": 2048,
                               "restart_every": 100, "log_every": 50, "checkpoint_every": 0, "eval_batch_rows": 256},
        "bpe": {"vocab_size": 4096, "min_frequency": 2, "train_windows": 20000},
        "backbone": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 6, "intermediate_size": 1536},
        "pretrain": {"steps": 1200, "batch_size": 128, "micro_batch_size": 128, "lr": 1.0e-3, "min_lr": 1.0e-5,
                     "warmup_steps": 100, "log_every": 100, "eval_batches": 8, "checkpoint_every": 100000},
        "tokens_batch_nt": 1 << 20,
        "finetune": {"grid": {"lr": [3.0e-4, 1.0e-3], "lora_dropout": [0.05], "epochs": [3]}, "seeds": [0, 1, 2],
                     "batch_size": 32, "head_hidden": 256, "eval_batch_size": 256},
        "tasks": {"promoter_300": {"train": 6000, "dev": 1000, "test": 2000},
                  "cp_coding_200": {"stride": 25}},
        "shards": {"train": 8, "valid": 1},
        "valid_fraction": 0.02,
        "dm3_records_per_arm": None,
    },
    "tiny": {
        "tokenizer_model": {"dim": 16, "stem_dim": 16, "depth": 2},
        "tokenizer_training": {"batch_size": 16, "max_steps": 6, "warmup_steps": 2, "seq_len_warmup": 32,
                               "seq_len": 64, "lr": 3.0e-3, "min_lr": 1.0e-4, "valid_windows": 8,
                               "restart_every": 0, "log_every": 3, "checkpoint_every": 0, "eval_batch_rows": 32},
        "bpe": {"vocab_size": 64, "min_frequency": 2, "train_windows": 100},
        "backbone": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
        "pretrain": {"steps": 4, "batch_size": 8, "micro_batch_size": 8, "lr": 1.0e-3, "min_lr": 1.0e-5,
                     "warmup_steps": 1, "log_every": 2, "eval_batches": 1, "checkpoint_every": 100000},
        "tokens_batch_nt": 1 << 14,
        "finetune": {"grid": {"lr": [1.0e-3, 3.0e-3], "lora_dropout": [0.0], "epochs": [1]}, "seeds": [0],
                     "batch_size": 16, "head_hidden": 16, "eval_batch_size": 64},
        "tasks": {"promoter_300": {"train": 8, "dev": 4, "test": 4},
                  "cp_coding_200": {"stride": 1500}},
        "shards": {"train": 2, "valid": 1},
        "valid_fraction": 0.15,
        "dm3_records_per_arm": 6,
    },
}
TOKENIZER_DEFS = {  # config/paper.yaml's vq/hrq (codebooks, taps, beta, EMA), width from the budget
    "vq": {"kind": "vq", "stem_kernel": 5, "block_kernel": 7, "mlp_ratio": 4, "layer_scale_init": 1.0e-6,
           "taps": "last", "codebook_sizes": [512], "beta": 0.5, "ema_decay": 0.99, "ema_eps": 1.0e-5,
           "dead_code_threshold": 1.0},
    "hrq": {"kind": "hrq", "stem_kernel": 5, "block_kernel": 7, "mlp_ratio": 4, "layer_scale_init": 1.0e-6,
            "taps": "half,last", "codebook_sizes": [1024, 2048], "beta": 0.9, "ema_decay": 0.99, "ema_eps": 1.0e-5,
            "dead_code_threshold": 1.0, "training": {"kmeans_after_warmup": True}},
}
TINY_CODEBOOKS = {"vq": [32], "hrq": [16, 32]}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_json(path: Path, obj) -> None:
    from vqdna.atomic import write_json as _write

    _write(path, obj)


# =================================================================================== prepare (CPU)

def dm3_records(path: Path, per_arm: int | None) -> list[tuple[str, str, str]]:
    """(arm, header, sequence) of every dm3 record, one per coordinate pair and strand
    (alternative transcripts repeat the same 2 kb), in file order."""
    out, seen, counts = [], set(), {}
    with gzip.open(path, "rt") as fh:
        header = None
        chunks: list[str] = []
        for line in list(fh) + [">"]:
            if line.startswith(">"):
                if header is not None:
                    ident, coords = header.split()[:2]
                    arm = coords.split(":")[0]
                    key = (coords, ident[-1])
                    if key not in seen:
                        seen.add(key)
                        counts[arm] = counts.get(arm, 0) + 1
                        if per_arm is None or counts[arm] <= per_arm:
                            out.append((arm, header, "".join(chunks)))
                header, chunks = line[1:].strip(), []
            else:
                chunks.append(line.strip())
    return out


def heldout(arm: str) -> str | None:
    for held, split in HOLDOUT_ARMS.items():
        if arm == held or arm.startswith(held + "Het"):
            return split
    return None


def write_fasta_gz(path: Path, records) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", filename="", mtime=0) as fh:
        for header, seq in records:
            fh.write(f">{header}\n".encode())
            for i in range(0, len(seq), 80):
                fh.write(seq[i:i + 80].encode() + b"\n")
            n += len(seq)
    return n


def rng_for(*parts) -> np.random.Generator:
    h = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def acgt(seq: str) -> bool:
    return bool(seq) and set(seq) <= set("ACGT")


def promoter_task(records, sizes: dict, length: int = 300) -> tuple[dict, dict]:
    """1 = the last `length` nt before the TSS, 0 = the first `length` nt (2 kb upstream); each
    record gives one example (a seeded half of the records proximal, the other half distal)."""
    from vqdna.datasets.splits import Split

    by_split = {"train": [], "dev": [], "test": []}
    for arm, _header, seq in records:
        if "Het" in arm or arm in ("chrU", "chrUextra") or len(seq) != 2000:
            continue
        by_split[heldout(arm) or "train"].append(seq.upper())
    splits, info = {}, {}
    for split, seqs in by_split.items():
        order = rng_for("promoter", split).permutation(len(seqs))
        want = sizes[split] // 2
        pos, neg = [], []
        for k, i in enumerate(order):
            s = seqs[i]
            if k % 2 == 0 and len(pos) < want and acgt(s[-length:]):
                pos.append(s[-length:])
            elif k % 2 == 1 and len(neg) < want and acgt(s[:length]):
                neg.append(s[:length])
        n = min(len(pos), len(neg))
        seqs_out = pos[:n] + neg[:n]
        labels = np.asarray([1] * n + [0] * n, dtype=np.int64)
        perm = rng_for("promoter-order", split).permutation(len(seqs_out))
        splits[split] = Split([seqs_out[i] for i in perm], labels[perm])
        info[split] = {"examples": 2 * n, "records_available": len(seqs)}
    return splits, info


def inverted_repeats(seq: str, probe: int = 100) -> tuple[tuple[int, int], tuple[int, int]]:
    """The chloroplast's inverted repeats (the GenBank file has no repeat_region feature): IR B is
    the longest suffix whose reverse complement occurs earlier (IR A). Returns ((a0, a1), (b0, b1))."""
    comp = str.maketrans("ACGT", "TGCA")
    n = len(seq)
    a = seq.find(seq[n - probe:].translate(comp)[::-1])
    if a < 0:
        raise ValueError("no inverted repeat found at the end of the chloroplast sequence")
    length = probe
    while length < n // 2 and seq[n - length - 1].translate(comp) == seq[a + length]:
        length += 1
    return (a, a + length), (n - length, n)


def chloroplast_task(gb_path: Path, stride: int, length: int = 200) -> tuple[dict, dict]:
    """1 = >= 80% of the window in CDS exons, 0 = no CDS base (intergenic, introns, rRNA/tRNA genes).
    Contiguous regions of the genome without inverted repeat B (a copy of IR A): dev the first 15 %,
    test the next 15 %, train the remaining 70 %; classes balanced per split by subsampling."""
    from Bio import SeqIO

    from vqdna.datasets.splits import Split

    with gzip.open(gb_path, "rt") as fh:
        rec = SeqIO.read(fh, "genbank")
    seq = str(rec.seq).upper()
    n = len(seq)
    cds = np.zeros(n, bool)
    for f in rec.features:
        if f.type == "CDS":
            for p in f.location.parts:
                cds[int(p.start):int(p.end)] = True
    ira, irb = inverted_repeats(seq)
    keep = np.ones(n, bool)
    keep[irb[0]:irb[1]] = False  # IR B is IR A reverse-complemented: one copy only, or test would repeat train
    positions = np.flatnonzero(keep)
    # dev and test at the start of the large single-copy region: both classes well represented there
    bounds = {"dev": (0.0, 0.15), "test": (0.15, 0.30), "train": (0.30, 1.0)}
    csum = np.concatenate([[0], np.cumsum(cds)])
    splits, info = {}, {}
    for split, (a, b) in bounds.items():
        lo = int(positions[int(a * (len(positions) - 1))])
        hi = int(positions[int(b * (len(positions) - 1))])
        seqs, labels = [], []
        for start in range(lo, hi - length, stride):
            if not keep[start:start + length].all():
                continue
            w = seq[start:start + length]
            frac = (csum[start + length] - csum[start]) / length
            if not acgt(w):
                continue
            if frac >= 0.8:
                seqs.append(w), labels.append(1)
            elif frac == 0.0:
                seqs.append(w), labels.append(0)
        labels_a = np.asarray(labels, dtype=np.int64)
        # balanced classes: a seeded subsample of the larger class
        rng = rng_for("cp", split)
        pos, neg = np.flatnonzero(labels_a == 1), np.flatnonzero(labels_a == 0)
        k = min(len(pos), len(neg))
        idx = rng.permutation(np.concatenate([rng.choice(pos, k, replace=False), rng.choice(neg, k, replace=False)]))
        splits[split] = Split([seqs[i] for i in idx], labels_a[idx])
        info[split] = {"examples": int(2 * k), "windows_before_balancing": len(seqs),
                       "positives_before_balancing": int(len(pos)), "region": [lo, hi]}
    info["inverted_repeats"] = {"A": list(ira), "B_dropped": list(irb)}
    return splits, info


def build_config(budget: dict, data: Path, device: str) -> dict:
    """config/config.yaml + the bench's keys, validated against the schema (here: the device
    has no jsonschema) and written as resolved JSON like the pipeline's config.resolved.json."""
    from vqdna.config import load_config

    cfg = load_config([ROOT / "config" / "config.yaml"])
    cfg["device"] = device
    cfg["genomes"]["table"] = str(data / "genomes.tsv")
    cfg["shards"]["num_shards"] = dict(budget["shards"])
    cfg["shards"]["split"].update({"by": "block", "block_size": 10000, "valid_fraction": budget["valid_fraction"],
                                   "seed": 0})
    tiny = budget is BUDGETS["tiny"]
    defs = {}
    for tok, d in TOKENIZER_DEFS.items():
        d = copy.deepcopy(d)
        d.update(budget["tokenizer_model"])
        depth = d["depth"]
        d["taps"] = [depth] if d["taps"] == "last" else [depth // 2, depth]
        if tiny:
            d["codebook_sizes"] = TINY_CODEBOOKS[tok]
        defs[tok] = d
    defs["bpe"] = {"kind": "bpe", **budget["bpe"]}
    cfg["tokenizers"]["train"] = list(TOKENIZERS)
    cfg["tokenizers"]["defs"] = defs
    cfg["tokenizers"]["training"].update(budget["tokenizer_training"])
    cfg["tokens"].update({"batch_nt": budget["tokens_batch_nt"], "compile": False})
    p = cfg["pretrain"]
    p["model"].update(budget["backbone"])
    p.update(budget["pretrain"])
    p.update({"max_len": 513, "precision": "auto", "compile": False, "cpu_threads": 0, "eval_every": 0})
    f = cfg["finetune"]
    f.update(budget["finetune"])
    f.update({"tokenizers": list(TOKENIZERS), "train_max_tokens": 512, "eval_max_tokens": 0, "frozen_bf16": False,
              "compile": False, "cpu_threads": 0})
    from vqdna.config import validate_config

    return validate_config(cfg, source="bench/central_claim.py")


def prepare(args) -> int:
    from vqdna.datasets.store import write_prepared
    from vqdna.genomes.plan import build_plan
    from vqdna.genomes.prepare import prep_paths, prepare_genome
    from vqdna.genomes.shard import build_manifest, write_all
    from vqdna.genomes.table import read_genome_table
    from vqdna.genomes.windows import WindowParams

    budget = BUDGETS["tiny" if args.tiny else "full"]
    gdir, out = Path(args.genomes), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    records = dm3_records(gdir / "dm3_upstream2000.fa.gz", budget["dm3_records_per_arm"])
    corpus = [(h, s) for arm, h, s in records if heldout(arm) is None]
    held = sorted({arm for arm, _, _ in records if heldout(arm)})
    gen_dir = out / "genomes"
    dm3_bases = write_fasta_gz(gen_dir / "dm3_pretrain.fa.gz", corpus)
    rows = [("dm3_pretrain", "Drosophila melanogaster", "Invertebrate", "dm3_pretrain.fa.gz")]
    others = [("GRCh37_chr1_240kb", "Homo sapiens", "Mammalian", "human_GRCh37_chr1_first240kb.fasta.gz"),
              ("NC_001416.1", "Enterobacteria phage lambda", "Virus", "NC_001416_lambda_phage.fa.gz"),
              ("NC_005816.1", "Yersinia pestis biovar Microtus", "Bacteria", "NC_005816_yersinia_pestis_plasmid.fna.gz")]
    for acc, species, cat, name in others[2:] if args.tiny else others:  # tiny: the 9.6 kb plasmid only
        (gen_dir / name).write_bytes((gdir / name).read_bytes())
        rows.append((acc, species, cat, name))
    table = out / "genomes.tsv"
    table.write_text("accession\tspecies\tcategory\tfile\n" + "".join("\t".join(r) + "\n" for r in rows))
    cfg = build_config(budget, out, args.device)
    write_json(out / "config.json", cfg)

    # shards: the shard stage's own steps (prepare each genome, plan, write, manifest)
    shards = out / "shards"
    params = WindowParams.from_config(cfg["shards"])
    prep_dir = shards / "prep"
    for row in read_genome_table(table):
        seq_out, index_out = prep_paths(prep_dir, row.accession)
        prepare_genome(gen_dir / row.file, row.accession, params, seq_out=seq_out, index_out=index_out)
    genome_rows = read_genome_table(table)
    plan = build_plan(genome_rows, prep_dir, cfg["shards"])
    write_all(plan, shards)
    manifest = build_manifest(plan, shards, cfg["shards"])
    write_json(shards / "manifest.json", manifest)
    for p in prep_dir.iterdir():  # carried to the device: only the shards themselves
        p.unlink()
    prep_dir.rmdir()
    for p in gen_dir.iterdir():
        p.unlink()
    gen_dir.rmdir()

    sizes = budget["tasks"]
    t1, t1_info = promoter_task(records, sizes["promoter_300"])
    t2, t2_info = chloroplast_task(gdir / "NC_000932_arabidopsis_chloroplast.gb.gz", sizes["cp_coding_200"]["stride"])
    tasks = {
        "promoter_300": (t1, t1_info, "dm3 promoter-proximal (last 300 nt before the TSS) = 1 vs distal "
                         "(first 300 nt of the 2 kb upstream record) = 0; dev chr2L, test chr3L, train other arms"),
        "cp_coding_200": (t2, t2_info, "A. thaliana chloroplast 200-nt window >= 80% in CDS exons = 1 vs no CDS "
                          "base = 0; contiguous regions dev 0-15 %, test 15-30 %, train 30-100 % (inverted repeat B dropped), balanced"),
    }
    for name, (splits, info, desc) in tasks.items():
        meta = {"dataset": name, "task": "classification", "metric": "mcc", "num_labels": 2, "family": "bench",
                "demo_stand_in": False, "description": desc, "counts": {s: len(splits[s]) for s in splits},
                "info": info}
        write_prepared(out / "tasks" / name, splits, meta)
    data_info = {
        "budget": "tiny" if args.tiny else "full",
        "pretraining_corpus": {"dm3_records": len(corpus), "dm3_bases": dm3_bases, "heldout_arms": held,
                               "other_genomes": [r[0] for r in rows[1:]], "excluded_genomes": ["NC_000932.1 (task 2)"],
                               "shards": manifest["splits"], "window": manifest["window"]},
        "tasks": {name: {"description": desc, "info": info} for name, (_, info, desc) in tasks.items()},
        "prepare_seconds": time.time() - t0,
    }
    write_json(out / "data.json", data_info)
    log(f"prepared {out}: {json.dumps(data_info['pretraining_corpus']['shards'])}; "
        + "; ".join(f"{k}: {v['info']}" for k, v in data_info["tasks"].items()))
    return 0


# ===================================================================================== jobs

def job_paths(work: Path, tok: str) -> dict:
    return {"tokenizer": work / "tokenizers" / tok, "tokens": work / "tokens" / tok,
            "pretrain": work / "pretrain" / tok, "result": work / "results"}


def run_job(stage: str, tok: str, data: Path, work: Path) -> dict:
    """One stage of one tokenizer's chain; returns its record (also written as JSON)."""
    import torch

    cfg = json.loads((data / "config.json").read_text())
    if os.environ.get("CC_DEVICE"):
        cfg["device"] = os.environ["CC_DEVICE"]
    paths = job_paths(work, tok)
    shards = data / "shards"
    t0 = time.time()
    rec: dict = {"stage": stage, "tokenizer": tok, "device": cfg["device"]}
    if cfg["device"] == "cuda":
        rec["gpu"] = torch.cuda.get_device_name(0)
    if stage == "stage1":
        rec.update(stage1(tok, cfg, shards, paths))
    elif stage == "tokenize":
        from vqdna.tokens.tokenize import tokenize_split

        for split in ("train", "valid"):
            meta, stats = tokenize_split(paths["tokenizer"], shards, split, paths["tokens"], cfg, name=tok)
            from vqdna.tokens import TokenFile

            f = TokenFile(paths["tokens"], split)
            tokens = int(f.lengths.sum()) if f.lengths is not None else meta.count * meta.tokens_per_window
            rec[split] = {"windows": meta.count, "nt": stats["nt"], "tokens": tokens, "seconds": stats["seconds"],
                          "nt_per_token": stats["nt"] / max(tokens, 1), "device": stats["device"]}
            if f.lengths is not None:
                rec[split]["max_tokens_per_window"] = int(f.lengths.max())
    elif stage == "pretrain":
        rec.update(stage2(tok, cfg, paths))
    elif stage == "finetune":
        rec.update(stage3(tok, cfg, data, paths, work))
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    rec["wall_seconds"] = time.time() - t0
    write_json(paths["result"] / f"{tok}.{stage}.json", rec)
    return rec


def stage1(tok: str, cfg: dict, shards: Path, paths: dict) -> dict:
    from vqdna.tokenizers.train import build_baseline, definition, model_config, training_settings
    from vqdna.tokenizers.trainer import TrainSettings, train_vq_tokenizer, valid_windows

    d = definition(cfg, tok)
    settings = TrainSettings.from_dict(training_settings(cfg, d))
    if d["kind"] in ("vq", "hrq"):
        m = train_vq_tokenizer(model_config(d), settings, shards, paths["tokenizer"],
                               work_dir=paths["tokenizer"].with_name(tok + ".ckpt"), seed=int(cfg["seed"]),
                               device=cfg["device"], progress=False)
        return {"budget": {"steps": settings.max_steps, "batch_windows": settings.batch_size,
                           "seq_len": settings.seq_len, "seq_len_warmup": settings.seq_len_warmup,
                           "warmup_steps": settings.warmup_steps, "lr": settings.lr},
                "steps": m["steps"], "nt_seen": m["train_nucleotides_this_run"],
                "train_seconds": m["train_seconds_this_run"], "parameters": _total(m["parameters"]),
                "parameter_detail": m["parameters"],
                "valid_reconstruction_accuracy": m["valid_reconstruction_accuracy"], "usage_pct": m["usage_pct"],
                "perplexity": m["perplexity"], "nucleotides_per_token": m["nucleotides_per_token"],
                "valid_windows": m["valid_windows"], "final_train": m.get("final_train", {})}
    from vqdna.atomic import atomic_dir
    from vqdna.tokenizers.evaluate import evaluate_tokenizer

    t0 = time.time()
    bpe = build_baseline(d["kind"], d, shards, int(cfg["seed"]))
    train_seconds = time.time() - t0
    m = evaluate_tokenizer(bpe, valid_windows(shards, settings), settings.eval_batch_rows)
    with atomic_dir(paths["tokenizer"]) as tmp:
        bpe.save_pretrained(tmp)
        write_json(Path(tmp) / "metrics.json", {"kind": "bpe", **m})
    from vqdna.tokenizers.train import _shard_rows
    from vqdna.genomes.shards_io import list_shards, shard_window

    train_paths = list_shards(shards, "train")
    total = sum(_shard_rows(p) for p in train_paths)
    windows = min(total, int(d["train_windows"])) if d.get("train_windows") else total
    return {"budget": {"train_windows": d.get("train_windows"), "vocab_size": d["vocab_size"],
                       "min_frequency": d["min_frequency"]},
            "nt_seen": windows * shard_window(train_paths[0]), "train_seconds": train_seconds,
            "parameters": 0, "vocab_size": bpe.vocab_sizes[0],
            "valid_reconstruction_accuracy": m["valid_reconstruction_accuracy"], "usage_pct": m["usage_pct"],
            "perplexity": m["perplexity"], "nucleotides_per_token": m["nucleotides_per_token"],
            "valid_windows": m["valid_windows"]}


def _total(params) -> int:
    return int(params["total"]) if isinstance(params, dict) else int(params)


def stage2(tok: str, cfg: dict, paths: dict) -> dict:
    from vqdna.models import VQDNAForMaskedLM
    from vqdna.models.pretrain import PretrainSettings, pretrain
    from vqdna.tokens import TokenFile

    cfg = copy.deepcopy(cfg)
    train = TokenFile(paths["tokens"], "train")
    if train.lengths is not None:
        # variable-rate (bpe): pad to the longest window so every sample is one whole window,
        # as for vq/hrq (max_len 513 = [CLS] + 512): equal nucleotides per batch, not equal tokens
        cfg["pretrain"]["max_len"] = int(train.lengths.max()) + 1
    s = PretrainSettings.from_config(cfg)
    final = pretrain(paths["tokens"], paths["tokenizer"], paths["pretrain"], cfg, name=tok, track=False)
    model = VQDNAForMaskedLM.from_pretrained(paths["pretrain"])
    window = train.meta.window_nt
    crop = min(s.max_len - 1, train.meta.tokens_per_window)
    mean_tokens = float(np.mean(train.lengths)) if train.lengths is not None else float(crop)
    return {"budget": {"steps": s.steps, "batch_windows": s.batch_size, "nt_per_batch": s.batch_size * window,
                       "max_len": s.max_len, "lr": s.lr, "warmup_steps": s.warmup_steps},
            "steps": final["steps"], "nt_seen": s.steps * s.batch_size * window,
            "token_slots_seen": final["tokens_seen"],
            "real_tokens_seen": int(round(s.steps * s.batch_size * (min(mean_tokens, crop) + 1))),
            "parameters": sum(p.numel() for p in model.parameters()),
            "encoder_parameters": sum(p.numel() for p in model.vqdna.parameters()),
            "final": {k: v for k, v in final.items() if isinstance(v, (int, float))}}


def _cached_encode_all(device: str, real):
    """`finetune.data.encode_all`, once per (split, tokenizer) in this job and on the job's
    device: finetune_once tokenizes all splits again for every grid point and seed."""
    cache: dict = {}

    def encode_all(tokenizer, sequences, batch: int = 256):
        key = hashlib.blake2b("\n".join(sequences).encode(), digest_size=16).hexdigest()
        if key not in cache:
            if device == "cuda" and hasattr(tokenizer, "to"):
                tokenizer.to("cuda")  # same bf16 autocast path as the offline tokenization of the corpus
            cache[key] = real(tokenizer, sequences, batch)
        return cache[key]

    return encode_all


def stage3(tok: str, cfg: dict, data: Path, paths: dict, work: Path) -> dict:
    from vqdna.finetune import data as ft_data

    ft = cfg["finetune"]
    real_encode_all = ft_data.encode_all
    ft_data.encode_all = _cached_encode_all(cfg["device"], real_encode_all)
    try:
        return _stage3(tok, cfg, data, paths, ft)
    finally:
        ft_data.encode_all = real_encode_all


def _stage3(tok: str, cfg: dict, data: Path, paths: dict, ft: dict) -> dict:
    from vqdna.finetune.grid import grid_points, select_best
    from vqdna.finetune.run import finetune_once

    out: dict = {"grid": ft["grid"], "seeds": ft["seeds"], "tasks": {}}
    points = grid_points(ft["grid"])
    partial = paths["result"] / f"{tok}.finetune.partial.json"
    for task in TASKS:
        runs = []
        for p in points:
            for seed in ft["seeds"]:
                t0 = time.time()
                res = finetune_once(data_dir=data / "tasks" / task, tokenizer_dir=paths["tokenizer"],
                                    backbone_dir=paths["pretrain"], params=p["params"], seed=int(seed), ft_cfg=ft,
                                    device_name=cfg["device"], progress=False)
                runs.append({"point": p["point"], "params": p["params"], "seed": int(seed), "dev": res["dev"],
                             "test": res["test"], "fit": res["fit"], "n": res["n"],
                             "trainable_params": res["trainable_params"], "total_params": res["total_params"],
                             "wall_seconds": time.time() - t0})
                out["tasks"][task] = summarize(runs, points)
                write_json(partial, {"stage": "finetune", "tokenizer": tok, **out})
                log(f"finetune {tok}/{task}/{p['point']}/seed{seed}: dev mcc {res['dev']['mcc']:.3f} "
                    f"({time.time() - t0:.1f} s)")
        best = select_best({q: [r["dev"]["mcc"] for r in runs if r["point"] == q] for q in [x["point"] for x in points]},
                           [x["point"] for x in points])
        out["tasks"][task] = summarize(runs, points, best)
    return out


def summarize(runs: list[dict], points: list[dict], best: str | None = None) -> dict:
    out = {"runs": runs}
    if best is None:
        return out
    chosen = [r for r in runs if r["point"] == best]
    out["best_point"] = best
    out["dev_mcc_by_point"] = {p["point"]: float(np.mean([r["dev"]["mcc"] for r in runs if r["point"] == p["point"]]))
                               for p in points}
    out["test"] = {m: {"mean": float(np.mean([r["test"][m] for r in chosen])),
                       "std": float(np.std([r["test"][m] for r in chosen])),
                       "per_seed": {str(r["seed"]): r["test"][m] for r in chosen}}
                   for m in ("mcc", "f1_macro", "accuracy")}
    out["fit_steps_per_run"] = chosen[0]["fit"]["steps"]
    out["seconds"] = float(sum(r["wall_seconds"] for r in runs))
    return out


# ================================================================================ orchestration

def plan_jobs() -> list[dict]:
    """Priority order; a job starts when its previous stage of the same tokenizer is done."""
    order = [("stage1", "vq"), ("stage1", "hrq"), ("tokenize", "vq"), ("tokenize", "hrq"),
             ("pretrain", "vq"), ("pretrain", "hrq"), ("pretrain", "bpe"),
             ("finetune", "vq"), ("finetune", "hrq"), ("finetune", "bpe")]
    cpu_jobs = [("stage1", "bpe"), ("tokenize", "bpe")]  # bpe trains and encodes on the CPU
    stages = ["stage1", "tokenize", "pretrain", "finetune"]
    jobs = []
    for kind, items in (("gpu", order), ("cpu", cpu_jobs)):
        for stage, tok in items:
            i = stages.index(stage)
            jobs.append({"stage": stage, "tok": tok, "kind": kind, "after": (stages[i - 1], tok) if i else None})
    return jobs


def collect(work: Path, data: Path, extra: dict) -> dict:
    res_dir = work / "results"
    results: dict = {tok: {} for tok in TOKENIZERS}
    for f in sorted(res_dir.glob("*.json")) if res_dir.exists() else []:
        tok, stage = f.name.split(".")[:2]
        rec = json.loads(f.read_text())
        if stage == "finetune" and f.name.endswith(".partial.json"):
            if "finetune" in results[tok]:
                continue
            rec["partial"] = True
        results[tok][stage] = rec
    return {"data": json.loads((data / "data.json").read_text()), "config": _budget_view(data), **extra,
            "results": results, "table": table_rows(results)}


def _budget_view(data: Path) -> dict:
    cfg = json.loads((data / "config.json").read_text())
    return {"tokenizers": cfg["tokenizers"], "pretrain": cfg["pretrain"],
            "finetune": {k: cfg["finetune"][k] for k in ("mode", "lora", "pooling", "add_cls", "head_hidden",
                                                          "head_dropout", "batch_size", "weight_decay",
                                                          "warmup_ratio", "train_max_tokens", "grid", "seeds", "bf16")},
            "shards": cfg["shards"]}


def table_rows(results: dict) -> list[dict]:
    rows = []
    for task in TASKS:
        for tok in TOKENIZERS:
            ft = results.get(tok, {}).get("finetune", {})
            t = ft.get("tasks", {}).get(task, {})
            if "test" not in t:
                continue
            rows.append({"task": task, "tokenizer": tok, "best_point": t["best_point"],
                         "n_seeds": len(t["test"]["mcc"]["per_seed"]),
                         **{f"{m}_mean": t["test"][m]["mean"] for m in ("mcc", "f1_macro", "accuracy")},
                         **{f"{m}_std": t["test"][m]["std"] for m in ("mcc", "f1_macro", "accuracy")}})
    return rows


def same_point_rows(results: dict, point: str, seeds: list) -> list[dict]:
    """Test metrics of every task x tokenizer at one fixed grid point (no selection), where all
    seeds of that point finished: a like-for-like view that also covers a partial run."""
    rows = []
    for task in TASKS:
        for tok in TOKENIZERS:
            t = results.get(tok, {}).get("finetune", {}).get("tasks", {}).get(task, {})
            runs = [r for r in t.get("runs", []) if r["point"] == point]
            if sorted(r["seed"] for r in runs) != sorted(int(x) for x in seeds):
                continue
            rows.append({"task": task, "tokenizer": tok, "best_point": f"{point} (fixed)", "n_seeds": len(runs),
                         **{f"{m}_mean": float(np.mean([r["test"][m] for r in runs])) for m in ("mcc", "f1_macro", "accuracy")},
                         **{f"{m}_std": float(np.std([r["test"][m] for r in runs])) for m in ("mcc", "f1_macro", "accuracy")}})
    return rows


def report(args) -> int:
    """Tables of a result JSON: dev-selected, every fixed grid point, and the budgets."""
    res = json.loads(Path(args.json).read_text())
    print("dev-selected (complete grids only):")
    print(format_table(res["table"]))
    grid, seeds = res["config"]["finetune"]["grid"], res["config"]["finetune"]["seeds"]
    from vqdna.finetune.grid import grid_points

    for p in grid_points(grid):
        print(f"\nfixed point {p['point']}:")
        print(format_table(same_point_rows(res["results"], p["point"], seeds)))
    print()
    print(budget_lines(res))
    return 0


def format_table(rows: list[dict]) -> str:
    lines = ["| task | tokenizer | test MCC | test F1 (macro) | test accuracy | grid point (dev) | seeds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cell = lambda m: f"{r[m + '_mean']:.3f} ± {r[m + '_std']:.3f}"  # noqa: E731
        lines.append(f"| {r['task']} | {r['tokenizer']} | {cell('mcc')} | {cell('f1_macro')} | {cell('accuracy')} "
                     f"| {r['best_point']} | {r['n_seeds']} |")
    return "\n".join(lines)


def run(args) -> int:
    data, out = Path(args.data), Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    out.mkdir(parents=True, exist_ok=True)
    (work / "results").mkdir(parents=True, exist_ok=True)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        import torch

        gpus = list(range(torch.cuda.device_count()))[: args.max_gpus]
        extra_env = {}
    else:
        gpus = [None]
        extra_env = {"CC_DEVICE": "cpu"}
    jobs = plan_jobs()
    meta = {"device": device, "gpus": len(gpus) if device == "cuda" else 0, "command": " ".join(sys.argv),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if device == "cuda":
        import torch

        meta["gpu_name"] = torch.cuda.get_device_name(0)
        meta["torch"] = torch.__version__
    env_base = {**os.environ, **extra_env, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    inline = device != "cuda" and not args.subprocess
    saved_env = {k: os.environ.get(k) for k in ("TQDM_DISABLE", "CC_DEVICE")}
    if inline:
        os.environ.update({k: env_base[k] for k in saved_env})
    try:
        return _schedule(args, data, out, work, device, gpus, jobs, meta, inline, env_base)
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _schedule(args, data, out, work, device, gpus, jobs, meta, inline, env_base) -> int:
    t_start = time.time()
    done: set = set()
    failed: list = []
    running: dict = {}  # worker -> (job, Popen, t0)
    # (kind, gpu, slot): slot 1 of a GPU takes fine-tune jobs only. Those are bound by Python
    # overhead (a small model, LoRA, batch 32), so two share a GPU well; stages 1 and 2 always
    # run alone on theirs, so their wall times stay clean. (The first H200 run had one slot per
    # GPU: the third tokenizer's fine-tunes started last and hit the deadline.)
    slots = range(args.finetune_slots) if device == "cuda" else range(1)
    workers = [("gpu", g, k) for k in slots for g in gpus] + [("cpu", "cpu", 0)]
    timings: list = []
    threads = str(max(1, (os.cpu_count() or 2) // (len(gpus) + 1)))

    def ready(job) -> bool:
        return job["after"] is None or job["after"] in done

    def write_partial() -> None:
        res = collect(work, data, {"run": {**meta, "elapsed_s": time.time() - t_start, "jobs": timings,
                                           "failed": failed}})
        write_json(out / "central_claim.json", res)

    pending = list(jobs)
    last_write = 0.0
    while pending or running:
        for w in workers:
            if w in running:
                continue
            kind = w[0]
            if device != "cuda":
                kind = None  # one CPU worker does every job, in order
                if w[0] == "gpu":
                    continue
            if w[2] > 0:  # a second slot only beside a running fine-tune
                first = running.get((w[0], w[1], 0))
                if first is None or first[0]["stage"] != "finetune":
                    continue
            job = next((j for j in pending if (kind is None or j["kind"] == kind) and ready(j)
                        and (w[2] == 0 or j["stage"] == "finetune")), None)
            if job is None:
                continue
            pending.remove(job)
            env = dict(env_base)
            if w[0] == "gpu" and w[1] is not None:
                env.update({"CUDA_VISIBLE_DEVICES": str(w[1]), "CC_DEVICE": "cuda", "OMP_NUM_THREADS": threads})
            else:
                env.update({"CC_DEVICE": "cpu", "RAYON_NUM_THREADS": threads if device == "cuda" else "2"})
            cmd = [sys.executable, str(Path(__file__).resolve()), "job", "--stage", job["stage"], "--tok", job["tok"],
                   "--data", str(data), "--work", str(work)]
            log(f"start {job['stage']} {job['tok']} on {w[0]}{'' if w[1] is None else ' ' + str(w[1])}")
            if inline:
                t_job = time.time()
                running[w] = (job, _Inline(job, data, work), t_job)
            else:
                running[w] = (job, subprocess.Popen(cmd, env=env), time.time())
        for w, (job, proc, t0) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                if time.time() - t_start > args.deadline_s:
                    proc.kill()
                    proc.wait()
                    rc = "killed at deadline"
                else:
                    continue
            del running[w]
            key = (job["stage"], job["tok"])
            timings.append({"stage": job["stage"], "tokenizer": job["tok"], "worker": f"{w[0]}{w[1]}.{w[2]}",
                            "start_s": t0 - t_start, "seconds": time.time() - t0, "rc": rc})
            if rc == 0:
                done.add(key)
                log(f"done {key} in {time.time() - t0:.1f} s")
            else:
                failed.append({"job": list(key), "rc": rc})
                log(f"FAILED {key}: rc {rc}")
                # the tokenizer's later stages cannot run
                pending[:] = [j for j in pending if j["tok"] != job["tok"]]
            write_partial()
        if time.time() - last_write > 10:
            write_partial()
            last_write = time.time()
        if time.time() - t_start > args.deadline_s:
            pending.clear()
        time.sleep(0.5)
    write_partial()
    res = json.loads((out / "central_claim.json").read_text())
    print(format_table(res["table"]))
    print(budget_lines(res))
    return 0 if not failed else 1


class _Inline:
    """A job run in this process (CPU smoke test: no torch import per job); Popen's poll/kill/wait."""

    def __init__(self, job: dict, data: Path, work: Path):
        try:
            run_job(job["stage"], job["tok"], data, work)
            self.rc = 0
        except Exception as exc:  # noqa: BLE001 - reported like a failed subprocess
            import traceback

            traceback.print_exc()
            log(f"{job['stage']} {job['tok']} failed: {exc}")
            self.rc = 1

    def poll(self):
        return self.rc

    def kill(self):
        pass

    def wait(self):
        return self.rc


def budget_lines(res: dict) -> str:
    lines = ["| tokenizer | stage | steps | nt seen | tokens | params | wall s |", "|---|---|---|---|---|---|---|"]
    for tok in TOKENIZERS:
        r = res["results"].get(tok, {})
        s1, tk, pre, ft = (r.get(k, {}) for k in ("stage1", "tokenize", "pretrain", "finetune"))
        if s1:
            lines.append(f"| {tok} | stage 1 | {s1.get('steps', '-')} | {s1.get('nt_seen', 0):,} | - | "
                         f"{s1.get('parameters', 0):,} | {s1.get('wall_seconds', 0):.1f} |")
        if tk:
            lines.append(f"| {tok} | tokenize | - | {tk['train']['nt'] + tk['valid']['nt']:,} | "
                         f"{tk['train']['tokens'] + tk['valid']['tokens']:,} | - | {tk.get('wall_seconds', 0):.1f} |")
        if pre:
            lines.append(f"| {tok} | stage 2 | {pre['steps']} | {pre['nt_seen']:,} | {pre['real_tokens_seen']:,} | "
                         f"{pre['parameters']:,} | {pre.get('wall_seconds', 0):.1f} |")
        if ft and "wall_seconds" in ft:
            lines.append(f"| {tok} | stage 3 | - | - | - | - | {ft['wall_seconds']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare", help="CPU: shards, task files and config for the run")
    a.add_argument("--out", required=True)
    a.add_argument("--genomes", default=str(ROOT.parent / "shared" / "data" / "genomes"))
    a.add_argument("--tiny", action="store_true")
    a.add_argument("--device", default="cuda", help="device recorded in the config (run/job may override)")
    b = sub.add_parser("run", help="every job of every tokenizer, side by side on the GPUs")
    b.add_argument("--data", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--work", default=None)
    b.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    b.add_argument("--max-gpus", type=int, default=2)
    b.add_argument("--finetune-slots", type=int, default=2, help="fine-tune jobs sharing one GPU at a time")
    b.add_argument("--deadline-s", type=float, default=480.0)
    b.add_argument("--subprocess", action="store_true", help="on CPU too, one process per job (as on the GPUs)")
    r = sub.add_parser("report", help="print the tables of a result JSON")
    r.add_argument("json")
    c = sub.add_parser("job", help="one stage of one tokenizer (run starts these)")
    c.add_argument("--stage", required=True)
    c.add_argument("--tok", required=True, choices=TOKENIZERS)
    c.add_argument("--data", required=True)
    c.add_argument("--work", required=True)
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        return prepare(args)
    if args.cmd == "run":
        return run(args)
    if args.cmd == "report":
        return report(args)
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    rec = run_job(args.stage, args.tok, Path(args.data), Path(args.work))
    log(f"{args.stage} {args.tok}: {json.dumps({k: v for k, v in rec.items() if not isinstance(v, (dict, list))})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
