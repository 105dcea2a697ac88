"""The encoder block's feed-forward network: fc1 -> GELU -> fc2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import VQDNAConfig
from .fp8 import bias_foldable, linear_without_bias
from .fused_gelu import bias_gelu


class FeedForward(nn.Module):
    def __init__(self, config: VQDNAConfig):
        super().__init__()
        self.config = config  # read at call time, like EncoderLayer: fused_* keys may be set after construction
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor, add_bias: bool = True) -> torch.Tensor:
        """`add_bias=False`: fc2's output without its bias, for a caller that adds `fc2.bias`
        itself inside a fused op (the residual add + dropout + LayerNorm)."""
        if getattr(self.config, "fused_gelu", False) and bias_foldable(self.fc1):
            # fc1 without its bias; the bias add, GELU and (in backward) the bias gradient in
            # one op (vqdna.models.fused_gelu). A wrapped fc1 (LoRA) keeps its own forward.
            a = bias_gelu(linear_without_bias(self.fc1, x), self.fc1.bias)
        else:
            a = F.gelu(self.fc1(x))
        return self.fc2(a) if add_bias else linear_without_bias(self.fc2, a)
