"""Offline tokenization (`vqdna tokenize`) and the token files stage 2 reads.

A split of one tokenizer is three files in `results/tokens/{tok}/`:

    {split}.bin          flat np.memmap, C order, shape [count, tokens_per_window, levels]
                         (dtype uint16 when every level's id + specials fits, else uint32)
    {split}.lengths.bin  uint32 [count] real tokens per window; only for variable-rate
                         tokenizers (BPE), whose rows are padded with the [PAD] id
    {split}.meta.json    dtype, levels, vocab sizes, window (nt) and tokens per window,
                         count, tokenizer kind and checksum; written last (the "complete" mark)

`TokenFile` (reader.py) opens one split and samples random windows without loading it.
"""

from .format import TokenMeta, read_meta, token_paths
from .reader import TokenFile

__all__ = ["TokenFile", "TokenMeta", "read_meta", "token_paths"]
