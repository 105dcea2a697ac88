"""Tokens/s and MFU of one stage-2 pretraining step: vqdna's backbone vs stock transformers BERT.

Both models get the same shapes (BERT-base, length 256, the same vocabulary of tokenizer ids
plus [PAD]/[MASK]/[CLS], 25% masking, dropout 0.1 on hidden states and none on attention),
bf16 autocast over fp32 master weights and fused AdamW, in the same process. Stock =
`BertForMaskedLM` with `attn_implementation="sdpa"`, no attention mask (its best case).
vqdna variants (each at the batch sizes given):
  vqdna                eager, bf16 autocast
  vqdna_compiled       encoder blocks under torch.compile (one graph shared by all blocks)
  vqdna_compiled_full  the whole encoder (embedding, blocks, final norm) as one compiled graph
  vqdna_bf16           bf16 weights and activations, fp32 master weights + fused AdamW
                       (vqdna.models.optim.MasterWeightAdamW), encoder blocks compiled
  (run 2 profile: whole-encoder compilation recomputed the RoPE tables inside every block's
  kernels, ~12 ms of a 98 ms step; compiling the blocks alone takes the tables as inputs)

    PYTHONPATH=src python bench/pretrain_bench.py --device cuda --out bench/results/pretrain_h100.json
    PYTHONPATH=src python bench/pretrain_bench.py --tiny --device cpu      # smoke test

MFU counts the model FLOPs the MLM objective needs (same formula for both models): 6 x the
encoder's matmul parameters + 12 x layers x T x H (attention scores and values) per token,
plus the MLM head (dense + decoder) on the masked 25%; peak = the GPU's dense bf16 datasheet.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from vqdna.models import VQDNAConfig, VQDNAForMaskedLM
from vqdna.models.masking import mask_tokens

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="toy sizes (CPU smoke test)")
    p.add_argument("--seq", type=int, default=256, help="tokens per sequence incl. [CLS]")
    p.add_argument("--batches", default="128,256", help="comma-separated batch sizes (sequences)")
    p.add_argument("--vocab", type=int, default=512, help="tokenizer ids (VQ codebook K)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per variant (compile happens here)")
    p.add_argument("--variants", default="stock,vqdna,vqdna_compiled")
    p.add_argument("--profile", default=None, help="VARIANT@BATCH: print the top CUDA kernels of that run")
    p.add_argument("--out", default=None, help="JSON file to write")
    return p.parse_args()


def shapes(args) -> dict:
    if args.tiny:
        return dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    return dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


def model_flops_per_token(arch: dict, seq: int, vocab: int, mask_ratio: float) -> float:
    H, L, F = arch["hidden_size"], arch["num_hidden_layers"], arch["intermediate_size"]
    matmul_params = L * (4 * H * H + 2 * H * F)
    head = H * H + H * vocab
    return 6 * matmul_params + 12 * L * seq * H + 6 * head * mask_ratio


def make_vqdna(arch, vocab, device, code_dim=384):
    cfg = VQDNAConfig(levels=1, vocab_sizes=[vocab], embedding="codebook", code_dim=code_dim,
                      hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0, **arch)
    model = VQDNAForMaskedLM(cfg)
    model.load_code_vectors([torch.randn(vocab, code_dim)])
    return model.to(device)


def make_stock(arch, vocab, seq, device):
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(vocab_size=vocab + 3, max_position_embeddings=max(seq, 512), hidden_dropout_prob=0.1,
                     attention_probs_dropout_prob=0.0, attn_implementation="sdpa", **arch)
    return BertForMaskedLM(cfg).to(device)


def random_batch(cfg: VQDNAConfig, batch: int, seq: int, device, gen):
    ids = torch.randint(0, cfg.vocab_sizes[0], (batch, seq, 1), device=device, generator=gen)
    ids[:, 0] = cfg.vocab_sizes[0] + 2  # [CLS]
    return mask_tokens(ids, cfg, ratio=0.25, generator=gen)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_variant(name, model, cfg, batch, seq, args, device) -> dict:
    stock = name == "stock"
    pure_bf16 = name == "vqdna_bf16"
    if name in ("vqdna_compiled", "vqdna_bf16"):
        model.vqdna.encoder.compile_layers(dynamic=False)
    elif name == "vqdna_compiled_full":
        model.vqdna.compile(dynamic=False)
    adamw = dict(lr=1e-4, betas=(0.9, 0.98), weight_decay=0.01, fused=device.type == "cuda")
    if pure_bf16:
        from vqdna.models.optim import MasterWeightAdamW

        model.to(torch.bfloat16)
        opt = MasterWeightAdamW([{"params": list(model.parameters())}], **adamw)
    else:
        opt = torch.optim.AdamW(model.parameters(), **adamw)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                              enabled=device.type == "cuda" and not pure_bf16)
    gen = torch.Generator(device=device).manual_seed(0)
    model.train()

    def step():
        masked, labels = random_batch(cfg, batch, seq, device, gen)
        with autocast:
            if stock:
                out = model(input_ids=masked[..., 0], labels=labels[..., 0])
            else:
                out = model(masked, None, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync(device)
    warm_s = time.perf_counter() - t0
    times, losses = [], []
    for _ in range(args.steps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            losses.append(step().detach())
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            losses.append(step().detach())
            times.append(time.perf_counter() - t)
    if args.profile == f"{name}@{batch}":
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(3):
                step()
            sync(device)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=70))
    med = statistics.median(times)
    tokens = batch * seq
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"variant": name, "batch": batch, "seq": seq, "step_s_median": med, "step_s_min": min(times),
            "tokens_per_s": tokens / med, "warmup_s": warm_s, "final_loss": float(losses[-1]),
            "max_mem_gib": mem}


def correctness(arch, vocab, seq, device) -> dict:
    """The fast paths against the same model in fp32 eager, same weights and batch (eval mode:
    no dropout): relative error of the loss, the logits at masked positions and all gradients."""
    torch.manual_seed(0)
    ref = make_vqdna(arch, vocab, device).eval()
    gen = torch.Generator(device=device).manual_seed(1)
    masked, labels = random_batch(ref.config, 8, seq, device, gen)
    out_ref = ref(masked, None, labels=labels)
    out_ref.loss.backward()
    g_ref = torch.cat([p.grad.flatten().double() for p in ref.parameters() if p.grad is not None])
    cuda = device.type == "cuda"
    checks = {}
    for name in ("autocast_compiled_blocks", "bf16_weights_compiled_blocks"):
        fast = make_vqdna(arch, vocab, device).eval()
        fast.load_state_dict(ref.state_dict())
        if name.startswith("bf16_weights"):
            fast.to(torch.bfloat16)
        if cuda:
            fast.vqdna.encoder.compile_layers(dynamic=False)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda and name.startswith("autocast")):
            out = fast(masked, None, labels=labels)
        out.loss.backward()
        g = torch.cat([p.grad.flatten().double() for p in fast.parameters() if p.grad is not None])
        with torch.no_grad():
            checks[name] = {
                "loss_fp32": float(out_ref.loss), "loss": float(out.loss),
                "loss_rel_diff": abs(float(out.loss) - float(out_ref.loss)) / abs(float(out_ref.loss)),
                "grad_rel_err": float((g - g_ref).norm() / g_ref.norm()),
                "logits_rel_err": float((out.logits.double() - out_ref.logits.double()).norm() / out_ref.logits.double().norm()),
            }
    return checks


def main():
    args = parse_args()
    device = torch.device(args.device)
    torch._dynamo.config.cache_size_limit = 64  # several variants compile the same blocks
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    arch = shapes(args)
    seq = 32 if args.tiny else args.seq
    batches = [4] if args.tiny else [int(b) for b in args.batches.split(",")]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in gpu), None)
    flops_tok = model_flops_per_token(arch, seq, args.vocab, 0.25)

    result = {"bench": "pretrain_step", "device": gpu, "torch": torch.__version__,
              "transformers": __import__("transformers").__version__, "shapes": arch, "seq": seq,
              "vocab": args.vocab, "mask_ratio": 0.25, "precision": "bf16 autocast, fp32 master weights",
              "optimizer": "AdamW fused", "model_flops_per_token": flops_tok, "peak_flops": peak,
              "correctness": correctness(arch, args.vocab, seq, device), "runs": []}
    print("correctness:", json.dumps(result["correctness"]))
    for batch in batches:
        for name in args.variants.split(","):
            torch.manual_seed(0)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            model = make_stock(arch, args.vocab, seq, device) if name == "stock" else make_vqdna(arch, args.vocab, device)
            try:
                r = time_variant(name, model, model.config if name != "stock" else make_vqdna_cfg(arch, args.vocab),
                                 batch, seq, args, device)
            except torch.OutOfMemoryError:
                r = {"variant": name, "batch": batch, "seq": seq, "error": "out of memory"}
            if "tokens_per_s" in r:
                r["mfu"] = r["tokens_per_s"] * flops_tok / peak if peak else None
            result["runs"].append(r)
            print(json.dumps(r))
            del model

    ok = [r for r in result["runs"] if "tokens_per_s" in r]
    stock = [r for r in ok if r["variant"] == "stock"]
    ours = [r for r in ok if r["variant"] != "stock"]
    if stock and ours:
        best_stock = max(stock, key=lambda r: r["tokens_per_s"])
        best_ours = max(ours, key=lambda r: r["tokens_per_s"])
        same_batch = {r["batch"]: r["tokens_per_s"] for r in stock}
        result["best_stock"] = best_stock
        result["best_vqdna"] = best_ours
        result["speedup_vs_stock"] = best_ours["tokens_per_s"] / best_stock["tokens_per_s"]
        result["speedup_vs_stock_same_batch"] = {
            f"{r['variant']}@{r['batch']}": r["tokens_per_s"] / same_batch[r["batch"]] for r in ours if r["batch"] in same_batch}
    print_table(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


def make_vqdna_cfg(arch, vocab):
    return VQDNAConfig(levels=1, vocab_sizes=[vocab], **arch)


def print_table(result):
    print(f"\n{result['device']}  seq={result['seq']}  shapes={result['shapes']}")
    print(f"{'variant':<16}{'batch':>6}{'step ms':>10}{'tokens/s':>14}{'MFU':>8}{'mem GiB':>9}")
    for r in result["runs"]:
        if "tokens_per_s" not in r:
            print(f"{r['variant']:<16}{r['batch']:>6}  {r['error']}")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "-"
        mem = f"{r['max_mem_gib']:.1f}" if r.get("max_mem_gib") else "-"
        print(f"{r['variant']:<16}{r['batch']:>6}{1e3 * r['step_s_median']:>10.1f}{r['tokens_per_s']:>14,.0f}{mfu:>8}{mem:>9}")
    if "speedup_vs_stock" in result:
        print(f"speedup_vs_stock (best vs best): {result['speedup_vs_stock']:.2f}x")


if __name__ == "__main__":
    main()
