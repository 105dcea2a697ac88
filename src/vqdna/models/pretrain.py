"""`vqdna pretrain`: stage-2 masked-LM pretraining of the backbone on stored token files.

Every random draw of optimizer step `s` (the windows, the masks, dropout) is seeded from
(seed, s, micro-batch, rank), so a job resumed from a checkpoint replays exactly what an
uninterrupted job would have done. Checkpoints go to `<out>.ckpt/last.pt` (atomic; the
tokenizer stage keeps its own the same way); the final model is a `save_pretrained` directory written with `atomic_dir`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_dir, atomic_path, write_json
from ..distributed import barrier, sum_over_ranks
from ..errors import ConfigError, InputError
from ..tokens import TokenFile
from ..tokens.format import read_meta
from .collate import special_token_ids
from .fp8 import convert_to_float8
from .masking import mask_tokens, targets_per_row
from .modeling import VQDNAForMaskedLM
from .schedule import warmup_cosine
from .train_step import TrainStep

log = logging.getLogger(__name__)

ARCH_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "hidden_dropout_prob", "attention_probs_dropout_prob", "position_encoding", "rope_theta",
             "norm_position", "layer_norm_eps", "initializer_range")
# kernel choices that travel in the saved VQDNAConfig (same parameters and function, other kernels)
FUSED_KEYS = ("fused_dropout_norm", "fused_rope", "fused_gelu")


@dataclass
class PretrainSettings:
    """The `pretrain` config section (defaults: the schema; paper values: config/paper.yaml)."""

    model: dict = field(default_factory=dict)
    max_len: int = 256
    mask_ratio: float = 0.25
    mask_token_share: float = 0.8
    random_token_share: float = 0.1
    steps: int = 500_000
    batch_size: int = 2048
    micro_batch_size: int = 256
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_steps: int = 10_000
    weight_decay: float = 0.01
    betas: list = field(default_factory=lambda: [0.9, 0.98])
    adam_eps: float = 1e-6
    grad_clip: float = 1.0
    precision: str = "auto"
    fp8_recipe: str = "tensorwise"
    compile: bool = False
    fused_dropout_norm: bool = False
    fused_rope: bool = False
    fused_gelu: bool = False
    cuda_graphs: bool = False
    deterministic: bool = False
    train_split: str = "train"
    eval_split: str | None = "valid"
    eval_batches: int = 4
    eval_every: int = 0
    log_every: int = 100
    checkpoint_every: int = 1000
    cpu_threads: int = 0

    @classmethod
    def from_config(cls, cfg: dict) -> "PretrainSettings":
        section = dict(cfg.get("pretrain", {}))
        section.pop("tokenizers", None)  # which tokenizers to pretrain: the workflow's business
        section.pop("variants", None)  # which variants exist: applied by vqdna.variants.variant_config
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"pretrain: unknown keys {unknown}")
        return cls(**section)

    def accumulation(self, world: int) -> int:
        per_step = self.micro_batch_size * world
        if self.batch_size % per_step:
            raise ConfigError(f"pretrain.batch_size {self.batch_size} is not a multiple of "
                              f"micro_batch_size {self.micro_batch_size} x {world} ranks")
        return self.batch_size // per_step


def add_arguments(parser) -> None:
    parser.add_argument("--tokens", required=True, help="token directory (results/tokens/{tok})")
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory (results/tokenizers/{tok})")
    parser.add_argument("--out", required=True, help="output directory (results/pretrain/{tok})")
    parser.add_argument("--name", default=None, help="run name (default: the output folder name)")
    parser.add_argument("--checkpoint-dir", default=None, help="default: <out>.ckpt")
    parser.add_argument("--variant", default=None,
                        help="train pretrain.variants.NAME: its overrides of the pretrain section apply")


def run(args, cfg) -> int:
    if args.variant:
        from ..variants import variant_config

        cfg = variant_config(cfg, args.variant)
    pretrain(args.tokens, args.tokenizer, args.out, cfg, name=args.name, checkpoint_dir=args.checkpoint_dir)
    return 0


# ---- the training job --------------------------------------------------------------------

def pretrain(tokens_dir, tokenizer_dir, out_dir, cfg: dict, *, name: str | None = None,
             checkpoint_dir=None, stop_after: int | None = None, track: bool = True) -> dict:
    """Train and save `out_dir`. `stop_after=k` ends the job right after step k's checkpoint
    without saving the model (tests use it to simulate a kill). Returns the final metrics.
    `pretrain.deterministic`: torch's deterministic kernels for the job (the previous settings
    are put back when it returns)."""
    settings = PretrainSettings.from_config(cfg)
    if not settings.deterministic:
        return _pretrain(settings, tokens_dir, tokenizer_dir, out_dir, cfg, name=name,
                         checkpoint_dir=checkpoint_dir, stop_after=stop_after, track=track)
    from ..seeding import deterministic_kernels

    # first, before any CUDA work: cuBLAS takes its workspace config when it starts
    restore = deterministic_kernels(warn_only=False)
    try:
        return _pretrain(settings, tokens_dir, tokenizer_dir, out_dir, cfg, name=name,
                         checkpoint_dir=checkpoint_dir, stop_after=stop_after, track=track)
    except RuntimeError as exc:
        if NO_DETERMINISTIC_KERNEL not in str(exc):
            raise
        raise ConfigError(f"pretrain.deterministic is on, but an op of this run has no deterministic kernel "
                          f"on this device ({str(exc).split('. ')[0]}): the run cannot repeat bitwise; set "
                          f"pretrain.deterministic: false to train with torch's default kernels") from exc
    finally:
        restore()


# the words torch's error for an op without a deterministic kernel starts with (after the op's name)
NO_DETERMINISTIC_KERNEL = "does not have a deterministic implementation"


def _pretrain(settings: PretrainSettings, tokens_dir, tokenizer_dir, out_dir, cfg: dict, *, name, checkpoint_dir,
              stop_after, track) -> dict:
    from ..tokenizers import load_tokenizer
    from ..tokens.tokenize import resolve_device

    seed = int(cfg.get("seed", 0))
    out_dir = Path(out_dir)
    name = name or out_dir.name
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir.with_name(out_dir.name + ".ckpt")
    rank, world, local_rank = _init_distributed(cfg)
    device = torch.device(resolve_device(cfg, local_rank))
    if device.type == "cpu" and settings.cpu_threads:
        torch.set_num_threads(settings.cpu_threads)
    use_bf16 = settings.precision == "bf16" or (settings.precision == "auto" and device.type == "cuda")
    # bf16 model, fp32 master weights in the optimizer; fp8 adds float8 matmuls in the encoder blocks
    pure_bf16 = settings.precision in ("bf16_weights", "fp8")

    train_file = TokenFile(tokens_dir, settings.train_split)
    eval_file = _maybe_eval_file(tokens_dir, settings.eval_split)
    tokenizer = load_tokenizer(tokenizer_dir)
    _check_tokens_match(train_file, tokenizer, tokens_dir)

    torch.manual_seed(seed)
    arch = {k: settings.model[k] for k in ARCH_KEYS if k in settings.model}
    # fused ops: Triton kernels on CUDA, the same math in PyTorch on CPU; kept in the saved
    # config, so from_pretrained / fine-tuning run the same path
    fused = {k: getattr(settings, k) for k in FUSED_KEYS}
    model = VQDNAForMaskedLM.from_tokenizer(tokenizer, **fused, **arch).to(device)
    if pure_bf16:
        for p in model.parameters():  # parameters only: the frozen codebooks stay fp32
            p.data = p.data.to(torch.bfloat16)
    if settings.precision == "fp8":
        convert_to_float8(model, settings.fp8_recipe)  # same parameters and state-dict keys: checkpoints and save_pretrained unchanged
    optimizer = _optimizer(model, settings, device, master_weights=pure_bf16)
    accum = settings.accumulation(world)
    fingerprint = _fingerprint(settings, seed, world, train_file.meta.to_dict(), model.config.to_dict())

    start_step = 0
    ckpt_path = ckpt_dir / "last.pt"
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_step = int(state["step"])
            log.info("resuming %s from step %d (%s)", name, start_step, ckpt_path)
        else:
            log.warning("ignoring checkpoint %s: it was made with other settings", ckpt_path)

    train_model = model
    if settings.compile:
        model.vqdna.compile_blocks()  # in place: state-dict keys stay those of the plain model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    batcher = MLMBatcher(model.config, settings, device, seed, train_file.meta.tokens_per_window)
    use_graphs = settings.cuda_graphs and _graphs_apply(device, world, train_file)
    train_step = TrainStep(
        model, optimizer, accum=accum, grad_clip=settings.grad_clip, master_weights=pure_bf16,
        autocast=torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16),
        # K scored positions a row: a full window's exact count (shorter rows have fewer; none has
        # more), so the masked-LM path has static shapes and no host synchronisation
        targets_per_row=targets_per_row(batcher.crop, settings.mask_ratio),
        cuda_graphs=use_graphs, no_sync=train_model.no_sync if world > 1 else None, train_model=train_model)
    uniform = [math.log(v) for v in model.config.vocab_sizes]
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)

    def run_eval() -> dict:
        if eval_file is None:
            return {}
        return evaluate(model, eval_file, batcher, settings.eval_batches, autocast)

    tracker = _tracker(cfg, name, settings, model, train_file, start_step) if (track and rank == 0) else contextlib.nullcontext(None)
    final: dict = {}
    with tracker as mlrun:
        from tqdm import tqdm

        model.train()
        window_loss = torch.zeros((), device=device)
        window_level_loss = torch.zeros(model.config.levels, device=device)
        window_correct = torch.zeros(model.config.levels, device=device)
        window_masked = torch.zeros((), device=device)
        window_targets = torch.zeros((), device=device)
        window_tokens, window_steps, t_window = 0, 0, time.perf_counter()
        bar = tqdm(total=settings.steps, initial=start_step, desc=f"pretrain {name}", disable=rank != 0, unit="step")
        for step in range(start_step, settings.steps):
            lr = warmup_cosine(step, peak=settings.lr, floor=settings.min_lr,
                               warmup=settings.warmup_steps, total=settings.steps)
            batches = [batcher.train_batch(train_file, step, micro, rank) for micro in range(accum)]
            outs = train_step(batches, lr, [_mix(seed, "dropout", step, micro, rank) for micro in range(accum)])
            for (masked, _, _), out in zip(batches, outs):
                window_loss += out["loss"] / accum
                window_level_loss += out["level_losses"] / accum
                window_correct += out["level_correct"]
                window_masked += out["num_masked"]
                window_targets += out["num_targets"]
                window_tokens += masked.shape[0] * masked.shape[1]
            window_steps += 1
            done = step + 1
            bar.update(1)

            if done % settings.log_every == 0 or done == settings.steps:
                elapsed = time.perf_counter() - t_window
                # every rank's micro-batches, not rank 0's alone: what the global batch trained on
                sum_over_ranks([window_loss, window_level_loss, window_correct, window_masked, window_targets], world)
                window_loss /= world
                window_level_loss /= world
                if int(window_targets) != int(window_masked):  # cannot happen with exact-count masking
                    raise RuntimeError(f"{name}: {int(window_targets) - int(window_masked)} masked targets "
                                       f"were not scored (a row had more than the static count)")
                metrics = {"loss": float(window_loss) / window_steps, "lr": lr,
                           "tokens_per_s": window_tokens * world / max(elapsed, 1e-9)}
                for l in range(model.config.levels):
                    metrics[f"loss_level{l}"] = float(window_level_loss[l]) / window_steps
                    metrics[f"masked_acc_level{l}"] = float(window_correct[l] / window_masked.clamp(min=1))
                bar.set_postfix(loss=f"{metrics['loss']:.3f}")
                if rank == 0:
                    log.info("%s step %d: %s", name, done, json.dumps({k: round(v, 5) for k, v in metrics.items()}))
                if mlrun is not None:
                    mlrun.log_metrics(metrics, step=done)
                final.update(metrics)
                window_loss.zero_(); window_level_loss.zero_(); window_correct.zero_(); window_masked.zero_(); window_targets.zero_()
                window_tokens, window_steps, t_window = 0, 0, time.perf_counter()
            if settings.eval_every and done % settings.eval_every == 0 and done != settings.steps:
                metrics = run_eval()
                if mlrun is not None and metrics:
                    mlrun.log_metrics(metrics, step=done)
            if done % settings.checkpoint_every == 0 and done != settings.steps:
                if rank == 0:
                    _save_checkpoint(ckpt_path, model, optimizer, done, fingerprint)
                barrier(world)
                if stop_after is not None and done >= stop_after:
                    bar.close()
                    return final
        bar.close()

        final.update(run_eval())
        final.update({"steps": settings.steps, "resumed_from_step": start_step, "uniform_loss": float(np.mean(uniform)),
                      "tokens_seen": settings.steps * settings.batch_size * (batcher.crop + 1),
                      "mask_ratio": settings.mask_ratio,  # the report's Table 9 shows what each backbone used
                      "tokenizer_sha256": train_file.meta.tokenizer_sha256})
        for l, u in enumerate(uniform):
            final[f"uniform_loss_level{l}"] = u
        if pure_bf16:
            optimizer.restore_fp32()  # save the exact fp32 masters, not their bf16 copies
        if rank == 0:
            with atomic_dir(out_dir) as tmp:
                model.save_pretrained(tmp)
                write_json(tmp / "pretrain_metrics.json", final)
            if mlrun is not None:
                mlrun.log_metrics({k: v for k, v in final.items() if isinstance(v, (int, float))}, step=settings.steps)
                mlrun.log_artifact(out_dir / "pretrain_metrics.json")
                mlrun.log_artifact(out_dir / "config.json")
            if ckpt_path.exists():
                ckpt_path.unlink()  # the finished model supersedes it
                with contextlib.suppress(OSError):
                    ckpt_dir.rmdir()
        barrier(world)
    return final


# ---- batches and evaluation -----------------------------------------------------------------

class MLMBatcher:
    """Token-file windows -> masked model inputs: [CLS] + a crop of `max_len - 1` tokens, [PAD]
    and an attention mask only where a variable-rate window is short, masks seeded per draw."""

    def __init__(self, config, settings: PretrainSettings, device, seed: int, tokens_per_window: int):
        self.config = config
        self.settings = settings
        self.device = device
        self.seed = seed
        self.crop = min(settings.max_len - 1, tokens_per_window)
        specials = special_token_ids(config)
        self.cls_ids = torch.tensor(specials["cls"], device=device)
        self.pad_ids = torch.tensor(specials["pad"], device=device)

    def train_batch(self, file: TokenFile, step: int, micro: int, rank: int):
        draw = _mix(self.seed, step, micro, rank)
        ids, lengths = file.sample(np.random.default_rng(draw), self.settings.micro_batch_size, self.crop)
        return self.masked(file, ids, lengths, draw)

    def eval_batch(self, file: TokenFile, b: int):
        start = (b * self.settings.micro_batch_size) % max(len(file), 1)
        ids, lengths = file.sequential(start, self.settings.micro_batch_size, self.crop)
        return self.masked(file, ids, lengths, _mix(self.seed, "eval", b))

    def inputs(self, file: TokenFile, ids: np.ndarray, lengths: np.ndarray):
        ids_t = torch.from_numpy(ids).to(self.device, non_blocking=True)
        B, T, L = ids_t.shape
        full = torch.cat([self.cls_ids.expand(B, 1, L), ids_t], dim=1)
        if file.meta.fixed_rate and (lengths == T).all():
            return full, None  # no padding: SDPA's flash path
        real = torch.from_numpy(lengths).to(self.device) + 1
        attention_mask = (torch.arange(T + 1, device=self.device)[None] < real[:, None]).long()
        full = torch.where(attention_mask[..., None].bool(), full, self.pad_ids.expand_as(full))
        return full, attention_mask

    def masked(self, file, ids, lengths, draw: int):
        input_ids, attention_mask = self.inputs(file, ids, lengths)
        gen = torch.Generator(device=self.device).manual_seed(draw)
        s = self.settings
        masked, labels = mask_tokens(input_ids, self.config, ratio=s.mask_ratio, mask_share=s.mask_token_share,
                                     random_share=s.random_token_share, generator=gen)
        return masked, attention_mask, labels


def evaluate(model, file: TokenFile, batcher: MLMBatcher, n_batches: int, autocast=None) -> dict:
    """Masked-LM loss and accuracy per level on the first windows of `file` (same masks every time)."""
    was_training = model.training
    model.eval()
    levels = model.config.levels
    device = batcher.device
    sums = torch.zeros(levels, device=device)
    correct = torch.zeros(levels, device=device)
    n_masked = 0
    with torch.no_grad():
        for b in range(n_batches):
            masked, attention_mask, labels = batcher.eval_batch(file, b)
            with autocast or contextlib.nullcontext():
                out = model(masked, attention_mask, labels=labels)
            n = int(out.num_masked)
            sums += out.level_losses.float() * n
            correct += out.level_correct.float()
            n_masked += n
    model.train(was_training)
    metrics = {"eval_loss": float(sums.mean() / max(n_masked, 1))}
    for l in range(levels):
        metrics[f"eval_loss_level{l}"] = float(sums[l] / max(n_masked, 1))
        metrics[f"eval_masked_acc_level{l}"] = float(correct[l] / max(n_masked, 1))
    return metrics


# ---- helpers -----------------------------------------------------------------------------

def _graphs_apply(device, world: int, train_file: TokenFile) -> bool:
    """pretrain.cuda_graphs applies to one CUDA process on fixed-rate token files (full windows,
    static shapes); elsewhere the eager step runs (same function), with a note in the log."""
    why = ("not a CUDA device" if device.type != "cuda" else "several processes (DDP)" if world > 1
           else "variable-rate token files (padded windows)" if not train_file.meta.fixed_rate else None)
    if why:
        log.warning("pretrain.cuda_graphs: %s, running the eager step", why)
    return why is None


def _mix(*parts) -> int:
    """A 63-bit seed from any parts (stable across runs and machines, unlike hash())."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _optimizer(model, settings: PretrainSettings, device, master_weights: bool = False):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # BERT recipe: no weight decay on biases, norms and the special-token embeddings
        (no_decay if p.ndim < 2 or "norm" in name or "special" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=settings.lr, betas=tuple(settings.betas), eps=settings.adam_eps, fused=device.type == "cuda")
    if master_weights:
        from .optim import MasterWeightAdamW

        return MasterWeightAdamW(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def _save_checkpoint(path: Path, model, optimizer, step: int, fingerprint: str) -> None:
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": step, "fingerprint": fingerprint}, tmp)


def _maybe_eval_file(tokens_dir, split: str | None) -> TokenFile | None:
    if not split:
        return None
    try:
        read_meta(tokens_dir, split)
    except InputError:
        log.warning("no %r token split in %s: skipping evaluation", split, tokens_dir)
        return None
    return TokenFile(tokens_dir, split)


def _check_tokens_match(file: TokenFile, tokenizer, tokens_dir) -> None:
    if list(file.meta.vocab_sizes) != list(tokenizer.vocab_sizes):
        raise InputError(tokens_dir, f"tokens were made with vocab sizes {file.meta.vocab_sizes}, "
                         f"the tokenizer has {list(tokenizer.vocab_sizes)}: tokenize again")


def _tracker(cfg, name, settings, model, train_file, start_step):
    from ..tracking import start_run

    params = {"pretrain": asdict(settings), "model": {k: getattr(model.config, k) for k in ARCH_KEYS},
              "tokens": {k: v for k, v in train_file.meta.to_dict().items() if k != "shards"},
              "parameters": sum(p.numel() for p in model.parameters())}
    return start_run(cfg, stage="pretrain", name=f"pretrain/{name}", params=params,
                     tags={"resumed_from_step": start_step})


def _init_distributed(cfg) -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and cfg.get("device") != "cpu" else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend=backend)
    return rank, world, local_rank


