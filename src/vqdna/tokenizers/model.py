"""The stage-1 model: ConvNeXt-1D encoder -> VQ/HRQ quantizer -> mirrored decoder (paper §3.1-3.3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from .convnext import Decoder, Encoder
from .quantizer import HierarchicalQuantizer

NUM_BASES = 4


@dataclass
class VQModelConfig:
    """Architecture and quantizer settings (the `tokenizers.defs.<name>` keys of a vq/hrq entry)."""

    kind: str = "vq"                       # "vq" (one codebook) or "hrq" (one per tap)
    dim: int = 384                          # D: block width and code dimension
    stem_dim: int = 256                     # stem output width (paper: 256)
    depth: int = 6                          # ConvNeXt blocks in encoder and in decoder
    stem_kernel: int = 5
    block_kernel: int = 7
    mlp_ratio: int = 4
    layer_scale_init: float = 1e-6
    taps: list[int] = field(default_factory=lambda: [6])           # encoder blocks followed by a codebook
    codebook_sizes: list[int] = field(default_factory=lambda: [512])
    beta: float = 0.5                       # commitment weight β
    ema_decay: float = 0.99
    ema_eps: float = 1e-5
    dead_code_threshold: float = 1.0        # EMA count below which a code is restarted

    def __post_init__(self):
        if self.kind not in ("vq", "hrq"):
            raise ValueError(f"kind must be vq or hrq, not {self.kind!r}")
        if len(self.taps) != len(self.codebook_sizes):
            raise ValueError(f"taps {self.taps} and codebook_sizes {self.codebook_sizes} differ in length")
        if self.kind == "vq" and len(self.taps) != 1:
            raise ValueError("a vq tokenizer has exactly one codebook (use kind: hrq for several)")

    @classmethod
    def from_dict(cls, d: dict) -> "VQModelConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


class VQVAE(nn.Module):
    def __init__(self, config: VQModelConfig):
        super().__init__()
        self.config = config
        common = dict(stem_dim=config.stem_dim, dim=config.dim, depth=config.depth, stem_kernel=config.stem_kernel,
                      block_kernel=config.block_kernel, mlp_ratio=config.mlp_ratio,
                      layer_scale_init=config.layer_scale_init)
        self.encoder = Encoder(in_channels=NUM_BASES, taps=config.taps, **common)
        self.quantizer = HierarchicalQuantizer(config.codebook_sizes, config.dim, decay=config.ema_decay,
                                               eps=config.ema_eps, dead_threshold=config.dead_code_threshold)
        self.decoder = Decoder(out_channels=NUM_BASES, **common)

    def forward(self, codes: torch.Tensor, *, update_codebooks: bool = False) -> dict:
        """codes [B, L] in 0..3 -> logits [B, L, 4], code ids [B, L, levels], losses."""
        latents = self.encoder(codes)
        q = self.quantizer(latents, update=update_codebooks)
        logits = self.decoder(q.z_q.to(latents[-1].dtype))
        rec = F.cross_entropy(logits.float().reshape(-1, NUM_BASES), codes.reshape(-1).long())
        loss = rec + self.config.beta * q.commit_loss
        return {"loss": loss, "rec_loss": rec, "commit_loss": q.commit_loss, "logits": logits,
                "codes": q.codes, "counts": q.counts, "latents": latents}

    @torch.no_grad()
    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        """Nucleotide codes [B, L] -> code ids [B, L, levels] (no codebook update)."""
        return self.quantizer(self.encoder(codes)).codes

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids [B, L, levels] -> nucleotide logits [B, L, 4]."""
        z = self.quantizer.embed(ids)
        return self.decoder(z.to(self.decoder.norm.weight.dtype))

    def num_parameters(self) -> dict:
        trainable = sum(p.numel() for p in self.parameters())
        codebooks = sum(cb.embed.numel() for cb in self.quantizer.codebooks)
        return {"trainable": trainable, "codebooks": codebooks, "total": trainable + codebooks}
