"""Forward of depth-wise conv (odd k, stride 1, zero 'same' padding) + LayerNorm as one Triton
kernel: y = LayerNorm_D(b + Σ_j w[j]·x[l − k//2 + j]), channels-last x `[B, L, D]`.

Why a hand-written kernel: Inductor's fused shifted-sum + norm pass ran at ~0.45 TB/s on an H200
(docs/benchmarks.md, Stage-1 tokenizer, third call: 0.92 ms per call at the paper's training batch,
2.9 ns/nt per block of the fast encode path), far below the ~4 TB/s a single read of x and write
of y allows. Here one program owns a tile of BLOCK_L positions of one sequence and every channel:
it reads its rows plus the k−1 halo rows (the k shifted loads of a tile overlap and are served from
L1), accumulates in fp32, normalises the row in registers and writes y once, plus the per-row mean
and 1/std that the hand-written backward of `dwconv_ln.py` uses (it recomputes the conv output).
Windows never cross a sequence boundary: a tile belongs to one sequence and positions outside
[0, L) load as zeros, which is the conv's padding.

`shift` (optional, `[D]`, fp32): added to every in-range input row before the conv — the fast encode
path stores its residual stream without the fc2 biases and adds them on load; padding stays zero,
as in `pad(s + shift)`.

Registered as the custom op `vqdna::dwconv_ln_forward` (with a fake implementation) so
torch.compile keeps it as one opaque call inside a compiled model. CUDA + Triton: the kernel;
everything else: `reference_forward` (plain PyTorch, the same function).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

try:  # Triton ships with CUDA builds of PyTorch; CPU-only installs take the reference path
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None


def triton_available(device: torch.device | str) -> bool:
    dev = device if isinstance(device, torch.device) else torch.device(device)
    return triton is not None and dev.type == "cuda"


def _up(t: Tensor) -> Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def reference_forward(x: Tensor, shift: Tensor | None, w: Tensor, b: Tensor, ln_w: Tensor, ln_b: Tensor,
                      eps: float, out_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """(y, mean, rstd) in plain PyTorch, fp32 (or wider) inside; mean/rstd `[B, L]`."""
    k, length = w.shape[0], x.shape[1]
    xf = _up(x)
    if shift is not None:
        xf = xf + shift
    xp = F.pad(xf, (0, 0, k // 2, k // 2))  # zeros outside, after the shift
    c = _up(b)
    wf = _up(w)
    for j in range(k):  # k taps, not a loop over positions
        c = c + xp[:, j:j + length] * wf[j]
    var, mean = torch.var_mean(c, dim=-1, correction=0)
    rstd = torch.rsqrt(var + eps)
    y = (c - mean[..., None]) * rstd[..., None] * _up(ln_w) + _up(ln_b)
    return y.to(out_dtype), mean, rstd


if triton is not None:

    @triton.jit
    def _dwconv_ln_fwd_kernel(x_ptr, shift_ptr, w_ptr, b_ptr, lnw_ptr, lnb_ptr, y_ptr, mean_ptr, rstd_ptr,
                    L, D, tiles_per_seq, eps,
                    K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
                    HAS_SHIFT: tl.constexpr, STATS: tl.constexpr):
        pid = tl.program_id(0)
        seq = pid // tiles_per_seq
        pos = (pid % tiles_per_seq) * BLOCK_L + tl.arange(0, BLOCK_L)
        cols = tl.arange(0, BLOCK_D)
        col_ok = cols < D
        row0 = seq.to(tl.int64) * L  # first row of this sequence in the [B·L, D] stream (int64: no overflow)
        acc = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
        acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        if HAS_SHIFT:
            shift = tl.load(shift_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        for j in tl.static_range(K):
            src = pos + (j - K // 2)
            m = ((src >= 0) & (src < L))[:, None] & col_ok[None, :]
            xv = tl.load(x_ptr + (row0 + src)[:, None] * D + cols[None, :], mask=m, other=0.0).to(tl.float32)
            if HAS_SHIFT:
                xv = tl.where(m, xv + shift[None, :], 0.0)
            wj = tl.load(w_ptr + j * D + cols, mask=col_ok, other=0.0).to(tl.float32)
            acc += xv * wj[None, :]
        acc = tl.where(col_ok[None, :], acc, 0.0)
        mean = tl.sum(acc, axis=1) / D
        d = tl.where(col_ok[None, :], acc - mean[:, None], 0.0)
        var = tl.sum(d * d, axis=1) / D
        rstd = 1.0 / tl.sqrt(var + eps)
        lnw = tl.load(lnw_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        lnb = tl.load(lnb_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        y = d * rstd[:, None] * lnw[None, :] + lnb[None, :]
        row_ok = pos < L
        rows = row0 + pos
        tl.store(y_ptr + rows[:, None] * D + cols[None, :], y.to(y_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & col_ok[None, :])
        if STATS:
            tl.store(mean_ptr + rows, mean, mask=row_ok)
            tl.store(rstd_ptr + rows, rstd, mask=row_ok)



# (tile rows, warps) candidates: a tile spans all D channels so the row statistics stay in
# registers; which height hides the memory latency best is measured once per shape on the GPU
CANDIDATES = [(bl, nw) for bl in (4, 8, 16, 32) for nw in (4, 8)]
_BEST: dict = {}          # (k, D, L) -> (tile rows, warps)
TUNE_RESULTS: dict = {}   # (k, D, L) -> {"rows x warps": ms}, reported by the bench


def _launch(x, shift, w, b, ln_w, ln_b, y, mean, rstd, eps, block_l: int, num_warps: int, stats: bool) -> None:
    batch, length, dim = x.shape
    tiles = triton.cdiv(length, block_l)
    _dwconv_ln_fwd_kernel[(batch * tiles,)](
        x, shift if shift is not None else b, w, b, ln_w, ln_b, y, mean, rstd, length, dim, tiles, float(eps),
        K=w.shape[0], BLOCK_L=block_l, BLOCK_D=triton.next_power_of_2(dim), HAS_SHIFT=shift is not None,
        STATS=stats, num_warps=num_warps)


def _tune(launch, key) -> tuple[int, int]:
    """Time each candidate on the real tensors (the kernel only reads its inputs); keep the fastest."""
    from triton.testing import do_bench

    times = {}
    for bl, nw in CANDIDATES:
        try:
            times[(bl, nw)] = do_bench(lambda: launch(bl, nw), warmup=5, rep=20)
        except Exception:  # noqa: BLE001 - a candidate that does not compile (registers) is skipped
            continue
    if not times:
        raise RuntimeError("dwconv_ln_forward: no Triton configuration compiled")
    TUNE_RESULTS[key] = {f"{bl}x{nw}": ms for (bl, nw), ms in times.items()}
    return min(times, key=times.get)


def triton_forward(x: Tensor, shift: Tensor | None, w: Tensor, b: Tensor, ln_w: Tensor, ln_b: Tensor,
                   eps: float, out_dtype: torch.dtype, stats: bool = True, block_l: int | None = None,
                   num_warps: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    """The kernel on x `[B, L, D]` (any float dtype, made contiguous). `block_l=None`: on CUDA the
    tile is tuned once per (k, D, L); CPU tensors (Triton's interpreter, in the tests) use 8 rows."""
    batch, length, dim = x.shape
    x, w = x.contiguous(), w.contiguous()
    y = torch.empty((batch, length, dim), device=x.device, dtype=out_dtype)
    mean = torch.empty((batch, length), device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    if x.numel() == 0:
        return y, mean, rstd

    def launch(bl: int, nw: int) -> None:
        _launch(x, shift, w, b, ln_w, ln_b, y, mean, rstd, eps, bl, nw, stats)

    if block_l is None:
        if x.is_cuda:
            key = (w.shape[0], dim, length)
            if key not in _BEST:
                _BEST[key] = _tune(launch, key)
            block_l, num_warps = _BEST[key]
        else:
            block_l = 8
    launch(block_l, num_warps)
    return y, mean, rstd


# ---- custom op: dispatch and fake tensors -------------------------------------------------------

@torch.library.custom_op("vqdna::dwconv_ln_forward", mutates_args=())
def dwconv_ln_forward(x: Tensor, shift: Tensor | None, w: Tensor, b: Tensor, ln_w: Tensor, ln_b: Tensor,
                      eps: float, out_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """(y, mean, rstd): y `[B, L, D]` in out_dtype, mean/rstd fp32 `[B, L]`."""
    if triton_available(x.device):
        return triton_forward(x, shift, w, b, ln_w, ln_b, eps, out_dtype)
    y, mean, rstd = reference_forward(x, shift, w, b, ln_w, ln_b, eps, out_dtype)
    return y, mean.float(), rstd.float()


@dwconv_ln_forward.register_fake
def _(x, shift, w, b, ln_w, ln_b, eps, out_dtype):
    stats = x.new_empty(x.shape[:-1], dtype=torch.float32)
    return x.new_empty(x.shape, dtype=out_dtype), stats, torch.empty_like(stats)
