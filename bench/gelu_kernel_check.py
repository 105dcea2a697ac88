"""The fused fc1-bias + GELU op (vqdna.models.fused_gelu) on a GPU at the stage-2 training shape
([65536 x 3072] bf16: batch 256 x length 256, BERT-base FFN) against what torch.compile (Inductor)
generates for the same work, and against float64. Writes $OUT/gelu_kernel_check.json as it goes.

  kernels   ours: forward (h0, b -> a) and backward (da, h0, b -> dh0, db); Inductor: the forward
            of the training graph (h already holds the bias, cuBLAS epilogue: GELU(h)) and of
            F.gelu(h0 + b), the backward the training graph runs (GELU(h) recomputed for fc2's
            weight gradient, dh = da * GELU'(h), db = column sums of dh) and the same without the
            recompute; controls: our kernels' layout with the erf/exp arithmetic left out (a = h0 + b;
            dh0 = da * (h0 + b)), the memory-traffic time of the same bytes
  sweep     every launch shape of FWD_TILES / BWD_TILES (time, error); the defaults kept unless --install
  errors    ours and Inductor's bf16 results against float64 (relative 2-norm, max |err| / max |ref|)
  mlp       fc1 -> GELU -> fc2 fwd+bwd at x [65536 x 768] bf16 through torch.compile, fused_gelu on
            and off: time, activation memory kept for backward, peak memory
Run:
    PYTHONPATH=src OUT=<dir> python3 bench/gelu_kernel_check.py [--quick]
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, "src")
try:
    from vqdna.models import fused_gelu as fg
except Exception as exc:  # noqa: BLE001 - the package may be mid-edit by others; the op module stands alone
    print("vqdna.models import failed, loading fused_gelu.py by path:", repr(exc)[:200], flush=True)
    fg = sys.modules.get("vqdna.models.fused_gelu")
    if fg is None:
        spec = importlib.util.spec_from_file_location("fused_gelu", "src/vqdna/models/fused_gelu.py")
        fg = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fg)

import triton
import triton.language as tl
from triton.testing import do_bench

OUT = os.environ.get("OUT", "/tmp/out")
os.makedirs(OUT, exist_ok=True)
N, H, D = 65536, 3072, 768
BF16 = torch.bfloat16
# (rows, cols, warps) / (rows, cols, warps, rows_per_stripe)
FWD_TILES = [(16, 256, 4), (8, 512, 4), (16, 512, 8), (32, 256, 8), (4, 1024, 4), (8, 1024, 8), (32, 128, 4),
             (64, 256, 8), (8, 256, 2)]
BWD_TILES = [(16, 256, 4, 256), (16, 256, 4, 128), (16, 256, 4, 512), (8, 512, 4, 256), (16, 512, 8, 256),
             (32, 256, 8, 256), (8, 256, 2, 128), (32, 128, 4, 256), (16, 256, 8, 256), (16, 256, 4, 16),
             (4, 1024, 4, 128)]



# controls: the op's kernels with the GELU arithmetic taken out (same loads, stores, layout and
# partial sums), to tell the memory-traffic time from the erf/exp arithmetic's
@triton.jit
def _fwd_control(h_ptr, b_ptr, a_ptr, n_rows, n_cols, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    b = tl.load(b_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
    m = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    offs = rows[:, None] * n_cols + cols[None, :]
    z = tl.load(h_ptr + offs, mask=m, other=0.0).to(tl.float32) + b[None, :]
    tl.store(a_ptr + offs, z.to(a_ptr.dtype.element_ty), mask=m)


@triton.jit
def _bwd_control(da_ptr, h_ptr, b_ptr, dh_ptr, db_ptr, n_rows, n_cols,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ITERS: tl.constexpr):
    stripe = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    b = tl.load(b_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for i in range(ITERS):
        rows = (stripe * ITERS + i) * BLOCK_M + tl.arange(0, BLOCK_M)
        m = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
        offs = rows[:, None] * n_cols + cols[None, :]
        z = tl.load(h_ptr + offs, mask=m, other=0.0).to(tl.float32) + b[None, :]
        dz = tl.load(da_ptr + offs, mask=m, other=0.0).to(tl.float32) * z
        tl.store(dh_ptr + offs, dz.to(dh_ptr.dtype.element_ty), mask=m)
        acc += dz
    tl.store(db_ptr + stripe * n_cols + cols, tl.sum(acc, axis=0), mask=cols < n_cols)


def control_forward(h0, b):
    T = fg.TILES
    a = torch.empty_like(h0)
    bn = min(T["fwd_cols"], triton.next_power_of_2(H))
    _fwd_control[(triton.cdiv(N, T["fwd_rows"]), triton.cdiv(H, bn))](
        h0, b, a, N, H, BLOCK_M=T["fwd_rows"], BLOCK_N=bn, num_warps=T["fwd_warps"])
    return a


def control_backward(da, h0, b):
    T = fg.TILES
    bm, bn = T["bwd_rows"], min(T["bwd_cols"], triton.next_power_of_2(H))
    iters, stripes = fg._backward_grid(N, bm)
    dh = torch.empty_like(h0)
    part = torch.empty((stripes, H), device=h0.device, dtype=torch.float32)
    _bwd_control[(stripes, triton.cdiv(H, bn))](da, h0, b, dh, part, N, H, BLOCK_M=bm, BLOCK_N=bn, ITERS=iters,
                                                num_warps=T["bwd_warps"])
    return dh, part.sum(0)


res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "shape": [N, H], "dtype": "bf16"}


def save():
    with open(f"{OUT}/gelu_kernel_check.json", "w") as f:
        json.dump(res, f, indent=1)


def ms(fn, rep=60):
    fn()
    torch.cuda.synchronize()
    return do_bench(fn, warmup=10, rep=rep)


def errs(x, ref):
    d = x.double() - ref
    return {"rel": float(d.norm() / ref.norm()), "max_rel": float(d.abs().max() / ref.abs().max())}


def main(quick: bool):
    res["triton"] = triton.__version__
    g = torch.Generator(device="cuda").manual_seed(0)
    # pre-activations of about fc1's spread (std ~1.5 around a bias of std 0.5)
    h0 = (1.5 * torch.randn(N, H, device="cuda", generator=g)).to(BF16)
    b = (0.5 * torch.randn(H, device="cuda", generator=g)).to(BF16)
    da = torch.randn(N, H, device="cuda", generator=g).to(BF16)
    h = (h0.float() + b.float()).to(BF16)  # the unfused path's fc1 output (bias added in the GEMM epilogue)
    fwd_bytes, bwd_bytes = 2 * N * H * 2, 3 * N * H * 2

    # -- Inductor's kernels for the same work --------------------------------------------------------
    ind_fwd = torch.compile(lambda t: F.gelu(t), dynamic=False)
    ind_fwd_bias = torch.compile(lambda t, c: F.gelu(t + c), dynamic=False)

    def train_bwd(d, t):  # what the training graph's backward computes around GELU
        a = F.gelu(t)
        dt = torch.ops.aten.gelu_backward(d, t)
        return a, dt, dt.float().sum(0).to(t.dtype)
    ind_bwd = torch.compile(train_bwd, dynamic=False)

    def keep_a_bwd(d, t):  # the same when the partitioner keeps GELU(h) instead of recomputing it
        dt = torch.ops.aten.gelu_backward(d, t)
        return dt, dt.float().sum(0).to(t.dtype)
    ind_bwd_keep = torch.compile(keep_a_bwd, dynamic=False)
    t = {}
    t["inductor_fwd_gelu_h_ms"] = ms(lambda: ind_fwd(h))
    t["inductor_fwd_gelu_h0_plus_b_ms"] = ms(lambda: ind_fwd_bias(h0, b))
    t["inductor_bwd_recompute_a_dh_db_ms"] = ms(lambda: ind_bwd(da, h))
    t["ours_fwd_ms"] = ms(lambda: fg.triton_forward(h0, b))
    t["ours_bwd_ms"] = ms(lambda: fg.triton_backward(da, h0, b))
    t["inductor_bwd_dh_db_no_recompute_ms"] = ms(lambda: ind_bwd_keep(da, h))
    t["control_fwd_no_gelu_ms"] = ms(lambda: control_forward(h0, b))
    t["control_bwd_no_gelu_ms"] = ms(lambda: control_backward(da, h0, b))
    t["floor_fwd_ms_at_4tbps"] = fwd_bytes / 4e12 * 1e3
    t["floor_bwd_ms_at_4tbps"] = bwd_bytes / 4e12 * 1e3
    for k in ("ours_fwd", "inductor_fwd_gelu_h"):
        t[k + "_tb_per_s"] = fwd_bytes / (t[k + "_ms"] * 1e-3) / 1e12
    t["ours_bwd_tb_per_s"] = bwd_bytes / (t["ours_bwd_ms"] * 1e-3) / 1e12
    # Inductor's backward also writes GELU(h): 4 x N x H x 2 bytes
    t["inductor_bwd_tb_per_s"] = 4 * N * H * 2 / (t["inductor_bwd_recompute_a_dh_db_ms"] * 1e-3) / 1e12
    t["per_layer_ours_ms"] = t["ours_fwd_ms"] + t["ours_bwd_ms"]
    t["per_layer_inductor_ms"] = t["inductor_fwd_gelu_h_ms"] + t["inductor_bwd_recompute_a_dh_db_ms"]
    t["default_tiles"] = dict(fg.TILES)
    res["timing"] = t
    save()
    print("timing:", json.dumps(t), flush=True)

    # -- the branch-free erf (TILES erf_poly = 1) against libdevice's, same launch shape --------------
    zl = torch.linspace(-12, 12, 4096 * 1024, device="cuda", dtype=torch.float32).view(4096, 1024)
    zero = torch.zeros(1024, device="cuda")
    ones = torch.ones_like(zl)
    a_ref, dz_ref = F.gelu(zl.double()), torch.ops.aten.gelu_backward(ones.double(), zl.double())
    poly = {}
    for flag in (0, 2):  # 2: the polynomial for every dtype (the fp32 error check below too)
        old = fg.set_tiles(erf_poly=flag)
        try:
            name = "poly" if flag else "libdevice"
            poly[name + "_fwd_ms"] = ms(lambda: fg.triton_forward(h0, b))
            poly[name + "_bwd_ms"] = ms(lambda: fg.triton_backward(da, h0, b))
            a_l, (dz_l, _) = fg.triton_forward(zl, zero), fg.triton_backward(ones, zl, zero)
            big = a_ref.abs() > 1e-3
            poly[name + "_fp32_gelu_max_abs_err"] = float((a_l.double() - a_ref).abs().max())
            poly[name + "_fp32_gelu_max_rel_err_where_abs_gt_1e-3"] = float(((a_l.double() - a_ref).abs()[big] / a_ref.abs()[big]).max())
            poly[name + "_fp32_dgelu_max_abs_err"] = float((dz_l.double() - dz_ref).abs().max())
            a_b, (dh_b, db_b) = fg.triton_forward(h0, b), fg.triton_backward(da, h0, b)
            poly[name + "_bf16_a_vs_libdevice_differs_frac"] = None if not flag else float((a_b != a_lib).float().mean())
            poly[name + "_bf16_dh_vs_libdevice_differs_frac"] = None if not flag else float((dh_b != dh_lib).float().mean())
            if not flag:
                a_lib, dh_lib = a_b, dh_b
        finally:
            fg.set_tiles(**old)
    res["erf_poly"] = poly
    save()
    print("erf_poly:", json.dumps(poly), flush=True)
    del zl, ones, a_ref, dz_ref

    # -- errors against float64 ----------------------------------------------------------------------
    z = h0.double() + b.double()
    a_ex = F.gelu(z)
    a, (dh, db) = fg.triton_forward(h0, b), fg.triton_backward(da, h0, b)
    e = {"ours_a": errs(a, a_ex)}
    a_ind = ind_fwd(h)
    e["inductor_gelu_h_a"] = errs(a_ind, a_ex)  # includes h's bf16 rounding of h0 + b
    del a_ex, a_ind
    dz_ex = torch.ops.aten.gelu_backward(da.double(), z)
    db_ex = dz_ex.sum(0)
    e["ours_dh0"] = errs(dh, dz_ex)
    e["ours_db"] = errs(db, db_ex)
    _, dh_ind, db_ind = ind_bwd(da, h)
    e["inductor_dh"] = errs(dh_ind, dz_ex)
    e["inductor_db"] = errs(db_ind, db_ex)
    dh2, db2 = fg.triton_backward(da, h0, b)
    e["deterministic"] = bool(torch.equal(dh, dh2) and torch.equal(db, db2))
    del dz_ex, dh_ind, z
    # fp32 at an odd shape (partial blocks): tight
    g32 = torch.Generator(device="cuda").manual_seed(1)
    x32 = 2 * torch.randn(1001, 3000, device="cuda", generator=g32)
    b32, d32 = torch.randn(3000, device="cuda", generator=g32), torch.randn(1001, 3000, device="cuda", generator=g32)
    z32 = x32.double() + b32.double()
    e["fp32_1001x3000_a"] = errs(fg.triton_forward(x32, b32), F.gelu(z32))
    dh32, db32 = fg.triton_backward(d32, x32, b32)
    dz32 = torch.ops.aten.gelu_backward(d32.double(), z32)
    e["fp32_1001x3000_dh0"] = errs(dh32, dz32)
    e["fp32_1001x3000_db"] = errs(db32, dz32.sum(0))
    res["errors_vs_fp64"] = e
    save()
    print("errors:", json.dumps(e), flush=True)
    torch.cuda.empty_cache()

    # -- launch-shape sweep ----------------------------------------------------------------------------
    default = dict(fg.TILES)
    sweep = {"fwd": [], "bwd": []}
    for rows, cols, warps in FWD_TILES[: 3 if quick else None]:
        fg.set_tiles(fwd_rows=rows, fwd_cols=cols, fwd_warps=warps)
        try:
            err = float((fg.triton_forward(h0, b).float() - a.float()).abs().max())
            sweep["fwd"].append(dict(tiles=[rows, cols, warps], ms=ms(lambda: fg.triton_forward(h0, b), rep=40),
                                     max_abs_diff_vs_default=err))
        except Exception as exc:  # noqa: BLE001
            sweep["fwd"].append(dict(tiles=[rows, cols, warps], error=repr(exc)[:300]))
        res["sweep"] = sweep
        save()
    for rows, cols, warps, stripe in BWD_TILES[: 3 if quick else None]:
        fg.set_tiles(bwd_rows=rows, bwd_cols=cols, bwd_warps=warps, bwd_rows_per_stripe=stripe)
        try:
            dh_s, db_s = fg.triton_backward(da, h0, b)
            sweep["bwd"].append(dict(tiles=[rows, cols, warps, stripe],
                                     ms=ms(lambda: fg.triton_backward(da, h0, b), rep=40),
                                     dh_equal_default=bool(torch.equal(dh_s, dh)),
                                     db_rel_diff_vs_default=float((db_s.float() - db.float()).norm() / db.float().norm())))
        except Exception as exc:  # noqa: BLE001
            sweep["bwd"].append(dict(tiles=[rows, cols, warps, stripe], error=repr(exc)[:300]))
        res["sweep"] = sweep
        save()
    fg.set_tiles(**default)
    ok_f = [r for r in sweep["fwd"] if "ms" in r]
    ok_b = [r for r in sweep["bwd"] if "ms" in r]
    if ok_f and ok_b:
        sweep["best_fwd"] = min(ok_f, key=lambda r: r["ms"])
        sweep["best_bwd"] = min(ok_b, key=lambda r: r["ms"])
    save()
    print("sweep best:", json.dumps({k: sweep.get(k) for k in ("best_fwd", "best_bwd")}), flush=True)
    del a, dh, db, dh2, db2, h, da
    torch.cuda.empty_cache()

    # -- the MLP fwd+bwd through torch.compile, fused_gelu on / off ---------------------------------
    gm = torch.Generator(device="cuda").manual_seed(2)
    x = torch.randn(N, D, device="cuda", generator=gm).to(BF16).requires_grad_()
    w1 = (torch.randn(H, D, device="cuda", generator=gm) / D ** 0.5).to(BF16).requires_grad_()
    b1 = (0.5 * torch.randn(H, device="cuda", generator=gm)).to(BF16).requires_grad_()
    w2 = (torch.randn(D, H, device="cuda", generator=gm) / H ** 0.5).to(BF16).requires_grad_()
    b2 = torch.zeros(D, device="cuda", dtype=BF16).requires_grad_()
    gy = torch.randn(N, D, device="cuda", generator=gm).to(BF16)
    params = (x, w1, b1, w2, b2)

    def plain(x_):
        return F.linear(F.gelu(F.linear(x_, w1, b1)), w2, b2)

    def fused(x_):
        return F.linear(fg.bias_gelu(F.linear(x_, w1), b1), w2, b2)

    mlp = {}
    grads = {}
    for name, fn in (("plain", plain), ("fused", fused)):
        c = torch.compile(fn, dynamic=False)

        def step():
            for p in params:
                p.grad = None
            c(x).backward(gy)
        step()
        torch.cuda.synchronize()
        for p in params:
            p.grad = None
        torch.cuda.reset_peak_memory_stats()
        m0 = torch.cuda.memory_allocated()
        y = c(x)
        saved = torch.cuda.memory_allocated() - m0 - y.numel() * y.element_size()
        y.backward(gy)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - m0
        grads[name] = [p.grad.clone() for p in params]
        mlp[name] = dict(fwd_bwd_ms=ms(step, rep=100), fwd_ms=ms(lambda: c(x).detach(), rep=60),
                         saved_for_backward_gib=saved / 2**30, peak_above_inputs_gib=peak / 2**30)
        res["mlp"] = mlp
        save()
    mlp["grad_rel_diff_fused_vs_plain"] = {
        n: float((a_.float() - b_.float()).norm() / b_.float().norm())
        for n, a_, b_ in zip(("x", "w1", "b1", "w2", "b2"), grads["fused"], grads["plain"])}
    mlp["saved_extra_gib_per_layer"] = mlp["fused"]["saved_for_backward_gib"] - mlp["plain"]["saved_for_backward_gib"]
    mlp["saved_extra_gib_11_layers"] = 11 * mlp["saved_extra_gib_per_layer"]
    mlp["fwd_bwd_saving_ms_per_layer"] = mlp["plain"]["fwd_bwd_ms"] - mlp["fused"]["fwd_bwd_ms"]
    res["mlp"] = mlp
    save()
    print("mlp:", json.dumps(mlp), flush=True)


if __name__ == "__main__":
    t0 = time.time()
    main("--quick" in sys.argv)
    res["wall_s"] = time.time() - t0
    save()
    print("done in", res["wall_s"], "s", flush=True)
