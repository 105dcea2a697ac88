"""How a training step runs (not what it computes): precision of the weights and the block
implementation, from `tokenizers.training.precision` and `tokenizers.training.dwconv_ln`.

precision:
  autocast      fp32 weights, bf16 autocast on CUDA (the residual stream between blocks is fp32:
                the layer-scaled branch is fp32 because the layer scale is), plain (fused) AdamW;
  bf16_weights  the encoder/decoder parameters are bf16 (activations, residual stream and weight
                reads at half the bytes, no autocast casts), AdamW runs on fp32 master copies
                (`vqdna.models.optim.MasterWeightAdamW`, the stage-2 `precision: bf16_weights`);
                codebooks, EMA statistics, distances and the losses stay fp32 as before.
dwconv_ln:
  autograd      depth-wise conv then LayerNorm as two modules (autograd/Inductor derive the backward);
  fused         one autograd function with a hand-written backward (`dwconv_ln.py`); its forward and
                its backward are one Triton kernel each on CUDA where Triton is importable
                (`dwconv_ln_triton.py`, `dwconv_ln_bwd_triton.py`; the backward for odd k <= 7),
                PyTorch elsewhere;
  fused_fwd     the same function, Triton forward, PyTorch backward (Inductor's passes when compiled);
  fused_torch   the same function, forward and backward always in PyTorch (the kernels turned off).

Both settings leave the model and the loss unchanged: in fp32 every combination computes the
same forward, loss, gradients and EMA update (tests/test_tokenizers_train_path.py).
"""

from __future__ import annotations

import torch

from ..models.optim import MasterWeightAdamW
from .convnext import ConvNeXtBlock1d

PRECISIONS = ("autocast", "bf16_weights")
DWCONV_LN = ("autograd", "fused", "fused_fwd", "fused_torch")


def check(precision: str, dwconv_ln: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"tokenizers.training.precision must be one of {PRECISIONS}, not {precision!r}")
    if dwconv_ln not in DWCONV_LN:
        raise ValueError(f"tokenizers.training.dwconv_ln must be one of {DWCONV_LN}, not {dwconv_ln!r}")


def set_dwconv_ln(model: torch.nn.Module, dwconv_ln: str) -> None:
    """Per-block choice (an instance attribute; other models keep the class default)."""
    check("autocast", dwconv_ln)
    for module in model.modules():
        if isinstance(module, ConvNeXtBlock1d):
            module.depthwise_impl = "auto" if dwconv_ln == "autograd" else dwconv_ln


def cast_weights(model: torch.nn.Module, precision: str) -> None:
    """bf16_weights: parameters to bf16 in place; buffers (codebooks, EMA state) stay fp32."""
    check(precision, "autograd")
    if precision == "bf16_weights":
        with torch.no_grad():
            for p in model.parameters():
                p.data = p.data.to(torch.bfloat16)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # no decay on norms, biases and layer scales (1-D tensors), as usual for ConvNeXt/AdamW
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class StepOptimizer:
    """AdamW (autocast) or fp32-master AdamW (bf16_weights) behind one `step(grad_clip)` call, so the
    training loop and the bench run the same update."""

    def __init__(self, model: torch.nn.Module, precision: str, *, lr: float, betas, weight_decay: float,
                 fused: bool):
        check(precision, "autograd")
        self.model, self.precision = model, precision
        groups = param_groups(model, weight_decay)
        if precision == "bf16_weights":
            self.inner = MasterWeightAdamW(groups, lr=lr, betas=tuple(betas), fused=fused)
        else:
            self.inner = torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=fused)

    @property
    def param_groups(self):
        return self.inner.param_groups

    def step(self, grad_clip: float = 0.0) -> None:
        if isinstance(self.inner, MasterWeightAdamW):
            self.inner.step(max_grad_norm=grad_clip)  # clipped on the fp32 masters
            return
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.inner.step()

    def zero_grad(self) -> None:
        self.inner.zero_grad(set_to_none=True)

    def restore_fp32(self) -> None:
        """Put the exact fp32 weights back into the model (before evaluating and saving)."""
        if isinstance(self.inner, MasterWeightAdamW):
            self.inner.restore_fp32()

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA for `autocast`; off for bf16 weights (the model is bf16 already) and on CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=device.type == "cuda" and precision == "autocast")
