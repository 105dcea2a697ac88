"""A short `vqdna pretrain` job on a GPU with the fastest correct setting of a pretrain_bench run.

Runs `vqdna.models.pretrain.pretrain` (the body of `vqdna pretrain`) on real token files at
BERT-base size with the precision/compile setting that `bench/pretrain_bench.py` found fastest
among the variants whose loss curves matched bf16 (its JSON's `fastest_correct`), MLflow off
(the GPU machine has neither mlflow nor jsonschema, which the CLI's config loader and tracker
need; the training code is the same). Writes the job's metrics and a loss log as JSON.

    PYTHONPATH=src python3 bench/pretrain_gpu_job.py --bench-json OUT/pretrain_h200.json \\
        --tokens TOKDIR --tokenizer TOKENIZERDIR --out OUT/pretrain_job.json
    PYTHONPATH=src python bench/pretrain_gpu_job.py --tiny --device cpu --tokens ... --tokenizer ...  # smoke test
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

# bench variant -> the pretrain keys that select it
SETTINGS = {
    "vqdna": {"precision": "auto", "compile": False},
    "vqdna_compiled": {"precision": "auto", "compile": True},
    "vqdna_bf16": {"precision": "bf16_weights", "compile": True},
    "vqdna_fp8": {"precision": "fp8", "fp8_recipe": "tensorwise", "compile": True},
    "vqdna_fp8_rowwise": {"precision": "fp8", "fp8_recipe": "rowwise", "compile": True},
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench-json", default=None, help="pretrain_bench output: take its fastest correct variant")
    p.add_argument("--variant", default="vqdna_bf16", help="without --bench-json, or when it names none")
    p.add_argument("--tokens", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    variant = args.variant
    if args.bench_json and Path(args.bench_json).exists():
        best = json.loads(Path(args.bench_json).read_text()).get("fastest_correct")
        if best and best["variant"] in SETTINGS:
            variant = best["variant"]
    from vqdna.models.pretrain import pretrain

    model = {} if not args.tiny else {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                                      "intermediate_size": 128}
    cfg = {"seed": 0, "device": args.device, "pretrain": {
        "model": model, "max_len": 256 if not args.tiny else 32, "steps": args.steps,
        "batch_size": args.batch, "micro_batch_size": args.batch, "lr": 5e-4, "warmup_steps": 30,
        "eval_batches": 2, "log_every": 25, "checkpoint_every": 10**9, **SETTINGS[variant]}}
    if args.device == "cpu":
        cfg["pretrain"]["compile"] = False  # CPU smoke test: no C++ compile of the blocks
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        metrics = pretrain(args.tokens, args.tokenizer, Path(tmp) / "model", cfg, track=False)
        saved = sorted(f.name for f in (Path(tmp) / "model").iterdir())
    result = {"variant": variant, "settings": cfg["pretrain"], "wall_s": time.perf_counter() - t0,
              "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "saved_files": saved, "metrics": metrics}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
