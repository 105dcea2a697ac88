"""Tokens/s and MFU of one stage-2 pretraining step: vqdna's backbone vs stock transformers BERT.

Both models get the same shapes (BERT-base, length 256, the same vocabulary of tokenizer ids
plus [PAD]/[MASK]/[CLS], 25% masking 80/10/10, dropout 0.1 on hidden states and none on
attention) and fused AdamW, in the same process. Stock = `BertForMaskedLM` with
`attn_implementation="sdpa"`, bf16 autocast over fp32 weights, no attention mask (its best case).
vqdna variants (`VARIANTS` below):
  vqdna                eager, bf16 autocast
  vqdna_compiled       encoder blocks under torch.compile (one graph shared by all blocks)
  vqdna_compiled_full  the whole encoder (embedding, blocks, final norm) as one compiled graph
  vqdna_bf16           bf16 weights and activations, fp32 master weights + fused AdamW
                       (vqdna.models.optim.MasterWeightAdamW), encoder blocks compiled
  vqdna_bf16_seed1     the same with other dropout draws: the run-to-run noise of a loss curve
  vqdna_fp8            vqdna_bf16 + float8 matmuls in the blocks' linear layers (vqdna.models.fp8),
                       tensorwise scaling (all three products float8)
  vqdna_fp8_rowwise    the same, rowwise scaling (forward and input gradient float8, weight
                       gradient bf16)
  vqdna_fp8_eager      the same without torch.compile (amax and casts as separate kernels)
  *_flash              SDPA restricted to the flash-attention backend (default: PyTorch's choice)
  vqdna_bf16_fused     vqdna_bf16 + residual add, dropout and LayerNorm as one Triton op with the
                       dropout mask regenerated in backward (vqdna.models.fused_norm;
                       pretrain.fused_dropout_norm)
  *_rs                 RoPE on q and k as separate tensors (SelfAttention.rope_separate): the
                       qkv gradient is one stack of dq, dk, dv
  *_rngfn              torch._functorch functionalize_rng_ops: dropout masks recomputed in
                       backward from the saved RNG state instead of stored
  *_cdt                Inductor coordinate_descent_tuning (block sizes of its Triton kernels tuned)
  *_mat                torch.compile mode max-autotune-no-cudagraphs (Triton GEMM templates that
                       can take bias/GELU epilogues, chosen against cuBLAS by timing)
  *_static             the step through vqdna.models.train_step.TrainStep (what `vqdna pretrain`
                       runs) with a static number of scored positions per row (no host syncs)
  *_cg                 the same, the whole step captured once as a CUDA graph and replayed
                       (pretrain.cuda_graphs)
  *_cg_rope, *_cg_gelu, *_cg_rope_gelu
  *_rope_gelu_erfpoly, *_rope_gelu_erflib
                       the GELU op's erf: branch-free polynomial / libdevice (fused_gelu TILES erf_poly)
                       vqdna_bf16_fused_cg + RoPE / fc1 bias+GELU as fused ops
                       (pretrain.fused_rope, pretrain.fused_gelu)
  *_nofold             the fused add+dropout+LayerNorm op without out_proj's and fc2's biases
                       folded in (EncoderLayer.fold_bias off: session 4's fused path)
  *_bhtd               the RoPE op writing q, k, v as [B, heads, T, d] (fused_rope.LAYOUT)
  *_static_rope_gelu   TrainStep's eager path with all three fused ops: paper.yaml's step (cuda_graphs
                       off, as under DDP)
  *_det                the same under torch's deterministic algorithms, strict
                       (pretrain.deterministic; vqdna.seeding.deterministic_kernels): compiled with
                       Inductor's deterministic mode too. CUBLAS_WORKSPACE_CONFIG is read when cuBLAS
                       starts: export :4096:8 for the process (torch's default workspace on sm90)
  *_s5ktiles           the fused norm op with session 5 helper K's launch shapes and torch's
                       partial-sum finish, whatever the tile sweep installed for the other runs

Every run of one batch size trains from the same initial weights on the same batches (real
token files with `--tokens`, else random ids), learning rate warmed up linearly then constant,
so the loss curves of the precisions can be compared step by step; the speed is the median
step time after the warm-up steps (where compilation happens).

    PYTHONPATH=src python3 bench/pretrain_bench.py --device cuda --tokens TOKDIR --out bench/results/pretrain_h200.json
    PYTHONPATH=src python bench/pretrain_bench.py --tiny --device cpu      # smoke test

MFU counts the model FLOPs the MLM objective needs (same formula for both models): 6 x the
encoder's matmul parameters + 12 x layers x T x H (attention scores and values) per token,
plus the MLM head (dense + decoder) on the masked 25%; peak = the GPU's dense bf16 datasheet
(also for the fp8 variant, so MFU stays comparable across precisions).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from vqdna.models import VQDNAConfig, VQDNAForMaskedLM
from vqdna.models.fp8 import convert_to_float8
from vqdna.models.masking import mask_tokens

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}

VARIANTS = {
    "stock": dict(stock=True),
    "vqdna": dict(),
    "vqdna_compiled": dict(compile="blocks"),
    "vqdna_compiled_full": dict(compile="full"),
    "vqdna_bf16": dict(compile="blocks", bf16=True),
    "vqdna_bf16_seed1": dict(compile="blocks", bf16=True, dropout_seed=1),
    "vqdna_fp8": dict(compile="blocks", bf16=True, fp8=True),
    "vqdna_fp8_rowwise": dict(compile="blocks", bf16=True, fp8=True, fp8_recipe="rowwise"),
    "vqdna_fp8_eager": dict(bf16=True, fp8=True),
    "vqdna_fp8_full": dict(compile="full", bf16=True, fp8=True),
}
for _name in list(VARIANTS):
    if _name != "stock" and "seed" not in _name:
        VARIANTS[_name + "_flash"] = dict(VARIANTS[_name], sdpa="flash")
VARIANTS["vqdna_bf16_fused"] = dict(VARIANTS["vqdna_bf16"], fused=True)
VARIANTS["vqdna_bf16_fused_seed1"] = dict(VARIANTS["vqdna_bf16_fused"], dropout_seed=1)
VARIANTS["vqdna_bf16_rs"] = dict(VARIANTS["vqdna_bf16"], rope_separate=True)
VARIANTS["vqdna_bf16_fused_rs"] = dict(VARIANTS["vqdna_bf16_fused"], rope_separate=True)
VARIANTS["vqdna_bf16_fused_rs_seed1"] = dict(VARIANTS["vqdna_bf16_fused_rs"], dropout_seed=1)
for _name in ("vqdna_bf16", "vqdna_bf16_fused", "vqdna_bf16_fused_rs"):
    VARIANTS[_name + "_rngfn"] = dict(VARIANTS[_name], functionalize_rng=True)
    VARIANTS[_name + "_cdt"] = dict(VARIANTS[_name], inductor={"coordinate_descent_tuning": True})
    VARIANTS[_name + "_mat"] = dict(VARIANTS[_name], compile_mode="max-autotune-no-cudagraphs")
for _name in ("vqdna_bf16", "vqdna_bf16_fused"):
    VARIANTS[_name + "_static"] = dict(VARIANTS[_name], static=True)
    VARIANTS[_name + "_cg"] = dict(VARIANTS[_name], static=True, cuda_graphs=True)
    VARIANTS[_name + "_cg_seed1"] = dict(VARIANTS[_name + "_cg"], dropout_seed=1)
# the other fused ops (VQDNAConfig.fused_rope / fused_gelu), alone and together, on the graphed fused path
for _suffix, _kernels in (("_rope", {"fused_rope": True}), ("_gelu", {"fused_gelu": True}),
                          ("_rope_gelu", {"fused_rope": True, "fused_gelu": True})):
    VARIANTS["vqdna_bf16_fused_cg" + _suffix] = dict(VARIANTS["vqdna_bf16_fused_cg"], kernels=_kernels)
    VARIANTS["vqdna_bf16_fused_cg" + _suffix + "_seed1"] = dict(VARIANTS["vqdna_bf16_fused_cg" + _suffix], dropout_seed=1)
# paper.yaml's step (`vqdna pretrain` with cuda_graphs off, as under DDP): TrainStep's eager path
# with all three fused ops
VARIANTS["vqdna_bf16_fused_static_rope_gelu"] = dict(VARIANTS["vqdna_bf16_fused_static"],
                                                     kernels={"fused_rope": True, "fused_gelu": True})
# the same under torch's deterministic algorithms (pretrain.deterministic: vqdna.seeding.deterministic_kernels)
for _name in ("vqdna_bf16_fused_static_rope_gelu", "vqdna_bf16_fused_cg_rope_gelu"):
    VARIANTS[_name + "_det"] = dict(VARIANTS[_name], deterministic=True)
# keys that change what torch.compile produces: a run whose keys differ from the previous run's
# resets dynamo's caches (compiled code is cached per function, and config is not guarded)
VARIANTS["vqdna_bf16_fused_cg_nofold"] = dict(VARIANTS["vqdna_bf16_fused_cg"], fold_bias=False)
VARIANTS["vqdna_bf16_fused_cg_nofold_seed1"] = dict(VARIANTS["vqdna_bf16_fused_cg_nofold"], dropout_seed=1)
VARIANTS["vqdna_bf16_fused_cg_rope_bhtd"] = dict(VARIANTS["vqdna_bf16_fused_cg_rope"], rope_layout="bhtd")
VARIANTS["vqdna_bf16_fused_cg_rope_gelu_bhtd"] = dict(VARIANTS["vqdna_bf16_fused_cg_rope_gelu"], rope_layout="bhtd")
# the GELU op with the branch-free erf (fused_gelu TILES erf_poly) and with libdevice's, explicitly
for _flag, _suffix in ((1, "_erfpoly"), (0, "_erflib")):  # 1: bf16 inputs take the polynomial
    VARIANTS["vqdna_bf16_fused_cg_rope_gelu" + _suffix] = dict(VARIANTS["vqdna_bf16_fused_cg_rope_gelu"],
                                                               gelu_tiles={"erf_poly": _flag})
    VARIANTS["vqdna_bf16_fused_cg_rope_gelu" + _suffix + "_seed1"] = dict(
        VARIANTS["vqdna_bf16_fused_cg_rope_gelu" + _suffix], dropout_seed=1)
# session 5 helper K's launch shapes of the fused norm op (the module defaults when this file was
# written) with the partial sums finished by torch, whatever --tile-sweep installed: the A/B of the sweep
S5K_NORM_TILES = {"fwd_rows": 1, "fwd_warps": 1, "bwd_rows": 1, "bwd_warps": 1, "bwd_progs_per_sm": 16,
                  "philox_rounds": 10, "bwd_maxnreg": 0}
VARIANTS["vqdna_bf16_fused_cg_rope_s5ktiles"] = dict(VARIANTS["vqdna_bf16_fused_cg_rope"], norm_tiles=S5K_NORM_TILES,
                                                     partial_sums="torch")
COMPILE_KEYS = ("compile", "fp8", "fp8_recipe", "fused", "kernels", "rope_separate", "functionalize_rng", "inductor", "compile_mode", "bf16",
                "static", "cuda_graphs", "fold_bias", "rope_layout", "deterministic")

DEFAULT_RUNS = ("stock@256:30,vqdna_bf16@256:200,vqdna_fp8@256:200,vqdna_fp8_rowwise@256:200,"
                "vqdna_bf16_seed1@256:200,stock@512:20")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="toy sizes (CPU smoke test)")
    p.add_argument("--seq", type=int, default=256, help="tokens per sequence incl. [CLS]")
    p.add_argument("--runs", default=DEFAULT_RUNS,
                   help="comma-separated VARIANT@BATCH[:STEPS] in the order to run (steps after warm-up)")
    p.add_argument("--tokens", default=None, help="token directory (vqdna tokenize output): train on its real ids")
    p.add_argument("--vocab", type=int, default=512, help="tokenizer ids without --tokens (VQ codebook K)")
    p.add_argument("--steps", type=int, default=20, help="timed steps of a run without :STEPS")
    p.add_argument("--warmup", type=int, default=6, help="untimed steps per run (compilation happens here)")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (reached after --lr-warmup steps)")
    p.add_argument("--lr-warmup", type=int, default=30)
    p.add_argument("--curve-window", type=int, default=50, help="steps averaged at the end of a loss curve")
    p.add_argument("--curve-ref", default="vqdna_bf16",
                   help="the run every loss curve is compared with; its `_seed1` twin sets the tolerance")
    p.add_argument("--rope-sweep", action="store_true",
                   help="with --kernel-check on CUDA: time the RoPE op's launch shapes, use the fastest for the runs")
    p.add_argument("--profile", default="", help="VARIANT@BATCH[,...]: print the top CUDA kernels of those runs")
    p.add_argument("--profile-dir", default=None, help="write each profile's kernel table and family summary here")
    p.add_argument("--kernel-check", action="store_true",
                   help="fused add+dropout+LayerNorm op against the plain composition (errors, mask statistics, time)")
    p.add_argument("--tile-sweep", action="store_true",
                   help="with --kernel-check on CUDA: time the fused op's launch shapes, use the fastest for the runs")
    p.add_argument("--tiles", default="",
                   help="fused op launch shape for the runs, KEY=N[,KEY=N] (keys of vqdna.models.fused_norm.TILES)")
    p.add_argument("--budget-s", type=float, default=0, help="skip the remaining runs once this many seconds have passed")
    p.add_argument("--no-correctness", action="store_true", help="skip the one-step fp32 comparison")
    p.add_argument("--no-step-check", action="store_true", help="skip the static/graph step check after the runs")
    p.add_argument("--out", default=None, help="JSON file to write (rewritten after every run)")
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


def make_config(arch, vocab, code_dim=384, fused=False, **kernels) -> VQDNAConfig:
    """`kernels`: VQDNAConfig's other fused_* keys (fused_rope, fused_gelu)."""
    return VQDNAConfig(levels=1, vocab_sizes=[vocab], embedding="codebook", code_dim=code_dim,
                       hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0,
                       fused_dropout_norm=fused, **kernels, **arch)


def make_vqdna(arch, vocab, device, code_dim=384, fused=False, **kernels):
    cfg = make_config(arch, vocab, code_dim, fused, **kernels)
    model = VQDNAForMaskedLM(cfg)
    model.load_code_vectors([torch.randn(vocab, code_dim)])
    return model.to(device)


def make_stock(arch, vocab, seq, device):
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(vocab_size=vocab + 3, max_position_embeddings=max(seq, 512), hidden_dropout_prob=0.1,
                     attention_probs_dropout_prob=0.0, attn_implementation="sdpa", **arch)
    return BertForMaskedLM(cfg).to(device)


class Batches:
    """Batch `step` of a run: the same masked ids for every variant (real token windows through
    the pretraining batcher, or random ids)."""

    def __init__(self, cfg: VQDNAConfig, batch: int, seq: int, device, tokens_dir: str | None):
        self.cfg, self.batch, self.seq, self.device = cfg, batch, seq, device
        self.file = self.batcher = None
        self.n_real = seq - 1  # maskable tokens a row: all but [CLS]
        if tokens_dir:
            from vqdna.models.pretrain import MLMBatcher, PretrainSettings
            from vqdna.tokens import TokenFile

            self.file = TokenFile(tokens_dir, "train")
            settings = PretrainSettings(max_len=seq, micro_batch_size=batch, mask_ratio=0.25)
            self.batcher = MLMBatcher(cfg, settings, device, seed=0, tokens_per_window=self.file.meta.tokens_per_window)
            self.n_real = self.batcher.crop

    def __call__(self, step: int):
        if self.batcher is not None:
            masked, attention_mask, labels = self.batcher.train_batch(self.file, step, 0, 0)
            assert attention_mask is None, "fixed-rate token files give full windows"
            return masked, labels
        gen = torch.Generator(device=self.device).manual_seed(step)
        ids = torch.randint(0, self.cfg.vocab_sizes[0], (self.batch, self.seq, 1), device=self.device, generator=gen)
        ids[:, 0] = self.cfg.vocab_sizes[0] + 2  # [CLS]
        return mask_tokens(ids, self.cfg, ratio=0.25, generator=gen)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def sdpa_context(spec: dict, device):
    if spec.get("sdpa") == "flash" and device.type == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    return contextlib.nullcontext()


def prepare(name: str, model, device):
    """Apply a variant's precision and compilation to a fresh model; returns the optimizer."""
    spec = VARIANTS[name]
    adamw = dict(lr=1e-4, betas=(0.9, 0.98), weight_decay=0.01, fused=device.type == "cuda")
    if spec.get("bf16"):
        from vqdna.models.optim import MasterWeightAdamW

        for p in model.parameters():  # parameters only: the frozen codebooks stay fp32 (as vqdna pretrain does)
            p.data = p.data.to(torch.bfloat16)
        opt = MasterWeightAdamW([{"params": list(model.parameters())}], **adamw)
    else:
        opt = torch.optim.AdamW(model.parameters(), **adamw)
    if spec.get("fp8"):
        convert_to_float8(model, spec.get("fp8_recipe", "tensorwise"))
    if spec.get("compile") == "blocks":
        mode = {"mode": spec["compile_mode"]} if spec.get("compile_mode") else {}
        model.vqdna.compile_blocks(dynamic=False, **mode)
    elif spec.get("compile") == "full":
        model.vqdna.compile(dynamic=False)
    return opt


def run_variant(name, batch, steps, args, arch, vocab, device, batches) -> dict:
    spec = VARIANTS[name]
    stock = spec.get("stock", False)
    torch.manual_seed(0)  # the same initial weights for every vqdna run
    model = (make_stock(arch, vocab, args.seq_len, device) if stock
             else make_vqdna(arch, vocab, device, fused=spec.get("fused", False), **spec.get("kernels", {})))
    opt = prepare(name, model, device)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                              enabled=device.type == "cuda" and not spec.get("bf16"))
    dropout_seed = spec.get("dropout_seed", 0)
    model.train()
    total = args.warmup + steps
    train_step = None
    if spec.get("static"):  # the pretraining job's step (TrainStep), optionally as one CUDA graph
        from vqdna.models.masking import targets_per_row
        from vqdna.models.train_step import TrainStep

        train_step = TrainStep(model, opt, master_weights=bool(spec.get("bf16")), autocast=autocast,
                               targets_per_row=targets_per_row(batches.n_real, 0.25),
                               cuda_graphs=bool(spec.get("cuda_graphs")), warmup_steps=3)

    def step(s, batch_s=None):
        lr = args.lr * min(1.0, (s + 1) / args.lr_warmup)
        masked, labels = batch_s if batch_s is not None else batches(s)
        if train_step is not None:  # the loss buffer of a graph is rewritten by the next replay: copy
            return train_step([(masked, None, labels)], lr, [1_000_003 * dropout_seed + s])[0]["loss"].clone()
        for group in opt.param_groups:
            group["lr"] = lr
        torch.manual_seed(1_000_003 * dropout_seed + s)
        with autocast:
            if stock:
                out = model(input_ids=masked[..., 0], labels=labels[..., 0])
            else:
                out = model(masked, None, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.detach()

    losses, times, prof = [], [], None
    from vqdna.models import fused_rope
    from vqdna.models.layers import EncoderLayer, SelfAttention

    # class / module switches a variant sets for its run (read at trace time), restored after
    switches = [(SelfAttention, "rope_separate", spec.get("rope_separate")), (EncoderLayer, "fold_bias", spec.get("fold_bias")),
                (fused_rope, "LAYOUT", spec.get("rope_layout"))]
    with sdpa_context(spec, device), compile_config(spec), contextlib.ExitStack() as restore:
        for owner, attr, value in switches:
            if value is not None:
                restore.callback(setattr, owner, attr, getattr(owner, attr))
                setattr(owner, attr, value)
        if spec.get("norm_tiles"):  # launch shapes are read when the op runs (graph capture included)
            from vqdna.models import fused_norm

            restore.callback(fused_norm.set_tiles, **fused_norm.set_tiles(**spec["norm_tiles"]))
        if spec.get("gelu_tiles"):
            from vqdna.models import fused_gelu

            restore.callback(fused_gelu.set_tiles, **fused_gelu.set_tiles(**spec["gelu_tiles"]))
        if spec.get("deterministic"):  # before the first step: Inductor reads the mode when it compiles
            from vqdna.seeding import deterministic_kernels

            restore.callback(deterministic_kernels(warn_only=False))
        if spec.get("partial_sums"):
            from vqdna.models import partial_sums

            restore.callback(partial_sums.set_mode, partial_sums.set_mode(spec["partial_sums"]))
        t0 = time.perf_counter()
        for s in range(args.warmup):
            losses.append(step(s))
        sync(device)
        warm_s = time.perf_counter() - t0
        for s in range(args.warmup, total):
            batch_s = batches(s)  # drawn and masked before the clock starts: the same for every variant
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                losses.append(step(s, batch_s))
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t = time.perf_counter()
                losses.append(step(s, batch_s))
                times.append(time.perf_counter() - t)
        if f"{name}@{batch}" in args.profile.split(","):
            prof = profile_steps(step, total, device, f"{name}@{batch}", args.profile_dir, times)
    med = statistics.median(times)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    curve = [float(l) for l in losses]
    return {"variant": name, "batch": batch, "seq": args.seq_len, "steps": steps, "warmup_steps": args.warmup,
            "step_s_median": med, "step_s_min": min(times), "tokens_per_s": batch * args.seq_len / med,
            "warmup_s": warm_s, "final_loss": curve[-1], "max_mem_gib": mem, "profile": prof, "loss_curve": curve}


def compile_config(spec: dict):
    """Inductor / functorch settings of a variant, active while it compiles and runs."""
    stack = contextlib.ExitStack()
    if spec.get("inductor"):
        import torch._inductor.config as inductor_config

        stack.enter_context(inductor_config.patch(spec["inductor"]))
    if spec.get("functionalize_rng"):
        import torch._functorch.config as functorch_config

        stack.enter_context(functorch_config.patch(functionalize_rng_ops=True))
    return stack


# Kernel families of a profile (first match wins), for the time-per-step breakdown.
FAMILIES = (
    ("fused qkv bias + RoPE (vqdna op)", ("_rope_fwd_kernel", "_rope_bwd_kernel")),  # before the next: same suffixes
    ("fused fc1 bias + GELU (vqdna op)", ("_gelu_fwd_kernel", "_gelu_bwd_kernel")),
    ("partial-sum finish (vqdna, Triton)", ("_colsum_kernel",)),
    # attention before the next two: flash-attention's kernels (SDPA's backend in deterministic
    # mode) are named flash_fwd_kernel/flash_bwd_*, cuDNN's also carry "sm90"
    ("attention (cuDNN / flash)", ("cudnn", "flash", "fmha", "sdpa", "attention")),
    ("fused add+dropout+LayerNorm (vqdna op)", ("_fwd_kernel", "_bwd_kernel")),
    ("GEMM (cuBLAS / Triton templates)", ("nvjet", "gemm", "cutlass", "xmma", "sm90_", "cublas", "triton_tem", "mm_")),
    ("optimizer (AdamW, master copies)", ("multi_tensor", "adam", "foreach")),
    ("LayerNorm (+fused element-wise)", ("layer_norm", "native_layer_norm")),
    ("GELU (+fused element-wise)", ("gelu",)),
    ("dropout / residual add", ("dropout", "rand", "philox")),
    ("cross-entropy / softmax", ("softmax", "nll", "cross_entropy", "log_softmax")),
    ("copies / casts", ("copy", "convert", "_to_copy", "cat", "clone", "fill")),
)


def kernel_family(name: str) -> str:
    low = name.lower()
    for family, keys in FAMILIES:
        if any(k in low for k in keys):
            return family
    return "other element-wise / reductions (RoPE, sums, ...)" if low.startswith("triton") else "other"


def profile_steps(step, first: int, device, label: str = "", out_dir: str | None = None, times=None):
    """Three steps under torch.profiler: the top kernels, and CUDA time per step by family."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    n = 3
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for s in range(first, first + n):
            step(s)
        sync(device)
    averages = prof.key_averages()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = averages.table(sort_by=key, row_limit=60, max_name_column_width=110)
    kernels = [e for e in averages if e.device_type == DeviceType.CUDA]
    families: dict[str, float] = {}
    for e in kernels:
        fam = kernel_family(e.key)
        families[fam] = families.get(fam, 0.0) + e.self_device_time_total / 1e3 / n
    total = sum(families.values())
    lines = [f"profile {label}: CUDA kernel time per step by family ({n} steps; "
             f"median timed step {1e3 * statistics.median(times):.1f} ms)" if times else f"profile {label}"]
    for fam, ms in sorted(families.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {fam:<55}{ms:>8.2f} ms  {100 * ms / total if total else 0:5.1f}%")
    lines.append(f"  {'total kernel time':<55}{total:>8.2f} ms")
    top = sorted(kernels, key=lambda e: -e.self_device_time_total)[:40]
    lines.append("  top kernels (ms/step, calls/step, family):")
    for e in top:
        lines.append(f"    {e.self_device_time_total / 1e3 / n:8.2f}  {e.count / n:6.1f}  "
                     f"{kernel_family(e.key)[:20]:<20}  {e.key[:120]}")
    summary = "\n".join(lines)
    print(table if device.type != "cuda" else summary, flush=True)
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        safe = label.replace("@", "_")
        Path(out_dir, f"profile_{safe}.txt").write_text(summary + "\n\n" + table + "\n")
    return {"families_ms_per_step": families, "kernel_ms_per_step": total}


def correctness(arch, vocab, seq, device, batches) -> dict:
    """One step of each precision against the same model in fp32 eager, same weights and a real
    batch (eval mode: no dropout): relative error of the loss, the logits at masked positions and
    all parameter gradients. The fp32 model runs with TF32 off."""
    torch.manual_seed(0)
    ref = make_vqdna(arch, vocab, device).eval()
    masked, labels = batches(10_000)
    masked, labels = masked[:16], labels[:16]
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    out_ref = ref(masked, None, labels=labels)
    out_ref.loss.backward()
    torch.backends.cuda.matmul.allow_tf32 = tf32
    g_ref = torch.cat([p.grad.flatten().double() for p in ref.parameters() if p.grad is not None])
    cuda = device.type == "cuda"
    checks = {}
    for name, bf16_weights, fp8, fused, kernels in (
            ("bf16_autocast", False, None, False, {}), ("bf16_weights", True, None, False, {}),
            ("bf16_weights_fused", True, None, True, {}),  # out_proj / fc2 biases folded (EncoderLayer.fold_bias)
            ("bf16_weights_fused_rope", True, None, True, {"fused_rope": True}),
            ("fp8", True, "tensorwise", False, {}), ("fp8_rowwise", True, "rowwise", False, {})):
        fast = make_vqdna(arch, vocab, device, fused=fused, **kernels).eval()
        fast.load_state_dict(ref.state_dict())
        if bf16_weights:
            for p in fast.parameters():
                p.data = p.data.to(torch.bfloat16)
        if fp8:
            convert_to_float8(fast, fp8)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda and not bf16_weights):
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


def step_check(arch, vocab, device, batches, steps: int = 6) -> dict:
    """The static masked-LM path and the CUDA-graph step against the dynamic / eager ones, same
    weights and batches, eval mode (no dropout: the draws differ by design): the static path's
    loss, logits and gradients vs the dynamic path (fp32); `steps` optimizer steps of the bf16
    model with fp32 masters through TrainStep, eager vs graphed (2 eager warm-up steps, capture,
    replays): per-step losses and final weights."""
    from vqdna.models.masking import targets_per_row
    from vqdna.models.optim import MasterWeightAdamW
    from vqdna.models.train_step import TrainStep

    K = targets_per_row(batches.n_real, 0.25)
    data = [batches(20_000 + i) for i in range(steps)]
    data = [(m[:32], l[:32]) for m, l in data]
    torch.manual_seed(0)
    ref = make_vqdna(arch, vocab, device).eval()
    res = {"targets_per_row": K}
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    outs, grads = [], []
    for static in (False, True):
        ref.zero_grad(set_to_none=True)
        out = ref(data[0][0], None, labels=data[0][1], **({"targets_per_row": K} if static else {}))
        out.loss.backward()
        outs.append(out)
        grads.append(torch.cat([p.grad.flatten().double() for p in ref.parameters() if p.grad is not None]))
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a, b = outs
    res["static_vs_dynamic_fp32"] = {
        "loss_abs_diff": abs(float(a.loss.detach()) - float(b.loss.detach())), "logits_max_abs_diff": float((a.logits - b.logits).abs().max()),
        "grad_rel_err": float((grads[1] - grads[0]).norm() / grads[0].norm()),
        "num_masked": [int(a.num_masked), int(b.num_masked)], "num_targets_static": int(b.num_targets)}
    if device.type != "cuda":
        return res
    runs = {}
    for graphs in (False, True):
        torch.manual_seed(0)
        model = make_vqdna(arch, vocab, device)
        model.load_state_dict(ref.state_dict())
        for p in model.parameters():
            p.data = p.data.to(torch.bfloat16)
        model.eval()
        opt = MasterWeightAdamW([{"params": list(model.parameters())}], lr=1e-4, betas=(0.9, 0.98),
                                weight_decay=0.01, fused=True)
        ts = TrainStep(model, opt, master_weights=True, grad_clip=1.0, targets_per_row=K, cuda_graphs=graphs,
                       warmup_steps=2)
        losses = [float(ts([(m, None, l)], 3e-4, [s])[0]["loss"]) for s, (m, l) in enumerate(data)]
        runs[graphs] = (losses, torch.cat([p.detach().flatten().double() for p in model.parameters()]))
    (le, we), (lg, wg) = runs[False], runs[True]
    res["graph_vs_eager_bf16_eval"] = {
        "steps": steps, "losses_eager": le, "losses_graph": lg,
        "loss_max_abs_diff": max(abs(x - y) for x, y in zip(le, lg)),
        "weights_rel_diff": float((wg - we).norm() / we.norm()), "weights_equal": bool(torch.equal(wg, we))}
    return res


def fp8_kernel_vs_emulation(device) -> dict:
    """The GPU float8 products (torch._scaled_mm) against the CPU path's fp32 emulation of the same
    float8 operands and scales: relative error per recipe and product (should be fp32 rounding,
    plus fast accumulation in the forward product)."""
    from vqdna.models import fp8

    gen = torch.Generator(device="cpu").manual_seed(7)
    x = torch.randn(4096, 768, generator=gen).to(device, torch.bfloat16)
    w = torch.randn(3072, 768, generator=gen).to(device, torch.bfloat16)
    out = {}
    for recipe, rows in (("tensorwise", False), ("rowwise", True)):
        if rows:
            x8, ix = fp8.to_float8_rows(x, fp8.E4M3, dim=1)
            w8, iw = fp8.to_float8_rows(w, fp8.E4M3, dim=1)
            iw = iw.reshape(1, -1)
        else:
            x8, ix = fp8.to_float8(x, fp8.E4M3)
            w8, iw = fp8.to_float8(w, fp8.E4M3)
        for fast in (True, False):
            try:
                gpu = fp8.scaled_mm(x8, w8.t(), ix, iw, torch.bfloat16, fast_accum=fast).float().cpu()
            except Exception as exc:  # noqa: BLE001
                out[f"{recipe}_fast{int(fast)}"] = repr(exc)[:300]
                continue
            emu = fp8.scaled_mm(x8.cpu(), w8.cpu().t(), ix.cpu(), iw.cpu(), torch.float32)
            out[f"{recipe}_fast{int(fast)}"] = float((gpu - emu).norm() / emu.norm())
    return out


def kernel_check(device, tiny: bool = False, sweep: bool = False) -> dict:
    """The fused add+dropout+LayerNorm op (vqdna.models.fused_norm) against the plain composition
    `x + dropout(y)`, `layer_norm` with the same keep mask (read back through the op), at the
    encoder's shape [B*T, H] in bf16: relative errors of both outputs and all four gradients
    against an fp32 reference, the keep-mask statistics, and forward+backward time of the op
    against the plain composition compiled by Inductor (which stores its mask)."""
    import torch.nn.functional as F

    from vqdna.models import fused_norm

    N, H, p, eps = (256, 64, 0.1, 1e-12) if tiny else (65536, 768, 0.1, 1e-12)
    gen = torch.Generator(device="cpu").manual_seed(3)
    res = {"shape": [N, H], "p": p, "triton": fused_norm.triton_available(device)}
    x, y, gs, gh = (torch.randn(N, H, generator=gen).to(device, torch.bfloat16) for _ in range(4))
    w = (1 + 0.1 * torch.randn(H, generator=gen)).to(device, torch.bfloat16)
    b = (0.1 * torch.randn(H, generator=gen)).to(device, torch.bfloat16)
    seed = torch.tensor([12345], device=device)
    keep = fused_norm.keep_mask((N, H), p, seed, device)
    kf = keep.float()
    res["keep_fraction"] = float(kf.mean())
    res["keep_fraction_row_std"] = float(kf.mean(1).std())
    res["keep_corr_adjacent_cols"] = float(torch.corrcoef(torch.stack([kf[:, :-1].flatten(), kf[:, 1:].flatten()]))[0, 1])
    other = fused_norm.keep_mask((N, H), p, seed + 1, device)
    res["keep_agreement_other_seed"] = float((keep == other).float().mean())  # ~ p^2 + (1-p)^2 if independent

    def run(fn, dtype):
        xs = [t.detach().to(dtype).requires_grad_() for t in (x, y, w, b)]
        s, h = fn(*xs)
        ((s.float() * gs.float()).sum() + (h.float() * gh.float()).sum()).backward()
        return [s, h] + [t.grad for t in xs]

    def plain(x_, y_, w_, b_):
        s = x_ + torch.where(keep, y_ / (1 - p), torch.zeros((), dtype=y_.dtype, device=device))
        return s, F.layer_norm(s, (H,), w_, b_, eps)

    def fused(x_, y_, w_, b_):
        return fused_norm.dropout_add_layer_norm(x_, y_, w_, b_, p, eps, seed=seed)

    ref = run(plain, torch.float32)
    names = ("s", "h", "dx", "dy", "dweight", "dbias")
    for label, fn in (("fused_bf16", fused), ("plain_bf16", plain)):
        got = run(fn, torch.bfloat16)
        res[label + "_rel_err_vs_fp32"] = {
            n: float((a.double() - r.double()).norm() / r.double().norm()) for n, a, r in zip(names, got, ref)}
    # y's bias folded into the op (how the encoder calls it: out_proj / fc2 bias), vs adding it first
    yb = (0.1 * torch.randn(H, generator=gen)).to(device, torch.bfloat16)

    def run_yb(fn, dtype):
        xs = [t.detach().to(dtype).requires_grad_() for t in (x, y, w, b, yb)]
        s_, h_ = fn(*xs)
        ((s_.float() * gs.float()).sum() + (h_.float() * gh.float()).sum()).backward()
        return [s_, h_] + [t.grad for t in xs]

    ref_yb = run_yb(lambda x_, y_, w_, b_, yb_: plain(x_, y_ + yb_, w_, b_), torch.float32)
    for label, fn in (("fused_y_bias_bf16", lambda x_, y_, w_, b_, yb_: fused_norm.dropout_add_layer_norm(
                          x_, y_, w_, b_, p, eps, seed=seed, y_bias=yb_)),
                      ("plain_y_bias_bf16", lambda x_, y_, w_, b_, yb_: plain(x_, y_ + yb_, w_, b_))):
        got = run_yb(fn, torch.bfloat16)
        res[label + "_rel_err_vs_fp32"] = {
            n: float((a.double() - r.double()).norm() / r.double().norm())
            for n, a, r in zip(names + ("dy_bias",), got, ref_yb)}
    if device.type == "cuda":
        import triton.testing

        def fwd_bwd(fn):
            xs = [t.detach().requires_grad_() for t in (x, y, w, b)]

            def go():
                s, h = fn(*xs)
                torch.autograd.backward((s, h), (gs, gh))
            return go

        def plain_dropout(x_, y_, w_, b_):  # what the compiled block does: mask drawn and stored
            s = x_ + F.dropout(y_, p, training=True)
            return s, F.layer_norm(s, (H,), w_, b_, eps)

        compiled = torch.compile(plain_dropout, dynamic=False)
        for label, fn in (("fused_op", fused), ("inductor_plain", compiled)):
            res[label + "_fwd_bwd_ms"] = float(triton.testing.do_bench(fwd_bwd(fn), warmup=50, rep=200,
                                                                        return_mode="median"))
        # bytes that must move: forward reads x, y, writes s, h; backward reads dh, ds, s, writes dx, dy
        res["min_bytes_fwd_bwd_GB"] = 9 * N * H * 2 / 1e9
        if sweep:
            from vqdna.models import partial_sums

            res["tile_sweep"] = sweep_tiles(fused_norm, x, y, w, b, gs, gh, seed, p, eps)
            fused_norm.set_tiles(**res["tile_sweep"]["best"])
            partial_sums.set_mode(res["tile_sweep"]["best_partial_sums"])
            res["partial_sums_used"] = partial_sums.MODE
            res["tiles_used"] = dict(fused_norm.TILES)
            res["fused_op_best_tiles_fwd_bwd_ms"] = float(triton.testing.do_bench(fwd_bwd(fused), warmup=50, rep=200,
                                                                                 return_mode="median"))
            got = run(fused, torch.bfloat16)  # the installed tiles compute the same function
            res["fused_bf16_best_tiles_rel_err_vs_fp32"] = {
                n: float((a.double() - r.double()).norm() / r.double().norm()) for n, a, r in zip(names, got, ref)}
    res["tiles"] = dict(fused_norm.TILES)
    return res


def rope_kernel_check(device, tiny: bool = False, sweep: bool = False) -> dict:
    """The qkv bias + RoPE op (vqdna.models.fused_rope) against the plain composition (bias add,
    positions.apply_rope on q and k) at the encoder's shape [B, T, 3, heads, d] in bf16: relative
    errors of q, k, v and of the qkv and bias gradients against an fp32 reference (plain bf16
    alongside), kernel times forward and backward against the bytes they must move, and
    forward+backward through autograd (host dispatch included).
    `sweep`: time a few launch shapes and install the fastest."""
    from vqdna.models import fused_rope
    from vqdna.models.positions import apply_rope, rope_tables

    B, T, nh, d = (4, 32, 4, 16) if tiny else (256, 256, 12, 64)
    gen = torch.Generator(device="cpu").manual_seed(5)
    qkv = torch.randn(B, T, 3, nh, d, generator=gen).to(device, torch.bfloat16)
    bias = (0.1 * torch.randn(3 * nh * d, generator=gen)).to(device, torch.bfloat16)
    # incoming gradients as SDPA hands them back: [B, heads, T, d] memory, transposed views
    grads = [torch.randn(B, nh, T, d, generator=gen).to(device, torch.bfloat16).transpose(1, 2) for _ in range(3)]
    cos, sin = rope_tables(T, d, 10000.0, device, torch.bfloat16)
    res = {"shape": [B, T, 3, nh, d], "layout": fused_rope.LAYOUT, "triton": fused_rope.triton_available(device)}

    def plain(qkv_, bias_):
        z = qkv_ + bias_.view(3, nh, d)
        c, s_ = cos[:, None].to(z.dtype), sin[:, None].to(z.dtype)
        return apply_rope(z[:, :, 0], c, s_), apply_rope(z[:, :, 1], c, s_), z[:, :, 2]

    def op(qkv_, bias_):
        return fused_rope.rope_qkv(qkv_, bias_, cos, sin)

    def run(fn, dtype):
        ins = [qkv.detach().to(dtype).requires_grad_(), bias.detach().to(dtype).requires_grad_()]
        outs = fn(*ins)
        torch.autograd.backward(outs, [g.to(dtype) for g in grads])
        return list(outs) + [ins[0].grad, ins[1].grad]

    ref = run(plain, torch.float32)
    names = ("q", "k", "v", "dqkv", "dbias")
    for label, fn in (("fused_bf16", op), ("plain_bf16", plain)):
        got = run(fn, torch.bfloat16)
        res[label + "_rel_err_vs_fp32"] = {
            n: float((a.double() - r.double()).norm() / r.double().norm()) for n, a, r in zip(names, got, ref)}
    if device.type == "cuda":
        import triton.testing

        def bench(fn):
            return float(triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median"))

        def kernels():
            return (bench(lambda: fused_rope.triton_forward(qkv, bias, cos, sin, fused_rope.LAYOUT)),
                    bench(lambda: fused_rope.triton_backward(*grads, cos, sin, torch.bfloat16)))

        if sweep:
            old = dict(fused_rope.TILES)
            fwd, bwd = {}, {}
            for rows, warps in ((1, 2), (2, 4), (4, 4), (4, 8)):
                fused_rope.set_tiles(fwd_rows=rows, fwd_warps=warps)
                fwd[f"{rows}x{warps}"] = bench(lambda: fused_rope.triton_forward(qkv, bias, cos, sin, fused_rope.LAYOUT))
            for rows, warps, per_sm in ((1, 2, 8), (1, 4, 8), (2, 4, 8), (2, 4, 4), (4, 8, 4)):
                fused_rope.set_tiles(bwd_rows=rows, bwd_warps=warps, bwd_progs_per_sm=per_sm)
                bwd[f"{rows}x{warps}x{per_sm}"] = bench(lambda: fused_rope.triton_backward(*grads, cos, sin, torch.bfloat16))
            fr, fw = (int(v) for v in min(fwd, key=fwd.get).split("x"))
            br, bw, bp = (int(v) for v in min(bwd, key=bwd.get).split("x"))
            fused_rope.set_tiles(**old)
            fused_rope.set_tiles(fwd_rows=fr, fwd_warps=fw, bwd_rows=br, bwd_warps=bw, bwd_progs_per_sm=bp)
            res["tile_sweep"] = {"fwd_ms": fwd, "bwd_ms": bwd}
            got = run(op, torch.bfloat16)  # the installed tiles compute the same function
            res["fused_bf16_best_tiles_rel_err_vs_fp32"] = {
                n: float((a.double() - r.double()).norm() / r.double().norm()) for n, a, r in zip(names, got, ref)}
        res["tiles"] = dict(fused_rope.TILES)
        res["fwd_kernel_ms"], res["bwd_kernel_ms"] = kernels()
        # each direction reads one [B, T, 3H] tensor and writes one (bf16)
        gb = B * T * 3 * nh * d * 2 / 1e9
        res["fwd_min_ms_at_4TBps"] = res["bwd_min_ms_at_4TBps"] = 2 * gb / 4.0

        def fwd_bwd(fn):
            ins = [qkv.detach().requires_grad_(), bias.detach().requires_grad_()]

            def go():
                torch.autograd.backward(fn(*ins), grads)
            return go

        # (the plain composition compiled by Inductor is not timed here: its kernels are in the
        # step profiles, session 4's `pretrain_h200_s4_prof_fused_cg.txt`, ~5.4 ms a step)
        res["fused_op_fwd_bwd_ms"] = bench(fwd_bwd(op))
    return res


# launch shapes the tile sweep times: forward (rows a program, warps), backward (rows an
# iteration, warps, programs per multiprocessor, register cap; 0 = none). Session 4's design
# point was one warp per row (1x1, 1x1x16); with the folded y bias that kernel takes 254
# registers a thread (ptxas, sm_90), 8 resident warps an SM: the session-5 entries keep every
# program resident (programs per SM = what fits by registers: 1x2 187 regs -> 5, 1x4 72 -> 7,
# 2x4 140 -> 3, 1x8 48 -> 5) or cap the registers
FWD_TILES = ((1, 1), (2, 2), (2, 1), (4, 2))
BWD_TILES = ((1, 1, 16, 0), (1, 1, 8, 0), (1, 1, 12, 168), (1, 1, 16, 128), (1, 2, 5, 0), (1, 2, 8, 0),
             (1, 4, 7, 0), (1, 4, 4, 0), (2, 4, 3, 0), (1, 8, 4, 0), (2, 2, 8, 0), (4, 4, 4, 0))


def sweep_tiles(fused_norm, x, y, w, b, gs, gh, seed, p, eps) -> dict:
    """Forward and backward time of the fused op's kernels per launch shape (triton do_bench,
    median; the backward with the folded y bias, as 22 of the step's 23 calls run it, finishing
    included), against the bytes each must move; the fastest of each is `best`, then the
    partial-sum finish (vqdna.models.partial_sums: torch vs Triton) timed at `best`, the faster
    in `best_partial_sums`. A launch shape that fails to compile is recorded, not fatal."""
    import triton.testing

    from vqdna.models import partial_sums

    N, H = x.shape
    old, old_mode = dict(fused_norm.TILES), partial_sums.MODE
    fwd, bwd, regs, errors = {}, {}, {}, {}

    def bench(fn):
        return float(triton.testing.do_bench(fn, warmup=10, rep=60, return_mode="median"))

    yb = torch.zeros(H, device=x.device, dtype=x.dtype) + 0.1
    try:
        for rows, warps in FWD_TILES:
            fused_norm.set_tiles(fwd_rows=rows, fwd_warps=warps)
            try:
                fwd[f"{rows}x{warps}"] = bench(lambda: fused_norm.triton_forward(x, y, w, b, seed, p, eps, yb))
            except Exception as exc:  # noqa: BLE001
                errors[f"fwd {rows}x{warps}"] = repr(exc)[:300]
        s, _, mean, rstd = fused_norm.triton_forward(x, y, w, b, seed, p, eps, yb)

        def backward():
            return fused_norm.triton_backward(gh, gs, s, w, mean, rstd, seed, p, x.dtype, y.dtype, yb.dtype)

        for rows, warps, per_sm, maxnreg in BWD_TILES:
            key = f"{rows}x{warps}x{per_sm}x{maxnreg}"
            fused_norm.set_tiles(bwd_rows=rows, bwd_warps=warps, bwd_progs_per_sm=per_sm, bwd_maxnreg=maxnreg)
            try:
                bwd[key] = bench(backward)
                k = fused_norm.LAST_BWD_KERNEL.get("kernel")
                regs[key] = {"n_regs": getattr(k, "n_regs", None), "n_spills": getattr(k, "n_spills", None)}
            except Exception as exc:  # noqa: BLE001
                errors["bwd " + key] = repr(exc)[:300]
        fr, fw = (int(v) for v in min(fwd, key=fwd.get).split("x"))
        br, bw, bp, bm = (int(v) for v in min(bwd, key=bwd.get).split("x"))
        best = {"fwd_rows": fr, "fwd_warps": fw, "bwd_rows": br, "bwd_warps": bw, "bwd_progs_per_sm": bp,
                "bwd_maxnreg": bm}
        fused_norm.set_tiles(**best)
        finish = {}
        for mode in ("torch", "triton"):
            partial_sums.set_mode(mode)
            try:
                finish[mode] = bench(backward)
            except Exception as exc:  # noqa: BLE001
                errors["finish " + mode] = repr(exc)[:300]
        partial_sums.set_mode("torch")
        ref_sums = [t.float() for t in backward()[2:]]
        partial_sums.set_mode("triton")
        try:
            tri_sums = [t.float() for t in backward()[2:]]
            finish["triton_vs_torch_rel_diff"] = [float((a - r).norm() / r.norm()) for a, r in zip(tri_sums, ref_sums)]
        except Exception as exc:  # noqa: BLE001
            errors["finish check"] = repr(exc)[:300]
        best_mode = min((m for m in ("torch", "triton") if m in finish), key=finish.get)
        partial_sums.set_mode("torch")
        # diagnostic only (not installed): is the Philox generator what bounds the kernels?
        fused_norm.set_tiles(philox_rounds=7)
        diag = {"fwd_ms_7_rounds": bench(lambda: fused_norm.triton_forward(x, y, w, b, seed, p, eps, yb)),
                "bwd_ms_7_rounds": bench(backward),
                "fwd_ms_no_dropout": bench(lambda: fused_norm.triton_forward(x, y, w, b, seed, 0.0, eps, yb))}
    finally:
        fused_norm.set_tiles(**old)
        partial_sums.set_mode(old_mode)
    gb = 2 * N * H * x.element_size() / 1e9  # GB of two [N, H] tensors
    return {"fwd_ms": fwd, "bwd_ms": bwd, "bwd_kernel_regs": regs, "finish_ms": finish, "errors": errors,
            "diagnostic": diag, "fwd_min_ms_at_4TBps": 2 * gb / 4.0, "bwd_min_ms_at_4TBps": 2.5 * gb / 4.0,
            "best": best, "best_partial_sums": best_mode}


def compare_curves(runs: list[dict], window: int, ref_name: str = "vqdna_bf16") -> dict:
    """Loss curves of runs with the same batches and init, against `ref_name` at that batch:
    mean loss over the last `window` steps, its difference, and the largest gap between the
    `window`-step running means anywhere along the curve."""
    out = {}
    for ref in (r for r in runs if r["variant"] == ref_name and "loss_curve" in r):
        a = np.array(ref["loss_curve"])
        for r in runs:
            if r is ref or r["batch"] != ref["batch"] or r["variant"] == "stock" or "loss_curve" not in r:
                continue
            b = np.array(r["loss_curve"])
            n = min(len(a), len(b))
            w = min(window, n)
            if n < 2 * w:
                continue
            kernel = np.ones(w) / w
            ra, rb = np.convolve(a[:n], kernel, "valid"), np.convolve(b[:n], kernel, "valid")
            out[f"{r['variant']}_vs_{ref_name}@{ref['batch']}"] = {
                "steps": int(n), "window": int(w),
                "loss_first": float(b[0]), "ref_loss_first": float(a[0]),
                "mean_last": float(b[n - w:n].mean()), "ref_mean_last": float(a[n - w:n].mean()),
                "abs_diff_mean_last": float(abs(b[n - w:n].mean() - a[n - w:n].mean())),
                "max_abs_diff_running_mean": float(np.abs(ra - rb).max()),
            }
    return out


def summarise(result: dict) -> None:
    ok = [r for r in result["runs"] if "tokens_per_s" in r]
    stock = [r for r in ok if r["variant"] == "stock"]
    ours = [r for r in ok if r["variant"] != "stock"]
    if stock and ours:
        best_stock = max(stock, key=lambda r: r["tokens_per_s"])
        best_ours = max(ours, key=lambda r: r["tokens_per_s"])
        same_batch = {r["batch"]: r["tokens_per_s"] for r in stock}
        result["best_stock"] = {k: v for k, v in best_stock.items() if k != "loss_curve"}
        result["best_vqdna"] = {k: v for k, v in best_ours.items() if k != "loss_curve"}
        result["speedup_vs_stock"] = best_ours["tokens_per_s"] / best_stock["tokens_per_s"]
        result["speedup_vs_stock_same_batch"] = {
            f"{r['variant']}@{r['batch']}": r["tokens_per_s"] / same_batch[r["batch"]] for r in ours if r["batch"] in same_batch}
    ref = result.get("curve_ref", "vqdna_bf16")
    result["loss_curves"] = compare_curves(ok, result["curve_window"], ref)
    result["curve_tolerance"], result["fastest_correct"] = judge(ok, result["loss_curves"], ref)


def judge(runs: list[dict], curves: dict, ref: str = "vqdna_bf16") -> tuple[dict, dict | None]:
    """Which runs count as correct: the reference run `ref` (vqdna_bf16 by default, checked
    against fp32 in `correctness`), and any run whose loss curve ends within the tolerance of the
    reference's at the same batch. Tolerance (stated before the run): twice the gap that other
    dropout draws alone make (`{ref}_seed1`), at least 1% of the loss. Returns the tolerances and
    the fastest correct vqdna run."""
    tolerance, correct = {}, []
    for r in runs:
        if r["variant"] == ref:
            noise = curves.get(f"{ref}_seed1_vs_{ref}@{r['batch']}")
            floor = 0.01 * statistics.fmean(r["loss_curve"][-10:])
            tolerance[r["batch"]] = max(2 * noise["abs_diff_mean_last"], floor) if noise else floor
            correct.append(r)
    for r in runs:
        c = curves.get(f"{r['variant']}_vs_{ref}@{r['batch']}")
        if c is not None and r["variant"] != f"{ref}_seed1" and r["batch"] in tolerance:
            r["curve_within_tolerance"] = c["abs_diff_mean_last"] <= tolerance[r["batch"]]
            if r["curve_within_tolerance"]:
                correct.append(r)
    best = max(correct, key=lambda r: r["tokens_per_s"], default=None)
    return ({str(k): v for k, v in tolerance.items()},
            None if best is None else {k: v for k, v in best.items() if k != "loss_curve"})


def write(result: dict, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=1) + "\n")


def main():
    args = parse_args()
    device = torch.device(args.device)
    torch._dynamo.config.cache_size_limit = 64  # several variants compile the same blocks
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.tiles:
        from vqdna.models import fused_norm

        fused_norm.set_tiles(**{k: int(v) for k, v in (kv.split("=") for kv in args.tiles.split(","))})
    arch = shapes(args)
    args.seq_len = 32 if args.tiny else args.seq
    runs = []
    for item in args.runs.split(","):
        name, _, rest = item.partition("@")
        batch, _, steps = rest.partition(":")
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; known: {sorted(VARIANTS)}")
        runs.append((name, 4 if args.tiny else int(batch), int(steps) if steps else args.steps))
    vocab = args.vocab
    if args.tokens:
        from vqdna.tokens import TokenFile

        meta = TokenFile(args.tokens, "train").meta
        if meta.levels != 1:
            raise SystemExit(f"{args.tokens}: the bench takes single-level token files, not {meta.levels} levels")
        vocab = int(meta.vocab_sizes[0])
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in gpu), None)
    flops_tok = model_flops_per_token(arch, args.seq_len, vocab, 0.25)
    cfg = make_config(arch, vocab)
    batch_makers = {}

    def batches_for(batch):
        if batch not in batch_makers:
            batch_makers[batch] = Batches(cfg, batch, args.seq_len, device, args.tokens)
        return batch_makers[batch]

    result = {"bench": "pretrain_step", "device": gpu, "torch": torch.__version__,
              "transformers": __import__("transformers").__version__, "shapes": arch, "seq": args.seq_len,
              "vocab": vocab, "tokens": args.tokens or "random ids", "mask_ratio": 0.25,
              "hidden_dropout": 0.1, "attention_dropout": 0.0,
              "precision": "stock: bf16 autocast over fp32 weights; vqdna: per variant",
              "optimizer": "AdamW fused", "lr": {"peak": args.lr, "linear_warmup_steps": args.lr_warmup},
              "model_flops_per_token": flops_tok, "peak_flops": peak, "curve_window": args.curve_window,
              "curve_ref": args.curve_ref,
              "variants": {k: v for k, v in VARIANTS.items()}, "complete": False, "runs": []}
    t0 = time.perf_counter()
    try:
        result["correctness"] = {} if args.no_correctness else correctness(arch, vocab, args.seq_len, device,
                                                                           batches_for(runs[0][1]))
    except Exception as exc:  # noqa: BLE001 - record and carry on: the timings still matter
        result["correctness"] = {"error": repr(exc)}
    if device.type == "cuda" and not args.no_correctness:
        try:
            result["correctness"]["fp8_kernel_vs_cpu_emulation_rel_err"] = fp8_kernel_vs_emulation(device)
        except Exception as exc:  # noqa: BLE001
            result["correctness"]["fp8_kernel_vs_cpu_emulation_rel_err"] = repr(exc)[:300]
    if args.kernel_check:
        try:
            result["kernel_check"] = kernel_check(device, tiny=args.tiny, sweep=args.tile_sweep)
        except Exception as exc:  # noqa: BLE001
            result["kernel_check"] = {"error": repr(exc)[:2000]}
        print("kernel_check:", json.dumps(result["kernel_check"]), flush=True)
        write(result, args.out)
        try:
            result["rope_kernel_check"] = rope_kernel_check(device, tiny=args.tiny, sweep=args.rope_sweep)
        except Exception as exc:  # noqa: BLE001
            import traceback

            result["rope_kernel_check"] = {"error": traceback.format_exc()[-2000:]}
        print("rope_kernel_check:", json.dumps(result["rope_kernel_check"]), flush=True)
    print("correctness:", json.dumps(result["correctness"]), f"({time.perf_counter() - t0:.0f} s)", flush=True)
    write(result, args.out)
    previous_compile = None
    for name, batch, steps in runs:
        if args.budget_s and time.perf_counter() - t0 > args.budget_s:
            result["runs"].append({"variant": name, "batch": batch, "seq": args.seq_len,
                                   "error": f"skipped: time budget {args.budget_s:.0f} s spent"})
            continue
        compile_key = repr({k: VARIANTS[name].get(k) for k in COMPILE_KEYS})
        if previous_compile is not None and compile_key != previous_compile:
            torch._dynamo.reset()
        previous_compile = compile_key
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        try:
            r = run_variant(name, batch, steps, args, arch, vocab, device, batches_for(batch))
            r["mfu"] = r["tokens_per_s"] * flops_tok / peak if peak else None
        except Exception as exc:  # noqa: BLE001 - one failing variant must not lose the others
            r = {"variant": name, "batch": batch, "seq": args.seq_len, "error": repr(exc)[:2000]}
        r["wall_s"] = time.perf_counter() - t
        result["runs"].append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "loss_curve"}), flush=True)
        summarise(result)
        write(result, args.out)
    if not (args.no_correctness or args.no_step_check):  # after the runs: a failed graph capture must not cost them
        try:
            result["correctness"]["step_check"] = step_check(arch, vocab, device, batches_for(runs[0][1]))
        except Exception as exc:  # noqa: BLE001
            import traceback

            result["correctness"]["step_check"] = {"error": traceback.format_exc()[-2000:]}
        print("step_check:", json.dumps(result["correctness"]["step_check"]), flush=True)
    result["complete"] = True
    summarise(result)
    write(result, args.out)
    print_table(result)


def print_table(result):
    print(f"\n{result['device']}  seq={result['seq']}  shapes={result['shapes']}  tokens={result['tokens']}")
    print(f"{'variant':<22}{'batch':>6}{'step ms':>10}{'tokens/s':>14}{'MFU':>8}{'mem GiB':>9}{'x stock':>9}{'loss':>8}")
    same = result.get("speedup_vs_stock_same_batch", {})
    stock = {r["batch"]: r for r in result["runs"] if r["variant"] == "stock" and "tokens_per_s" in r}
    for r in result["runs"]:
        if "tokens_per_s" not in r:
            print(f"{r['variant']:<22}{r['batch']:>6}  {r['error'][:200]}")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "-"
        mem = f"{r['max_mem_gib']:.1f}" if r.get("max_mem_gib") else "-"
        x = same.get(f"{r['variant']}@{r['batch']}", 1.0 if r["variant"] == "stock" and r["batch"] in stock else None)
        xs = f"{x:.2f}" if x is not None else "-"
        print(f"{r['variant']:<22}{r['batch']:>6}{1e3 * r['step_s_median']:>10.1f}{r['tokens_per_s']:>14,.0f}"
              f"{mfu:>8}{mem:>9}{xs:>9}{r['final_loss']:>8.3f}")
    if "speedup_vs_stock" in result:
        print(f"speedup_vs_stock (best vs best): {result['speedup_vs_stock']:.2f}x")
    if result.get("fastest_correct"):
        fc = result["fastest_correct"]
        print(f"fastest correct: {fc['variant']}@{fc['batch']} (curve tolerance {result['curve_tolerance']})")
    for k, c in result.get("loss_curves", {}).items():
        print(f"curve {k}: last-{c['window']} mean {c['mean_last']:.4f} vs {c['ref_mean_last']:.4f} "
              f"(|diff| {c['abs_diff_mean_last']:.4f}, max running-mean gap {c['max_abs_diff_running_mean']:.4f})")


if __name__ == "__main__":
    main()
