"""Frozen inference path of a VQ/HRQ tokenizer: encoder + nearest-code search in bf16 with
every pass over the activations doing as much as it can (offline tokenization, `encode_codes`).

Same function as `VQVAE.encode`, rearranged (exact in fp32; `compute_dtype=torch.float32` is
what the tests compare against the model):
- stem: the k=5 convolution over a one-hot input is a sum of k rows of a `[k, 5, S]` table
  (row 4 = zeros, the conv's zero padding), fused with its LayerNorm and GELU;
- each ConvNeXt block is three launches, residual stream `s` channels-last `[B·L, D]`:
  1. depth-wise conv (k=7) + LayerNorm in one pass: a hand-written Triton kernel on CUDA where Triton is
     importable (`dwconv_kernel: triton`, `dwconv_ln_triton.py`: reads the stream once with its halo;
     the compiled pass it replaces ran at ~0.45 TB/s on an H200), else torch.compile's fusion of the
     shifted sum and the norm,
  2. fc1 with bias and GELU in the GEMM epilogue (cuBLASLt; that epilogue is the tanh GELU,
     `gelu_epilogue: false` keeps the exact erf GELU as a separate pass),
  3. fc2 accumulated in place into the stream (`addmm_`, beta = 1: the residual add is free; with
     `residual: fp32` the stream stays fp32 as under autocast, through an fp32-output GEMM);
     the layer scale is folded into fc2's weight and fc2's bias is not added to `s` at all:
     the stream is stored as `s = x − C` with C the running sum of those biases (a [D]
     vector), which the next block's conv+norm pass (or a tap's norm) adds on load;
- quantizer: the tap LayerNorm (and for HRQ the hierarchical input 2·Z − e(M)) in one pass that
  writes the GEMM operand, distances as one bf16 GEMM with fp32 output (`torch.mm(..., out_dtype)`),
  argmin in one fused pass. `distance`:
    "bf16x3": x and the codebook split into bf16 hi + lo parts, x·e = hi·hi + lo·hi + hi·lo in one
              GEMM of width 3D: fp32-accurate scores, so codes differ from the fp32 search only
              where the bf16 encoder moved a latent across a boundary;
    "bf16":   one bf16 product (x and codes rounded to bf16);
    "fp32":   fp32 latents and codebook (tf32 off), the reference search.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import distance, dwconv_ln_triton
from .distance import DISTANCES
DWCONV_KERNELS = ("triton", "torch")
_COMPILED: dict = {}


@dataclass
class FastEncodeSettings:
    """The `tokens.fast` block (also used by the benches)."""

    distance: str = "bf16x3"
    gelu_epilogue: bool = True
    compile: bool = True          # torch.compile the fused passes (CUDA only)
    residual: str = "bf16"        # dtype of the residual stream between blocks: bf16 | fp32
    dwconv_kernel: str = "triton"  # conv+LN pass: Triton kernel where available (CUDA + Triton) | torch

    def __post_init__(self):
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, not {self.distance!r}")
        if self.residual not in ("bf16", "fp32"):
            raise ValueError(f"residual must be bf16 or fp32, not {self.residual!r}")
        if self.dwconv_kernel not in DWCONV_KERNELS:
            raise ValueError(f"dwconv_kernel must be one of {DWCONV_KERNELS}, not {self.dwconv_kernel!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "FastEncodeSettings":
        d = dict(d or {})
        unknown = set(d) - {"distance", "gelu_epilogue", "compile", "residual", "dwconv_kernel"}
        if unknown:
            raise ValueError(f"unknown fast-encode settings {sorted(unknown)}")
        return cls(**d)


# ---------------------------------------------------------------------------------------- fused passes
# Plain functions of tensors (weights are arguments, not module state): one compiled graph per
# shape serves all six blocks.

def _stem(codes, table, bias, ln_w, ln_b, eps: float, out_dtype: torch.dtype):
    """codes [B, L] (0..3) -> GELU(LN(conv(one_hot(codes)))) as [B, L, S]."""
    length = codes.shape[1]
    k = table.shape[0]
    idx = F.pad(codes.long(), (k // 2, k // 2), value=table.shape[1] - 1)
    y = bias
    for j in range(k):
        y = y + F.embedding(idx[:, j:j + length], table[j])
    y = F.gelu(F.layer_norm(y, (y.shape[-1],), ln_w, ln_b, eps))
    return y.to(out_dtype)


def _dwconv_ln(s, shift, w, b, ln_w, ln_b, eps: float, out_dtype: torch.dtype):
    """s [B, L, D] (stream without the deferred bias `shift`) -> LN(dwconv(s + shift)) in out_dtype."""
    length = s.shape[1]
    k = w.shape[0]
    x = F.pad(s.float() + shift, (0, 0, k // 2, k // 2))  # zeros outside = the conv's padding
    y = b
    for j in range(k):
        y = y + x[:, j:j + length, :] * w[j]
    return F.layer_norm(y, (y.shape[-1],), ln_w, ln_b, eps).to(out_dtype)


def _dwconv_ln_kernel(s, shift, w, b, ln_w, ln_b, eps: float, out_dtype: torch.dtype):
    """`_dwconv_ln` as one Triton kernel (no mean/rstd written: nothing needs them at inference)."""
    return dwconv_ln_triton.triton_forward(s, shift, w, b, ln_w, ln_b, eps, out_dtype, stats=False)[0]


def _tap(s, shift, ln_w, ln_b, eps: float, prev_ids, prev_embed, mode: str):
    """Quantizer input of one level: LN(s + shift), minus the previous level's code vector for HRQ
    (H = 2·Z − e(M)), as the left GEMM operand of `mode`; also returns nothing else."""
    z = F.layer_norm(s.float() + shift, (s.shape[-1],), ln_w, ln_b, eps)
    h = z if prev_ids is None else 2 * z - F.embedding(prev_ids, prev_embed)
    return distance.split_left(h, mode)


def _argmin(scores, half_sq):
    """argmin_k ||e_k||²/2 − x·e_k (= argmin of the squared distance) as int32."""
    return (half_sq - scores).argmin(-1).to(torch.int32)


PATHS = distance.PATHS  # which implementation ran where there is a fallback (reported by the benches)
_mm_f32 = distance.mm_f32


def _accumulate(s: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> None:
    """s += h @ w in place; an fp32 stream takes bf16 operands through an fp32-output GEMM (beta = 1)."""
    if s.dtype == h.dtype:
        s.addmm_(h, w)
        return
    if s.is_cuda and PATHS.get("residual_gemm") != "mm_then_add":
        try:
            torch.addmm(s, h, w, out_dtype=torch.float32, out=s)
            PATHS["residual_gemm"] = "addmm_out_dtype_inplace"
            return
        except (TypeError, RuntimeError, NotImplementedError) as exc:
            PATHS["residual_gemm"] = "mm_then_add"
            PATHS["residual_gemm_error"] = f"{type(exc).__name__}: {exc}"[:300]
    s.add_(_mm_f32(h, w))


def _fc1_gelu(y, w1t, b1, epilogue: bool):
    if epilogue:
        return torch._addmm_activation(b1, y, w1t, use_gelu=True)
    return F.gelu(torch.addmm(b1, y, w1t))


# ---------------------------------------------------------------------------------------- the module
@dataclass
class _Block:
    dw_w: torch.Tensor   # [k, D] fp32
    dw_b: torch.Tensor   # [D] fp32
    ln_w: torch.Tensor
    ln_b: torch.Tensor
    eps: float
    w1t: torch.Tensor    # [D, rD] compute dtype (a transposed view, as F.linear uses it)
    b1: torch.Tensor     # [rD] compute dtype
    w2t: torch.Tensor    # [rD, D] layer scale folded in
    b2: torch.Tensor     # [D] fp32, layer scale folded in (added to the deferred shift)


@dataclass
class _Level:
    block: int           # 1-based encoder block after which this level quantizes
    ln_w: torch.Tensor
    ln_b: torch.Tensor
    eps: float
    embed: torch.Tensor  # [K, D] fp32 (gathered for the next level's input)
    right: torch.Tensor  # [D·f, K] GEMM right operand for the distance mode
    half_sq: torch.Tensor  # [K] fp32, ||e||²/2


@dataclass
class FastEncoder:
    """Snapshot of a VQVAE's encoder and codebooks for inference (rebuild after the weights change)."""

    settings: FastEncodeSettings
    compute_dtype: torch.dtype
    stem_table: torch.Tensor
    stem_bias: torch.Tensor
    stem_ln: tuple
    proj_wt: torch.Tensor | None
    proj_b: torch.Tensor
    blocks: list[_Block]
    levels: list[_Level]
    fns: dict = field(default_factory=dict)

    @classmethod
    @torch.no_grad()
    def from_model(cls, model: nn.Module, settings: FastEncodeSettings | None = None,
                   compute_dtype: torch.dtype | None = None) -> "FastEncoder":
        settings = settings or FastEncodeSettings()
        enc = model.encoder
        device = enc.stem.weight.device
        if compute_dtype is None:
            compute_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        cd = compute_dtype
        f32 = dict(device=device, dtype=torch.float32)

        w = enc.stem.weight.float()                          # [S, 4, k]
        table = w.permute(2, 1, 0)                           # [k, 4, S]
        table = torch.cat([table, table.new_zeros(table.shape[0], 1, table.shape[2])], 1).contiguous()
        if isinstance(enc.proj, nn.Linear):
            proj_wt, proj_b = enc.proj.weight.to(cd).t(), enc.proj.bias.float()
        else:
            proj_wt, proj_b = None, torch.zeros(enc.blocks[0].fc1.in_features, **f32)
        blocks = []
        for blk in enc.blocks:
            if isinstance(blk.dwconv, nn.ConvTranspose1d):
                raise ValueError("the fast path covers the encoder only (convolutions, not deconvolutions)")
            gamma = blk.gamma.float() if blk.gamma is not None else torch.ones(blk.fc2.out_features, **f32)
            blocks.append(_Block(
                dw_w=blk.dwconv.weight[:, 0, :].float().t().contiguous(), dw_b=blk.dwconv.bias.float(),
                ln_w=blk.norm.weight.float(), ln_b=blk.norm.bias.float(), eps=blk.norm.eps,
                w1t=blk.fc1.weight.to(cd).t(), b1=blk.fc1.bias.to(cd),
                w2t=(blk.fc2.weight.float() * gamma[:, None]).to(cd).t(),
                b2=blk.fc2.bias.float() * gamma,
            ))
        levels = []
        for tap, norm, cb in zip(enc.taps, enc.tap_norms, model.quantizer.codebooks):
            e = cb.embed.float()
            right = distance.split_right(e, settings.distance)
            levels.append(_Level(block=tap, ln_w=norm.weight.float(), ln_b=norm.bias.float(), eps=norm.eps,
                                 embed=e.contiguous(), right=right, half_sq=0.5 * e.pow(2).sum(1)))
        fast = cls(settings=settings, compute_dtype=cd, stem_table=table, stem_bias=enc.stem.bias.float(),
                   stem_ln=(enc.stem_norm.weight.float(), enc.stem_norm.bias.float(), enc.stem_norm.eps),
                   proj_wt=proj_wt, proj_b=proj_b, blocks=blocks, levels=levels)
        fast._build_fns(device)
        return fast

    def _build_fns(self, device: torch.device) -> None:
        fns = {"stem": _stem, "dwconv_ln": _dwconv_ln, "tap": _tap, "argmin": _argmin}
        if self.settings.compile and device.type == "cuda":
            if not _COMPILED:
                # static shapes: one graph per batch shape, no shape-generic kernels; built once per
                # process so every FastEncoder (each tokenizer, each rebuild) shares the graphs
                _COMPILED.update({k: torch.compile(v, dynamic=False, fullgraph=True) for k, v in fns.items()})
            fns = dict(_COMPILED)
        if self.settings.dwconv_kernel == "triton" and dwconv_ln_triton.triton_available(device):
            fns["dwconv_ln"] = _dwconv_ln_kernel
            PATHS["dwconv_ln"] = "triton"
        else:
            PATHS["dwconv_ln"] = "compiled" if fns["dwconv_ln"] is not _dwconv_ln else "eager"
        self.fns = fns

    @torch.inference_mode()
    def __call__(self, codes: torch.Tensor) -> torch.Tensor:
        """Nucleotide codes [B, L] (0..3, any integer dtype, on the weights' device) -> int32 ids [B, L, levels]."""
        fns, cd = self.fns, self.compute_dtype
        batch, length = codes.shape
        n = batch * length
        y = fns["stem"](codes, self.stem_table, self.stem_bias, *self.stem_ln, cd).reshape(n, -1)
        fp32_stream = self.settings.residual == "fp32"
        if self.proj_wt is None:
            s = y.float() if fp32_stream else y.contiguous()
        else:
            s = _mm_f32(y, self.proj_wt) if fp32_stream else torch.mm(y, self.proj_wt)
        shift = self.proj_b
        out, level_iter = [], iter(self.levels)
        level = next(level_iter)
        prev_ids = prev_embed = None
        for i, blk in enumerate(self.blocks, start=1):
            y = fns["dwconv_ln"](s.view(batch, length, -1), shift, blk.dw_w, blk.dw_b, blk.ln_w, blk.ln_b, blk.eps, cd)
            h = _fc1_gelu(y.reshape(n, -1), blk.w1t, blk.b1, self.settings.gelu_epilogue)
            _accumulate(s, h, blk.w2t)
            shift = shift + blk.b2
            while level is not None and level.block == i:
                x = fns["tap"](s, shift, level.ln_w, level.ln_b, level.eps, prev_ids, prev_embed,
                               self.settings.distance)
                ids = fns["argmin"](_mm_f32(x, level.right), level.half_sq)
                out.append(ids)
                prev_ids, prev_embed = ids, level.embed
                level = next(level_iter, None)
        return torch.stack(out, -1).view(batch, length, len(out))
