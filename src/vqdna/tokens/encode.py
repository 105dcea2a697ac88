"""Encode `[B, window]` rows with a frozen tokenizer into fixed-width id arrays.

`BatchEncoder.submit(rows)` queues one batch and returns at once on a GPU: the uint8 codes go
through a reused pinned buffer to the device (copy on a side stream), the tokenizer runs on the
main stream, the ids come back as int16/int32 into a pinned buffer, and an event marks the end.
`result(handle)` waits for that event. The caller keeps one batch in flight while it writes
the previous one, so host work (shard reads, memmap writes) overlaps the GPU. On the CPU,
or for tokenizers without a tensor path, `submit` does the work synchronously.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dna import INVALID, to_codes


def tokens_per_window(tokenizer, window: int) -> int:
    """Width of a stored row: exact for fixed-rate tokenizers, else the upper bound of one token per nt."""
    n = tokenizer.num_tokens(window) if tokenizer.fixed_rate else None
    return int(n) if n is not None else int(window)


def first_invalid_codes(codes: np.ndarray) -> int | None:
    """Row index of the first window holding a non-ACGT code (shards must hold only A/C/G/T)."""
    bad = (codes == INVALID).any(axis=1)
    return int(bad.argmax()) if bad.any() else None


@dataclass
class _Pending:
    ids: object            # numpy array (done) or pinned host tensor (in flight)
    lengths: np.ndarray
    event: object = None   # torch.cuda.Event marking the device->host copy, None when done


class BatchEncoder:
    """Uses the tokenizer's batched tensor path (`encode_codes`, on its device) when it has one,
    else its list API (`encode`). Gives ids `[B, width, levels]` in `dtype` and real lengths.

    `fast`: settings of the frozen bf16 inference path (`VQTokenizer.enable_fast`), None = off.
    """

    def __init__(self, tokenizer, width: int, dtype: np.dtype, device: str = "cpu", compile: bool = False,
                 fast: dict | None = None):
        self.tokenizer = tokenizer
        self.width = width
        self.dtype = np.dtype(dtype)
        self.pad = np.asarray(tokenizer.vocab_sizes, dtype=np.int64)  # the backbone's [PAD] ids
        self.tensor_path = hasattr(tokenizer, "encode_codes")
        self.device = device
        self.cuda = self.tensor_path and device != "cpu"
        if self.tensor_path and hasattr(tokenizer, "to"):
            tokenizer.to(device)
        if fast is not None and hasattr(tokenizer, "enable_fast"):
            tokenizer.enable_fast(fast)  # compiles its own fused passes (fast.compile)
        elif compile and device != "cpu" and hasattr(tokenizer, "compile"):
            import torch._dynamo

            # One static graph per batch shape (full batches, then a shard's last one); with
            # automatic dynamic shapes the second shape would bring slower shape-generic kernels.
            torch._dynamo.config.automatic_dynamic_shapes = False
            tokenizer.compile()  # CUDA only: compiling for the CPU costs more than it saves here
        self._slots: dict = {}      # (shape) -> list of pinned (codes, ids) buffer pairs
        self._turn = 0
        self._copy_stream = None

    # ---- queue interface ------------------------------------------------------------------
    def submit(self, ascii_rows: np.ndarray | None = None, *, codes: np.ndarray | None = None) -> _Pending:
        """Queue one batch given as ASCII rows or as uint8 codes (0..3). Codes must be valid."""
        if not self.tensor_path:
            ids, lengths = self._encode_lists(ascii_rows)
            return _Pending(ids, lengths)
        if codes is None:
            codes = to_codes(ascii_rows.reshape(-1)).reshape(ascii_rows.shape)
        if not self.cuda:
            return _Pending(*self._encode_tensor_sync(codes))
        return self._submit_cuda(codes)

    def result(self, pending: _Pending) -> tuple[np.ndarray, np.ndarray]:
        """(ids [B, width, levels] in `dtype`, lengths). A GPU result is a view of a pinned buffer
        that the batch after next reuses: copy or write it out before submitting two more."""
        if pending.event is None:
            return pending.ids, pending.lengths
        pending.event.synchronize()
        host = pending.ids.numpy()
        if self.dtype == np.uint16 and host.dtype == np.int16:
            return host.view(np.uint16), pending.lengths  # same bits: every id < 2^15
        return host.astype(self.dtype, copy=False), pending.lengths

    def __call__(self, ascii_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids, lengths = self.result(self.submit(ascii_rows))
        return ids.copy() if self.cuda else ids, lengths

    # ---- paths ------------------------------------------------------------------------------
    def _check_width(self, ids) -> None:
        if ids.shape[1] != self.width:
            raise ValueError(f"tokenizer returned {ids.shape[1]} tokens per window, expected {self.width}")

    def _encode_tensor_sync(self, codes: np.ndarray):
        import torch

        ids = self.tokenizer.encode_codes(torch.from_numpy(np.ascontiguousarray(codes)), out_dtype=torch.int32)
        self._check_width(ids)
        out = ids.cpu().numpy().astype(self.dtype)
        return out, np.full(len(out), self.width, dtype=np.int64)

    def _submit_cuda(self, codes: np.ndarray) -> _Pending:
        import torch

        levels = len(self.pad)
        # int16 halves the device->host copy when every id (and [PAD]) fits; bits reinterpreted as uint16
        small = self.dtype == np.uint16 and int(self.pad.max()) < 2 ** 15
        wire = torch.int16 if small else torch.int32
        key = (codes.shape, wire)
        slots = self._slots.get(key)
        if slots is None:
            slots = [(torch.empty(codes.shape, dtype=torch.uint8, pin_memory=True),
                      torch.empty((codes.shape[0], self.width, levels), dtype=wire, pin_memory=True),
                      None) for _ in range(2)]
            self._slots[key] = slots
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(device=self.device)
        self._turn ^= 1
        host_in, host_out, last = slots[self._turn]
        if last is not None:
            last.synchronize()  # the batch that used this slot has come back (normally long ago)
        host_in.numpy()[...] = codes
        main = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._copy_stream):
            dev_in = host_in.to(self.device, non_blocking=True)
        main.wait_stream(self._copy_stream)
        dev_in.record_stream(main)
        ids = self.tokenizer.encode_codes(dev_in, out_dtype=wire)
        self._check_width(ids)
        host_out.copy_(ids, non_blocking=True)
        event = torch.cuda.Event()
        event.record(main)
        slots[self._turn] = (host_in, host_out, event)
        return _Pending(host_out, np.full(codes.shape[0], self.width, dtype=np.int64), event)

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
