"""The qkv projection's bias + RoPE on q and k as one op, and its backward as one pass.

`rope_qkv(qkv, bias, cos, sin) -> (q, k, v)` with `qkv [B, T, 3, heads, d]` the projection's
output without its bias: `q = rope(qkv[:, :, 0] + b_q)`, `k = rope(qkv[:, :, 1] + b_k)`,
`v = qkv[:, :, 2] + b_v`, each `[B, T, heads, d]` (rotate-half RoPE as
`positions.apply_rope`). Why one op: written by autograd, the forward reads q and k and writes
them rotated, and the backward assembles the qkv gradient from SDPA's dq, dk, dv in two passes
(inverse rotation with a stack into a zero-filled [B, T, 3, heads, d], then the add with dv's
slice) plus a third that sums the bias gradient (~5.4 ms a step at BERT-base size in session 4's
profile). Here the backward reads dq, dk, dv once and writes the qkv gradient once, with the
bias gradient as per-program partial sums of the same pass. The bias is taken out of the
projection's GEMM for that (its gradient would otherwise be a reduction of the GEMM's backward);
the price is that v is written by the op instead of being a view of the projection's output.

q, k and v come out as three `[B, T, heads, d]` tensors (`LAYOUT = "bthd"`; the token-major order
the projection writes, SDPA gets transposed views as before) or `[B, heads, T, d]` (`"bhtd"`, SDPA's
logical order, contiguous); both are timed by the bench. Registered as the custom op
`vqdna::rope_qkv` (+ `_backward`) with fake implementations and an autograd formula, so
torch.compile keeps each as one opaque call and CUDA graphs capture it. CUDA with Triton: the
Triton kernels; elsewhere the same math in PyTorch (`reference_*`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import partial_sums
from .launch_shapes import persistent_grid, tiles_setter
from .fused_norm import MAX_ELEMENTS, triton, triton_available

if triton is not None:
    import triton.language as tl

# memory order of the q, k, v outputs (see the module docstring)
LAYOUT = "bthd"
# launch shapes: rows (tokens) a program / a loop iteration, warps, persistent backward programs
# per multiprocessor. Defaults: the fastest of the bench's --rope-sweep on an H200 at
# [256, 256, 3, 12, 64] bf16 (session 5): forward 2x4 151 us (1x2 154, 4x4 160, 4x8 173; the
# traffic floor at 4 TB/s is 151 us), backward 2x4x4 214 us (2x4x8 216, 4x8x4 221, 1x2x8 243,
# 1x4x8 319). Session 6 (bench/norm_rope_bwd_check.py, GPU time in a CUDA graph, finish
# included): backward 204.8 us with session 5's kernel (2x4x4), 170.2 us with dq, dk, dv loaded
# before the first store, 165.4 us with that at 4x8x2 (the default; 2x4x8 172.6, 1x2x8 185.5,
# 1x2x16 187.1); pipelining the loop (bwd_stages 2-3) did not help (175.1-180.5)
TILES = {"fwd_rows": 2, "fwd_warps": 4, "bwd_rows": 4, "bwd_warps": 8, "bwd_progs_per_sm": 2,
         # when the backward kernel issues its loads (the comment in _rope_bwd_kernel): the row
         # loop's num_stages (1 = not pipelined) and whether dq, dk, dv are all loaded before the
         # first store (0 = slot by slot: session 5)
         "bwd_stages": 1, "bwd_loads_first": 1}


set_tiles = tiles_setter(TILES)  # set_tiles(**changes) -> the previous launch shape


def applies(batch: int, length: int, heads: int, head_dim: int) -> bool:
    """Shapes the op takes: an even head dim (rotate-half) and int32 element offsets."""
    return head_dim % 2 == 0 and batch * length * 3 * heads * head_dim <= MAX_ELEMENTS


def _out_shape_strides(B, T, nh, d, layout):
    if layout == "bthd":
        return (B, T, nh, d), (T * nh * d, nh * d, d, 1)
    return (B, T, nh, d), (nh * T * d, d, T * d, 1)  # [B, heads, T, d] memory, [B, T, heads, d] view


def _empty_out(qkv: Tensor, layout: str) -> Tensor:
    B, T, _, nh, d = qkv.shape
    shape, stride = _out_shape_strides(B, T, nh, d, layout)
    return torch.empty_strided(shape, stride, dtype=qkv.dtype, device=qkv.device)


# ---- reference (CPU / no Triton) ------------------------------------------------------------

def _rotate(x1: Tensor, x2: Tensor, c1, c2, s1, s2) -> tuple[Tensor, Tensor]:
    # x * cos + cat(-x2, x1) * sin, by halves
    return x1 * c1 - x2 * s1, x2 * c2 + x1 * s2


def _halves(t: Tensor) -> tuple[Tensor, Tensor]:
    half = t.shape[-1] // 2
    return t[..., :half], t[..., half:]


def _tables(cos: Tensor, sin: Tensor) -> tuple[Tensor, ...]:
    """cos/sin `[T, d]` halves, shaped `[T, 1, half]` against `[B, T, heads, half]`, fp32."""
    c1, c2 = _halves(cos.float()[:, None])
    s1, s2 = _halves(sin.float()[:, None])
    return c1, c2, s1, s2


def reference_forward(qkv: Tensor, bias: Tensor | None, cos: Tensor, sin: Tensor, layout: str = "bthd"):
    B, T, _, nh, d = qkv.shape
    x = qkv.float()
    if bias is not None:
        x = x + bias.float().view(3, nh, d)
    c1, c2, s1, s2 = _tables(cos, sin)
    outs = []
    for slot in range(3):
        x1, x2 = _halves(x[:, :, slot])
        o = torch.cat(_rotate(x1, x2, c1, c2, s1, s2), dim=-1) if slot < 2 else x[:, :, 2]
        out = _empty_out(qkv, layout)
        out.copy_(o)
        outs.append(out)
    return tuple(outs)


def reference_backward(dq: Tensor, dk: Tensor, dv: Tensor, cos: Tensor, sin: Tensor, bias_dtype: torch.dtype | None):
    c1, c2, s1, s2 = _tables(cos, sin)
    grads = []
    for g in (dq, dk):
        g1, g2 = _halves(g.float())
        # the transpose of the rotation
        grads.append(torch.cat([g1 * c1 + g2 * s2, g2 * c2 - g1 * s1], dim=-1))
    grads.append(dv.float())
    dqkv = torch.stack(grads, dim=2)  # [B, T, 3, heads, d], fp32
    width = dqkv.shape[2] * dqkv.shape[3] * dqkv.shape[4]
    dbias = (dqkv.reshape(-1, width).sum(0).to(bias_dtype) if bias_dtype is not None
             else dq.new_empty(0))
    return dqkv.to(dq.dtype), dbias


# ---- Triton kernels (CUDA) ------------------------------------------------------------------

if triton is not None:
    # A token's row of q (or k, v) is a [heads, d] tile loaded as two [heads, d/2] halves (the
    # rotate-half pairs), heads padded to a power of two (12 -> 16: masked lanes, no traffic).

    @triton.jit
    def _rope_fwd_kernel(qkv_ptr, b_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, v_ptr, n_rows, T,
                         o_sb, o_st, o_sh,
                         NH: tl.constexpr, D: tl.constexpr, NHP: tl.constexpr, HALFP: tl.constexpr,
                         HALF: tl.constexpr, BLOCK_R: tl.constexpr, HAS_BIAS: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        heads = tl.arange(0, NHP)
        i = tl.arange(0, HALFP)
        col = heads[:, None] * D + i[None, :]  # [NHP, HALFP], first half of each head
        col_ok = (heads < NH)[:, None] & (i < HALF)[None, :]
        ok = (rows < n_rows)[:, None, None] & col_ok[None, :, :]
        t = rows % T
        b = rows // T
        tab = (t * D)[:, None, None] + i[None, None, :]
        tab_ok = (rows < n_rows)[:, None, None] & (i < HALF)[None, None, :]
        c1 = tl.load(cos_ptr + tab, mask=tab_ok, other=0.0).to(tl.float32)
        c2 = tl.load(cos_ptr + tab + HALF, mask=tab_ok, other=0.0).to(tl.float32)
        s1 = tl.load(sin_ptr + tab, mask=tab_ok, other=0.0).to(tl.float32)
        s2 = tl.load(sin_ptr + tab + HALF, mask=tab_ok, other=0.0).to(tl.float32)
        src = (rows * (3 * NH * D))[:, None, None] + col[None, :, :]
        dst = (b * o_sb + t * o_st)[:, None, None] + (heads[:, None] * o_sh + i[None, :])[None, :, :]
        for slot in tl.static_range(3):
            x1 = tl.load(qkv_ptr + src + slot * NH * D, mask=ok, other=0.0).to(tl.float32)
            x2 = tl.load(qkv_ptr + src + slot * NH * D + HALF, mask=ok, other=0.0).to(tl.float32)
            if HAS_BIAS:
                x1 += tl.load(b_ptr + slot * NH * D + col, mask=col_ok, other=0.0).to(tl.float32)[None, :, :]
                x2 += tl.load(b_ptr + slot * NH * D + col + HALF, mask=col_ok, other=0.0).to(tl.float32)[None, :, :]
            if slot == 0:
                tl.store(q_ptr + dst, (x1 * c1 - x2 * s1).to(q_ptr.dtype.element_ty), mask=ok)
                tl.store(q_ptr + dst + HALF, (x2 * c2 + x1 * s2).to(q_ptr.dtype.element_ty), mask=ok)
            elif slot == 1:
                tl.store(k_ptr + dst, (x1 * c1 - x2 * s1).to(k_ptr.dtype.element_ty), mask=ok)
                tl.store(k_ptr + dst + HALF, (x2 * c2 + x1 * s2).to(k_ptr.dtype.element_ty), mask=ok)
            else:
                tl.store(v_ptr + dst, x1.to(v_ptr.dtype.element_ty), mask=ok)
                tl.store(v_ptr + dst + HALF, x2.to(v_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _rope_bwd_load(g_ptr, sb, st, sh, b, t, heads, i, ok, HALF: tl.constexpr):
        off = (b * sb + t * st)[:, None, None] + (heads[:, None] * sh + i[None, :])[None, :, :]
        return tl.load(g_ptr + off, mask=ok, other=0.0), tl.load(g_ptr + off + HALF, mask=ok, other=0.0)

    @triton.jit
    def _rope_bwd_turn(g1, g2, c1, c2, s1, s2, ROTATE: tl.constexpr):
        g1 = g1.to(tl.float32)
        g2 = g2.to(tl.float32)
        if ROTATE:
            return g1 * c1 + g2 * s2, g2 * c2 - g1 * s1
        return g1, g2

    @triton.jit
    def _rope_bwd_store(dqkv_ptr, dst, x1, x2, ok, HALF: tl.constexpr):
        tl.store(dqkv_ptr + dst, x1.to(dqkv_ptr.dtype.element_ty), mask=ok)
        tl.store(dqkv_ptr + dst + HALF, x2.to(dqkv_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _rope_bwd_kernel(dq_ptr, dk_ptr, dv_ptr, cos_ptr, sin_ptr, dqkv_ptr, db_ptr, n_rows, T, rows_per_prog,
                         q_sb, q_st, q_sh, k_sb, k_st, k_sh, v_sb, v_st, v_sh,
                         NH: tl.constexpr, D: tl.constexpr, NHP: tl.constexpr, HALFP: tl.constexpr,
                         HALF: tl.constexpr, BLOCK_R: tl.constexpr, HAS_BIAS: tl.constexpr,
                         STAGES: tl.constexpr, LOADS_FIRST: tl.constexpr):
        # persistent programs over stripes of rows; the bias-gradient partial sums stay register
        # tiles, reduced over rows once at the end. Loads in flight (see TILES): LOADS_FIRST
        # issues the loads of dq, dk and dv before the first store (otherwise each slot's loads
        # follow the previous slot's stores, which the compiler cannot move them above: they may
        # alias); STAGES > 1 lets Triton's pipeliner stage the next rows' loads through shared
        # memory. Same arithmetic either way.
        pid = tl.program_id(0)
        heads = tl.arange(0, NHP)
        i = tl.arange(0, HALFP)
        col = heads[:, None] * D + i[None, :]
        col_ok = (heads < NH)[:, None] & (i < HALF)[None, :]
        aq1 = tl.zeros([BLOCK_R, NHP, HALFP], dtype=tl.float32)
        aq2 = tl.zeros([BLOCK_R, NHP, HALFP], dtype=tl.float32)
        ak1 = tl.zeros([BLOCK_R, NHP, HALFP], dtype=tl.float32)
        ak2 = tl.zeros([BLOCK_R, NHP, HALFP], dtype=tl.float32)
        av1 = tl.zeros([BLOCK_R, NHP, HALFP], dtype=tl.float32)
        av2 = tl.zeros([BLOCK_R, NHP, HALFP], dtype=tl.float32)
        first = pid * rows_per_prog
        end = tl.minimum(first + rows_per_prog, n_rows)
        for r0 in tl.range(first, end, BLOCK_R, num_stages=STAGES):
            rows = r0 + tl.arange(0, BLOCK_R)
            row_ok = rows < end
            ok = row_ok[:, None, None] & col_ok[None, :, :]
            t = rows % T
            b = rows // T
            tab = (t * D)[:, None, None] + i[None, None, :]
            tab_ok = row_ok[:, None, None] & (i < HALF)[None, None, :]
            if LOADS_FIRST:
                gq1, gq2 = _rope_bwd_load(dq_ptr, q_sb, q_st, q_sh, b, t, heads, i, ok, HALF)
                gk1, gk2 = _rope_bwd_load(dk_ptr, k_sb, k_st, k_sh, b, t, heads, i, ok, HALF)
                gv1, gv2 = _rope_bwd_load(dv_ptr, v_sb, v_st, v_sh, b, t, heads, i, ok, HALF)
            c1 = tl.load(cos_ptr + tab, mask=tab_ok, other=0.0).to(tl.float32)
            c2 = tl.load(cos_ptr + tab + HALF, mask=tab_ok, other=0.0).to(tl.float32)
            s1 = tl.load(sin_ptr + tab, mask=tab_ok, other=0.0).to(tl.float32)
            s2 = tl.load(sin_ptr + tab + HALF, mask=tab_ok, other=0.0).to(tl.float32)
            dst = (rows * (3 * NH * D))[:, None, None] + col[None, :, :]
            if not LOADS_FIRST:
                gq1, gq2 = _rope_bwd_load(dq_ptr, q_sb, q_st, q_sh, b, t, heads, i, ok, HALF)
            q1, q2 = _rope_bwd_turn(gq1, gq2, c1, c2, s1, s2, True)
            _rope_bwd_store(dqkv_ptr, dst, q1, q2, ok, HALF)
            if not LOADS_FIRST:
                gk1, gk2 = _rope_bwd_load(dk_ptr, k_sb, k_st, k_sh, b, t, heads, i, ok, HALF)
            k1, k2 = _rope_bwd_turn(gk1, gk2, c1, c2, s1, s2, True)
            _rope_bwd_store(dqkv_ptr, dst + NH * D, k1, k2, ok, HALF)
            if not LOADS_FIRST:
                gv1, gv2 = _rope_bwd_load(dv_ptr, v_sb, v_st, v_sh, b, t, heads, i, ok, HALF)
            v1, v2 = _rope_bwd_turn(gv1, gv2, c1, c2, s1, s2, False)
            _rope_bwd_store(dqkv_ptr, dst + 2 * NH * D, v1, v2, ok, HALF)
            if HAS_BIAS:
                aq1 += q1
                aq2 += q2
                ak1 += k1
                ak2 += k2
                av1 += v1
                av2 += v2
        if HAS_BIAS:
            base = db_ptr + pid * (3 * NH * D) + col
            tl.store(base, tl.sum(aq1, axis=0), mask=col_ok)
            tl.store(base + HALF, tl.sum(aq2, axis=0), mask=col_ok)
            tl.store(base + NH * D, tl.sum(ak1, axis=0), mask=col_ok)
            tl.store(base + NH * D + HALF, tl.sum(ak2, axis=0), mask=col_ok)
            tl.store(base + 2 * NH * D, tl.sum(av1, axis=0), mask=col_ok)
            tl.store(base + 2 * NH * D + HALF, tl.sum(av2, axis=0), mask=col_ok)


def _pads(nh: int, d: int) -> tuple[int, int]:
    return triton.next_power_of_2(nh), triton.next_power_of_2(d // 2)


def triton_forward(qkv: Tensor, bias: Tensor | None, cos: Tensor, sin: Tensor, layout: str = "bthd"):
    B, T, _, nh, d = qkv.shape
    qkv = qkv.contiguous()
    cos, sin = cos.contiguous(), sin.contiguous()
    q, k, v = (_empty_out(qkv, layout) for _ in range(3))
    N = B * T
    nhp, halfp = _pads(nh, d)
    block_r = TILES["fwd_rows"]
    sb, st, sh, _ = q.stride()
    _rope_fwd_kernel[(triton.cdiv(N, block_r),)](
        qkv, bias if bias is not None else qkv, cos, sin, q, k, v, N, T, sb, st, sh,
        NH=nh, D=d, NHP=nhp, HALFP=halfp, HALF=d // 2, BLOCK_R=block_r, HAS_BIAS=bias is not None,
        num_warps=TILES["fwd_warps"])
    return q, k, v


def triton_backward(dq: Tensor, dk: Tensor, dv: Tensor, cos: Tensor, sin: Tensor, bias_dtype: torch.dtype | None):
    # any strides SDPA hands back, as long as the head dim is contiguous
    dq, dk, dv = (g if g.stride(-1) == 1 else g.contiguous() for g in (dq, dk, dv))
    B, T, nh, d = dq.shape
    cos, sin = cos.contiguous(), sin.contiguous()
    N = B * T
    dqkv = torch.empty((B, T, 3, nh, d), device=dq.device, dtype=dq.dtype)
    nhp, halfp = _pads(nh, d)
    block_r = TILES["bwd_rows"]
    n_prog, rows_per_prog = persistent_grid(N, block_r, TILES["bwd_progs_per_sm"], dq.device)
    has_bias = bias_dtype is not None
    part = torch.empty((n_prog, 3 * nh * d) if has_bias else (1,), device=dq.device, dtype=torch.float32)
    _rope_bwd_kernel[(n_prog,)](
        dq, dk, dv, cos, sin, dqkv, part, N, T, rows_per_prog,
        dq.stride(0), dq.stride(1), dq.stride(2), dk.stride(0), dk.stride(1), dk.stride(2),
        dv.stride(0), dv.stride(1), dv.stride(2),
        NH=nh, D=d, NHP=nhp, HALFP=halfp, HALF=d // 2, BLOCK_R=block_r, HAS_BIAS=has_bias,
        STAGES=TILES["bwd_stages"], LOADS_FIRST=TILES["bwd_loads_first"] > 0, num_warps=TILES["bwd_warps"])
    dbias = partial_sums.column_sums(part.view(n_prog, 1, -1), (bias_dtype,))[0] if has_bias else dqkv.new_empty(0)
    return dqkv, dbias


# ---- custom ops -------------------------------------------------------------------------------

@torch.library.custom_op("vqdna::rope_qkv", mutates_args=())
def _op_forward(qkv: Tensor, bias: Tensor | None, cos: Tensor, sin: Tensor, layout: str
                ) -> tuple[Tensor, Tensor, Tensor]:
    if triton_available(qkv.device):
        return triton_forward(qkv, bias, cos, sin, layout)
    return reference_forward(qkv, bias, cos, sin, layout)


@_op_forward.register_fake
def _(qkv, bias, cos, sin, layout):
    return tuple(_empty_out(qkv, layout) for _ in range(3))


@torch.library.custom_op("vqdna::rope_qkv_backward", mutates_args=())
def _op_backward(dq: Tensor, dk: Tensor, dv: Tensor, cos: Tensor, sin: Tensor, bias_dtype: torch.dtype | None
                 ) -> tuple[Tensor, Tensor]:
    if triton_available(dq.device):
        return triton_backward(dq, dk, dv, cos, sin, bias_dtype)
    return reference_backward(dq, dk, dv, cos, sin, bias_dtype)


@_op_backward.register_fake
def _(dq, dk, dv, cos, sin, bias_dtype):
    B, T, nh, d = dq.shape
    dbias = dq.new_empty(3 * nh * d, dtype=bias_dtype) if bias_dtype is not None else dq.new_empty(0)
    return dq.new_empty((B, T, 3, nh, d)), dbias


def _setup_context(ctx, inputs, output):
    qkv, bias, cos, sin, layout = inputs
    ctx.save_for_backward(cos, sin)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _autograd_backward(ctx, dq, dk, dv):
    cos, sin = ctx.saved_tensors
    # an output nobody used has no gradient: zeros of its shape (never in the model: q, k and v
    # all reach SDPA)
    ref = next(g for g in (dq, dk, dv) if g is not None)
    dq, dk, dv = (torch.zeros_like(ref) if g is None else g for g in (dq, dk, dv))
    dqkv, dbias = _op_backward(dq, dk, dv, cos, sin, ctx.bias_dtype)
    return dqkv, (dbias if ctx.bias_dtype is not None else None), None, None, None


_op_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def rope_qkv(qkv: Tensor, bias: Tensor | None, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v `[B, T, heads, d]` of `qkv [B, T, 3, heads, d]` (the projection's output without
    its bias) and the projection's `bias [3 * heads * d]`: RoPE (`cos`/`sin [T, d]`, as
    `positions.rope_tables`) on q and k. Same function as adding the bias, then
    `positions.apply_rope` on q and k (the tables taken in qkv's dtype, as apply_rope does),
    computed in fp32 and rounded once."""
    if qkv.dim() != 5 or qkv.shape[2] != 3:
        raise ValueError(f"rope_qkv: qkv must be [B, T, 3, heads, d], not {tuple(qkv.shape)}")
    T, d = qkv.shape[1], qkv.shape[-1]
    cos, sin = cos[:T].to(qkv.dtype), sin[:T].to(qkv.dtype)
    if cos.shape != (T, d) or sin.shape != (T, d):
        raise ValueError(f"rope_qkv: tables must be [T, d] = {(T, d)}, not {tuple(cos.shape)}")
    return _op_forward(qkv, bias, cos, sin, LAYOUT)
