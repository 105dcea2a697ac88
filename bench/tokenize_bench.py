"""Nucleotides/s of offline tokenization end to end: Arrow shards in, token .bin + meta out.

Shards are real DNA (the demo genomes shipped in data/demo/genomes, windows at random offsets),
written to a scratch folder first; the timed part is `vqdna.tokens.tokenize.tokenize_split`
exactly as `vqdna tokenize` runs it (shard reads, encode on the GPU, .bin writes, rename).
The tokenizer is the paper-size VQ/HRQ model (config/paper.yaml tokenizers.defs) with random
weights: the speed of a trained one is the same. Also reported: the model alone on one
preloaded batch (the ceiling for the pipeline).

    PYTHONPATH=src python bench/tokenize_bench.py --device cuda --out bench/results/tokenize_h100.json
    PYTHONPATH=src python bench/tokenize_bench.py --tiny --device cpu     # smoke test

Modes (`--modes`): eager (tokens.compile false), compiled (tokens.compile true: the model under
torch.compile and bf16 autocast), fast / fast_bf16dist (tokens.fast: the frozen bf16 inference
path, distance bf16x3 / bf16). Rows equal to the list API = share of stored ids equal to
`VQTokenizer.encode` (eager, bf16 autocast) and to the eager fp32 model on the first windows.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import yaml

from vqdna.dna import to_codes
from vqdna.genomes.shards_io import ascii_matrix, open_shard, shard_schema
from vqdna.tokenizers.model import VQModelConfig, VQVAE
from vqdna.tokenizers.vq import VQTokenizer
from vqdna.tokens import TokenFile
from vqdna.tokens.tokenize import tokenize_split

ROOT = Path(__file__).resolve().parents[1]
FASTA_SUFFIXES = (".fa.gz", ".fna.gz", ".fasta.gz")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="toy tokenizer and data (CPU smoke test)")
    p.add_argument("--kinds", default="vq,hrq")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--rows-per-shard", type=int, default=8192)
    p.add_argument("--shards", type=int, default=24, help="shards in the timed split")
    p.add_argument("--batch-nt", default="1048576", help="comma-separated tokens.batch_nt values")
    p.add_argument("--modes", default="fast", help="comma-separated: eager, compiled, fast, fast_bf16dist")
    p.add_argument("--check-rows", type=int, default=16, help="windows compared with the reference encoders")
    p.add_argument("--budget-s", type=float, default=1e9, help="skip runs once less than ~20 s would be left")
    p.add_argument("--scratch", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--out", default=None, help="JSON file to write")
    return p.parse_args()


def genome_text() -> np.ndarray:
    """All demo FASTA genomes as one uint8 ASCII array of A/C/G/T."""
    parts = []
    for path in sorted((ROOT / "data" / "demo" / "genomes").iterdir()):
        if not path.name.endswith(FASTA_SUFFIXES):
            continue
        with gzip.open(path, "rt") as fh:
            seq = "".join(line.strip() for line in fh if not line.startswith(">")).upper()
        parts.append(np.frombuffer(seq.encode(), dtype=np.uint8))
    text = np.concatenate(parts)
    keep = np.isin(text, np.frombuffer(b"ACGT", dtype=np.uint8))
    return text[keep]


def write_split(root: Path, split: str, text: np.ndarray, window: int, rows: int, n_shards: int, seed: int):
    rng = np.random.default_rng(seed)
    for s in range(n_shards):
        starts = rng.integers(0, len(text) - window, size=rows)
        windows = text[starts[:, None] + np.arange(window)[None, :]]
        seq = pa.FixedSizeBinaryArray.from_buffers(pa.binary(window), rows, [None, pa.py_buffer(windows.tobytes())])
        table = pa.table({"sequence": seq, "accession": pa.array(["demo"] * rows), "species": pa.array(["demo"] * rows),
                          "record_id": pa.array(["demo"] * rows), "start": pa.array(starts.astype(np.int64))},
                         schema=shard_schema(window))
        path = root / split / f"{s:05d}.arrow"
        path.parent.mkdir(parents=True, exist_ok=True)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)


def tokenizer_config(kind: str, tiny: bool) -> VQModelConfig:
    if tiny:
        taps, sizes = ([2], [64]) if kind == "vq" else ([1, 2], [32, 64])
        return VQModelConfig(kind=kind, dim=32, stem_dim=32, depth=2, taps=taps, codebook_sizes=sizes)
    defs = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["tokenizers"]["defs"]
    return VQModelConfig.from_dict(defs[kind])


MODES = {
    "eager": {"compile": False},
    "compiled": {"compile": True},
    "fast": {"fast": {"enabled": True, "distance": "bf16x3"}},
    "fast_bf16dist": {"fast": {"enabled": True, "distance": "bf16"}},
    "fast_eager": {"fast": {"enabled": True, "distance": "bf16x3", "compile": False}},
}


def model_only_nt_per_s(tok: VQTokenizer, codes: torch.Tensor, device, repeats: int = 5) -> float:
    codes = codes.to(device)
    tok.encode_codes(codes)  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        tok.encode_codes(codes)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return codes.numel() / statistics.median(times)


def main():
    args = parse_args()
    t_begin = time.perf_counter()
    device = torch.device(args.device)
    if args.tiny:
        args.rows_per_shard, args.shards, args.window = 64, 2, 128
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="vqdna-tokbench-"))
    text = genome_text()
    t = time.perf_counter()
    write_split(scratch / "shards", "train", text, args.window, args.rows_per_shard, args.shards, seed=0)
    # warm-up split: one full batch of the largest batch_nt (compiles that shape), same rows per shard
    warm_rows = min(args.rows_per_shard, max(int(b) for b in args.batch_nt.split(",")) // args.window)
    write_split(scratch / "shards", "warm", text, args.window, warm_rows, 1, seed=1)
    nt_total = args.rows_per_shard * args.shards * args.window
    print(f"wrote {args.shards} shards, {nt_total / 1e6:.1f} Mnt of real DNA in {time.perf_counter() - t:.1f}s")

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {"bench": "tokenize", "device": gpu, "torch": torch.__version__, "window": args.window,
              "nt_per_run": nt_total, "shards": args.shards, "rows_per_shard": args.rows_per_shard,
              "io": "shards and .bin on local disk, shards freshly written (page cache warm)", "runs": []}
    toks = {}
    for kind in args.kinds.split(","):
        torch.manual_seed(0)
        mcfg = tokenizer_config(kind, args.tiny)
        tok = VQTokenizer(VQVAE(mcfg))
        tok.save_pretrained(scratch / f"tok_{kind}")
        toks[kind] = (scratch / f"tok_{kind}", mcfg, sum(p.numel() for p in tok.model.parameters()))
    # mode before kind: with too little time left, the less important mode is what gets skipped
    for mode in args.modes.split(","):
        for batch_nt, kind in [(int(b), k) for b in args.batch_nt.split(",") for k in toks]:
            tok_dir, mcfg, params = toks[kind]
            if time.perf_counter() - t_begin > args.budget_s - 20:
                print(f"skipping {kind}/{mode}: time budget", flush=True)
                result.setdefault("skipped", []).append(f"{kind}/{mode}/{batch_nt}")
                continue
            try:
                run_one(args, scratch, device, result, kind, tok_dir, mcfg, params, batch_nt, mode, nt_total)
            except Exception as exc:  # noqa: BLE001 - one failed mode must not lose the others
                result.setdefault("errors", {})[f"{kind}/{mode}/{batch_nt}"] = f"{type(exc).__name__}: {exc}"[:2000]
                print(f"{kind}/{mode} failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
    print(f"\n{gpu}  window={args.window}  {nt_total / 1e6:.1f} Mnt per run")
    print(f"{'kind':<6}{'batch_nt':>10}{'mode':>15}{'end-to-end nt/s':>18}{'model-only nt/s':>18}"
          f"{'=list API':>10}{'=fp32':>8}")
    for r in result["runs"]:
        print(f"{r['kind']:<6}{r['batch_nt']:>10}{r['mode']:>15}{r['nt_per_s_end_to_end']:>18,.0f}"
              f"{r['nt_per_s_model_only']:>18,.0f}{r['agreement_with_list_api']:>10.4f}{r['agreement_with_fp32']:>8.4f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if not args.scratch:
        shutil.rmtree(scratch, ignore_errors=True)


def run_one(args, scratch, device, result, kind, tok_dir, mcfg, params, batch_nt, mode, nt_total):
    """One timed `tokenize_split` of the train split, its spot checks and the model-only ceiling."""
    from vqdna.tokenizers import fast_encode

    cfg = {"device": device.type, "tokens": {"batch_nt": batch_nt, **MODES[mode]}}
    out = scratch / f"tokens_{kind}_{batch_nt}_{mode}"
    t = time.perf_counter()
    tokenize_split(tok_dir, scratch / "shards", "warm", out, cfg)  # CUDA context, compiled graphs
    warm_s = time.perf_counter() - t
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    meta, stats = tokenize_split(tok_dir, scratch / "shards", "train", out, cfg)
    wall = time.perf_counter() - t
    # Spot check: stored rows vs the list API (eager, autocast) and the eager fp32 model.
    tf = TokenFile(out, "train")
    rows = ascii_matrix(open_shard(scratch / "shards" / "train" / "00000.arrow"))[: args.check_rows]
    stored = np.stack([tf.window(i) for i in range(len(rows))])
    agree = {}
    for name, autocast in (("list_api", True), ("fp32", False)):
        ref_tok = VQTokenizer.from_pretrained(tok_dir, device=device, autocast=autocast)
        ref = np.stack(ref_tok.encode([r.tobytes() for r in rows]))
        agree[name] = float(np.mean(stored == ref))
    # The model alone on one batch of the same real windows (the pipeline's ceiling).
    rows_per_batch = max(1, batch_nt // args.window)
    shard0 = ascii_matrix(open_shard(scratch / "shards" / "train" / "00000.arrow"))
    codes = torch.from_numpy(np.resize(to_codes(shard0.reshape(-1)).reshape(shard0.shape),
                                       (rows_per_batch, args.window)))
    model_tok = VQTokenizer.from_pretrained(tok_dir, device=device)
    spec = MODES[mode]
    if spec.get("fast"):
        model_tok.enable_fast({k: v for k, v in spec["fast"].items() if k != "enabled"})
    elif spec.get("compile") and device.type == "cuda":
        model_tok.compile()
    model_nt_s = model_only_nt_per_s(model_tok, codes, device)
    r = {"kind": kind, "tokenizer_params": params, "codebook_sizes": list(mcfg.codebook_sizes),
         "batch_nt": batch_nt, "mode": mode, "tokens_cfg": cfg["tokens"], "dtype": meta.dtype,
         "warm_split_s": warm_s, "wall_s": wall, "nt_per_s_end_to_end": nt_total / wall,
         "nt_per_s_loop": stats["nt_per_s"], "nt_per_s_model_only": model_nt_s,
         "agreement_with_list_api": agree["list_api"], "agreement_with_fp32": agree["fp32"],
         "check_positions": int(stored.size), "fast_paths": dict(fast_encode.PATHS)}
    result["runs"].append(r)
    print(json.dumps(r), flush=True)
    shutil.rmtree(out)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
