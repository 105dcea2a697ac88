"""Stage-1 tokenizer speed and quality: training nt/s, encoding nt/s, model FLOP utilisation,
code agreement of the fast inference path with the eager fp32 model, and a bench-size
training run's held-out reconstruction accuracy.

    # here (has the demo genomes): real DNA as Arrow shards for the device (git-ignored folder)
    PYTHONPATH=src python bench/tokenizer_bench.py --make-data results/bench_tok_shards
    # on the GPU
    PYTHONPATH=src python bench/tokenizer_bench.py --shards results/bench_tok_shards --out $OUT/tokenizer_bench.json
    # smoke test on CPU
    PYTHONPATH=src python bench/tokenizer_bench.py --tiny --device cpu --shards results/bench_tok_shards

Phases, in priority order (each writes the JSON again, so a time-out keeps what finished; a
phase that would not fit in --budget-s is skipped):
1. reference: plain bf16 matmuls of the model's two MLP shapes ([N, D] x [D, 4D], [N, 4D] x [4D, D]);
2. training steps (forward with EMA update, backward, AdamW) at the paper's batch, per --train-variants
   (VQ/HRQ; compile mode; `precision` autocast | bf16_weights; `dwconv_ln` autograd | fused), each
   with a kernel profile of --profile-steps steps (where the step's time goes);
2b. --train-passes: forward+backward of one paper-size block per implementation, and of the quantizer;
3. a bench-size run of the real training loop (`train_vq_tokenizer`, --run-kind, --run-variant) on real
   DNA shards: held-out reconstruction accuracy, code usage, perplexity (the trained model feeds phase 4);
4. encoding nt/s of `VQTokenizer.encode_codes` per --encode-variants, on the trained model of its kind
   (else random weights with codebooks k-means-initialised on real DNA), with the share of positions whose
   code equals the eager fp32 path's and the held-out reconstruction through each variant's codes;
4b. per-pass times of the fast encode path (needs a VQ model from phase 4).
5. --late-train-variants: train variants with long compiles (max-autotune), last, so that a time-out
   loses only them.

Model FLOPs are counted from the architecture (every matmul and convolution, 2 FLOPs per MAC;
training = 3x forward; the fast path's 3-product distance GEMM is counted once, as model work).
MFU = achieved / datasheet dense bf16 peak; the issue's target compares the training FLOP rate
to the rate the same script measures for the plain matmuls.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vqdna.tokenizers.convnext import ConvNeXtBlock1d  # noqa: E402
from vqdna.tokenizers.fast_encode import FastEncodeSettings  # noqa: E402
from vqdna.tokenizers.model import VQModelConfig, VQVAE  # noqa: E402
from vqdna.tokenizers.vq import VQTokenizer  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, datasheet (SXM)
PAPER_VQ = dict(kind="vq", dim=384, stem_dim=256, depth=6, stem_kernel=5, block_kernel=7, mlp_ratio=4,
                layer_scale_init=1e-6, taps=[6], codebook_sizes=[512], beta=0.5, ema_decay=0.99)
PAPER_HRQ = dict(PAPER_VQ, kind="hrq", taps=[3, 6], codebook_sizes=[1024, 2048], beta=0.9)
TINY = {"vq": dict(PAPER_VQ, dim=32, stem_dim=24, depth=2, taps=[2], codebook_sizes=[64], layer_scale_init=0.1,
                   ema_decay=0.9),
        "hrq": dict(PAPER_HRQ, dim=32, stem_dim=24, depth=2, taps=[1, 2], codebook_sizes=[32, 64],
                    layer_scale_init=0.1, ema_decay=0.9)}

# Encoding variants. fast*: the frozen bf16 path (vqdna.tokenizers.fast_encode); the rest run the
# model itself under bf16 autocast (eager, torch.compile, or compiled with bf16 encoder weights).
ENCODE_VARIANTS = {
    "eager": {},
    "compiled": {"compile": True},
    "compiled_bf16": {"compile": True, "bf16_weights": True},
    "fast": {"fast": dict(distance="bf16x3", gelu_epilogue=True)},
    "fast_bf16dist": {"fast": dict(distance="bf16", gelu_epilogue=True)},
    "fast_erf": {"fast": dict(distance="bf16x3", gelu_epilogue=False)},
    "fast_eager": {"fast": dict(distance="bf16x3", gelu_epilogue=True, compile=False)},
    "fast_fp32stream": {"fast": dict(distance="bf16x3", gelu_epilogue=True, residual="fp32")},
    # the conv+LN pass compiled by Inductor instead of the Triton kernel (dwconv_kernel: torch)
    "fast_torchconv": {"fast": dict(distance="bf16x3", gelu_epilogue=True, dwconv_kernel="torch")},
}
# name -> (kind, torch.compile mode or None for eager, tokenizers.training.precision, .dwconv_ln[, .distance])
TRAIN_VARIANTS = {
    "vq_compiled": ("vq", "default", "autocast", "autograd"),        # the old default
    "vq_autotune": ("vq", "max-autotune-no-cudagraphs", "autocast", "autograd"),
    "vq_eager": ("vq", None, "autocast", "autograd"),
    "vq_bf16w": ("vq", "default", "bf16_weights", "autograd"),
    "vq_fused_autocast": ("vq", "default", "autocast", "fused"),
    "vq_fused": ("vq", "default", "bf16_weights", "fused"),          # the new path (Triton conv+LN forward)
    "vq_fused_torch": ("vq", "default", "bf16_weights", "fused_torch"),  # the same, forward by Inductor
    "vq_fused_fwd": ("vq", "default", "bf16_weights", "fused_fwd"),  # Triton forward, backward by Inductor (s3c path)
    "vq_fused_autotune": ("vq", "max-autotune-no-cudagraphs", "bf16_weights", "fused"),  # GELU into GEMM epilogues?
    "hrq_compiled": ("hrq", "default", "autocast", "autograd"),
    "hrq_bf16w": ("hrq", "default", "bf16_weights", "autograd"),
    "hrq_fused": ("hrq", "default", "bf16_weights", "fused"),
    "hrq_fused_torch": ("hrq", "default", "bf16_weights", "fused_torch"),
    "hrq_fused_fwd": ("hrq", "default", "bf16_weights", "fused_fwd"),
    # + the nearest-code search as one bf16x3 tensor-core GEMM (tokenizers.training.distance)
    "vq_x3": ("vq", "default", "bf16_weights", "fused", "bf16x3"),
    "hrq_x3": ("hrq", "default", "bf16_weights", "fused", "bf16x3"),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="toy sizes (CPU smoke test)")
    p.add_argument("--shards", default="results/bench_tok_shards", help="real-DNA shards (train/, valid/)")
    p.add_argument("--make-data", metavar="DIR", help="write real-DNA shards from data/demo/genomes to DIR and exit")
    p.add_argument("--encode-batches", default="1024,2048", help="windows per encode call (length --encode-len)")
    p.add_argument("--encode-len", type=int, default=512)
    p.add_argument("--encode-kinds", default="vq,hrq")
    p.add_argument("--encode-variants", default="fast,fast_fp32stream,fast_bf16dist,fast_erf,compiled",
                   help=f"comma-separated, of {list(ENCODE_VARIANTS)}")
    p.add_argument("--train-batch", type=int, default=1024)
    p.add_argument("--train-len", type=int, default=256)
    p.add_argument("--train-variants", default="vq_compiled,vq_fused,hrq_compiled,hrq_fused",
                   help=f"comma-separated, of {list(TRAIN_VARIANTS)}")
    p.add_argument("--late-train-variants", default="",
                   help="train variants run after the encode phases (long compiles, e.g. max-autotune)")
    p.add_argument("--late-min-s", type=float, default=60.0,
                   help="start a late train variant only with this many seconds of --budget-s left")
    p.add_argument("--profile-steps", type=int, default=2, help="steps of the kernel profile per train variant (0 = none)")
    p.add_argument("--train-passes", action="store_true",
                   help="time forward+backward of one block per implementation and of the quantizer")
    p.add_argument("--run-kind", default="vq", choices=["vq", "hrq"], help="model of the bench-size run")
    p.add_argument("--run-variant", default="vq_compiled",
                   help="train variant whose precision/dwconv_ln the bench-size run uses (its kind is ignored)")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--run-seconds", type=float, default=40.0, help="time budget of the bench-size training run")
    p.add_argument("--run-lr", type=float, default=1e-3)
    p.add_argument("--run-compile", action="store_true", help="compile in the bench-size run")
    p.add_argument("--skip-run", action="store_true", help="no bench-size run")
    p.add_argument("--agree-windows", type=int, default=512, help="held-out windows for the code agreement")
    p.add_argument("--budget-s", type=float, default=370.0, help="skip phases that would not fit in this total")
    p.add_argument("--out", default=None, help="JSON file to write")
    return p.parse_args()


# ---------------------------------------------------------------------------------------- FLOPs
def forward_flops_per_nt(c: dict) -> dict:
    """Model FLOPs per nucleotide of one forward pass (2 per multiply-add)."""
    D, S, r, K = c["dim"], c["stem_dim"], c["mlp_ratio"], sum(c["codebook_sizes"])
    block = 2 * (c["block_kernel"] * D + D * r * D + r * D * D)
    stem = 2 * 4 * S * c["stem_kernel"] + (2 * S * D if S != D else 0)
    head = (2 * D * S if S != D else 0) + 2 * S * 4 * c["stem_kernel"]
    encoder = stem + c["depth"] * block
    quant = 2 * D * K  # distances to every code of every level
    decoder = c["depth"] * block + head
    return {"encoder": encoder, "quantizer": quant, "decoder": decoder,
            "encode": encoder + quant, "forward": encoder + quant + decoder}


# ---------------------------------------------------------------------------------------- timing
def timed(fn, reps: int, device: str) -> float:
    """Median seconds of fn() over reps (after 2 warm-up calls); CUDA events on GPU."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_reference(c: dict, rows: int, device: str, reps: int) -> dict:
    D, H = c["dim"], c["dim"] * c["mlp_ratio"]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    out = {}
    for name, (k, n) in {"fc1": (D, H), "fc2": (H, D)}.items():
        a = torch.randn(rows, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        sec = timed(lambda: a @ b, reps, device)
        out[name] = {"shape": [rows, k, n], "seconds": sec, "tflops": 2 * rows * k * n / sec / 1e12}
    if device == "cuda":
        a = torch.randn(8192, 8192, device=device, dtype=dtype)
        sec = timed(lambda: a @ a, reps, device)
        out["square8192"] = {"shape": [8192, 8192, 8192], "seconds": sec, "tflops": 2 * 8192 ** 3 / sec / 1e12}
    out["model_shapes_tflops"] = (out["fc1"]["tflops"] + out["fc2"]["tflops"]) / 2
    return out


def conv_ln_kernel_check(c: dict, batch: int, length: int, device: str, reps: int) -> dict:
    """The conv+LN forward alone at the training shape, bf16 (as under `precision: bf16_weights`): the
    Triton kernel (tile tuned on first call) against the same function compiled by Inductor, with the
    kernel's error against the fp32 PyTorch reference and the bandwidth of one read of x + one write of y."""
    from vqdna.tokenizers import dwconv_ln_triton as kt

    g = torch.Generator(device=device).manual_seed(0)
    dim, k = c["dim"], c["block_kernel"]
    x = torch.randn(batch, length, dim, device=device, generator=g).to(torch.bfloat16)
    w, b, ln_w, ln_b = (torch.randn(*shape, device=device, generator=g).to(torch.bfloat16) * scale
                        for shape, scale in (((k, dim), 0.3), ((dim,), 0.3), ((dim,), 1.0), ((dim,), 0.3)))
    y_ref, m_ref, r_ref = kt.reference_forward(x, None, w, b, ln_w, ln_b, 1e-6, torch.float32)
    y, mean, rstd = kt.triton_forward(x, None, w, b, ln_w, ln_b, 1e-6, torch.bfloat16)

    def rel(a, r):
        return float((a.float() - r.float()).norm() / r.float().norm())
    out = {"shape": [batch, length, dim], "k": k, "rel_err_y_bf16_vs_fp32": rel(y, y_ref),
           "rel_err_mean": rel(mean, m_ref), "rel_err_rstd": rel(rstd, r_ref)}
    moved = x.numel() * 2 * 2 + batch * length * 8  # bf16 x read, bf16 y written, fp32 mean + rstd
    impls = {"triton": lambda: kt.triton_forward(x, None, w, b, ln_w, ln_b, 1e-6, torch.bfloat16)}
    # the fastest configuration of each kernel (tile: k shifted loads per tile; strip: a sliding
    # window, each row loaded once), timed again here next to each other
    key = kt.tune_key(x, w, None, torch.bfloat16, True)
    best = kt._BEST.get(key)
    out["chosen"] = kt.config_name(best) if best else None
    out["tuning_ms"] = kt.TUNE_RESULTS.get(key)
    for kind in ("tile", "strip"):
        cfgs = [c for c in kt._candidates(k, length) if c[0] == kind]
        tuned = kt.TUNE_RESULTS.get(key, {})
        cfgs = [c for c in cfgs if isinstance(tuned.get(kt.config_name(c)), float)]  # timed, not rejected
        if cfgs:
            cfg = min(cfgs, key=lambda c: tuned[kt.config_name(c)])
            out[f"{kind}_config"] = kt.config_name(cfg)
            impls[kind] = (lambda cfg=cfg: kt.triton_forward(x, None, w, b, ln_w, ln_b, 1e-6, torch.bfloat16,
                                                             config=cfg))
    if device == "cuda":
        compiled = torch.compile(kt.reference_forward, dynamic=False, fullgraph=True)
        impls["inductor"] = lambda: compiled(x, None, w, b, ln_w, ln_b, 1e-6, torch.bfloat16)
    for name, fn in impls.items():
        sec = timed(fn, reps, device)
        out[f"{name}_ms"] = sec * 1e3
        out[f"{name}_tb_per_s"] = moved / sec / 1e12
    print(f"  conv+LN forward {batch}x{length}x{dim} bf16: " +
          ", ".join(f"{n} {out[f'{n}_ms']:.3f} ms ({out[f'{n}_tb_per_s']:.2f} TB/s)" for n in impls) +
          f"; kernel vs fp32 reference: rel err y {out['rel_err_y_bf16_vs_fp32']:.2e}, mean "
          f"{out['rel_err_mean']:.1e}, rstd {out['rel_err_rstd']:.1e}", flush=True)
    return out


def random_dna(batch: int, length: int, device: str) -> torch.Tensor:
    return torch.randint(0, 4, (batch, length), device=device, dtype=torch.uint8)


def real_windows(args, split: str, rows: int, length: int) -> torch.Tensor:
    from vqdna.genomes.shards_io import list_shards, read_codes

    out, have = [], 0
    for path in list_shards(args.shards, split):
        codes = read_codes(path)
        out.append(codes[: rows - have, :length])
        have += len(out[-1])
        if have >= rows:
            break
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(out)))


def make_tokenizer(model: VQVAE, variant: str, device: str) -> VQTokenizer:
    """A tokenizer over a private copy of `model` set up as `variant` (ENCODE_VARIANTS)."""
    import copy

    spec = ENCODE_VARIANTS[variant]
    tok = VQTokenizer(copy.deepcopy(model)).to(device)
    if "fast" in spec:
        tok.enable_fast(FastEncodeSettings(**{"compile": device == "cuda", **spec["fast"]}))
    if spec.get("bf16_weights"):
        tok.model.encoder.to(torch.bfloat16)  # codebooks and distances stay fp32
    if spec.get("compile") and device == "cuda":
        tok.compile()
    return tok


def kmeans_model(c: dict, args, device: str, seed: int = 0) -> VQVAE:
    """A paper-size model with random weights and codebooks k-means-initialised on real DNA latents."""
    torch.manual_seed(seed)
    model = VQVAE(VQModelConfig(**c)).to(device).eval()
    x = real_windows(args, "train", max(1, 65536 // args.train_len), args.train_len).to(device).long()
    with torch.no_grad():
        model.quantizer.init_codebooks([z.float() for z in model.encoder(x)], 5, torch.Generator().manual_seed(seed))
    return model


def bench_encode(tok: VQTokenizer, batches: list[int], length: int, device: str, reps: int, label: str,
                 flops: dict, peak: float | None) -> list[dict]:
    rows = []
    for b in batches:
        x = random_dna(b, length, device)
        try:
            t = time.time()
            tok.encode_codes(x)  # compile / first call outside the timing
            first = time.time() - t
            sec = timed(lambda: tok.encode_codes(x, out_dtype=torch.int32), reps, device)
        except torch.OutOfMemoryError:
            rows.append({"batch": b, "length": length, "error": "out of memory"})
            torch.cuda.empty_cache()
            continue
        nt_s = b * length / sec
        tflops = nt_s * flops["encode"] / 1e12
        rows.append({"batch": b, "length": length, "seconds": sec, "nt_per_s": nt_s, "tflops": tflops,
                     "mfu": tflops * 1e12 / peak if peak else None, "first_call_seconds": first})
        print(f"  encode {label:22s} B={b:5d} L={length}: {nt_s / 1e6:8.2f} M nt/s "
              f"{tflops:7.1f} TFLOP/s (first call {first:.1f} s)", flush=True)
    return rows


@torch.no_grad()
def agreement(tok: VQTokenizer, model: VQVAE, windows: torch.Tensor, device: str, batch: int = 256) -> dict:
    """Codes of `tok` vs the eager fp32 model (no autocast) on real windows, and the reconstruction
    accuracy of each set of codes through the fp32 decoder."""
    ref_tok = VQTokenizer(model, autocast=False)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # the stem convolution too in true fp32
    try:
        return _agreement(tok, ref_tok, windows, device, batch)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def _agreement(tok, ref_tok, windows, device, batch) -> dict:
    same, total, rec_ref, rec_tok, per_level = 0, 0, 0, 0, None
    for i in range(0, len(windows), batch):
        x = windows[i:i + batch].to(device)
        real = len(x)
        if real < batch:  # pad with repeats to the timed batch shape: no recompilation for a new shape
            x = x.repeat((batch + real - 1) // real, 1)[:batch]
        ref = ref_tok.encode_codes(x)[:real]
        got = tok.encode_codes(x)[:real]
        x = x[:real]
        eq = (ref == got)
        per_level = eq.flatten(0, 1).sum(0) if per_level is None else per_level + eq.flatten(0, 1).sum(0)
        same += int(eq.all(-1).sum())
        total += eq.shape[0] * eq.shape[1]
        rec_ref += int((ref_tok.decode_codes(ref) == x.long()).sum())
        rec_tok += int((ref_tok.decode_codes(got) == x.long()).sum())
    out = {"positions": total, "share_equal_all_levels": same / total,
           "share_equal_per_level": [int(v) / total for v in per_level],
           "reconstruction_fp32_codes": rec_ref / total, "reconstruction_variant_codes": rec_tok / total}
    print(f"    agreement with eager fp32: {out['share_equal_all_levels'] * 100:.4f}% of {total} positions "
          f"(per level {[round(v * 100, 4) for v in out['share_equal_per_level']]}), reconstruction "
          f"{out['reconstruction_fp32_codes'] * 100:.3f}% -> {out['reconstruction_variant_codes'] * 100:.3f}%",
          flush=True)
    return out


def variant_distance(variant: tuple) -> str:
    return variant[4] if len(variant) > 4 else "fp32"


def bench_train_step(c: dict, batch: int, length: int, device: str, reps: int, variant: tuple, flops: dict,
                     peak: float | None, profile_steps: int = 0) -> dict:
    """One training step as `train_vq_tokenizer` runs it (EMA update in the forward, backward, AdamW via
    `StepOptimizer`; no gradient clipping, as in the earlier rows), timed at the paper's batch."""
    from vqdna.tokenizers.train_path import StepOptimizer, autocast, cast_weights, set_dwconv_ln

    _, mode, precision, dwconv_ln = variant[:4]
    distance = variant_distance(variant)
    torch.manual_seed(0)
    model = VQVAE(VQModelConfig(**c)).to(device)
    set_dwconv_ln(model, dwconv_ln)
    cast_weights(model, precision)
    model.quantizer.set_distance(distance)
    if mode is not None and device == "cuda":
        kw = {} if mode == "default" else {"mode": mode}
        model.encoder.compile(dynamic=False, **kw)
        model.decoder.compile(dynamic=False, **kw)
    cuda = device == "cuda"
    opt = StepOptimizer(model, precision, lr=1e-4, betas=(0.9, 0.98), weight_decay=0.01, fused=cuda)
    x = random_dna(batch, length, device).long()
    dev = torch.device(device)
    with torch.no_grad(), autocast(dev, precision):  # codebook from data, as the training loop does
        model.quantizer.init_codebooks([z.float() for z in model.encoder(x[: max(1, 65536 // length)])], 2,
                                       torch.Generator().manual_seed(0))

    def step():
        with autocast(dev, precision):
            out = model(x, update_codebooks=True)
        out["loss"].backward()
        opt.step(0.0)
        opt.zero_grad()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = time.time()
    step()
    first = time.time() - t
    sec = timed(step, reps, device)
    nt_s = batch * length / sec
    tflops = nt_s * 3 * flops["forward"] / 1e12
    mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    from vqdna.tokenizers.dwconv_ln_triton import triton_available

    conv_forward = {"autograd": "inductor (autograd)", "fused_torch": "inductor (fused fn)"}.get(
        dwconv_ln, "triton kernel" if triton_available(dev) else "pytorch (no triton)")
    row = {"kind": c["kind"], "compile_mode": mode, "precision": precision, "dwconv_ln": dwconv_ln,
           "distance": distance, "dwconv_ln_forward": conv_forward, "batch": batch, "length": length, "seconds_per_step": sec,
           "nt_per_s": nt_s, "tflops": tflops, "mfu": tflops * 1e12 / peak if peak else None,
           "max_memory_gib": mem, "first_step_seconds": first}
    print(f"  train  {c['kind']} {str(mode):10s} {precision:12s} {dwconv_ln:8s} {distance:6s} B={batch:5d} L={length}: "
          f"{nt_s / 1e6:8.2f} M nt/s {tflops:7.1f} TFLOP/s  {sec * 1e3:7.1f} ms/step (first step {first:.0f} s)",
          flush=True)
    if profile_steps > 0 and cuda:
        try:
            row["profile"] = kernel_profile(step, profile_steps)
        except Exception as exc:  # noqa: BLE001 - the timing above stands without it
            row["profile"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return row


def kernel_profile(fn, steps: int, top: int = 25) -> dict:
    """CUDA kernel time per step, grouped into matmuls (GEMM kernels), Triton (Inductor-generated passes)
    and other (ATen: index_add, argmin, copies, optimizer), plus the top kernels by time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    kernels = []
    for evt in prof.key_averages():
        t = getattr(evt, "self_device_time_total", None)
        if t is None:
            t = getattr(evt, "self_cuda_time_total", 0)
        if t and t > 0:
            kernels.append((evt.key, t / steps / 1e3, evt.count // steps))  # ms per step
    kernels.sort(key=lambda k: -k[1])

    def group(name: str) -> str:
        low = name.lower()
        if any(g in low for g in ("gemm", "sm90_xmma", "cutlass", "cublas", "nvjet", "wgmma")):
            return "matmul"
        if "dwconv_ln_fwd" in low:  # the hand-written conv+LN forward (vqdna.tokenizers.dwconv_ln_triton)
            return "dwconv_ln_triton"
        if "dwconv_ln_bwd" in low:  # and its backward (vqdna.tokenizers.dwconv_ln_bwd_triton)
            return "dwconv_ln_bwd_triton"
        if low.startswith("triton"):
            return "triton"
        return "other"

    groups: dict = {}
    for name, ms, _ in kernels:
        groups[group(name)] = groups.get(group(name), 0.0) + ms
    total = sum(groups.values())
    print(f"    profile (ms/step of kernel time): total {total:.1f}; " +
          ", ".join(f"{g} {ms:.1f}" for g, ms in sorted(groups.items())), flush=True)
    for name, ms, n in kernels[:8]:
        print(f"      {ms:7.2f} ms x{n:3d} {name[:110]}", flush=True)
    return {"kernel_ms_per_step": total, "groups_ms_per_step": groups,
            "top": [{"kernel": n[:300], "ms_per_step": ms, "calls_per_step": c} for n, ms, c in kernels[:top]]}


def train_passes(c: dict, batch: int, length: int, device: str, reps: int) -> dict:
    """Forward + backward of one encoder block (paper width) per implementation, and of the quantizer
    (forward with EMA update + backward of the commitment and straight-through terms)."""
    from vqdna.tokenizers.quantizer import HierarchicalQuantizer

    cuda = device == "cuda"
    n = batch * length
    g = torch.Generator(device=device).manual_seed(0)
    out: dict = {"batch": batch, "length": length, "block_fwd_bwd": {}, "quantizer_fwd_bwd": {}}
    variants = {  # (stream dtype, autocast, depthwise impl)
        "autocast, fp32 stream, autograd": (torch.float32, True, "auto"),
        "autocast, fp32 stream, fused": (torch.float32, True, "fused"),
        "bf16 weights+stream, autograd": (torch.bfloat16, False, "auto"),
        "bf16 weights+stream, fused": (torch.bfloat16, False, "fused"),
    }
    for name, (dtype, use_autocast, impl) in variants.items():
        torch.manual_seed(0)
        block = ConvNeXtBlock1d(c["dim"], c["block_kernel"], c["mlp_ratio"], 0.1).to(device=device, dtype=dtype)
        block.depthwise_impl = impl
        fn_block = torch.compile(block, dynamic=False) if cuda else block
        x = torch.randn(batch, length, c["dim"], device=device, generator=g).to(dtype).requires_grad_(True)
        dy = torch.randn(batch, length, c["dim"], device=device, generator=g).to(dtype)

        def fwd_bwd():
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=use_autocast and cuda):
                y = fn_block(x)
            y.backward(dy)

        def fwd():
            with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16,
                                                 enabled=use_autocast and cuda):
                fn_block(x)
        try:
            sec, sec_f = timed(fwd_bwd, reps, device), timed(fwd, reps, device)
            out["block_fwd_bwd"][name] = {"seconds": sec, "ns_per_nt": sec / n * 1e9, "forward_seconds": sec_f}
            print(f"    block fwd+bwd {name:34s} {sec * 1e3:7.2f} ms {sec / n * 1e9:6.2f} ns/nt "
                  f"(forward alone {sec_f * 1e3:6.2f} ms)", flush=True)
        except Exception as exc:  # noqa: BLE001
            out["block_fwd_bwd"][name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            print(f"    block {name} failed: {exc!s:.200}", flush=True)
    for kind in ("vq", "hrq"):
        cfg = {"vq": PAPER_VQ, "hrq": PAPER_HRQ}[kind] if c["dim"] >= 64 else TINY[kind]
        quant = HierarchicalQuantizer(cfg["codebook_sizes"], cfg["dim"], decay=0.99, eps=1e-5,
                                      dead_threshold=1.0).to(device)
        latents = [torch.randn(batch, length, cfg["dim"], device=device, generator=g).to(torch.bfloat16)
                   .requires_grad_(True) for _ in cfg["taps"]]

        def q_step():
            q = quant(latents, update=True)
            (q.commit_loss + q.z_q.float().mean()).backward()
        try:
            sec = timed(q_step, reps, device)
            out["quantizer_fwd_bwd"][kind] = {"seconds": sec, "ns_per_nt": sec / n * 1e9}
            print(f"    quantizer fwd(EMA)+bwd {kind:4s} {sec * 1e3:7.2f} ms {sec / n * 1e9:6.2f} ns/nt", flush=True)
        except Exception as exc:  # noqa: BLE001
            out["quantizer_fwd_bwd"][kind] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return out


@torch.inference_mode()
def stage_times(model: VQVAE, batch: int, length: int, device: str, reps: int) -> dict:
    """Seconds per call of each pass of the fast path on one block's shapes (where the time goes),
    next to the alternatives it replaced; nanoseconds per nucleotide in the printout."""
    from vqdna.tokenizers import fast_encode as fe

    fast = fe.FastEncoder.from_model(model, fe.FastEncodeSettings(compile=device == "cuda"))
    blk, level, fns = fast.blocks[0], fast.levels[-1], fast.fns
    n = batch * length
    g = torch.Generator(device=device).manual_seed(0)
    codes = torch.randint(0, 4, (batch, length), device=device, dtype=torch.uint8, generator=g)
    dim = blk.dw_b.numel()
    s = torch.randn(n, dim, device=device, generator=g).to(fast.compute_dtype)
    y = fns["dwconv_ln"](s.view(batch, length, -1), fast.proj_b, blk.dw_w, blk.dw_b, blk.ln_w, blk.ln_b, blk.eps,
                         fast.compute_dtype)
    y = y.reshape(n, -1)
    h = fe._fc1_gelu(y, blk.w1t, blk.b1, True)
    x = fns["tap"](s, fast.proj_b, level.ln_w, level.ln_b, level.eps, None, None, fast.settings.distance)
    scores = fe._mm_f32(x, level.right)
    stream = s.clone()  # fc2 accumulates into it on every call (timing only)
    conv_args = (s.view(batch, length, -1), fast.proj_b, blk.dw_w, blk.dw_b, blk.ln_w, blk.ln_b, blk.eps,
                 fast.compute_dtype)
    conv_impls = {"dwconv+LN Triton kernel": fe._dwconv_ln_kernel}
    if "dwconv_ln" in fe._COMPILED:
        conv_impls["dwconv+LN compiled (Inductor)"] = fe._COMPILED["dwconv_ln"]
    stages = {
        "stem (gather+LN+GELU)": lambda: fns["stem"](codes, fast.stem_table, fast.stem_bias, *fast.stem_ln,
                                                     fast.compute_dtype),
        "dwconv+LN": lambda: fns["dwconv_ln"](*conv_args),  # the one the encoder uses (fast_paths)
        **{name: (lambda f=f: f(*conv_args)) for name, f in conv_impls.items() if device == "cuda"},
        "fc1+GELU epilogue": lambda: fe._fc1_gelu(y, blk.w1t, blk.b1, True),
        "fc1 (addmm) + erf GELU pass": lambda: fe._fc1_gelu(y, blk.w1t, blk.b1, False),
        "fc1 plain mm": lambda: torch.mm(y, blk.w1t),
        "fc2 addmm_ into stream": lambda: stream.addmm_(h, blk.w2t),
        "fc2 plain mm": lambda: torch.mm(h, blk.w2t),
        "tap LN (+split)": lambda: fns["tap"](s, fast.proj_b, level.ln_w, level.ln_b, level.eps, None, None,
                                             fast.settings.distance),
        "distance GEMM": lambda: fe._mm_f32(x, level.right),
        "argmin": lambda: fns["argmin"](scores, level.half_sq),
        "whole encode": lambda: fast(codes),
    }
    out, bandwidth = {}, {}
    conv_bytes = n * dim * (s.element_size() + torch.finfo(fast.compute_dtype).bits // 8)  # read s, write y
    for name, fn in stages.items():
        sec = timed(fn, reps, device)
        out[name] = sec
        extra = ""
        if name.startswith("dwconv+LN"):
            bandwidth[name] = conv_bytes / sec / 1e12
            extra = f"  {bandwidth[name]:5.2f} TB/s (one read + one write)"
        print(f"    {name:30s} {sec * 1e3:8.3f} ms  {sec / n * 1e9:6.2f} ns/nt{extra}", flush=True)
    return {"batch": batch, "length": length, "seconds": out, "distance": fast.settings.distance,
            "dwconv_ln_path": fe.PATHS.get("dwconv_ln"), "dwconv_ln_tb_per_s": bandwidth}


# ---------------------------------------------------------------------------------------- real run
def bench_run(c: dict, args, step_seconds: float | None, work: Path) -> dict:
    from vqdna.tokenizers.trainer import TrainSettings, train_vq_tokenizer

    per_step = step_seconds or 0.25
    steps = max(20, int(args.run_seconds / (per_step * 1.15)))  # 15% for data loading and logging
    if args.tiny:
        steps = min(steps, 60)
    warmup = max(5, steps // 10)
    s = TrainSettings(
        batch_size=args.train_batch if not args.tiny else 16, max_steps=steps, lr=args.run_lr, min_lr=args.run_lr / 100,
        betas=(0.9, 0.98), weight_decay=0.01, warmup_steps=warmup, seq_len_warmup=args.train_len,
        seq_len=args.train_len, grad_clip=1.0, init_kmeans_iters=10, kmeans_after_warmup=False, kmeans_iters=20,
        kmeans_max_samples=262144, restart_every=max(10, steps // 20), checkpoint_every=0, log_every=max(1, steps // 5),
        valid_windows=1024 if not args.tiny else 64, valid_length=None, eval_batch_rows=256,
        compile=args.run_compile, precision=TRAIN_VARIANTS[args.run_variant][2],
        dwconv_ln=TRAIN_VARIANTS[args.run_variant][3], distance=variant_distance(TRAIN_VARIANTS[args.run_variant]),
    )
    log = []
    t = time.time()
    metrics = train_vq_tokenizer(VQModelConfig(**c), s, args.shards, work / "tok", work_dir=work / "ckpt", seed=0,
                                 device=args.device, progress=False,
                                 log_metrics=lambda m, step: (log.append({"step": step, **m}),
                                                              print(f"  step {step}: {m}", flush=True)))
    wall = time.time() - t
    return {"kind": c["kind"], "settings": {k: v for k, v in s.__dict__.items()}, "wall_seconds": wall,
            "train_nucleotides": metrics["train_nucleotides_this_run"],
            "train_seconds": metrics["train_seconds_this_run"],
            "valid_reconstruction_accuracy": metrics["valid_reconstruction_accuracy"],
            "valid_windows": metrics["valid_windows"], "valid_nucleotides": metrics["valid_nucleotides"],
            "usage_pct": metrics["usage_pct"], "perplexity": metrics["perplexity"], "log": log}


# ---------------------------------------------------------------------------------------- data
def make_data(out: Path, window: int = 512) -> None:
    """Real DNA for the device (no biopython there): demo FASTA genomes -> train/valid Arrow shards.

    train: dm3 upstream records 1-2700, human chr1 (first 240 kb), phage lambda;
    valid (held out): dm3 records 2701-3000 and the Y. pestis plasmid (a genome never trained on).
    """
    import pyarrow as pa

    from vqdna.genomes.shards_io import shard_schema

    genomes = ROOT / "data" / "demo" / "genomes"

    def records(path: Path):
        name, parts = None, []
        with gzip.open(path, "rt") as fh:
            for line in fh:
                if line.startswith(">"):
                    if name is not None:
                        yield name, "".join(parts).upper()
                    name, parts = line[1:].split()[0], []
                else:
                    parts.append(line.strip())
        if name is not None:
            yield name, "".join(parts).upper()

    def windows(seq: str) -> list[str]:
        ws = [seq[i:i + window] for i in range(0, len(seq) - window + 1, window)]
        return [w for w in ws if set(w) <= set("ACGT")]

    dm3 = list(records(genomes / "dm3_upstream2000_first3000.fa.gz"))
    train, valid = [], []
    for _, seq in dm3[:2700]:
        train += windows(seq)
    for _, seq in dm3[2700:]:
        valid += windows(seq)
    for name in ["human_GRCh37_chr1_first240kb.fasta.gz", "NC_001416_lambda_phage.fa.gz"]:
        for _, seq in records(genomes / name):
            train += windows(seq)
    for _, seq in records(genomes / "NC_005816_yersinia_pestis_plasmid.fna.gz"):
        valid += windows(seq)
    rng = np.random.default_rng(0)
    rng.shuffle(train)
    rng.shuffle(valid)
    for split, ws in (("train", train), ("valid", valid)):
        (out / split).mkdir(parents=True, exist_ok=True)
        per = 4096
        for i in range(0, len(ws), per):
            chunk = ws[i:i + per]
            table = pa.table({"sequence": pa.array([w.encode() for w in chunk], pa.binary(window)),
                              "accession": ["demo"] * len(chunk), "species": ["demo"] * len(chunk),
                              "record_id": ["r"] * len(chunk), "start": [0] * len(chunk)}, schema=shard_schema(window))
            with pa.OSFile(str(out / split / f"{i // per:05d}.arrow"), "wb") as fh, \
                    pa.ipc.new_file(fh, table.schema) as writer:
                writer.write_table(table)
    print(f"wrote {len(train)} train and {len(valid)} valid windows of {window} nt to {out}")


# ---------------------------------------------------------------------------------------- main
# rough seconds on an H100/H200 (compilation included), to skip what would not fit
ENCODE_COST_S = {"fast": 25, "fast_bf16dist": 8, "fast_erf": 8, "fast_eager": 6, "eager": 8, "fast_fp32stream": 10,
                 "fast_torchconv": 10,
                 "compiled": 45, "compiled_bf16": 45}
TRAIN_COST_S = {"vq_autotune": 200, "vq_fused_autotune": 200, "vq_eager": 12}  # others ~55


def main() -> int:
    args = parse_args()
    if args.make_data:
        make_data(Path(args.make_data))
        return 0
    t_start = time.time()
    device = args.device
    configs = TINY if args.tiny else {"vq": PAPER_VQ, "hrq": PAPER_HRQ}
    if args.tiny:
        args.train_batch, args.train_len, args.encode_len = 8, 128, 256
        args.encode_batches, args.reps, args.run_seconds, args.agree_windows = "4,8", 2, 10, 16
    gpu = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in gpu), None) if device == "cuda" else None
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    # every (variant, shape) is its own static graph: room for all of them ("import torch._dynamo"
    # here would make `torch` a local name of main() and break the lines above on CUDA)
    dynamo_config = __import__("torch._dynamo", fromlist=["config"]).config
    dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, 64)
    flops = {k: forward_flops_per_nt(c) for k, c in configs.items()}
    params = {k: VQVAE(VQModelConfig(**c)).num_parameters() for k, c in configs.items()}
    result = {"bench": "tokenizer", "device": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
              "peak_bf16_flops": peak, "configs": configs, "parameters": params, "flops_per_nt": flops,
              "command": " ".join(sys.argv), "phases_done": [], "skipped": [], "encode": {}, "train_step": {}}

    def save():
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    def left() -> float:
        return args.budget_s - (time.time() - t_start)

    def fits(name: str, cost: float) -> bool:
        if args.tiny or left() >= cost:
            return True
        print(f"  skipping {name}: {left():.0f} s left, needs ~{cost:.0f}", flush=True)
        result["skipped"].append(name)
        return False

    def record_error(name: str, exc: Exception) -> None:
        result.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:2000]
        print(f"  {name} failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)

    print(f"device {gpu}, torch {torch.__version__}, params {params}, "
          f"forward {flops['vq']['forward'] / 1e6:.2f} MFLOP/nt (vq)", flush=True)
    batches = [int(b) for b in args.encode_batches.split(",")]
    encode_variants = args.encode_variants.split(",")
    train_variants = args.train_variants.split(",")
    run_cost = args.run_seconds + 60  # compilation (train, k-means init, evaluation graphs) and evaluation

    # 1. the matmul ceiling
    result["matmul"] = matmul_reference(configs["vq"], args.train_batch * args.train_len, device, args.reps)
    matmul = result["matmul"]["model_shapes_tflops"]
    print(f"  plain matmuls of the model's shapes: {matmul:.1f} TFLOP/s", flush=True)
    result["phases_done"].append("matmul")
    save()

    def train_phase(name: str) -> None:
        variant = TRAIN_VARIANTS[name]
        try:
            row = bench_train_step(configs[variant[0]], args.train_batch, args.train_len, device, args.reps, variant,
                                   flops[variant[0]], peak, args.profile_steps)
            row["vs_plain_matmul"] = row["tflops"] / matmul
            result["train_step"][name] = row
        except Exception as exc:  # noqa: BLE001 - a failed variant must not lose the others
            record_error(f"train:{name}", exc)
        torch._dynamo.reset()  # drop this variant's graphs (memory, cache limit)
        if device == "cuda":
            torch.cuda.empty_cache()
        result["phases_done"].append(f"train:{name}")
        save()

    # 2. the training steps the target is about
    for name in train_variants:
        if fits(name, TRAIN_COST_S.get(name, 55)):
            train_phase(name)

    # 2a. the conv+LN forward kernel alone (correctness on the device, time against Inductor's pass); after
    #     the training steps, whose figure is the target (the step tunes the kernel on its first call)
    if device == "cuda" and fits("conv_ln_kernel", 20):
        try:
            result["conv_ln_kernel"] = conv_ln_kernel_check(configs["vq"], args.train_batch, args.train_len,
                                                            device, args.reps)
        except Exception as exc:  # noqa: BLE001
            record_error("conv_ln_kernel", exc)
        torch._dynamo.reset()
        result["phases_done"].append("conv_ln_kernel")
        save()

    # 2b. one block's forward+backward per implementation, and the quantizer
    if args.train_passes and fits("train_passes", 45):
        try:
            result["train_passes"] = train_passes(configs["vq"], args.train_batch, args.train_len, device, args.reps)
        except Exception as exc:  # noqa: BLE001
            record_error("train_passes", exc)
        torch._dynamo.reset()
        result["phases_done"].append("train_passes")
        save()

    # 3. bench-size training run -> a trained model of --run-kind for the encode checks
    trained = None
    step_s = next((r["seconds_per_step"] for r in result["train_step"].values()
                   if r["kind"] == args.run_kind and r["precision"] == TRAIN_VARIANTS[args.run_variant][2]
                   and r["dwconv_ln"] == TRAIN_VARIANTS[args.run_variant][3]
                   and r.get("distance", "fp32") == variant_distance(TRAIN_VARIANTS[args.run_variant])), None)
    if not args.run_compile:
        step_s = None  # eager run: its own (slower) step
    if not args.skip_run and fits("run", run_cost):
        with tempfile.TemporaryDirectory() as work:
            try:
                result["run"] = bench_run(configs[args.run_kind], args, step_s, Path(work))
                trained = VQTokenizer.from_pretrained(Path(work) / "tok", device=device).model
            except Exception as exc:  # noqa: BLE001
                record_error("run", exc)
        # the training loop switches deterministic algorithms on for the process: off again for timing
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = device == "cuda"
        torch._dynamo.reset()
        result["phases_done"].append("run")
        save()

    # 4. encoding: VQ (trained when phase 3 ran) and HRQ; variant before kind, so that with too
    #    little time left the less important variants are what gets skipped
    kinds = args.encode_kinds.split(",")
    models, held_out = {}, real_windows(args, "valid", args.agree_windows, args.encode_len)
    for variant in encode_variants:
        for kind in kinds:
            if variant in ("compiled", "compiled_bf16", "compiled_conv") and device != "cuda":
                continue
            if not fits(f"encode:{kind}:{variant}", ENCODE_COST_S.get(variant, 40)):
                continue
            try:
                if kind not in models:
                    models[kind] = trained if (kind == args.run_kind and trained is not None) else \
                        kmeans_model(configs[kind], args, device)
                    result["encode"][kind] = {"model": "trained (phase 3)" if models[kind] is trained else
                                              "random weights, codebooks k-means-initialised on real DNA latents"}
                model = models[kind]
                ConvNeXtBlock1d.depthwise_impl = "conv" if variant == "compiled_conv" else "auto"
                tok = make_tokenizer(model, variant, device)
                rows = bench_encode(tok, batches, args.encode_len, device, args.reps, f"{kind} {variant}",
                                    flops[kind], peak)
                result["encode"][kind][variant] = {"rows": rows, "agreement": agreement(tok, model, held_out, device,
                                                                                        batch=batches[0])}
                del tok
            except Exception as exc:  # noqa: BLE001
                record_error(f"encode:{kind}:{variant}", exc)
            finally:
                ConvNeXtBlock1d.depthwise_impl = "auto"
            result["phases_done"].append(f"encode:{kind}:{variant}")
            save()

    # 4b. where the fast path's time goes (one block's passes, timed alone)
    if "vq" in models and fits("stage_times", 10):
        try:
            result["stage_times"] = stage_times(models["vq"], batches[-1], args.encode_len, device, args.reps)
        except Exception as exc:  # noqa: BLE001
            record_error("stage_times", exc)
        save()

    from vqdna.tokenizers import dwconv_ln_triton, fast_encode

    def record_paths():
        result["fast_paths"] = dict(fast_encode.PATHS)
        result["dwconv_ln_triton_tuning_ms"] = {dwconv_ln_triton.key_name(key): v
                                                for key, v in dwconv_ln_triton.TUNE_RESULTS.items()}
        result["dwconv_ln_triton_best"] = {dwconv_ln_triton.key_name(key): dwconv_ln_triton.config_name(cfg)
                                           for key, cfg in dwconv_ln_triton._BEST.items()}
        result["total_seconds"] = time.time() - t_start
        save()

    record_paths()
    # 5. long-compiling train variants last, so that a time-out loses only them
    for name in [v for v in args.late_train_variants.split(",") if v]:
        if fits(name, args.late_min_s):
            train_phase(name)
    record_paths()

    # the table
    print("\n| what | variant | batch x len | M nt/s | TFLOP/s | MFU | vs plain matmul | codes = fp32 | rec. acc. |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, variants in result["encode"].items():
        for variant, rec in variants.items():
            if not isinstance(rec, dict) or "rows" not in rec:
                continue
            ag = rec["agreement"]
            for r in rec["rows"]:
                if "error" in r:
                    continue
                print(f"| encode {kind} | {variant} | {r['batch']}x{r['length']} | {r['nt_per_s'] / 1e6:.2f} | "
                      f"{r['tflops']:.1f} | {(r['mfu'] or 0) * 100:.1f}% | {r['tflops'] / matmul * 100:.0f}% | "
                      f"{ag['share_equal_all_levels'] * 100:.3f}% | {ag['reconstruction_variant_codes'] * 100:.2f}% |")
    for name, r in result["train_step"].items():
        print(f"| train step {r['kind']} | {name} ({r['precision']}, {r['dwconv_ln']}) | {r['batch']}x{r['length']} | "
              f"{r['nt_per_s'] / 1e6:.2f} | {r['tflops']:.1f} | "
              f"{(r['mfu'] or 0) * 100:.1f}% | {r['vs_plain_matmul'] * 100:.1f}% | | |")
    print(f"| plain bf16 matmul (model shapes) | | | | {matmul:.1f} | "
          f"{(matmul * 1e12 / peak * 100) if peak else 0:.1f}% | 100% | | |")
    if "run" in result:
        r = result["run"]
        print(f"\nbench run ({r['kind']}, {r['settings']['precision']}, {r['settings']['dwconv_ln']}): "
              f"{r['settings']['max_steps']} steps x {r['settings']['batch_size']} windows "
              f"({r['train_nucleotides'] / 1e9:.2f} G nt, {r['train_seconds']:.0f} s): held-out reconstruction "
              f"{r['valid_reconstruction_accuracy'] * 100:.2f}% on {r['valid_nucleotides']} nt, usage "
              f"{r['usage_pct']}%, perplexity {[round(p, 1) for p in r['perplexity']]}")
    if result["skipped"]:
        print(f"skipped: {result['skipped']}")
    if result.get("errors"):
        print(f"errors: {list(result['errors'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
