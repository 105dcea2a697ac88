"""One optimizer step of masked-LM pretraining, eager or replayed as one CUDA graph.

`vqdna pretrain` and bench/pretrain_bench.py run their steps through `TrainStep`: the
micro-batches' forward and backward passes, gradient clipping and AdamW. With `cuda_graphs`
the whole step (every micro-batch, clipping, the optimizer and the bf16 weight copies) is
captured once and then replayed: one launch per step instead of ~1,500, and no host
synchronisation inside it. That needs static shapes and no data-dependent host work, which the
masked-LM path provides through `targets_per_row` (a fixed number of scored positions per row,
`VQDNAForMaskedLM._forward_static`) and the optimizer through `capturable` fused AdamW with the
learning rate in a device tensor. Inputs are copied into static buffers before each replay.

Dropout under a graph: each replay draws from torch's CUDA generator, reseeded by the caller
before the step (one seed a step, `dropout_seeds[0]`), so a run is repeatable. The eager path
seeds every micro-batch, so from a step's second micro-batch on the two draw differently (same
distribution); the first micro-batch's draws match (on an H200 its loss was bitwise the eager one's).

Resume with graphs is exact as far as the kernels are repeatable, as for the eager step: every
step a caller asks for is a replay. The eager steps that compile the model and create the
optimizer state before the capture (`warmup_steps`, at the first call of a process, on that
call's batches) are thrown away - `StepSnapshot` copies the weights, masters and optimizer state
before them and puts them back after - so step N is the same replay with the same seed whether
the process started at step 0 or resumed at N. (With the warm-up steps as real steps, a job
resumed at N ran N..N+2 eagerly where the uninterrupted run replayed the graph, and drew other
dropout there.) On CUDA, repeatable kernels need torch's deterministic algorithms: without them
two uninterrupted runs already differ, eager or graphed (tests/test_pretrain_graph_resume.py).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Callable, Sequence

import torch

OUTPUT_KEYS = ("loss", "level_losses", "level_correct", "num_masked", "num_targets")


class TrainStep:
    def __init__(self, model, optimizer, *, accum: int = 1, grad_clip: float = 0.0, master_weights: bool = False,
                 autocast=None, targets_per_row: int | None = None, cuda_graphs: bool = False,
                 warmup_steps: int = 3, no_sync: Callable | None = None, train_model=None):
        """`optimizer`: torch AdamW or `MasterWeightAdamW` (`master_weights=True`: clipping on its
        fp32 masters). `train_model`: what the forward runs (a DDP wrapper), default `model`.
        `cuda_graphs`: at the first call, `warmup_steps` eager steps on a side stream
        (compilation, lazy optimizer state, library workspaces) whose updates are then undone,
        the capture, and from then on (that call included) every step is a replay."""
        self.model = model
        self.train_model = train_model if train_model is not None else model
        self.optimizer = optimizer
        self.accum = int(accum)
        self.grad_clip = float(grad_clip)
        self.master_weights = master_weights
        self.autocast = autocast
        self.targets_per_row = targets_per_row
        self.no_sync = no_sync
        self.cuda_graphs = bool(cuda_graphs)
        self.warmup_steps = max(1, int(warmup_steps))
        self.steps_done = 0
        self.graph = None
        if self.cuda_graphs:
            if targets_per_row is None:
                raise ValueError("cuda_graphs needs targets_per_row (static masked-LM shapes)")
            if no_sync is not None:
                raise ValueError("cuda_graphs: one process only (no DDP)")
            device = next(model.parameters()).device
            if device.type != "cuda":
                raise ValueError("cuda_graphs needs a CUDA model")
            # the learning rate lives in one device tensor the graph reads; capturable AdamW keeps
            # its step counts on the device and accepts the tensor
            self._lr = torch.zeros((), device=device, dtype=torch.float32)
            for group in optimizer.param_groups:
                group["lr"] = self._lr
                group["capturable"] = True

    # ---- the step ------------------------------------------------------------------------

    def __call__(self, batches: Sequence[tuple], lr: float, dropout_seeds: Sequence[int]) -> list[dict]:
        """`batches`: `accum` tuples `(masked_ids, attention_mask, labels)`; `dropout_seeds`: one per
        micro-batch. Returns per micro-batch the outputs named in OUTPUT_KEYS (device tensors;
        with cuda_graphs the graph's own buffers, valid until the next call)."""
        if len(batches) != self.accum:
            raise ValueError(f"expected {self.accum} micro-batches, got {len(batches)}")
        if not self.cuda_graphs:
            self._set_lr(lr)
            outs = self._eager(batches, dropout_seeds)
            self.steps_done += 1
            return outs
        for masked, attention_mask, _labels in batches:
            if attention_mask is not None:
                raise ValueError("cuda_graphs: every micro-batch must be a full window (no attention mask)")
        self._lr.fill_(lr)
        if self.graph is None:
            self._warm_up(batches, dropout_seeds)
            self._capture(batches)
        for (masked, _, labels), (s_masked, s_labels) in zip(batches, self._static_in):
            s_masked.copy_(masked, non_blocking=True)
            s_labels.copy_(labels, non_blocking=True)
        torch.manual_seed(dropout_seeds[0])
        self.graph.replay()
        self.steps_done += 1
        return self._static_out

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def _forward_backward(self, masked, attention_mask, labels) -> dict:
        kwargs = {"targets_per_row": self.targets_per_row} if self.targets_per_row is not None else {}
        with self.autocast or contextlib.nullcontext():
            out = self.train_model(masked, attention_mask, labels=labels, **kwargs)
        (out.loss / self.accum).backward()
        return {k: (getattr(out, k).detach() if k == "loss" else getattr(out, k)) for k in OUTPUT_KEYS}

    def _optimizer_step(self) -> None:
        if self.master_weights:
            self.optimizer.step(max_grad_norm=self.grad_clip)  # clipped on the fp32 masters
        else:
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _eager(self, batches, dropout_seeds) -> list[dict]:
        outs = []
        for micro, (masked, attention_mask, labels) in enumerate(batches):
            torch.manual_seed(dropout_seeds[micro])
            last = micro == self.accum - 1
            sync = self.no_sync() if (self.no_sync is not None and not last) else contextlib.nullcontext()
            with sync:
                outs.append(self._forward_backward(masked, attention_mask, labels))
        self._optimizer_step()
        return outs

    def _warm_up(self, batches, dropout_seeds) -> None:
        """`warmup_steps` eager steps on a side stream (what capture needs done beforehand:
        compilation and autotuning, the optimizer's lazily created state, cuBLAS workspaces),
        then the weights and optimizer state as they were before them."""
        snapshot = StepSnapshot(self.model, self.optimizer)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_steps):
                self._eager(batches, dropout_seeds)
        torch.cuda.current_stream().wait_stream(side)
        snapshot.restore()

    def _capture(self, batches) -> None:
        """Record the whole step into one graph over static input buffers. Gradients are None at
        capture, so the first backward allocates them in the graph's memory pool and the last
        line of the step frees them there again: every replay rewrites the same buffers."""
        self._static_in = [(masked.clone(), labels.clone()) for masked, _, labels in batches]
        self.optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outs = [self._forward_backward(m, None, l) for m, l in self._static_in]
            self._optimizer_step()
        self.graph = graph
        self._static_out = outs


class StepSnapshot:
    """A copy of every tensor an optimizer step writes - the model's parameters and buffers,
    `MasterWeightAdamW`'s fp32 masters, the optimizer state - that `restore()` writes back in
    place (the tensors keep their identity, as a graph captured later needs). Optimizer state
    created after the snapshot (AdamW creates a parameter's step count and moments at its first
    step) is set to what AdamW creates, zeros, so the next step is exactly a first step."""

    # AdamW's lazily created state: all zeros when created (torch.optim.Adam._init_group)
    FRESH_ZERO_STATE = frozenset({"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"})

    def __init__(self, model, optimizer):
        self._tensors = []
        seen = set()
        for t in itertools.chain(model.parameters(), model.buffers(), getattr(optimizer, "masters", ())):
            if id(t) not in seen:
                seen.add(id(t))
                self._tensors.append((t, t.detach().clone()))
        self._optimizer = getattr(optimizer, "optimizer", optimizer)  # the torch optimizer inside MasterWeightAdamW
        self._state = {p: {k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                           for k, v in state.items()}
                       for p, state in self._optimizer.state.items()}

    @torch.no_grad()
    def restore(self) -> None:
        for t, saved in self._tensors:
            t.copy_(saved)
        for p, state in self._optimizer.state.items():
            saved = self._state.get(p)
            if saved is None:
                unknown = set(state) - self.FRESH_ZERO_STATE
                if unknown or not all(isinstance(v, torch.Tensor) for v in state.values()):
                    raise RuntimeError(f"cannot reset optimizer state {sorted(state)} to its initial value "
                                       f"(known: AdamW's {sorted(self.FRESH_ZERO_STATE)})")
                for v in state.values():
                    v.zero_()
                continue
            if set(saved) != set(state):
                raise RuntimeError(f"optimizer state keys changed: {sorted(saved)} -> {sorted(state)}")
            for k, v in saved.items():
                if isinstance(v, torch.Tensor) and isinstance(state[k], torch.Tensor):
                    state[k].copy_(v)
                else:
                    state[k] = v
