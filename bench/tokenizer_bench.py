"""Stage-1 tokenizer speed and quality: training nt/s, encoding nt/s, model FLOP utilisation,
and a bench-size training run's held-out reconstruction accuracy.

    # here (has the demo genomes): real DNA as Arrow shards for the device (git-ignored folder)
    PYTHONPATH=src python bench/tokenizer_bench.py --make-data results/bench_tok_shards
    # on the GPU
    PYTHONPATH=src python bench/tokenizer_bench.py --shards results/bench_tok_shards --out $OUT/tokenizer_bench.json
    # smoke test on CPU
    PYTHONPATH=src python bench/tokenizer_bench.py --tiny --device cpu --shards results/bench_tok_shards

Phases (each writes the JSON again, so a time-out keeps what finished):
1. reference: plain bf16 matmuls of the model's two MLP shapes ([N, D] x [D, 4D], [N, 4D] x [4D, D]);
2. encoding nt/s of `VQTokenizer.encode_codes` (bf16 autocast) at several batch sizes, eager and compiled;
3. one training step (forward with EMA update, backward, fused AdamW) at the paper's batch, eager and compiled;
4. a bench-size run of the real training loop (`train_vq_tokenizer`) on real DNA shards, then the
   held-out reconstruction accuracy, code usage and perplexity from `metrics.json`.

Model FLOPs are counted from the architecture (every matmul and convolution, 2 FLOPs per MAC;
training = 3x forward). MFU = achieved / datasheet dense bf16 peak; the issue's target compares
the training FLOP rate to the rate the same script measures for the plain matmuls.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vqdna.tokenizers.convnext import ConvNeXtBlock1d  # noqa: E402
from vqdna.tokenizers.model import VQModelConfig, VQVAE  # noqa: E402
from vqdna.tokenizers.vq import VQTokenizer  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, datasheet (SXM)
PAPER_VQ = dict(kind="vq", dim=384, stem_dim=256, depth=6, stem_kernel=5, block_kernel=7, mlp_ratio=4,
                layer_scale_init=1e-6, taps=[6], codebook_sizes=[512], beta=0.5, ema_decay=0.99)
TINY_VQ = dict(PAPER_VQ, dim=32, stem_dim=32, depth=2, taps=[2], codebook_sizes=[64], layer_scale_init=0.1, ema_decay=0.9)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="toy sizes (CPU smoke test)")
    p.add_argument("--shards", default="results/bench_tok_shards", help="real-DNA shards (train/, valid/)")
    p.add_argument("--make-data", metavar="DIR", help="write real-DNA shards from data/demo/genomes to DIR and exit")
    p.add_argument("--encode-batches", default="256,1024,2048", help="windows per encode call (length --encode-len)")
    p.add_argument("--encode-len", type=int, default=512)
    p.add_argument("--train-batch", type=int, default=1024)
    p.add_argument("--train-len", type=int, default=256)
    p.add_argument("--variants", default="eager,compiled,compiled_bf16",
                   help="eager | compiled (torch.compile, shifted-sum depth-wise conv) | compiled_conv (cuDNN "
                        "depth-wise conv inside the compiled graph) | compiled_bf16 (encoding only: encoder weights in bf16)")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--run-seconds", type=float, default=90.0, help="time budget of the bench-size training run")
    p.add_argument("--run-lr", type=float, default=1e-3)
    p.add_argument("--run-compile", action="store_true", help="compile in the bench-size run")
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


def random_dna(batch: int, length: int, device: str) -> torch.Tensor:
    return torch.randint(0, 4, (batch, length), device=device, dtype=torch.uint8)


def prepare_tokenizer(tok: VQTokenizer, variant: str) -> VQTokenizer:
    if "bf16" in variant:
        tok.model.encoder.to(torch.bfloat16)  # codebooks and distances stay fp32
    if variant.startswith("compiled"):
        tok.compile()
    return tok


def bench_encode(c: dict, batches: list[int], length: int, device: str, reps: int, variant: str, flops: dict,
                 peak: float | None) -> list[dict]:
    torch.manual_seed(0)
    tok = prepare_tokenizer(VQTokenizer(VQVAE(VQModelConfig(**c))).to(device), variant)
    rows = []
    for b in batches:
        x = random_dna(b, length, device)
        try:
            sec = timed(lambda: tok.encode_codes(x), reps, device)
        except torch.OutOfMemoryError:
            rows.append({"batch": b, "length": length, "error": "out of memory"})
            torch.cuda.empty_cache()
            continue
        nt_s = b * length / sec
        tflops = nt_s * flops["encode"] / 1e12
        rows.append({"batch": b, "length": length, "seconds": sec, "nt_per_s": nt_s, "tflops": tflops,
                     "mfu": tflops * 1e12 / peak if peak else None})
        print(f"  encode {variant:14s} B={b:5d} L={length}: {nt_s / 1e6:8.2f} M nt/s "
              f"{tflops:7.1f} TFLOP/s", flush=True)
    return rows


def bench_train_step(c: dict, batch: int, length: int, device: str, reps: int, compiled: bool, flops: dict,
                     peak: float | None) -> dict:
    torch.manual_seed(0)
    model = VQVAE(VQModelConfig(**c)).to(device)
    if compiled:
        model.encoder.compile(dynamic=False)
        model.decoder.compile(dynamic=False)
    cuda = device == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), weight_decay=0.01, fused=cuda)
    x = random_dna(batch, length, device).long()
    with torch.no_grad():  # codebook from data, as the training loop does
        model.quantizer.init_codebooks([z.float() for z in model.encoder(x[: max(1, 65536 // length)])], 2,
                                       torch.Generator().manual_seed(0))

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=cuda):
            out = model(x, update_codebooks=True)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sec = timed(step, reps, device)
    nt_s = batch * length / sec
    tflops = nt_s * 3 * flops["forward"] / 1e12
    mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    row = {"batch": batch, "length": length, "seconds_per_step": sec, "nt_per_s": nt_s, "tflops": tflops,
           "mfu": tflops * 1e12 / peak if peak else None, "max_memory_gib": mem}
    print(f"  train  {'compiled' if compiled else 'eager':14s} B={batch:5d} L={length}: {nt_s / 1e6:8.2f} M nt/s "
          f"{tflops:7.1f} TFLOP/s  {sec * 1e3:7.1f} ms/step", flush=True)
    return row


def bench_dwconv(c: dict, batch: int, length: int, device: str, reps: int) -> dict:
    """Depth-wise k=7 conv vs its transposed twin (the decoder's 'deconvolution'), fwd+bwd, bf16."""
    D, k = c["dim"], c["block_kernel"]
    x = torch.randn(batch, D, length, device=device, requires_grad=True)
    out = {}
    for name, cls in {"conv1d": torch.nn.Conv1d, "conv_transpose1d": torch.nn.ConvTranspose1d}.items():
        layer = cls(D, D, k, padding=k // 2, groups=D).to(device)

        def fb():
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
                layer(x).float().sum().backward()

        out[name] = timed(fb, reps, device)
    print(f"  depth-wise conv fwd+bwd: conv1d {out['conv1d'] * 1e3:.2f} ms, "
          f"conv_transpose1d {out['conv_transpose1d'] * 1e3:.2f} ms", flush=True)
    return out


# ---------------------------------------------------------------------------------------- real run
def bench_run(c: dict, args, step_seconds: float | None, work: Path) -> dict:
    from vqdna.tokenizers.trainer import TrainSettings, train_vq_tokenizer

    per_step = step_seconds or 0.05
    steps = max(20, int(args.run_seconds / (per_step * 1.15)))  # 15% for data loading and logging
    if args.tiny:
        steps = min(steps, 60)
    warmup = max(5, steps // 10)
    s = TrainSettings(
        batch_size=args.train_batch if not args.tiny else 16, max_steps=steps, lr=args.run_lr, min_lr=args.run_lr / 100,
        betas=(0.9, 0.98), weight_decay=0.01, warmup_steps=warmup, seq_len_warmup=args.train_len // 2,
        seq_len=args.train_len, grad_clip=1.0, init_kmeans_iters=10, kmeans_after_warmup=False, kmeans_iters=20,
        kmeans_max_samples=262144, restart_every=max(10, steps // 20), checkpoint_every=0, log_every=max(1, steps // 10),
        valid_windows=4096 if not args.tiny else 64, valid_length=None, eval_batch_rows=256,
        compile=args.run_compile,
    )
    log = []
    t = time.time()
    metrics = train_vq_tokenizer(VQModelConfig(**c), s, args.shards, work / "tok", work_dir=work / "ckpt", seed=0,
                                 device=args.device, progress=False,
                                 log_metrics=lambda m, step: (log.append({"step": step, **m}),
                                                              print(f"  step {step}: {m}", flush=True)))
    wall = time.time() - t
    agreement = code_agreement(work / "tok", args, args.device)
    return {"agreement": agreement, "settings": {k: v for k, v in s.__dict__.items()}, "wall_seconds": wall,
            "train_nucleotides": metrics["train_nucleotides_this_run"],
            "train_seconds": metrics["train_seconds_this_run"],
            "valid_reconstruction_accuracy": metrics["valid_reconstruction_accuracy"],
            "valid_windows": metrics["valid_windows"], "valid_nucleotides": metrics["valid_nucleotides"],
            "usage_pct": metrics["usage_pct"], "perplexity": metrics["perplexity"], "log": log}


def code_agreement(tok_dir: Path, args, device: str) -> dict:
    """Share of held-out positions whose code is the same as with the eager fp32/autocast reference."""
    from vqdna.genomes.shards_io import list_shards, read_codes

    windows = torch.from_numpy(read_codes(list_shards(args.shards, "valid")[0])[:512])
    ref = VQTokenizer.from_pretrained(tok_dir, device=device).encode_codes(windows)
    out = {}
    variants = ["eager_bf16", "eager_fp32"] if device == "cuda" else ["eager_fp32"]
    for variant in variants:
        tok = VQTokenizer.from_pretrained(tok_dir, device=device, autocast=variant != "eager_fp32")
        try:
            codes = prepare_tokenizer(tok, variant).encode_codes(windows)
            out[variant] = float((codes == ref).float().mean())
        except Exception as exc:  # noqa: BLE001
            out[variant] = f"{type(exc).__name__}: {exc}"[:500]
    print(f"  code agreement with eager autocast: {out}", flush=True)
    return out


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
def main() -> int:
    args = parse_args()
    if args.make_data:
        make_data(Path(args.make_data))
        return 0
    t_start = time.time()
    device = args.device
    c = TINY_VQ if args.tiny else PAPER_VQ
    if args.tiny:
        args.train_batch, args.train_len, args.encode_len = 8, 128, 256
        args.encode_batches, args.reps, args.run_seconds = "4,8", 2, 10
    gpu = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in gpu), None) if device == "cuda" else None
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    flops = forward_flops_per_nt(c)
    params = VQVAE(VQModelConfig(**c)).num_parameters()
    result = {"bench": "tokenizer", "device": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
              "peak_bf16_flops": peak, "config": c, "parameters": params, "flops_per_nt": flops,
              "command": " ".join(sys.argv), "phases_done": []}

    def save():
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    def left() -> float:
        return args.budget_s - (time.time() - t_start)

    print(f"device {gpu}, torch {torch.__version__}, params {params}, forward {flops['forward'] / 1e6:.2f} MFLOP/nt",
          flush=True)
    batches = [int(b) for b in args.encode_batches.split(",")]
    variants = args.variants.split(",")

    result["matmul"] = matmul_reference(c, args.train_batch * args.train_len, device, args.reps)
    print(f"  plain matmuls of the model's shapes: {result['matmul']['model_shapes_tflops']:.1f} TFLOP/s", flush=True)
    result["dwconv_seconds"] = bench_dwconv(c, args.train_batch // 4, args.train_len, device, args.reps)
    result["phases_done"].append("matmul")
    save()

    result["encode"], result["train_step"] = {}, {}
    for variant in variants:
        if variant == "compiled" and device != "cuda":
            continue
        if left() < args.run_seconds + (200 if args.run_compile else 90):
            print(f"  skipping {variant}: {left():.0f} s left", flush=True)
            continue
        try:
            ConvNeXtBlock1d.depthwise_impl = "conv" if variant == "compiled_conv" else "auto"
            result["encode"][variant] = bench_encode(c, batches, args.encode_len, device, args.reps,
                                                     variant, flops, peak)
            save()
            if "bf16" not in variant:
                result["train_step"][variant] = bench_train_step(
                    c, args.train_batch, args.train_len, device, args.reps, variant.startswith("compiled"), flops, peak)
        except Exception as exc:  # noqa: BLE001 - a failed variant must not lose the others
            result.setdefault("errors", {})[variant] = f"{type(exc).__name__}: {exc}"[:2000]
            print(f"  {variant} failed: {exc}", flush=True)
        finally:
            ConvNeXtBlock1d.depthwise_impl = "auto"
        result["phases_done"].append(variant)
        save()

    matmul = result["matmul"]["model_shapes_tflops"]
    for variant, row in result["train_step"].items():
        row["vs_plain_matmul"] = row["tflops"] / matmul
    save()

    step_s = None
    for variant in ("compiled" if args.run_compile else "eager",):
        if variant in result["train_step"]:
            step_s = result["train_step"][variant]["seconds_per_step"]
    if step_s is None and result["train_step"]:
        step_s = min(r["seconds_per_step"] for r in result["train_step"].values())
    args.run_seconds = max(10.0, min(args.run_seconds, left() - 60))
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        try:
            result["run"] = bench_run(c, args, step_s, Path(work))
        except Exception as exc:  # noqa: BLE001
            result.setdefault("errors", {})["run"] = f"{type(exc).__name__}: {exc}"[:2000]
            print(f"  bench run failed: {exc}", flush=True)
    result["phases_done"].append("run")
    result["total_seconds"] = time.time() - t_start
    save()

    # the table
    print("\n| what | variant | batch x len | M nt/s | TFLOP/s | MFU | vs plain matmul |")
    print("|---|---|---|---|---|---|---|")
    for variant, rows in result["encode"].items():
        for r in rows:
            if "error" in r:
                continue
            print(f"| encode | {variant} | {r['batch']}x{r['length']} | {r['nt_per_s'] / 1e6:.2f} | {r['tflops']:.1f} | "
                  f"{(r['mfu'] or 0) * 100:.1f}% | {r['tflops'] / matmul * 100:.0f}% |")
    for variant, r in result["train_step"].items():
        print(f"| train step | {variant} | {r['batch']}x{r['length']} | {r['nt_per_s'] / 1e6:.2f} | {r['tflops']:.1f} | "
              f"{(r['mfu'] or 0) * 100:.1f}% | {r['vs_plain_matmul'] * 100:.0f}% |")
    print(f"| plain bf16 matmul (model shapes) | | | | {matmul:.1f} | "
          f"{(matmul * 1e12 / peak * 100) if peak else 0:.1f}% | 100% |")
    if "run" in result:
        r = result["run"]
        print(f"\nbench run: {r['settings']['max_steps']} steps x {r['settings']['batch_size']} windows "
              f"({r['train_nucleotides'] / 1e9:.2f} G nt, {r['train_seconds']:.0f} s): held-out reconstruction "
              f"{r['valid_reconstruction_accuracy'] * 100:.2f}% on {r['valid_nucleotides']} nt, usage "
              f"{r['usage_pct']}%, perplexity {[round(p, 1) for p in r['perplexity']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
