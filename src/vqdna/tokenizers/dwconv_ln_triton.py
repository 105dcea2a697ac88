"""Forward of depth-wise conv (odd k, stride 1, zero 'same' padding) + LayerNorm as one Triton
kernel: y = LayerNorm_D(b + Σ_j w[j]·x[l − k//2 + j]), channels-last x `[B, L, D]`.

Why a hand-written kernel: Inductor's fused shifted-sum + norm pass ran at ~0.45 TB/s on an H200
(docs/benchmarks.md, Stage-1 tokenizer, third call: 0.92 ms per call at the paper's training batch,
2.9 ns/nt per block of the fast encode path), far below the ~4 TB/s a single read of x and write
of y allows. Two kernels, every program holding all D channels of its rows so that the row
statistics stay in registers; both accumulate in fp32, normalise in registers and write y once,
plus the per-row mean and 1/std that the hand-written backward of `dwconv_ln.py` uses (it
recomputes the conv output):
- 'tile' (s3b call, 1.08 TB/s): a program owns BLOCK_L positions and makes k shifted loads of its
  tile, so each row is loaded k times (the repeats served from L1/L2) and a program's loads are all
  issued at once, then nothing is in flight while it reduces and stores;
- 'strip': a program walks lanes × steps consecutive positions, loading one new row per lane and
  step into a 7-row window kept in registers (each row read once, plus a 6-row halo per lane), with
  the next steps' loads prefetched by Triton's loop pipelining.
Which one (and which tile/strip shape and warps) is measured once per shape and dtype on the GPU.
Windows never cross a sequence boundary: a program's rows belong to one sequence and positions
outside [0, L) load as zeros, which is the conv's padding. x may be strided in its batch and position
dimensions (read in place); the taps `w [k, D]` may be strided too.

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


TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # activations both kernels take


def rows_in_place(t: Tensor) -> Tensor:
    """`[B, L, D]` as the kernels read it: channels contiguous and int32 offsets inside a sequence
    (batch/position strides are read in place), else a contiguous copy."""
    if t.stride(2) != 1 or t.shape[1] * max(t.stride(1), 1) >= 2**31:
        return t.contiguous()
    return t


def _up(t: Tensor) -> Tensor:
    """At least fp32 (bf16 -> fp32; float64 stays float64, for the gradient check)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def shifted_conv(xf: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """c[:, l] = b + Σ_j x[:, l − k//2 + j] · w[j] (zeros outside), in the dtype of its (fp32) inputs."""
    k, length = w.shape[0], xf.shape[1]
    xp = F.pad(xf, (0, 0, k // 2, k // 2))
    c = b
    for j in range(k):  # k taps, not a loop over positions
        c = c + xp[:, j:j + length] * w[j]
    return c


def reference_forward(x: Tensor, shift: Tensor | None, w: Tensor, b: Tensor, ln_w: Tensor, ln_b: Tensor,
                      eps: float, out_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """(y, mean, rstd) in plain PyTorch, fp32 (or wider) inside; mean/rstd `[B, L]`."""
    xf = _up(x)
    if shift is not None:
        xf = xf + shift
    c = shifted_conv(xf, _up(w), _up(b))  # zeros outside, after the shift
    var, mean = torch.var_mean(c, dim=-1, correction=0)
    rstd = torch.rsqrt(var + eps)
    y = (c - mean[..., None]) * rstd[..., None] * _up(ln_w) + _up(ln_b)
    return y.to(out_dtype), mean, rstd


if triton is not None:

    @triton.jit
    def _dwconv_ln_fwd_kernel(x_ptr, shift_ptr, w_ptr, b_ptr, lnw_ptr, lnb_ptr, y_ptr, mean_ptr, rstd_ptr,
                    L, D, stride_xb, stride_xl, stride_wk, stride_wd, tiles_per_seq, eps,
                    K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
                    HAS_SHIFT: tl.constexpr, STATS: tl.constexpr):
        """'tile': one program = BLOCK_L positions, k shifted loads of the tile (halo through L1/L2)."""
        pid = tl.program_id(0)
        seq = pid // tiles_per_seq
        pos = (pid % tiles_per_seq) * BLOCK_L + tl.arange(0, BLOCK_L)
        cols = tl.arange(0, BLOCK_D)
        col_ok = cols < D
        xb = x_ptr + seq.to(tl.int64) * stride_xb  # this sequence's rows (int64: no overflow)
        row0 = seq.to(tl.int64) * L  # first row of this sequence in the contiguous output
        acc = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
        acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        if HAS_SHIFT:
            shift = tl.load(shift_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        for j in tl.static_range(K):
            src = pos + (j - K // 2)
            m = ((src >= 0) & (src < L))[:, None] & col_ok[None, :]
            xv = tl.load(xb + src[:, None] * stride_xl + cols[None, :], mask=m, other=0.0).to(tl.float32)
            if HAS_SHIFT:
                xv = tl.where(m, xv + shift[None, :], 0.0)
            wj = tl.load(w_ptr + j * stride_wk + cols * stride_wd, mask=col_ok, other=0.0).to(tl.float32)
            acc += xv * wj[None, :]
        acc = tl.where(col_ok[None, :], acc, 0.0)
        lnw = tl.load(lnw_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        lnb = tl.load(lnb_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        _ln_store(acc, lnw, lnb, cols, col_ok, pos, L, row0, D, eps, y_ptr, mean_ptr, rstd_ptr, STATS)

    @triton.jit
    def _ln_store(acc, lnw, lnb, cols, col_ok, pos, L, row0, D, eps, y_ptr, mean_ptr, rstd_ptr,
                  STATS: tl.constexpr):
        """LayerNorm over the channels of `acc [rows, BLOCK_D]` (0 in padded channels) at positions
        `pos` of the sequence whose first output row is `row0`; stores y (+ mean, 1/std)."""
        mean = tl.sum(acc, axis=1) / D
        d = tl.where(col_ok[None, :], acc - mean[:, None], 0.0)
        var = tl.sum(d * d, axis=1) / D
        rstd = 1.0 / tl.sqrt(var + eps)
        y = d * rstd[:, None] * lnw[None, :] + lnb[None, :]
        row_ok = pos < L
        rows = row0 + pos
        tl.store(y_ptr + rows[:, None] * D + cols[None, :], y.to(y_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & col_ok[None, :])
        if STATS:
            tl.store(mean_ptr + rows, mean, mask=row_ok)
            tl.store(rstd_ptr + rows, rstd, mask=row_ok)

    @triton.jit
    def _strip_rows(xb, src, L, stride_xl, cols, col_ok, shift, HAS_SHIFT: tl.constexpr):
        """Rows `src` ([ROWS] positions) of one sequence, zeros outside [0, L); with the shift added
        (then fp32), else in the input dtype (bf16 halves the registers the window needs)."""
        m = ((src >= 0) & (src < L))[:, None] & col_ok[None, :]
        v = tl.load(xb + src[:, None] * stride_xl + cols[None, :], mask=m, other=0.0)
        if HAS_SHIFT:
            v = tl.where(m, v.to(tl.float32) + shift[None, :], 0.0)
        return v

    @triton.jit
    def _strip_tap(w_ptr, stride_wk, stride_wd, cols, col_ok, J: tl.constexpr, K: tl.constexpr):
        """Weights of window slot J (row l − 3 + J) as fp32; zero where the k-tap kernel has no such tap (k < 7)."""
        t = cols * 0 + (J - 3 + K // 2)
        ok = col_ok & (t >= 0) & (t < K)
        return tl.load(w_ptr + t * stride_wk + cols * stride_wd, mask=ok, other=0.0).to(tl.float32)

    @triton.jit
    def _strip_conv(bias, x0, x1, x2, x3, x4, x5, x6, w0, w1, w2, w3, w4, w5, w6):
        """bias + Σ_J x_J·w_J over the 7 window slots, in fp32 (the conv output c of the window's
        centre row; the strip forward and the backward's recompute add the same terms in this order)."""
        acc = bias[None, :] + x0.to(tl.float32) * w0[None, :]
        acc += x1.to(tl.float32) * w1[None, :]
        acc += x2.to(tl.float32) * w2[None, :]
        acc += x3.to(tl.float32) * w3[None, :]
        acc += x4.to(tl.float32) * w4[None, :]
        acc += x5.to(tl.float32) * w5[None, :]
        acc += x6.to(tl.float32) * w6[None, :]
        return acc

    @triton.jit
    def _dwconv_ln_fwd_strip_kernel(x_ptr, shift_ptr, w_ptr, b_ptr, lnw_ptr, lnb_ptr, y_ptr, mean_ptr, rstd_ptr,
                    L, D, stride_xb, stride_xl, stride_wk, stride_wd, chunks_per_seq, eps,
                    K: tl.constexpr, ROWS: tl.constexpr, STEPS: tl.constexpr, BLOCK_D: tl.constexpr,
                    HAS_SHIFT: tl.constexpr, STATS: tl.constexpr, NUM_STAGES: tl.constexpr):
        """'strip': one program = ROWS lanes × STEPS consecutive positions of one sequence (lane r starts at
        chunk + r·STEPS). Each step loads ONE new row per lane (x[l + 3]) and shifts a 7-row window kept in
        registers, so every input row is read once per lane plus a 6-row halo per lane of STEPS rows (the
        tile kernel re-loads each row k times). The ROWS lanes make each load and each row reduction
        ROWS rows wide; the load of step i does not depend on the window, so `NUM_STAGES` lets Triton
        prefetch the next steps' rows."""
        pid = tl.program_id(0)
        seq = pid // chunks_per_seq
        start = (pid % chunks_per_seq) * (ROWS * STEPS) + tl.arange(0, ROWS) * STEPS
        cols = tl.arange(0, BLOCK_D)
        col_ok = cols < D
        xb = x_ptr + seq.to(tl.int64) * stride_xb
        row0 = seq.to(tl.int64) * L
        bias = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        lnw = tl.load(lnw_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        lnb = tl.load(lnb_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        shift = bias  # unused unless HAS_SHIFT
        if HAS_SHIFT:
            shift = tl.load(shift_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        w0 = _strip_tap(w_ptr, stride_wk, stride_wd, cols, col_ok, 0, K)
        w1 = _strip_tap(w_ptr, stride_wk, stride_wd, cols, col_ok, 1, K)
        w2 = _strip_tap(w_ptr, stride_wk, stride_wd, cols, col_ok, 2, K)
        w3 = _strip_tap(w_ptr, stride_wk, stride_wd, cols, col_ok, 3, K)
        w4 = _strip_tap(w_ptr, stride_wk, stride_wd, cols, col_ok, 4, K)
        w5 = _strip_tap(w_ptr, stride_wk, stride_wd, cols, col_ok, 5, K)
        w6 = _strip_tap(w_ptr, stride_wk, stride_wd, cols, col_ok, 6, K)
        # window slot j holds row l − 3 + j of the position l about to be computed
        x0 = _strip_rows(xb, start - 3, L, stride_xl, cols, col_ok, shift, HAS_SHIFT)
        x1 = _strip_rows(xb, start - 2, L, stride_xl, cols, col_ok, shift, HAS_SHIFT)
        x2 = _strip_rows(xb, start - 1, L, stride_xl, cols, col_ok, shift, HAS_SHIFT)
        x3 = _strip_rows(xb, start, L, stride_xl, cols, col_ok, shift, HAS_SHIFT)
        x4 = _strip_rows(xb, start + 1, L, stride_xl, cols, col_ok, shift, HAS_SHIFT)
        x5 = _strip_rows(xb, start + 2, L, stride_xl, cols, col_ok, shift, HAS_SHIFT)
        for i in tl.range(0, STEPS, num_stages=NUM_STAGES):
            pos = start + i
            x6 = _strip_rows(xb, pos + 3, L, stride_xl, cols, col_ok, shift, HAS_SHIFT)
            # padded channels: x, w and b load as 0, so acc is 0 there (no mask needed for the mean)
            acc = _strip_conv(bias, x0, x1, x2, x3, x4, x5, x6, w0, w1, w2, w3, w4, w5, w6)
            _ln_store(acc, lnw, lnb, cols, col_ok, pos, L, row0, D, eps, y_ptr, mean_ptr, rstd_ptr, STATS)
            x0 = x1
            x1 = x2
            x2 = x3
            x3 = x4
            x4 = x5
            x5 = x6


# Configurations, ("tile", rows, warps, 1) or ("strip", lanes, steps per lane, warps, stages). Which hides
# the memory latency best is measured once per shape on the GPU (the tile kernel's two best of the s3b
# call stay in the set, so the choice can only get faster); every tile spans all D channels so that
# the row statistics stay in registers.
TILE_CANDIDATES = [("tile", 8, 4, 1), ("tile", 4, 4, 1)]
STRIP_CANDIDATES = [("strip", lanes, steps, warps, stages)
                    for lanes, steps, warps, stages in ((1, 32, 4, 3), (2, 32, 4, 3), (4, 16, 4, 3), (4, 32, 4, 3),
                                                        (4, 64, 4, 3), (4, 32, 4, 1), (8, 32, 8, 2), (2, 64, 2, 3))]
CANDIDATES = TILE_CANDIDATES + STRIP_CANDIDATES
STRIP_MAX_K = 7   # the strip kernel's window has 7 slots
_BEST: dict = {}          # tune key -> configuration
TUNE_RESULTS: dict = {}   # tune key -> {config name: ms}, reported by the bench


def config_name(cfg: tuple) -> str:
    """Forward ('tile', 'strip') and backward ('bwd', `dwconv_ln_bwd_triton.py`) configurations."""
    if cfg[0] == "tile":
        return f"tile {cfg[1]} rows x {cfg[2]} warps"
    name = f"strip {cfg[1]} lanes x {cfg[2]} steps, {cfg[3]} warps, {cfg[4]} stages"
    if cfg[0] == "bwd":
        return f"bwd {name}, {cfg[5]} programs/SM{', prefetch' if cfg[6] else ''}"
    return name


def rows_bucket(x: Tensor) -> int:
    """The total row count of x `[B, L, D]` rounded up to a power of two (see `tune_key`)."""
    return 1 << max(x.shape[0] * x.shape[1] - 1, 0).bit_length()


def tune_key(x: Tensor, w: Tensor, shift: Tensor | None, out_dtype: torch.dtype, stats: bool) -> tuple:
    """What the choice is measured per: the total row count (rounded up to a power of two) is part of
    it because the best configuration depends on how many programs fill the GPU — without it, the
    training step tuned on the 256-window batch of the codebook initialisation and kept that choice
    for the 1024-window steps (s3c call: 0.086 ms there, 0.37 ms at the real batch)."""
    return (w.shape[0], x.shape[2], x.shape[1], rows_bucket(x), x.dtype, out_dtype, shift is not None, stats)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def key_name(key: tuple) -> str:
    if key[0] == "bwd":  # dwconv_ln_bwd_triton.tune_key
        _, k, dim, length, rows, x_dtype, dy_dtype = key
        return f"backward k={k} D={dim} L={length} rows<={rows} x {_dtype_name(x_dtype)}, dy {_dtype_name(dy_dtype)}"
    k, dim, length, rows, x_dtype, out_dtype, has_shift, stats = key
    return (f"k={k} D={dim} L={length} rows<={rows} {_dtype_name(x_dtype)}->"
            f"{_dtype_name(out_dtype)}{' +shift' if has_shift else ''}{' +stats' if stats else ''}")


def _launch(x, shift, w, b, ln_w, ln_b, y, mean, rstd, eps, cfg: tuple, stats: bool) -> None:
    batch, length, dim = x.shape
    k = w.shape[0]
    common = (x, shift if shift is not None else b, w, b, ln_w, ln_b, y, mean, rstd, length, dim,
              x.stride(0), x.stride(1), w.stride(0), w.stride(1))
    block_d = triton.next_power_of_2(dim)
    if cfg[0] == "tile":
        _, block_l, num_warps, _ = cfg
        tiles = triton.cdiv(length, block_l)
        _dwconv_ln_fwd_kernel[(batch * tiles,)](
            *common, tiles, float(eps), K=k, BLOCK_L=block_l, BLOCK_D=block_d, HAS_SHIFT=shift is not None,
            STATS=stats, num_warps=num_warps)
    else:
        _, lanes, steps, num_warps, stages = cfg
        if k > STRIP_MAX_K or k % 2 == 0:
            raise ValueError(f"strip kernel: odd k <= {STRIP_MAX_K} only, got {k}")
        chunks = triton.cdiv(length, lanes * steps)
        _dwconv_ln_fwd_strip_kernel[(batch * chunks,)](
            *common, chunks, float(eps), K=k, ROWS=lanes, STEPS=steps, BLOCK_D=block_d,
            HAS_SHIFT=shift is not None, STATS=stats, NUM_STAGES=stages, num_warps=num_warps)


def _candidates(k: int, length: int) -> list[tuple]:
    strips = [c for c in STRIP_CANDIDATES if k <= STRIP_MAX_K and k % 2 == 1
              and c[1] * c[2] <= max(length, 16) * 2]  # no chunk mostly past the sequence's end
    return TILE_CANDIDATES + strips


def _tune(launch, outputs, key, candidates, reference: tuple | None = None) -> tuple:
    """Time each candidate on the real tensors (the kernels only read their inputs); keep the fastest
    whose outputs match the reference configuration's — by default the first tile configuration
    (a guard against a configuration the compiler gets wrong on this GPU: both forward kernels add the
    same fp32 terms in the same order). Shared by the forward and the backward (`dwconv_ln_bwd_triton`)."""
    from triton.testing import do_bench

    times = {}
    for cfg in candidates:
        try:
            times[cfg] = do_bench(lambda: launch(cfg), warmup=5, rep=20)
        except Exception:  # noqa: BLE001 - a candidate that does not compile (registers, shared memory) is skipped
            continue
    if not times:
        raise RuntimeError(f"dwconv_ln ({key_name(key)}): no Triton configuration compiled")
    TUNE_RESULTS[key] = {config_name(cfg): ms for cfg, ms in times.items()}
    ref_cfg = next((c for c in candidates if (c == reference if reference else c[0] == "tile") and c in times),
                   None)
    if ref_cfg is None:
        return min(times, key=times.get)
    launch(ref_cfg)
    ref = [t.float() for t in outputs]
    for cfg in sorted(times, key=times.get):
        launch(cfg)
        if all(torch.allclose(t.float(), r, atol=2e-2, rtol=2e-2) for t, r in zip(outputs, ref)):
            return cfg
        TUNE_RESULTS[key][config_name(cfg)] = f"rejected: outputs differ from {config_name(ref_cfg)}"
    return ref_cfg


def triton_forward(x: Tensor, shift: Tensor | None, w: Tensor, b: Tensor, ln_w: Tensor, ln_b: Tensor,
                   eps: float, out_dtype: torch.dtype, stats: bool = True, block_l: int | None = None,
                   num_warps: int = 4, config: tuple | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The kernel on x `[B, L, D]` (any float dtype; strided batch/position dims are read in place, only
    a non-unit channel stride is copied). `block_l` forces the tile kernel with that many rows,
    `config` any configuration of `CANDIDATES`; neither: on CUDA the fastest candidate is measured once
    per shape, dtype and variant; CPU tensors (Triton's interpreter, in the tests) take a small strip."""
    batch, length, dim = x.shape
    x = rows_in_place(x)
    y = torch.empty((batch, length, dim), device=x.device, dtype=out_dtype)
    mean = torch.empty((batch, length), device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    if x.numel() == 0:
        return y, mean, rstd

    def launch(cfg: tuple) -> None:
        _launch(x, shift, w, b, ln_w, ln_b, y, mean, rstd, eps, cfg, stats)

    if block_l is not None:
        config = ("tile", block_l, num_warps, 1)
    if config is None:
        k = w.shape[0]
        if x.is_cuda:
            key = tune_key(x, w, shift, out_dtype, stats)
            if key not in _BEST:
                _BEST[key] = _tune(launch, (y, mean, rstd) if stats else (y,), key, _candidates(k, length))
            config = _BEST[key]
        else:
            config = ("strip", 2, 4, 4, 1) if k <= STRIP_MAX_K and k % 2 == 1 else ("tile", 8, 4, 1)
    launch(config)
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
