"""Training loop and inference of one fine-tune (no tracking, no files: `run.py` does those).

AdamW (paper: batch 32, weight decay 0.01; fused on GPU), linear warm-up then linear decay,
cross-entropy for classification, MSE on standardised targets for regression, bf16 autocast on
GPU. Everything random (data order, crops, dropout, LoRA/head init) follows the job's seed.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data import length_batches, random_crop
from .model import trainable_parameters


@dataclass
class FitResult:
    steps: int
    final_loss: float
    seconds: float
    target_mean: float = 0.0
    target_std: float = 1.0


def autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def train_step(model, ids, mask, target, opt, sched, *, task: str, ft_cfg: dict, device: torch.device) -> torch.Tensor:
    """One optimisation step (shared with bench/finetune_bench.py); returns the detached loss."""
    with autocast(device, ft_cfg["bf16"]):
        out = model(ids, mask)
    if task == "regression":
        loss = F.mse_loss(out.float().squeeze(-1), target)
    else:
        loss = F.cross_entropy(out.float(), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if ft_cfg["max_grad_norm"]:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], ft_cfg["max_grad_norm"])
    opt.step()
    if sched is not None:
        sched.step()
    return loss.detach()


def make_optimizer(model, params: dict, ft_cfg: dict, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(trainable_parameters(model), lr=float(params["lr"]),
                             weight_decay=float(params.get("weight_decay", ft_cfg["weight_decay"])),
                             betas=tuple(ft_cfg["betas"]), fused=device.type == "cuda")


def fit(model, tokens: Sequence[np.ndarray], labels: np.ndarray, *, task: str, params: dict, ft_cfg: dict,
        backbone_config, device: torch.device, seed: int, progress: bool = True) -> FitResult:
    from tqdm import tqdm

    from ..models import collate

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    bs = int(params.get("batch_size", ft_cfg["batch_size"]))
    epochs = int(params.get("epochs", ft_cfg["epochs"]))
    n = len(tokens)
    steps_per_epoch = math.ceil(n / bs)
    total = steps_per_epoch * epochs
    warmup = int(round(ft_cfg["warmup_ratio"] * total))
    regression = task == "regression"
    y = np.asarray(labels, dtype=np.float64 if regression else np.int64)
    mean, std = (float(y.mean()), float(y.std()) or 1.0) if regression and ft_cfg["standardize_targets"] else (0.0, 1.0)
    opt = make_optimizer(model, params, ft_cfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total))
    max_tokens = int(ft_cfg["train_max_tokens"]) - (1 if ft_cfg["add_cls"] else 0)
    model.train()
    t0 = time.perf_counter()
    last_loss = torch.tensor(float("nan"))
    bar = tqdm(total=total, desc="finetune", unit="step", disable=not progress, mininterval=2.0)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).numpy()
        for i in range(0, n, bs):
            idx = order[i:i + bs]
            batch = collate([random_crop(tokens[j], max_tokens, rng) for j in idx], backbone_config, add_cls=ft_cfg["add_cls"])
            ids = batch["input_ids"].to(device, non_blocking=True)
            mask = batch["attention_mask"].to(device, non_blocking=True)
            if regression:
                target = torch.as_tensor((y[idx] - mean) / std, dtype=torch.float32, device=device)
            else:
                target = torch.as_tensor(y[idx], device=device)
            loss = train_step(model, ids, mask, target, opt, sched, task=task, ft_cfg=ft_cfg, device=device)
            step += 1
            last_loss = loss
            bar.update(1)
            if step % 20 == 0:  # reading the loss syncs with the GPU: not every step
                bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
    bar.close()
    loss_value = float(last_loss)
    return FitResult(steps=step, final_loss=loss_value, seconds=time.perf_counter() - t0, target_mean=mean, target_std=std)


@torch.no_grad()
def predict(model, tokens: Sequence[np.ndarray], *, task: str, ft_cfg: dict, backbone_config, device: torch.device,
            fit_result: FitResult | None = None) -> np.ndarray:
    """Logits [N, C] (classification) or values [N] (regression, de-standardised), in input order."""
    from ..models import collate

    model.eval()
    max_len = ft_cfg["eval_max_tokens"] or None
    outs: list[tuple[np.ndarray, np.ndarray]] = []
    for idx in length_batches([len(t) for t in tokens], int(ft_cfg["eval_batch_size"])):
        batch = collate([tokens[j] for j in idx], backbone_config, max_len=max_len, add_cls=ft_cfg["add_cls"])
        with autocast(device, ft_cfg["bf16"]):
            out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        outs.append((idx, out.float().cpu().numpy()))
    n = len(tokens)
    width = outs[0][1].shape[1] if outs else 1
    result = np.empty((n, width), dtype=np.float64)
    for idx, o in outs:
        result[idx] = o
    if task == "regression":
        fr = fit_result or FitResult(0, 0.0, 0.0)
        return result[:, 0] * fr.target_std + fr.target_mean
    return result
