#!/usr/bin/env python
"""Stage-3 throughput: LoRA fine-tuning at length 512 and inference at 1000 nt, VQDNA backbone
vs stock `transformers` BERT-base + peft LoRA with the same shapes, in the same run.

    PYTHONPATH=src python bench/finetune_bench.py --device cuda --out bench/results/finetune_bench.json
    PYTHONPATH=src python bench/finetune_bench.py --tiny --device cpu      # smoke test, seconds

Both models go through the same code: `vqdna.finetune.model.wrap_backbone` (peft LoRA r=8,
alpha=16 on every attention + MLP linear, mean pooling, MLP head) and
`vqdna.finetune.train.train_step` (bf16 autocast on GPU, fused AdamW, grad clipping). Shapes
(paper appendix A): BERT-base (12 x 768, 12 heads, FFN 3072), batch 32, train length 512
tokens + [CLS], inference 1000 tokens + [CLS] (VQ/HRQ: one token per nucleotide). VQDNA runs
HRQ-style inputs (2 code levels through frozen codebooks), stock BERT a single id table.
Inputs are unpadded, as GUE sequences of one dataset are. Timing: CUDA-synchronised wall clock
over `--steps` steps after `--warmup` steps. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vqdna.finetune.model import cast_frozen, wrap_backbone  # noqa: E402
from vqdna.finetune.train import make_optimizer, train_step  # noqa: E402

BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
# peft targets of stock BERT covering the same linears as vqdna's LORA_TARGET_MODULES
# (q, k, v | fused qkv; attention output; both MLP linears). The pooler is not used.
BERT_LORA_TARGETS = r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
FT_CFG = {"mode": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}, "pooling": "mean", "add_cls": True,
          "head_hidden": 768, "head_dropout": 0.1, "weight_decay": 0.01, "betas": [0.9, 0.999], "max_grad_norm": 1.0,
          "bf16": True}
PARAMS = {"lr": 3e-5, "lora_dropout": 0.0}


def vqdna_model(arch: dict, levels: list[int], code_dim: int, num_labels: int):
    from vqdna.models import LORA_TARGET_MODULES, VQDNAConfig, VQDNAModel

    cfg = VQDNAConfig(levels=len(levels), vocab_sizes=levels, embedding="codebook", code_dim=code_dim,
                      position_encoding="rope", **arch)
    backbone = VQDNAModel(cfg)
    backbone.load_code_vectors([torch.randn(v, code_dim) for v in levels])
    model = wrap_backbone(backbone, arch["hidden_size"], num_labels, FT_CFG, PARAMS, list(LORA_TARGET_MODULES))
    return model, cfg


def stock_model(arch: dict, vocab: int, max_len: int, num_labels: int):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=vocab, max_position_embeddings=max_len, hidden_dropout_prob=0.1,
                     attention_probs_dropout_prob=0.0, **arch)
    cfg._attn_implementation = "sdpa"  # transformers' SDPA attention path
    backbone = BertModel(cfg, add_pooling_layer=False)
    return wrap_backbone(backbone, arch["hidden_size"], num_labels, FT_CFG, PARAMS, BERT_LORA_TARGETS), cfg


def inputs(kind: str, batch: int, length: int, levels: list[int], vocab: int, device, seed: int):
    """Unpadded batch of `length` tokens + [CLS] (the special ids follow the tokenizer ids)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "vqdna":
        ids = torch.stack([torch.randint(0, v, (batch, length + 1), generator=g) for v in levels], dim=-1)
        ids[:, 0] = torch.tensor([v + 2 for v in levels])  # [CLS] = vocab + 2 per level
    else:
        ids = torch.randint(5, vocab, (batch, length + 1), generator=g)
        ids[:, 0] = 2
    mask = torch.ones(batch, length + 1, dtype=torch.long)
    return ids.to(device), mask.to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_train(model, ids, mask, labels, device, steps: int, warmup: int) -> dict:
    model.train()
    opt = make_optimizer(model, PARAMS, FT_CFG, device)
    for _ in range(warmup):
        train_step(model, ids, mask, labels, opt, None, task="classification", ft_cfg=FT_CFG, device=device)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = train_step(model, ids, mask, labels, opt, None, task="classification", ft_cfg=FT_CFG, device=device)
    sync(device)
    dt = time.perf_counter() - t0
    assert torch.isfinite(loss), "training diverged"
    return {"samples_per_s": steps * ids.shape[0] / dt, "ms_per_step": 1000 * dt / steps, "steps": steps,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}


@torch.no_grad()
def time_infer(model, ids, mask, device, steps: int, warmup: int) -> dict:
    model.eval()
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    with ctx:
        for _ in range(warmup):
            model(ids, mask)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            out = model(ids, mask)
        sync(device)
    dt = time.perf_counter() - t0
    assert torch.isfinite(out).all()
    return {"samples_per_s": steps * ids.shape[0] / dt, "ms_per_batch": 1000 * dt / steps, "steps": steps}


def run_one(name, build, kind, args, device, levels, vocab) -> dict:
    torch.manual_seed(0)
    model, _ = build()
    model.to(device)
    if "+bf16w" in name:
        cast_frozen(model)  # frozen base weights stored in bf16 (vqdna: finetune.frozen_bf16)
    if name.endswith("+compile"):
        model.backbone = torch.compile(model.backbone)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    ids, mask = inputs(kind, args.batch, args.train_len, levels, vocab, device, seed=1)
    labels = torch.randint(0, 2, (args.batch,), generator=torch.Generator().manual_seed(2)).to(device)
    res = {"trainable_params": n_train, "total_params": n_all}
    # CPU smoke test of the bf16-weight modes: autocast as on the GPU (train_step autocasts on CUDA only)
    outer = torch.autocast("cpu", dtype=torch.bfloat16) if device.type == "cpu" and "+bf16w" in name else contextlib.nullcontext()
    with outer:
        res["train"] = time_train(model, ids, mask, labels, device, args.steps, args.warmup)
        ids, mask = inputs(kind, args.infer_batch, args.infer_len, levels, vocab, device, seed=3)
        res["infer"] = time_infer(model, ids, mask, device, args.steps, args.warmup)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print(f"  {name:22s} train {res['train']['samples_per_s']:9.1f} samples/s   infer {res['infer']['samples_per_s']:9.1f} samples/s",
          flush=True)
    return res


def schema_defaults() -> dict:
    """finetune.* defaults straight from the schema (the GPU host has pyyaml but no jsonschema)."""
    import yaml

    props = yaml.safe_load((ROOT / "src/vqdna/schemas/finetune.schema.yaml").read_text())["properties"]
    out = {}
    for k, v in props.items():
        d = v.get("default")
        if isinstance(d, dict) and "properties" in v:
            d = {kk: vv.get("default") for kk, vv in v["properties"].items()} | d
        out[k] = d
    return out


def pipeline_check(args) -> dict:
    """The real `vqdna finetune` path (finetune_once) on the shipped demo covid stand-in (1000 nt,
    9 classes; training crops to 512 tokens, inference at full length) with a random BERT-base
    backbone: eager vs finetune.frozen_bf16 + finetune.compile (dynamic shapes). Wall clock
    includes tokenization, compilation and evaluation; the point is that the path runs."""
    import tempfile

    from vqdna.datasets.gue import load_gue
    from vqdna.datasets.registry import read_table
    from vqdna.datasets.store import write_prepared
    from vqdna.finetune.run import finetune_once
    from vqdna.finetune.tiny import save_tiny_backbone
    from vqdna.tokenizers.onehot import OneHotTokenizer

    tmp = Path(tempfile.mkdtemp())
    spec = next(r for r in read_table(ROOT / "config/datasets.demo.tsv") if r.name == "covid")
    splits, _ = load_gue(ROOT / spec.source, spec, non_acgt="error", seed=0)
    write_prepared(tmp / "data", splits, {"task": "classification", "num_labels": 9, "metric": "f1_macro",
                                          "family": "CVC", "demo_stand_in": True})
    tok = OneHotTokenizer()
    tok.save_pretrained(tmp / "tok")
    save_tiny_backbone(tmp / "bb", tok, **(TINY if args.tiny else BERT_BASE))
    out = {}
    for name, extra in (("eager", {}), ("frozen_bf16+compile", {"frozen_bf16": True, "compile": True})):
        ft = {**schema_defaults(), "train_max_tokens": 513, "eval_batch_size": 32, **extra}
        t0 = time.perf_counter()
        res = finetune_once(data_dir=tmp / "data", tokenizer_dir=tmp / "tok", backbone_dir=tmp / "bb",
                            params={"lr": 5e-5, "lora_dropout": 0.05, "epochs": 2}, seed=0, ft_cfg=ft,
                            device_name=args.device, progress=False)
        out[name] = {"wall_s": time.perf_counter() - t0, "fit_s": res["fit"]["seconds"], "steps": res["fit"]["steps"],
                     "dev": res["dev"], "test": res["test"], "device": res["device"]}
        print(f"  pipeline {name:20s} wall {out[name]['wall_s']:.1f}s fit {out[name]['fit_s']:.1f}s dev f1 {res['dev']['f1_macro']:.3f}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny model and lengths (CPU smoke test)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--infer-batch", type=int, default=32)
    ap.add_argument("--train-len", type=int, default=512)
    ap.add_argument("--infer-len", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--levels", default="512,512", help="HRQ code ids per level (VQDNA input)")
    ap.add_argument("--code-dim", type=int, default=384)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd backbones (both models, bf16 weights)")
    ap.add_argument("--only", default="", help="comma list of modes to run (vqdna, stock_bert, +bf16w = frozen weights in bf16, +compile)")
    ap.add_argument("--out", default=None, help="JSON output (default: print only); rewritten after every mode")
    ap.add_argument("--pipeline", action="store_true", help="only run the `vqdna finetune` path check (pipeline_check)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.batch, args.infer_batch, args.train_len, args.infer_len = 4, 4, 64, 100
        args.steps, args.warmup, args.code_dim = 2, 1, 16
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    arch = TINY if args.tiny else BERT_BASE
    levels = [int(v) for v in args.levels.split(",")]
    vocab = sum(levels) + 5
    max_pos = max(args.train_len, args.infer_len) + 2
    builds = {
        "vqdna": (lambda: vqdna_model(arch, levels, args.code_dim, 2), "vqdna"),
        "stock_bert": (lambda: stock_model(arch, vocab, max_pos, 2), "stock"),
    }
    builds["vqdna+bf16w"] = builds["vqdna"]
    builds["stock_bert+bf16w"] = builds["stock_bert"]
    if args.compile:
        builds["vqdna+bf16w+compile"] = builds["vqdna"]
        builds["stock_bert+bf16w+compile"] = builds["stock_bert"]
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}), "
          f"batch {args.batch}, train {args.train_len}+1 tokens, infer {args.infer_len}+1 tokens x {args.infer_batch}", flush=True)
    if args.only:
        builds = {k: v for k, v in builds.items() if k in args.only.split(",")}
    if args.pipeline:
        builds = {}
    import peft
    import transformers

    record = {
        "bench": "finetune_bench", "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "python": platform.python_version(), "cuda": torch.version.cuda},
        "shapes": {"arch": arch, "batch": args.batch, "train_tokens": args.train_len + 1, "infer_batch": args.infer_batch,
                   "infer_tokens": args.infer_len + 1, "vqdna_levels": levels, "code_dim": args.code_dim,
                   "lora": FT_CFG["lora"], "lora_targets": {"vqdna": "qkv (fused), out_proj, fc1, fc2",
                                                           "stock_bert": "query, key, value, attention.output.dense, intermediate.dense, output.dense"},
                   "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
                   "padding": "none (attention mask all ones)", "tiny": args.tiny,
                   "timing": f"{args.warmup} warm-up + {args.steps} timed steps, CUDA-synchronised"},
        "results": {},
    }
    results = record["results"]
    for name, (b, kind) in builds.items():
        results[name] = run_one(name, b, kind, args, device, levels, vocab)
        if args.out:  # partial results survive a time limit
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    if args.pipeline:
        record["pipeline_check"] = pipeline_check(args)
        if args.out:
            Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
        return 0
    if "vqdna" not in results or "stock_bert" not in results:
        return 0
    best = max((n for n in results if n.startswith("vqdna")), key=lambda n: results[n]["train"]["samples_per_s"])
    speed = {
        "train_vs_stock_eager": results[best]["train"]["samples_per_s"] / results["stock_bert"]["train"]["samples_per_s"],
        "infer_vs_stock_eager": max(results[n]["infer"]["samples_per_s"] for n in results if n.startswith("vqdna"))
        / results["stock_bert"]["infer"]["samples_per_s"],
        "vqdna_eager_train_vs_stock_eager": results["vqdna"]["train"]["samples_per_s"] / results["stock_bert"]["train"]["samples_per_s"],
        "vqdna_eager_infer_vs_stock_eager": results["vqdna"]["infer"]["samples_per_s"] / results["stock_bert"]["infer"]["samples_per_s"],
    }
    for other in ("stock_bert+bf16w", "stock_bert+bf16w+compile"):
        if other in results:  # the same tricks applied to stock BERT, for a fair reading
            speed[f"train_vs_{other}"] = results[best]["train"]["samples_per_s"] / results[other]["train"]["samples_per_s"]
    record["best_vqdna_mode"] = best
    record["speedup_vs_stock"] = speed
    print(f"speedup vs stock (train, {best}): {speed['train_vs_stock_eager']:.2f}x; inference: {speed['infer_vs_stock_eager']:.2f}x")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
