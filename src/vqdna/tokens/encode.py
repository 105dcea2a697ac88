"""Encode `[B, window]` ASCII rows with a frozen tokenizer into fixed-width id arrays."""

from __future__ import annotations

import numpy as np

from ..dna import INVALID, to_codes


def tokens_per_window(tokenizer, window: int) -> int:
    """Width of a stored row: exact for fixed-rate tokenizers, else the upper bound of one token per nt."""
    n = tokenizer.num_tokens(window) if tokenizer.fixed_rate else None
    return int(n) if n is not None else int(window)


def first_invalid(ascii_rows: np.ndarray) -> int | None:
    """Row index of the first window holding a non-ACGT byte (shards must hold only A/C/G/T)."""
    bad = (to_codes(ascii_rows.reshape(-1)).reshape(ascii_rows.shape) == INVALID).any(axis=1)
    return int(bad.argmax()) if bad.any() else None


class BatchEncoder:
    """Uses the tokenizer's batched tensor path (`encode_codes`, on its device) when it has one,
    else its list API (`encode`). Returns ids `[B, width, levels]` in `dtype` and real lengths."""

    def __init__(self, tokenizer, width: int, dtype: np.dtype, device: str = "cpu", compile: bool = False):
        self.tokenizer = tokenizer
        self.width = width
        self.dtype = np.dtype(dtype)
        self.pad = np.asarray(tokenizer.vocab_sizes, dtype=np.int64)  # the backbone's [PAD] ids
        self.tensor_path = hasattr(tokenizer, "encode_codes")
        self.device = device
        if self.tensor_path and hasattr(tokenizer, "to"):
            tokenizer.to(device)
        if compile and device != "cpu" and hasattr(tokenizer, "compile"):
            import torch._dynamo

            # One static graph per batch shape (full batches, then a shard's last one); with
            # automatic dynamic shapes the second shape would bring slower shape-generic kernels.
            torch._dynamo.config.automatic_dynamic_shapes = False
            tokenizer.compile()  # CUDA only: compiling for the CPU costs more than it saves here

    def __call__(self, ascii_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.tensor_path:
            return self._encode_tensor(ascii_rows)
        return self._encode_lists(ascii_rows)

    def _encode_tensor(self, ascii_rows: np.ndarray):
        import torch

        codes = torch.from_numpy(to_codes(ascii_rows.reshape(-1)).reshape(ascii_rows.shape))
        if self.device != "cpu":
            codes = codes.pin_memory()
        ids = self.tokenizer.encode_codes(codes)  # Long[B, T, levels] on the tokenizer's device
        if ids.shape[1] != self.width:
            raise ValueError(f"tokenizer returned {ids.shape[1]} tokens per window, expected {self.width}")
        # int32 halves the device->host copy; every id fits (checked by the dtype choice)
        out = ids.to(torch.int32).cpu().numpy().astype(self.dtype)
        return out, np.full(len(out), self.width, dtype=np.int64)

    def _encode_lists(self, ascii_rows: np.ndarray):
        arrays = self.tokenizer.encode([row.tobytes() for row in ascii_rows])
        out = np.empty((len(arrays), self.width, len(self.pad)), dtype=self.dtype)
        out[:] = self.pad.astype(self.dtype)
        lengths = np.empty(len(arrays), dtype=np.int64)
        for i, arr in enumerate(arrays):
            arr = np.asarray(arr).reshape(len(arr), -1)
            if len(arr) > self.width:
                raise ValueError(f"window {i} gave {len(arr)} tokens, more than the row width {self.width}")
            out[i, : len(arr)] = arr
            lengths[i] = len(arr)
        return out, lengths
