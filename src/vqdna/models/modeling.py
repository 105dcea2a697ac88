"""`VQDNAModel` (the encoder) and `VQDNAForMaskedLM` (what stage 2 trains and saves)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput

from .configuration import VQDNAConfig
from .embedding import CodebookEmbedding, InputEmbedding
from .layers import Encoder, take_positions

# Linear layers of every encoder block, for peft's `target_modules`.
LORA_TARGET_MODULES = ["qkv", "out_proj", "fc1", "fc2"]

IGNORE_INDEX = -100


class VQDNAPreTrainedModel(PreTrainedModel):
    config_class = VQDNAConfig
    base_model_prefix = "vqdna"
    supports_gradient_checkpointing = True
    _no_split_modules = ["EncoderLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        # CodebookEmbedding.codebooks: frozen, set from the tokenizer or loaded; never re-initialised.

    def load_code_vectors(self, vectors) -> None:
        """Copy a tokenizer's `code_vectors()` into the frozen input codebooks."""
        tokens = self.base_encoder().embeddings.tokens
        if not isinstance(tokens, CodebookEmbedding):
            raise ValueError("this model uses a learned table embedding; it has no codebooks to load")
        tokens.load_code_vectors(vectors)

    def base_encoder(self) -> "VQDNAModel":
        return getattr(self, self.base_model_prefix, self)


class VQDNAModel(VQDNAPreTrainedModel):
    """`forward(input_ids Long[B, T, levels], attention_mask [B, T] | None)` -> `last_hidden_state [B, T, H]`."""

    # Loading the encoder out of a saved VQDNAForMaskedLM drops its head on purpose.
    _keys_to_ignore_on_load_unexpected = [r"mlm_head\."]

    def __init__(self, config: VQDNAConfig):
        super().__init__(config)
        self.embeddings = InputEmbedding(config)
        self.encoder = Encoder(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        select: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutput:
        """`select [B, k]` (MLM training): the output holds only those positions, `[B, k, H]`."""
        if input_ids.dim() == 2:  # [B, T] from a single-level tokenizer
            input_ids = input_ids[..., None]
        hidden = self.embeddings(input_ids)
        hidden = self.encoder(hidden, attention_mask, select=select)
        return BaseModelOutput(last_hidden_state=hidden)

    def compile_blocks(self, **kwargs) -> None:
        """torch.compile the input embedding and each encoder block in place (state-dict keys
        unchanged; `Encoder.compile_layers`). The embedding as its own small graph: eager, its
        gather, projection, special-token select, LayerNorm and dropout were separate passes."""
        self.embeddings.compile(**kwargs)
        self.encoder.compile_layers(**kwargs)


class MaskedLMHead(nn.Module):
    """BERT's transform (dense, GELU, LayerNorm) then one decoder per level over the tokenizer ids."""

    def __init__(self, config: VQDNAConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoders = nn.ModuleList([nn.Linear(config.hidden_size, v) for v in config.vocab_sizes])

    def forward(self, hidden: torch.Tensor) -> list[torch.Tensor]:
        h = self.norm(F.gelu(self.dense(hidden)))
        return [dec(h) for dec in self.decoders]


@dataclass
class VQDNAMaskedLMOutput(ModelOutput):
    """`logits`: per level, concatenated on the last axis (split with `config.vocab_sizes`).
    With `labels`, only the masked positions are scored: logits are `[N_masked, sum(V)]` and
    `masked_positions` holds their flat indices into `B*T`; without labels they are `[B, T, sum(V)]`.
    With `targets_per_row=K` (static shapes) logits are `[B*K, sum(V)]`: rows with fewer than K
    targets are padded with non-target positions whose labels are ignored; `num_masked` counts the
    scored targets and `num_targets` all targets of the batch (equal unless a row had more than K)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    level_losses: torch.Tensor | None = None
    level_correct: torch.Tensor | None = None
    num_masked: torch.Tensor | None = None
    masked_positions: torch.Tensor | None = None
    num_targets: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


class VQDNAForMaskedLM(VQDNAPreTrainedModel):
    def __init__(self, config: VQDNAConfig):
        super().__init__(config)
        self.vqdna = VQDNAModel(config)
        self.mlm_head = MaskedLMHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        targets_per_row: int | None = None,
        **kwargs,
    ) -> VQDNAMaskedLMOutput:
        """`targets_per_row=K`: score K positions per row (static shapes, no host synchronisation:
        what a CUDA graph of the training step needs); K >= the largest number of targets in a row
        (exact-count masking: `masking.targets_per_row`), else the excess targets are not scored."""
        if labels is None:
            hidden = self.vqdna(input_ids, attention_mask).last_hidden_state
            return VQDNAMaskedLMOutput(logits=torch.cat(self.mlm_head(hidden), dim=-1), last_hidden_state=hidden)
        if labels.dim() == 2:
            labels = labels[..., None]
        # Score only the masked positions: the head and the softmax cost ~25% of the full pass.
        if targets_per_row is not None:
            return self._forward_static(input_ids, attention_mask, labels, int(targets_per_row))
        flat_labels = labels.reshape(-1, labels.shape[-1])
        is_target = labels[..., 0] != IGNORE_INDEX
        positions = is_target.reshape(-1).nonzero(as_tuple=True)[0]
        target = flat_labels[positions]
        select = self._uniform_selection(is_target, attention_mask)
        if select is not None:
            # Every row has the same number of targets: the last block computes only those rows.
            hidden = self.vqdna(input_ids, None, select=select).last_hidden_state.reshape(-1, self.config.hidden_size)
        else:
            hidden = self.vqdna(input_ids, attention_mask).last_hidden_state
            hidden = hidden.reshape(-1, hidden.shape[-1])[positions]
        level_logits, level_losses, level_correct = self._score(hidden, target)
        return VQDNAMaskedLMOutput(
            loss=level_losses.mean(),
            logits=torch.cat(level_logits, dim=-1),
            level_losses=level_losses.detach(),
            level_correct=level_correct,
            num_masked=torch.tensor(positions.numel(), device=positions.device),
            masked_positions=positions,
            num_targets=torch.tensor(positions.numel(), device=positions.device),
        )

    def _score(self, hidden: torch.Tensor, target: torch.Tensor):
        """MLM head on the scored rows `hidden [N, H]` against `target [N, levels]`: per-level logits,
        mean cross-entropy and correct count, rows labelled IGNORE_INDEX (static-shape padding) left out."""
        level_logits = self.mlm_head(hidden)
        valid = target[:, 0] != IGNORE_INDEX
        level_losses = torch.stack([F.cross_entropy(lg.float(), target[:, l], ignore_index=IGNORE_INDEX)
                                    for l, lg in enumerate(level_logits)])
        level_correct = torch.stack([((lg.argmax(-1) == target[:, l]) & valid).sum()
                                     for l, lg in enumerate(level_logits)])
        return level_logits, level_losses, level_correct

    def _forward_static(self, input_ids, attention_mask, labels, K: int) -> VQDNAMaskedLMOutput:
        """The masked-LM loss over a fixed `K` positions per row. The targets of a row come first
        in ascending position order, so with exactly K targets in every row (exact-count masking of
        full windows) the scored rows, their order and the loss are those of the dynamic path;
        padding entries (non-targets) carry the ignore label and drop out of the means."""
        B, T, L = labels.shape
        if not 0 < K <= T:
            raise ValueError(f"targets_per_row must be in [1, {T}], not {K}")
        is_target = labels[..., 0] != IGNORE_INDEX
        pos = torch.arange(T, device=labels.device)
        order = torch.where(is_target, pos, pos + T)  # targets first, each group in position order
        select = order.sort(dim=1).values[:, :K] % T
        target = labels.gather(1, select[..., None].expand(B, K, L)).reshape(B * K, L)
        valid = target[:, 0] != IGNORE_INDEX
        if attention_mask is None and self.config.position_encoding == "rope" and self.sparse_last_layer:
            hidden = self.vqdna(input_ids, None, select=select).last_hidden_state
        else:
            hidden = self.vqdna(input_ids, attention_mask).last_hidden_state
            hidden = take_positions(hidden, select)
        level_logits, level_losses, level_correct = self._score(hidden.reshape(B * K, -1), target)
        return VQDNAMaskedLMOutput(
            loss=level_losses.mean(),
            logits=torch.cat(level_logits, dim=-1),
            level_losses=level_losses.detach(),
            level_correct=level_correct,
            num_masked=valid.sum(),
            masked_positions=(select + T * torch.arange(B, device=select.device)[:, None]).reshape(-1),
            num_targets=is_target.sum(),
        )

    def _uniform_selection(self, is_target: torch.Tensor, attention_mask: torch.Tensor | None):
        """`[B, k]` target positions when the sparse last block applies (RoPE, no padding, the
        same k in every row, which exact-count masking of full windows gives), else None."""
        if attention_mask is not None or self.config.position_encoding != "rope" or not self.sparse_last_layer:
            return None
        counts = is_target.sum(dim=1)
        if counts.numel() == 0 or not bool((counts == counts[0]).all()):
            return None
        B = is_target.shape[0]
        return is_target.nonzero(as_tuple=True)[1].view(B, -1)

    # The sparse last block computes the same function as the dense one (tests check it);
    # switch it off to compare.
    sparse_last_layer = True

    @classmethod
    def from_tokenizer(cls, tokenizer, **arch) -> "VQDNAForMaskedLM":
        """A fresh model for `tokenizer`: codebook embedding when it has code vectors, else a table."""
        model = cls(config_for_tokenizer(tokenizer, **arch))
        vectors = tokenizer.code_vectors()
        if vectors is not None:
            model.load_code_vectors([torch.as_tensor(v).detach().float().cpu() for v in vectors])
        return model


def config_for_tokenizer(tokenizer, **arch) -> VQDNAConfig:
    vectors = tokenizer.code_vectors()
    if vectors is not None:
        arch.setdefault("embedding", "codebook")
        arch.setdefault("code_dim", int(vectors[0].shape[-1]))
    else:
        arch["embedding"] = "table"
        arch.pop("code_dim", None)
    return VQDNAConfig(
        levels=tokenizer.levels,
        vocab_sizes=list(tokenizer.vocab_sizes),
        tokenizer_kind=getattr(tokenizer, "kind", None),
        **arch,
    )
