"""`VQTokenizer`: the learned VQ-VAE / HRQ genome vocabulary behind `GenomeTokenizer`.

Two ways in:
- `encode(seqs)` / `decode(ids)`: lists of strings and `[T, levels]` arrays (the contract API);
  sequences are grouped by length so each group runs as one batch without padding (padding
  would change the codes near the end, the receptive field is ±20 nt).
- `encode_codes(codes)` / `decode_codes(ids)` / `embed(ids)`: batched tensors on the
  tokenizer's device (`.to("cuda")`), for offline tokenization of whole shards.

`enable_fast(settings)` switches `encode_codes` (and so `encode`) to the frozen bf16 inference
path of `fast_encode.py` (same codes up to bf16 rounding near code boundaries); off by default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..atomic import atomic_path, write_json
from ..dna import INVALID, to_ascii, to_codes
from ..errors import InputError
from .base import GenomeTokenizer
from .fast_encode import FastEncoder, FastEncodeSettings
from .model import VQModelConfig, VQVAE

WEIGHTS = "model.safetensors"
FORMAT = "vqdna-vq-tokenizer-v1"


class VQTokenizer(GenomeTokenizer):
    """A trained (or fresh) VQ/HRQ model used as a frozen tokenizer."""

    def __init__(self, model: VQVAE, *, batch_nt: int = 1 << 16, autocast: bool = True,
                 fast: FastEncodeSettings | dict | None = None):
        self.model = model.eval()
        self.kind = model.config.kind
        self.batch_nt = batch_nt      # nucleotides per forward pass in encode()/decode()
        self.autocast = autocast      # bf16 autocast when on CUDA
        self._fast_settings: FastEncodeSettings | None = None
        self._fast: FastEncoder | None = None
        if fast is not None:
            self.enable_fast(fast)

    # ---- interface -------------------------------------------------------------------
    @property
    def levels(self) -> int:
        return len(self.model.config.codebook_sizes)

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        return tuple(self.model.config.codebook_sizes)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "VQTokenizer":
        self.model.to(device)
        self._fast = None  # rebuilt on the new device at the next encode
        return self

    def enable_fast(self, settings: FastEncodeSettings | dict | None = None) -> "VQTokenizer":
        """Encode through the frozen bf16 path (`fast_encode.py`); the weights are snapshotted at the
        first encode, so call this again after changing them."""
        if not isinstance(settings, FastEncodeSettings):
            settings = FastEncodeSettings.from_dict(settings)
        self._fast_settings, self._fast = settings, None
        return self

    @property
    def fast_settings(self) -> FastEncodeSettings | None:
        return self._fast_settings

    def _fast_encoder(self) -> FastEncoder:
        if self._fast is None:
            self._fast = FastEncoder.from_model(self.model, self._fast_settings)
        return self._fast

    def compile(self) -> "VQTokenizer":
        """torch.compile the encoder and decoder in place (worth it on CUDA: fuses norms, GELU and transposes)."""
        self.model.encoder.compile()
        self.model.decoder.compile()
        return self

    def config(self) -> dict:
        return {"kind": self.kind, "format": FORMAT, "model": self.model.config.to_dict(),
                "levels": self.levels, "vocab_sizes": list(self.vocab_sizes), "dim": self.model.config.dim}

    def _autocast(self):
        dev = self.device.type
        return torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=self.autocast and dev == "cuda")

    # ---- batched tensor path -----------------------------------------------------------
    @torch.inference_mode()
    def encode_codes(self, codes: torch.Tensor, *, out_dtype: torch.dtype = torch.long) -> torch.Tensor:
        """Nucleotide codes `[B, L]` (uint8/long, 0..3) -> code ids `[B, L, levels]` (`out_dtype`, default
        long) on the tokenizer's device."""
        codes = codes.to(self.device, non_blocking=True)
        if self._fast_settings is not None:
            return self._fast_encoder()(codes).to(out_dtype)
        with self._autocast():
            return self.model.encode(codes.long()).to(out_dtype)

    @torch.inference_mode()
    def decode_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids `[B, L, levels]` -> reconstructed nucleotide codes `Long[B, L]` (0..3)."""
        ids = ids.to(self.device).long()
        with self._autocast():
            return self.model.decode(ids).argmax(-1)

    @torch.inference_mode()
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids `[..., levels]` -> quantized vectors `[..., D]` (mean of the level embeddings, fp32)."""
        return self.model.quantizer.embed(ids.to(self.device).long())

    def code_vectors(self) -> list[torch.Tensor]:
        """Per level, the `[K_level, D]` code vectors (fp32, CPU copies)."""
        return [cb.embed.detach().float().cpu().clone() for cb in self.model.quantizer.codebooks]

    # ---- list API ----------------------------------------------------------------------
    def encode(self, seqs: Sequence[str | bytes]) -> list[np.ndarray]:
        arrays = []
        for i, s in enumerate(seqs):
            c = to_codes(s)
            if (c == INVALID).any():
                raise ValueError(f"sequence {i} holds symbols other than A/C/G/T; apply the shard IUPAC policy first")
            arrays.append(c)
        return self._by_length(arrays, lambda batch: self.encode_codes(batch).cpu().numpy().astype(np.int64))

    def decode(self, ids: Sequence[np.ndarray]) -> list[str]:
        arrays = [np.asarray(a, dtype=np.int64).reshape(len(a), self.levels) for a in ids]
        decoded = self._by_length(arrays, lambda batch: self.decode_codes(batch).cpu().numpy())
        return [to_ascii(d) for d in decoded]

    def _by_length(self, arrays: list[np.ndarray], fn) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(arrays)
        by_len: dict[int, list[int]] = {}
        for i, a in enumerate(arrays):
            by_len.setdefault(len(a), []).append(i)
        for length, idx in by_len.items():
            if length == 0:
                for i in idx:
                    out[i] = np.zeros((0, self.levels) if arrays[i].ndim == 1 else (0,), dtype=np.int64)
                continue
            rows = max(1, self.batch_nt // length)
            for start in range(0, len(idx), rows):
                chunk = idx[start:start + rows]
                result = fn(torch.from_numpy(np.stack([arrays[i] for i in chunk])))
                for i, r in zip(chunk, result):
                    out[i] = r
        return out  # type: ignore[return-value]

    # ---- persistence -------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        with atomic_path(path / WEIGHTS) as tmp:
            save_file(state, str(tmp), metadata={"format": FORMAT})
        write_json(path / "config.json", self.config())

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu", **kwargs) -> "VQTokenizer":
        from safetensors.torch import load_file

        path = Path(path)
        cfg_file = path / "config.json"
        try:
            cfg = json.loads(cfg_file.read_text())
            model = VQVAE(VQModelConfig.from_dict(cfg["model"]))
        except FileNotFoundError:
            raise InputError(cfg_file, "no tokenizer here (config.json missing)") from None
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(cfg_file, f"not a vq/hrq tokenizer config: {exc}") from None
        try:
            state = load_file(str(path / WEIGHTS))
        except FileNotFoundError:
            raise InputError(path / WEIGHTS, "tokenizer weights missing") from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise InputError(path / WEIGHTS, f"weights do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return cls(model, **kwargs).to(device)
