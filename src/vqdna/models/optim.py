"""AdamW over fp32 master copies of bf16 model weights.

With `precision: bf16_weights` the model itself is bf16 (activations, residual stream and
weight reads at half the bytes, no autocast casts), while the optimizer state and the
update stay fp32: each step casts the bf16 gradients onto the fp32 masters, runs (fused)
AdamW there, and copies the result back into the bf16 weights.
"""

from __future__ import annotations

import torch


class MasterWeightAdamW:
    def __init__(self, param_groups: list[dict], **adamw_kwargs):
        self.model_params: list[torch.Tensor] = []
        master_groups = []
        for group in param_groups:
            params = [p for p in group["params"] if p.requires_grad]
            masters = [p.detach().float().clone().requires_grad_(True) for p in params]
            self.model_params.extend(params)
            master_groups.append({**group, "params": masters})
        self.masters = [m for g in master_groups for m in g["params"]]
        # fp32 gradient buffers of the masters, kept between steps: the bf16 gradients are cast
        # into them by one multi-tensor copy instead of one cast kernel (and allocation) per tensor
        self._grad_buffers: list[torch.Tensor | None] = [None] * len(self.masters)
        self.optimizer = torch.optim.AdamW(master_groups, **adamw_kwargs)

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @torch.no_grad()
    def step(self, max_grad_norm: float = 0.0) -> None:
        """Gradients onto the fp32 masters, optional clipping there (in fp32), AdamW, copy back."""
        dst, src = [], []
        for i, (master, param) in enumerate(zip(self.masters, self.model_params)):
            if param.grad is None:
                master.grad = None  # not in this step's graph: AdamW skips it, as before
                continue
            if self._grad_buffers[i] is None:
                self._grad_buffers[i] = torch.empty_like(master)
            master.grad = self._grad_buffers[i]
            dst.append(master.grad)
            src.append(param.grad)
        if dst:
            torch._foreach_copy_(dst, src)  # bf16 -> fp32
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.masters, max_grad_norm)
        self.optimizer.step()
        torch._foreach_copy_(self.model_params, self.masters)  # fp32 -> bf16, one fused launch per dtype

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.model_params:
            p.grad = None
        for m in self.masters:
            m.grad = None  # the buffers stay in _grad_buffers; step() re-attaches them

    @torch.no_grad()
    def restore_fp32(self) -> None:
        """Put the fp32 masters into the model (before saving: the saved weights are exact)."""
        for master, param in zip(self.masters, self.model_params):
            param.data = master.detach().clone()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "masters": [m.detach().clone() for m in self.masters]}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        with torch.no_grad():
            for master, saved, param in zip(self.masters, state["masters"], self.model_params):
                master.copy_(saved)
                param.copy_(saved)
