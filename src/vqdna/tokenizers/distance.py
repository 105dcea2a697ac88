"""Nearest-code search as matrix products, in three precisions, shared by training (`quantizer.py`,
`tokenizers.training.distance`) and the frozen inference path (`fast_encode.py`, `tokens.fast.distance`).

argmin_k ||x − e_k||² = argmin_k ||e_k||²/2 − x·e_k (||x||² is the same for every k), so the search is
one GEMM of the latents against the codebook plus one argmin pass. Modes:
  "fp32":   fp32 operands. On a GPU with TF32 off this runs on the SIMT cores (an H200 step of the
            paper-size HRQ spent 14.5 ms of 122 ms in these two GEMMs at ~43 TFLOP/s);
  "bf16x3": x and e each split into bf16 hi + lo parts (v = hi + lo to ~2^-16 relative), and
            x·e ≈ hi·hi + lo·hi + hi·lo as ONE bf16 GEMM of width 3D with fp32 accumulation/output
            (only lo·lo, ~2^-16 of the product, is dropped): scores within ~1e-5 relative of fp32
            (tests bound it at 2e-5), on the tensor cores, so only near-exact ties can change;
  "bf16":   one bf16 product (x and e rounded to bf16; inference only, offered for speed).
"""

from __future__ import annotations

import torch

DISTANCES = ("bf16x3", "bf16", "fp32")
TRAIN_DISTANCES = ("fp32", "bf16x3")
PATHS: dict = {}  # which implementation ran where there is a fallback (reported by the benches)


def split_left(h: torch.Tensor, mode: str) -> torch.Tensor:
    """Latents `[N, D]` (fp32) as the left GEMM operand of `mode` (`[N, D]` or `[N, 3D]`)."""
    if mode == "fp32":
        return h
    hi = h.to(torch.bfloat16)
    if mode == "bf16":
        return hi
    lo = (h - hi.float()).to(torch.bfloat16)
    return torch.cat([hi, lo, hi], -1)


def split_right(e: torch.Tensor, mode: str) -> torch.Tensor:
    """Codebook `[K, D]` (fp32) as the right GEMM operand `[D·f, K]` of `mode` (pairs with `split_left`)."""
    e = e.float()
    if mode == "fp32":
        return e.t().contiguous()
    hi = e.to(torch.bfloat16)
    if mode == "bf16":
        return hi.t().contiguous()
    lo = (e - hi.float()).to(torch.bfloat16)
    return torch.cat([hi, hi, lo], 1).t().contiguous()


def mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with an fp32 result; bf16 operands accumulate in fp32 inside cuBLAS (no upcast pass)."""
    if a.dtype == torch.float32:
        return a @ b
    if a.is_cuda and PATHS.get("distance_gemm") != "upcast":
        try:
            out = torch.mm(a, b, out_dtype=torch.float32)
            PATHS["distance_gemm"] = "mm_out_dtype"
            return out
        except (TypeError, RuntimeError, NotImplementedError) as exc:  # older torch: same function, slower
            PATHS["distance_gemm"] = "upcast"
            PATHS["distance_gemm_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return a.float() @ b.float()  # bf16 values are exact in fp32: the same function


def _argmin(scores: torch.Tensor, half_sq: torch.Tensor) -> torch.Tensor:
    return (half_sq - scores).argmin(-1)


_COMPILED: dict = {}


def _fns(device: torch.device):
    """The two element-wise passes around the GEMM, compiled on CUDA (each is one kernel there instead of
    the 3-5 eager ones the split takes); plain functions elsewhere."""
    if device.type != "cuda":
        return split_left, _argmin
    if not _COMPILED:
        _COMPILED["left"] = torch.compile(split_left, dynamic=False)
        _COMPILED["argmin"] = torch.compile(_argmin, dynamic=False)
    return _COMPILED["left"], _COMPILED["argmin"]


def nearest_code(x: torch.Tensor, embed: torch.Tensor, embed_sq: torch.Tensor | None = None,
                 mode: str = "fp32") -> torch.Tensor:
    """argmin_k ||x_i − e_k||² for x `[N, D]`, embed `[K, D]` (both fp32) as int64 `[N]`."""
    if mode == "fp32":
        if embed_sq is None:
            embed_sq = embed.pow(2).sum(1)
        return torch.addmm(embed_sq.unsqueeze(0), x, embed.t(), beta=1.0, alpha=-2.0).argmin(1)
    if mode not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, not {mode!r}")
    left, argmin = _fns(x.device)
    half_sq = 0.5 * (embed.pow(2).sum(1) if embed_sq is None else embed_sq)
    return argmin(mm_f32(left(x, mode), split_right(embed, mode)), half_sq)
