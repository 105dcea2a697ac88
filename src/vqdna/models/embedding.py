"""Input embedding: frozen codebook vectors projected to the hidden size, or a learned table.

Special tokens ([PAD], [MASK], [CLS]) have ids `vocab_sizes[l] + 0/1/2` at every level and
are always set for all levels of a position together (see `collate` and masking), so the
level-0 id decides whether a position is special.
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration import SPECIAL_TOKENS, VQDNAConfig


class CodebookEmbedding(nn.Module):
    """HRQ/VQ: `combine_l codebook_l[id_l]` -> Linear(code_dim, hidden); specials learned in hidden space.

    The codebooks are persistent buffers: saved with the model (the pretrained directory
    needs no tokenizer to load) and never trained, also after from_pretrained or under peft.
    """

    def __init__(self, config: VQDNAConfig):
        super().__init__()
        self.vocab_sizes = list(config.vocab_sizes)
        self.combine = config.level_combine
        for level, v in enumerate(self.vocab_sizes):
            self.register_buffer(f"codebook_{level}", torch.zeros(v, config.code_dim))
        self.proj = nn.Linear(config.code_dim, config.hidden_size)
        self.special = nn.Embedding(len(SPECIAL_TOKENS), config.hidden_size)

    @property
    def codebooks(self) -> list[torch.Tensor]:
        return [getattr(self, f"codebook_{level}") for level in range(len(self.vocab_sizes))]

    def load_code_vectors(self, vectors) -> None:
        with torch.no_grad():
            for book, vec in zip(self.codebooks, vectors, strict=True):
                vec = torch.as_tensor(vec, dtype=book.dtype)
                if vec.shape != book.shape:
                    raise ValueError(f"code vectors {tuple(vec.shape)} do not match the configured {tuple(book.shape)}")
                book.copy_(vec)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        vecs = None
        for level, (book, size) in enumerate(zip(self.codebooks, self.vocab_sizes)):
            ids = input_ids[..., level]
            v = nn.functional.embedding(ids.clamp(max=size - 1), book.to(self.proj.weight.dtype))
            vecs = v if vecs is None else vecs + v
        if self.combine == "mean" and len(self.vocab_sizes) > 1:
            vecs = vecs / len(self.vocab_sizes)
        out = self.proj(vecs.to(self.proj.weight.dtype))
        # Specials as one select per special token, not an embedding lookup of every position:
        # the lookup's backward accumulates ~all B*T positions into one row (the clamped
        # non-special ones), which torch's deterministic mode (pretrain.deterministic) runs as a
        # sort-based index_put that serialises duplicates (36 ms of a 137 ms H200 step); the
        # selects' weight gradient is a plain reduction. Same values forward; ids past the last
        # special count as the last one, as the clamp did.
        first = input_ids[..., 0]
        rows = self.special.weight.to(out.dtype)
        last = len(SPECIAL_TOKENS) - 1
        for i in range(last + 1):
            hit = first >= self.vocab_sizes[0] + i if i == last else first == self.vocab_sizes[0] + i
            out = torch.where(hit[..., None], rows[i], out)
        return out


class TableEmbedding(nn.Module):
    """Baselines (k-mer, BPE, one-hot): one learned table per level (ids incl. specials), summed."""

    def __init__(self, config: VQDNAConfig):
        super().__init__()
        self.tables = nn.ModuleList([nn.Embedding(rows, config.hidden_size) for rows in config.embedding_rows])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.tables[0](input_ids[..., 0])
        for level in range(1, len(self.tables)):
            out = out + self.tables[level](input_ids[..., level])
        return out


class InputEmbedding(nn.Module):
    def __init__(self, config: VQDNAConfig):
        super().__init__()
        self.tokens = CodebookEmbedding(config) if config.embedding == "codebook" else TableEmbedding(config)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.norm(self.tokens(input_ids)))
