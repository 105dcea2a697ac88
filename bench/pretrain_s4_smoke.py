"""`vqdna pretrain`'s training function (vqdna.models.pretrain.pretrain, MLflow off: the device
image lacks mlflow/jsonschema) with the session-4 settings: bf16 weights, compiled blocks, the
fused add+dropout+LayerNorm op (and, since session 5, the fused RoPE and bias+GELU ops), `cuda_graphs` on, two micro-batches per step (gradient
accumulation inside the graph), then evaluation and save_pretrained. Prints and writes its metrics.

    PYTHONPATH=src python3 bench/pretrain_s4_smoke.py --tokens TOKDIR --tokenizer TOKENIZERDIR --out OUT.json
    PYTHONPATH=src python bench/pretrain_s4_smoke.py --tiny --device cpu --tokens ... --tokenizer ...  # eager fallback
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--micro", type=int, default=256)
    p.add_argument("--accum", type=int, default=2)
    p.add_argument("--cuda-graphs", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from vqdna.models.pretrain import pretrain

    model = {} if not args.tiny else {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                                      "intermediate_size": 128}
    cfg = {"seed": 0, "device": args.device, "pretrain": {
        "model": model, "max_len": 256 if not args.tiny else 32, "steps": args.steps,
        "batch_size": args.micro * args.accum, "micro_batch_size": args.micro, "lr": 5e-4, "warmup_steps": 10,
        "eval_batches": 2, "log_every": max(1, args.steps // 2), "checkpoint_every": 10**9,
        "precision": "bf16_weights", "compile": args.device != "cpu", "fused_dropout_norm": True,
        "fused_rope": True, "fused_gelu": True,  # session 5: paper.yaml turns them on
        "cuda_graphs": bool(args.cuda_graphs)}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        metrics = pretrain(args.tokens, args.tokenizer, Path(tmp) / "model", cfg, track=False)
        saved = sorted(f.name for f in (Path(tmp) / "model").iterdir())
    result = {"settings": cfg["pretrain"], "wall_s": time.perf_counter() - t0,
              "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "saved_files": saved, "metrics": metrics}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
