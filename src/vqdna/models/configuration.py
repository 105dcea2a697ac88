"""`VQDNAConfig`: the backbone's shape and everything needed to rebuild its input embedding."""

from __future__ import annotations

from transformers import PretrainedConfig

# Special tokens sit right after the last tokenizer id of every level, in this order.
SPECIAL_TOKENS = ("pad", "mask", "cls")


class VQDNAConfig(PretrainedConfig):
    """BERT-base shape by default (12 layers, 768 hidden, 12 heads, 3072 FFN).

    `embedding="codebook"`: the input embedding is the tokenizer's frozen code vectors
    (`code_dim` wide, one table per level, levels averaged as HRQ does) projected to
    `hidden_size`; `embedding="table"`: an ordinary learned table per level (baselines).
    `fused_dropout_norm`: compute each residual add with its dropout and the LayerNorm that
    follows it as one op (`vqdna.models.fused_norm`; pretrain.fused_dropout_norm).
    `fused_rope`: RoPE on q and k (and the qkv gradient assembly in backward) as one op
    (pretrain.fused_rope). `fused_gelu`: fc1's bias + GELU as one op with the bias gradient in
    its backward pass (`vqdna.models.feedforward`; pretrain.fused_gelu).
    """

    model_type = "vqdna"

    def __init__(
        self,
        levels: int = 1,
        vocab_sizes: list[int] | tuple[int, ...] = (4,),
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.0,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        position_encoding: str = "rope",
        rope_theta: float = 10000.0,
        norm_position: str = "pre",
        embedding: str = "table",
        code_dim: int | None = None,
        level_combine: str = "mean",
        tokenizer_kind: str | None = None,
        fused_dropout_norm: bool = False,
        fused_rope: bool = False,
        fused_gelu: bool = False,
        **kwargs,
    ):
        vocab_sizes = [int(v) for v in vocab_sizes]
        if len(vocab_sizes) != levels:
            raise ValueError(f"vocab_sizes {vocab_sizes} must have one entry per level ({levels})")
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")
        if position_encoding not in ("rope", "alibi"):
            raise ValueError(f"position_encoding must be 'rope' or 'alibi', not {position_encoding!r}")
        if norm_position not in ("pre", "post"):
            raise ValueError(f"norm_position must be 'pre' or 'post', not {norm_position!r}")
        if embedding not in ("codebook", "table"):
            raise ValueError(f"embedding must be 'codebook' or 'table', not {embedding!r}")
        if embedding == "codebook" and not code_dim:
            raise ValueError("embedding='codebook' needs code_dim")
        if level_combine not in ("mean", "sum"):
            raise ValueError(f"level_combine must be 'mean' or 'sum', not {level_combine!r}")
        self.levels = int(levels)
        self.vocab_sizes = vocab_sizes
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.position_encoding = position_encoding
        self.rope_theta = rope_theta
        self.norm_position = norm_position
        self.embedding = embedding
        self.code_dim = code_dim
        self.level_combine = level_combine
        self.tokenizer_kind = tokenizer_kind
        # residual add + dropout + LayerNorm as one op (vqdna.models.fused_norm): Triton kernels
        # on CUDA, the same math in PyTorch elsewhere; same parameters and state-dict keys, so a
        # saved model loads and fine-tunes either way
        self.fused_dropout_norm = bool(fused_dropout_norm)
        # same parameters and function either way (kernels only), saved like fused_dropout_norm
        self.fused_rope = bool(fused_rope)
        self.fused_gelu = bool(fused_gelu)
        super().__init__(**kwargs)

    def special_id(self, name: str, level: int) -> int:
        return self.vocab_sizes[level] + SPECIAL_TOKENS.index(name)

    @property
    def embedding_rows(self) -> list[int]:
        """Rows of each level's id space: tokenizer ids plus the special tokens."""
        return [v + len(SPECIAL_TOKENS) for v in self.vocab_sizes]
