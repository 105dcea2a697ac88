"""The fine-tuning model: pretrained backbone (frozen + LoRA, or fully trainable) -> pooling -> MLP head.

LoRA follows the paper (appendix A): the tokenizer and every backbone weight stay frozen; peft
adds rank-`r` adapters (alpha, dropout from the grid) to `vqdna.models.LORA_TARGET_MODULES`
(the fused QKV, attention output and both MLP linears); only the adapters and the head train.
`mode: full` trains the whole backbone instead (the codebooks are buffers and stay frozen).
"""

from __future__ import annotations

import torch
from torch import nn

POOLINGS = ("cls", "mean", "max")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str, has_cls: bool) -> torch.Tensor:
    """[B, T, H] -> [B, H]. mean/max run over the real (non-pad) tokens, [CLS] excluded."""
    if how == "cls":
        if not has_cls:
            raise ValueError("pooling 'cls' needs finetune.add_cls: true")
        return hidden[:, 0]
    mask = attention_mask.to(torch.bool)
    if has_cls:
        hidden, mask = hidden[:, 1:], mask[:, 1:]
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
    if how == "max":
        return hidden.masked_fill(~mask.unsqueeze(-1), torch.finfo(hidden.dtype).min).amax(1)
    raise ValueError(f"pooling must be one of {POOLINGS}, not {how!r}")


class SequenceModel(nn.Module):
    def __init__(self, backbone: nn.Module, hidden_size: int, num_labels: int, *, pooling: str,
                 head_hidden: int, head_dropout: float, has_cls: bool):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.has_cls = has_cls
        self.head = nn.Sequential(
            nn.Dropout(head_dropout),
            nn.Linear(hidden_size, head_hidden),
            nn.GELU(),
            nn.Dropout(head_dropout),
            nn.Linear(head_hidden, num_labels),
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # A batch without padding needs no attention mask: SDPA can then take its flash kernel.
        # (`.all()` syncs with the GPU once per step; cheap next to the forward pass.)
        backbone_mask = None if bool(attention_mask.all()) else attention_mask
        hidden = self.backbone(input_ids=input_ids, attention_mask=backbone_mask).last_hidden_state
        pooled = pool(hidden, attention_mask, self.pooling, self.has_cls)
        return self.head(pooled.float())


def build_model(backbone_dir: str, num_labels: int, ft_cfg: dict, params: dict) -> SequenceModel:
    """Load the pretrained encoder from `backbone_dir` and wrap it for one task."""
    from ..models import LORA_TARGET_MODULES, VQDNAModel

    backbone = VQDNAModel.from_pretrained(backbone_dir)
    return wrap_backbone(backbone, backbone.config.hidden_size, num_labels, ft_cfg, params, LORA_TARGET_MODULES)


def wrap_backbone(backbone: nn.Module, hidden: int, num_labels: int, ft_cfg: dict, params: dict,
                  target_modules) -> SequenceModel:
    """LoRA (or full fine-tuning) + pooling + head around any encoder returning `last_hidden_state`
    (also used by bench/finetune_bench.py for the stock-BERT comparison)."""
    mode = ft_cfg["mode"]
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        lcfg = ft_cfg["lora"]
        lora = LoraConfig(r=lcfg["r"], lora_alpha=lcfg["alpha"], lora_dropout=float(params.get("lora_dropout", lcfg["dropout"])),
                          target_modules=target_modules, bias="none")
        backbone = get_peft_model(backbone, lora)  # freezes every base weight
    elif mode == "full":
        for p in backbone.parameters():
            p.requires_grad_(True)
    else:
        raise ValueError(f"finetune.mode must be lora or full, not {mode!r}")
    return SequenceModel(backbone, hidden, num_labels, pooling=ft_cfg["pooling"], head_hidden=ft_cfg["head_hidden"],
                         head_dropout=ft_cfg["head_dropout"], has_cls=ft_cfg["add_cls"])


def cast_frozen(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Store every frozen parameter in `dtype` (LoRA: the whole base model). Under bf16 autocast
    those weights were cast on every forward anyway; storing them once in bf16 saves the casts and
    half their memory. Trainable adapters and the head stay fp32. GPU + autocast only."""
    n = 0
    for p in model.parameters():
        if not p.requires_grad and p.dtype != dtype:
            p.data = p.data.to(dtype)
            n += p.numel()
    return n


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
