"""Transformer encoder blocks: fused QKV, SDPA (flash when no mask/bias is needed), RoPE/ALiBi."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .configuration import VQDNAConfig
from .feedforward import FeedForward
from . import fused_rope
from .fp8 import bias_foldable, linear, linear_without_bias
from .fused_norm import dropout_add_layer_norm
from .positions import alibi_bias, alibi_slopes, apply_rope, rope_tables


def take_positions(x: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """`x [B, T, H]` at the positions `select [B, k]` -> `[B, k, H]`, as whole rows of the
    flattened `[B*T, H]`: the backward accumulates B*k row indices, where a gather with the index
    expanded over H accumulates B*k*H element indices (torch's deterministic mode sorts what it
    accumulates: 3 ms a call at the bench shape). Same values and gradients either way."""
    B, T = x.shape[:2]
    rows = (select + T * torch.arange(B, device=select.device)[:, None]).reshape(-1)
    return x.reshape(B * T, -1)[rows].view(B, select.shape[1], -1)


class SelfAttention(nn.Module):
    # RoPE on q and k as two separate tensors (True) or one stacked pass (False). Separate: the
    # backward of `unbind` is a single stack of dq, dk, dv into the qkv gradient, where the
    # stacked slice + select pair needs a zero-filled scatter and an add (two passes over the
    # [B, T, 3H] gradient in the session-3 profile). Same function either way; the bench times both.
    rope_separate = False

    def __init__(self, config: VQDNAConfig):
        super().__init__()
        self.config = config  # read at call time (fused_rope), like EncoderLayer
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_probs_dropout_prob
        # One fused projection: a single GEMM for q, k and v.
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, rope: tuple | None, attn_mask: torch.Tensor | None,
                add_bias: bool = True) -> torch.Tensor:
        """`add_bias=False`: out_proj's output without its bias, for a caller that adds it inside
        the fused add+dropout+LayerNorm op."""
        B, T, H = x.shape
        if rope is not None and getattr(self.config, "fused_rope", False) and fused_rope.applies(B, T, self.num_heads, self.head_dim):
            # one op: qkv bias + RoPE forward, and in backward the whole qkv gradient (inverse
            # rotation, dv) and the qkv bias gradient in one pass (vqdna.models.fused_rope); a
            # wrapped projection (LoRA) keeps its own forward and its bias
            if bias_foldable(self.qkv):
                qkv, qkv_bias = linear_without_bias(self.qkv, x), self.qkv.bias
            else:
                qkv, qkv_bias = self.qkv(x), None
            q, k, v = fused_rope.rope_qkv(qkv.view(B, T, 3, self.num_heads, self.head_dim), qkv_bias, *rope)
        else:
            qkv = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim)
            # q, k, v stay in the projection's [B, T, heads, d] layout and reach SDPA as transposed
            # views (its flash/cuDNN kernels take any stride but the last): RoPE writes q and k in
            # one pass, no separate layout copies, and the attention output is already [B, T, H].
            q, k, v = _rotate_qk(qkv, rope, self.rope_separate)
        if attn_mask is not None and attn_mask.dtype != torch.bool and attn_mask.dtype != q.dtype:
            attn_mask = attn_mask.to(q.dtype)  # SDPA wants an additive bias in the query dtype
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self._project(out.transpose(1, 2).reshape(B, T, H), add_bias)

    def _project(self, out: torch.Tensor, add_bias: bool) -> torch.Tensor:
        return self.out_proj(out) if add_bias else linear_without_bias(self.out_proj, out)

    def forward_queries(self, x: torch.Tensor, select: torch.Tensor, rope: tuple | None,
                        add_bias: bool = True) -> torch.Tensor:
        """Attention output at the positions `select [B, k]` only: keys and values over the whole
        sequence, queries at k positions (no padding mask; the MLM path of full windows)."""
        B, T, H = x.shape
        k = select.shape[1]
        x_sel = take_positions(x, select)
        q = linear(self.qkv, x_sel, slice(0, H)).view(B, k, self.num_heads, self.head_dim)
        kv = linear(self.qkv, x, slice(H, 3 * H)).view(B, T, 2, self.num_heads, self.head_dim)
        if rope is not None:
            cos, sin = rope
            q = apply_rope(q, cos[select][:, :, None], sin[select][:, :, None])
            kv = torch.stack([apply_rope(kv[:, :, 0], cos[:, None], sin[:, None]), kv[:, :, 1]], dim=2)
        key, value = kv.unbind(2)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                             dropout_p=self.dropout if self.training else 0.0)
        return self._project(out.transpose(1, 2).reshape(B, k, H), add_bias)


def _rotate_qk(qkv: torch.Tensor, rope: tuple | None, separate: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v `[B, T, heads, d]` of `qkv [B, T, 3, heads, d]`: RoPE on the q and k slots in one
    pass (or, `separate`, on the unbound q and k); v stays a view."""
    if separate:
        q, k, v = qkv.unbind(2)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos[:, None], sin[:, None]), apply_rope(k, cos[:, None], sin[:, None])
        return q, k, v
    v = qkv[:, :, 2]
    if rope is None:
        return qkv[:, :, 0], qkv[:, :, 1], v
    cos, sin = rope
    q, k = apply_rope(qkv[:, :, :2], cos[:, None, None], sin[:, None, None]).unbind(2)
    return q, k, v


class EncoderLayer(nn.Module):
    # Fused path only: out_proj's and fc2's biases are added inside the add+dropout+LayerNorm op
    # (which then sums their gradients in its backward pass) instead of in the GEMMs' epilogues,
    # whose bias gradients were separate reductions over the [B*T, H] gradients (22 kernels,
    # ~0.9 ms a step in session 4's profile). Same function and parameters; the bench's
    # *_nofold variants switch it off to time the difference.
    fold_bias = True

    def __init__(self, config: VQDNAConfig):
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.config = config  # read at call time: Encoder and blocks must agree on fused_dropout_norm
        self.eps = config.layer_norm_eps
        self.attention = SelfAttention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = FeedForward(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, rope: tuple | None, attn_mask: torch.Tensor | None,
                normed: torch.Tensor | None = None, next_norm: tuple | None = None):
        """Plain: the block's output. Fused pre-LN (`normed` = attn_norm(x), given by the
        encoder): `(x_out, next_norm(x_out))` with `next_norm = (weight, bias)` of the norm that
        reads x_out next (the next block's attn_norm or the final norm), so every residual add
        is one op with the norm after it."""
        if self.fused:
            return self._forward_fused(x, rope, attn_mask, normed, next_norm)
        if self.pre_norm:
            x = x + self.dropout(self.attention(self.attn_norm(x), rope, attn_mask))
            return x + self.dropout(self.mlp(self.mlp_norm(x)))
        x = self.attn_norm(x + self.dropout(self.attention(x, rope, attn_mask)))
        return self.mlp_norm(x + self.dropout(self.mlp(x)))

    @property
    def fused(self) -> bool:
        return bool(getattr(self.config, "fused_dropout_norm", False))

    def _add_norm(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                  y_bias: torch.Tensor | None = None):
        """`(x + dropout(y + y_bias), LayerNorm(x + dropout(y + y_bias)))` in one op."""
        return dropout_add_layer_norm(x, y, weight, bias, self.dropout.p if self.training else 0.0, self.eps,
                                      y_bias=y_bias)

    def _folds(self, module: nn.Module) -> bool:
        """Whether the fused op takes `module`'s bias: on the fused path, for a plain linear layer
        (a LoRA-wrapped one keeps its forward: a product of its weight alone would drop the adapter)."""
        return self.fused and self.fold_bias and bias_foldable(module)

    def _attention_fused(self, x, rope, attn_mask):
        """(attention output, the bias the fused op adds to it): out_proj's bias folded or not."""
        if self._folds(self.attention.out_proj):
            return self.attention(x, rope, attn_mask, add_bias=False), self.attention.out_proj.bias
        return self.attention(x, rope, attn_mask), None

    def _mlp_fused(self, h):
        if self._folds(self.mlp.fc2):
            return self.mlp(h, add_bias=False), self.mlp.fc2.bias
        return self.mlp(h), None

    def _forward_fused(self, x, rope, attn_mask, normed, next_norm):
        if not self.pre_norm:
            attn, attn_bias = self._attention_fused(x, rope, attn_mask)
            _, x = self._add_norm(x, attn, self.attn_norm.weight, self.attn_norm.bias, attn_bias)
            y, y_bias = self._mlp_fused(x)
            _, x = self._add_norm(x, y, self.mlp_norm.weight, self.mlp_norm.bias, y_bias)
            return x
        if normed is None or next_norm is None:
            raise ValueError("fused pre-LN block: the encoder passes normed and next_norm")
        attn, attn_bias = self._attention_fused(normed, rope, attn_mask)
        x, h = self._add_norm(x, attn, self.mlp_norm.weight, self.mlp_norm.bias, attn_bias)
        y, y_bias = self._mlp_fused(h)
        return self._add_norm(x, y, *next_norm, y_bias)

    def forward_queries(self, x: torch.Tensor, select: torch.Tensor, rope: tuple | None,
                        normed: torch.Tensor | None = None) -> torch.Tensor:
        """This block's output at `select [B, k]` only (what the MLM loss reads of the last block).
        `normed`: attn_norm(x) when the caller already has it (fused pre-LN path)."""
        x_sel = take_positions(x, select)
        fold = self._folds(self.attention.out_proj)
        attn_bias = self.attention.out_proj.bias if fold else None
        if self.pre_norm:
            normed = self.attn_norm(x) if normed is None else normed
            attn = self.attention.forward_queries(normed, select, rope, add_bias=not fold)
            if self.fused:
                y, h = self._add_norm(x_sel, attn, self.mlp_norm.weight, self.mlp_norm.bias, attn_bias)
            else:
                y = x_sel + self.dropout(attn)
                h = self.mlp_norm(y)
            return y + self.dropout(self.mlp(h))
        attn = self.attention.forward_queries(x, select, rope, add_bias=not fold)
        if self.fused:
            _, y = self._add_norm(x_sel, attn, self.attn_norm.weight, self.attn_norm.bias, attn_bias)
            z, z_bias = self._mlp_fused(y)
            return self._add_norm(y, z, self.mlp_norm.weight, self.mlp_norm.bias, z_bias)[1]
        y = self.attn_norm(x_sel + self.dropout(attn))
        return self.mlp_norm(y + self.dropout(self.mlp(y)))


class Encoder(nn.Module):
    def __init__(self, config: VQDNAConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList([EncoderLayer(config) for _ in range(config.num_hidden_layers)])
        # Pre-LN needs a final norm; post-LN layers already end normalised.
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.norm_position == "pre" else nn.Identity()
        self.gradient_checkpointing = False

    def attention_inputs(self, x: torch.Tensor, attention_mask: torch.Tensor | None):
        """RoPE tables and the SDPA mask. No padding and RoPE -> mask None, the flash kernel."""
        T = x.shape[1]
        rope = None
        mask = None
        if self.config.position_encoding == "rope":
            head_dim = self.config.hidden_size // self.config.num_attention_heads
            rope = rope_tables(T, head_dim, self.config.rope_theta, x.device, x.dtype)
        else:
            # slopes computed here, not held in a buffer: from_pretrained builds modules on the
            # meta device and would leave a non-persistent buffer uninitialised
            slopes = alibi_slopes(self.config.num_attention_heads).to(x.device)
            mask = alibi_bias(T, slopes, x.dtype)[None]  # [1, heads, T, T]
        if attention_mask is not None:
            keep = attention_mask[:, None, None, :].to(torch.bool)  # [B, 1, 1, T] over keys
            if mask is None:
                mask = keep
            else:
                mask = mask.masked_fill(~keep, torch.finfo(x.dtype).min)
        return rope, mask

    def compile_layers(self, **kwargs) -> None:
        """torch.compile each block in place. The blocks share one class, so (with PyTorch's
        default inlining of nn.Modules) one compiled graph serves all of them: a fraction of the
        compile time of the whole encoder, and the state-dict keys do not change. The last
        block's `forward_queries` (the MLM path's sparse last block) is compiled too: eager, its
        RoPE, norms and dropout ran as separate kernels."""
        for layer in self.layers:
            layer.compile(**kwargs)
        last = self.layers[-1]
        last.forward_queries = torch.compile(last.forward_queries, **kwargs)  # instance attribute: no state-dict keys

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None,
                select: torch.Tensor | None = None) -> torch.Tensor:
        """`select [B, k]`: return only those positions ([B, k, H]); the last block then computes
        queries, attention output and FFN for them alone (RoPE, no padding mask)."""
        rope, mask = self.attention_inputs(x, attention_mask)
        layers = list(self.layers)
        last = layers.pop() if select is not None else None
        if self.config.norm_position == "pre" and getattr(self.config, "fused_dropout_norm", False):
            return self._forward_fused_pre(x, rope, mask, layers, last, select)
        for layer in layers:
            x = self._run(layer, x, rope, mask)
        if last is not None:
            x = last.forward_queries(x, select, rope)
        return self.final_norm(x)

    def _run(self, layer, *args):
        if self.gradient_checkpointing and self.training:
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def _forward_fused_pre(self, x, rope, mask, layers, last, select):
        """Pre-LN with fused add+dropout+norm: each block hands the next its normed input (the
        last one the final norm's output), so no norm runs as a separate pass."""
        h = layers[0].attn_norm(x) if layers else last.attn_norm(x)
        following = [l.attn_norm for l in layers[1:]] + [last.attn_norm if last is not None else self.final_norm]
        for layer, norm in zip(layers, following):
            x, h = self._run(layer, x, rope, mask, h, (norm.weight, norm.bias))
        if last is not None:
            return self.final_norm(last.forward_queries(x, select, rope, normed=h))
        return h
