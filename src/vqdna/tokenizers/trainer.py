"""Training loop of the VQ/HRQ tokenizer (stage 1), importable without MLflow or Snakemake.

- streams windows from the train shards (`ShardStream`), random crops of the scheduled length
  (`seq_len_warmup` during warm-up, then `seq_len`);
- AdamW(β1, β2, wd) (fused on CUDA), linear warm-up then cosine decay, gradient clipping,
  bf16 autocast on CUDA, or bf16 weights with fp32 master AdamW (`precision`, see `train_path.py`);
  codebooks by EMA inside the forward pass;
- codebook initialisation from the first batch (k-means), optional k-means re-initialisation
  once after warm-up (paper: HRQ), dead-code restarts every `restart_every` steps;
- DDP under torchrun: each rank takes its slice of the global batch, codebook statistics are
  all-reduced (see `quantizer.py`), so every rank holds identical codebooks; k-means reads the
  global batch (rank 0's result is broadcast) and the logged training metrics are the global
  batch's (one all-reduce per log step);
- a checkpoint (model incl. EMA buffers, optimizer, data position, RNG states, step) every
  `checkpoint_every` steps, written atomically; a restarted job continues exactly from it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..atomic import atomic_dir, atomic_path, write_json
from ..distributed import barrier, sum_over_ranks
from ..genomes.shards_io import list_shards, read_codes
from .data import ShardStream, random_crops
from .evaluate import evaluate_tokenizer
from .model import VQModelConfig, VQVAE
from .distance import TRAIN_DISTANCES
from .quantizer import usage_and_perplexity
from .train_path import StepOptimizer, autocast as step_autocast, cast_weights, check, set_dwconv_ln
from .vq import VQTokenizer

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


class SimulatedKill(RuntimeError):
    """Raised by the `stop_at_step` test hook: the job dies without any clean-up."""


@dataclass
class TrainSettings:
    """The `tokenizers.training` block (merged with a definition's own `training:` overrides)."""

    batch_size: int
    max_steps: int
    lr: float
    min_lr: float
    betas: tuple[float, float]
    weight_decay: float
    warmup_steps: int
    seq_len_warmup: int
    seq_len: int
    grad_clip: float
    init_kmeans_iters: int
    kmeans_after_warmup: bool
    kmeans_iters: int
    kmeans_max_samples: int
    restart_every: int
    checkpoint_every: int
    log_every: int
    valid_windows: int
    valid_length: int | None
    eval_batch_rows: int
    compile: bool = False
    compile_mode: str = "default"
    precision: str = "autocast"      # autocast | bf16_weights (train_path.py)
    dwconv_ln: str = "autograd"      # autograd | fused | fused_fwd | fused_torch (train_path.DWCONV_LN, dwconv_ln.py)
    distance: str = "fp32"           # fp32 | bf16x3: the nearest-code search (distance.py)

    def __post_init__(self):
        check(self.precision, self.dwconv_ln)
        if self.distance not in TRAIN_DISTANCES:
            raise ValueError(f"tokenizers.training.distance must be one of {TRAIN_DISTANCES}, not {self.distance!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSettings":
        import dataclasses

        names = cls.__dataclass_fields__
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in d and f.default is dataclasses.MISSING]
        if missing:
            raise KeyError(f"tokenizers.training lacks {missing}")
        kw = {n: d[n] for n in names if n in d}
        kw["betas"] = tuple(kw["betas"])
        return cls(**kw)


def lr_at(step: int, s: TrainSettings) -> float:
    """Linear warm-up to `lr`, then cosine decay to `min_lr` at `max_steps`."""
    if s.warmup_steps > 0 and step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    span = max(1, s.max_steps - s.warmup_steps)
    t = min(1.0, (step - s.warmup_steps) / span)
    return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * t))


def seq_len_at(step: int, s: TrainSettings) -> int:
    return s.seq_len_warmup if step < s.warmup_steps else s.seq_len


class _Dist:
    """Rank/world of this process; sets up the process group under torchrun."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.world > 1:
            import torch.distributed as dist

            if device == "cuda":
                torch.cuda.set_device(self.local_rank)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device == "cuda" else "gloo")
        self.device = torch.device(f"cuda:{self.local_rank}" if device == "cuda" else device)

    @property
    def main(self) -> bool:
        return self.rank == 0


def valid_windows(shards_dir: Path, s: TrainSettings) -> np.ndarray:
    """The first `valid_windows` windows of the valid split (fixed, so runs compare), cut to `valid_length`."""
    rows, have = [], 0
    for path in list_shards(shards_dir, "valid"):
        codes = read_codes(path)
        rows.append(codes[: s.valid_windows - have])
        have += len(rows[-1])
        if have >= s.valid_windows:
            break
    windows = np.concatenate(rows)
    if s.valid_length:
        windows = windows[:, : s.valid_length]
    return np.ascontiguousarray(windows)


def train_vq_tokenizer(
    model_cfg: VQModelConfig,
    settings: TrainSettings,
    shards_dir: str | Path,
    out_dir: str | Path,
    *,
    work_dir: str | Path,
    seed: int,
    device: str = "auto",
    log_metrics: Callable[[dict, int], None] | None = None,
    progress: bool = True,
    stop_at_step: int | None = None,
) -> dict:
    """Train (or resume) one VQ/HRQ tokenizer and write `out_dir` (config.json, model.safetensors, metrics.json).

    `log_metrics(metrics, step)` gets the training metrics of each log step on every rank it is passed
    to; under DDP they are the global batch's, the same on every rank (the CLI passes it on rank 0 only).
    Returns the metrics written to metrics.json on rank 0, {} on the other ranks.
    """
    from tqdm.auto import tqdm

    from ..seeding import seed_everything

    shards_dir, out_dir, work_dir = Path(shards_dir), Path(out_dir), Path(work_dir)
    dist_info = _Dist(device)
    dev = dist_info.device
    if settings.batch_size % dist_info.world:
        raise ValueError(f"batch_size {settings.batch_size} is not divisible by {dist_info.world} ranks")
    local_rows = settings.batch_size // dist_info.world
    seed_everything(seed)
    model = VQVAE(model_cfg).to(dev)
    fused = dev.type == "cuda"
    set_dwconv_ln(model, settings.dwconv_ln)
    cast_weights(model, settings.precision)
    model.quantizer.set_distance(settings.distance)
    if settings.compile and fused:
        # in place (state_dict keys unchanged); the quantizer stays eager (data-dependent EMA updates)
        mode = None if settings.compile_mode == "default" else settings.compile_mode
        model.encoder.compile(mode=mode)
        model.decoder.compile(mode=mode)
    optimizer = StepOptimizer(model, settings.precision, lr=settings.lr, betas=settings.betas,
                              weight_decay=settings.weight_decay, fused=fused)
    train_model: torch.nn.Module = model
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # buffers (codebooks) stay per rank: they are kept identical by all-reduced statistics
        train_model = DistributedDataParallel(model, device_ids=[dev.index] if fused else None,
                                              broadcast_buffers=False)
    stream = ShardStream(list_shards(shards_dir, "train"), seed=seed)
    quant_gen = torch.Generator().manual_seed(seed + 1)  # k-means, restarts
    step = 0
    ckpt_path = work_dir / CHECKPOINT
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path.exists() else None
    if state is not None and (state.get("model_config") != model_cfg.to_dict()
                              or state.get("batch_size", settings.batch_size) != settings.batch_size
                              or state.get("precision", "autocast") != settings.precision):
        log.warning("%s was written for another model, batch size or precision; starting over", ckpt_path)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        stream.load_state_dict(state["stream"])
        quant_gen.set_state(state["quant_rng"])
        torch.set_rng_state(state["torch_rng"])
        if dev.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], dev)
        step = int(state["step"])
        log.info("resumed %s from step %d", ckpt_path, step)

    def save_checkpoint() -> None:
        if not dist_info.main:
            return
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "stream": stream.state_dict(),
            "quant_rng": quant_gen.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None, "step": step,
            "model_config": model_cfg.to_dict(), "batch_size": settings.batch_size,
            "precision": settings.precision,
        }
        with atomic_path(ckpt_path) as tmp:
            torch.save(state, tmp)

    autocast = step_autocast(dev, settings.precision)
    t0, nt_seen, nt_since_log, t_log = time.time(), 0, 0, time.time()
    last: dict = {}
    bar = tqdm(total=settings.max_steps, initial=step, disable=not (progress and dist_info.main),
               desc=f"train {model_cfg.kind}", unit="step")
    model.train()
    # read once: a per-step check of the CUDA flag would synchronise the GPU every step
    codebooks_ready = bool(model.quantizer.codebooks[0].initialized)
    while step < settings.max_steps:
        length = seq_len_at(step, settings)
        rows = stream.next_rows(settings.batch_size)
        crops = random_crops(rows, length, np.random.default_rng([seed, step]))
        local = crops[dist_info.rank * local_rows:(dist_info.rank + 1) * local_rows]
        x = torch.from_numpy(np.ascontiguousarray(local))
        if dev.type == "cuda":  # from pageable memory the copy would wait for the GPU to drain
            x = x.pin_memory()
        x = x.to(dev, non_blocking=True).long()

        init_now = not codebooks_ready
        reinit_now = settings.kmeans_after_warmup and step == settings.warmup_steps and step > 0
        if init_now or reinit_now:
            # under DDP from the global batch (every rank holds it), as one process would: rank 0's slice
            # alone would give k-means 1/world of the latents `kmeans_max_samples` asks for
            batch = x if dist_info.world == 1 else torch.from_numpy(np.ascontiguousarray(crops)).to(dev).long()
            _kmeans_init(model, batch, settings.init_kmeans_iters if init_now else settings.kmeans_iters,
                         settings.kmeans_max_samples, quant_gen, autocast)
            codebooks_ready = True

        lr = lr_at(step, settings)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast:
            out = train_model(x, update_codebooks=True)
        out["loss"].backward()
        optimizer.step(settings.grad_clip)
        optimizer.zero_grad()
        restarted = None
        if settings.restart_every > 0 and (step + 1) % settings.restart_every == 0:
            restarted = model.quantizer.restart_dead([z.detach() for z in out["latents"]], quant_gen)
        step += 1
        nt_seen += x.numel() * dist_info.world
        nt_since_log += x.numel() * dist_info.world
        bar.update(1)

        if step % settings.log_every == 0 or step == settings.max_steps:
            with torch.no_grad():
                means = torch.stack([out["loss"].double(), out["rec_loss"].double(), out["commit_loss"].double(),
                                     (out["logits"].argmax(-1) == x).float().mean().double()])
            level_counts = [c.clone() for c in out["counts"]]
            # every rank's slice, not rank 0's alone: the global batch's numbers (the ranks' slices
            # are equal, so their mean is the mean of the means), on every rank
            sum_over_ranks([means, *level_counts], dist_info.world)
            loss, rec_loss, commit_loss, acc = (float(v) for v in means / dist_info.world)
            now = time.time()
            last = {"train/loss": loss, "train/rec_loss": rec_loss, "train/commit_loss": commit_loss,
                    "train/accuracy": acc, "train/lr": lr,
                    "train/seq_len": length, "train/nt_per_s": nt_since_log / max(now - t_log, 1e-9)}
            for level, counts in enumerate(level_counts):
                usage, ppl = usage_and_perplexity(counts)
                last[f"train/usage_pct_l{level}"] = usage
                last[f"train/perplexity_l{level}"] = ppl
            if restarted is not None:
                last.update({f"train/restarted_l{i}": n for i, n in enumerate(restarted)})
            nt_since_log, t_log = 0, now
            bar.set_postfix(loss=f"{last['train/loss']:.3f}", acc=f"{acc:.3f}")
            if log_metrics:
                log_metrics(last, step)
        if settings.checkpoint_every > 0 and step % settings.checkpoint_every == 0 and step < settings.max_steps:
            save_checkpoint()
        if stop_at_step is not None and step == stop_at_step:
            bar.close()
            raise SimulatedKill(f"simulated kill at step {step}")
    bar.close()
    train_seconds = time.time() - t0

    metrics: dict = {}
    optimizer.restore_fp32()  # evaluate and save the exact fp32 weights (bf16_weights)
    if dist_info.main:
        tok = VQTokenizer(model)
        metrics = evaluate_tokenizer(tok, valid_windows(shards_dir, settings), settings.eval_batch_rows)
        metrics.update({
            "kind": model_cfg.kind, "steps": step, "train_nucleotides_this_run": nt_seen,
            "train_seconds_this_run": train_seconds, "parameters": model.num_parameters(),
            "final_train": {k.split("/", 1)[1]: v for k, v in last.items()},
        })
        with atomic_dir(out_dir) as tmp:
            tok.save_pretrained(tmp)
            write_json(Path(tmp) / "metrics.json", metrics)
        if ckpt_path.exists():  # the finished tokenizer supersedes the checkpoint
            ckpt_path.unlink()
        with contextlib.suppress(OSError):
            work_dir.rmdir()
        model.train()
    barrier(dist_info.world)
    return metrics


@torch.no_grad()
def _kmeans_init(model: VQVAE, x: torch.Tensor, iters: int, max_samples: int,
                 generator: torch.Generator, autocast) -> None:
    rows = max(1, min(x.shape[0], max_samples // max(1, x.shape[1])))
    with autocast:
        latents = model.encoder(x[:rows])
    model.quantizer.init_codebooks([z.float() for z in latents], iters, generator)
