"""The Triton conv+LayerNorm kernels on a GPU against the PyTorch code; writes $OUT/kernel_check.json
(the forward: every tile/strip configuration and the tuned choice) and $OUT/kernel_check_bwd.json (the
backward: every configuration and the tuned choice against the PyTorch backward with the same dc
rounding and against float64 autograd of conv1d + layer_norm, then the tuned kernel timed against the
PyTorch backward compiled by Inductor at the paper's training shape). Run:
    PYTHONPATH=src OUT=<dir> python3 bench/dwconv_ln_kernel_check.py [--skip-forward]
"""
import json, os, sys, time
import torch
import torch.nn.functional as F
sys.path.insert(0, "src")
from vqdna.tokenizers import dwconv_ln_bwd_triton as kb
from vqdna.tokenizers import dwconv_ln_triton as kt

OUT = os.environ["OUT"]


def make(B, L, D, k=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, D, generator=g); x[0] += 5
    w = torch.randn(k, D, generator=g) / k; b = torch.randn(D, generator=g)
    lw = 1 + 0.3 * torch.randn(D, generator=g); lb = 0.3 * torch.randn(D, generator=g); sh = torch.randn(D, generator=g)
    return x, w, b, lw, lb, sh


def forward_checks():
    res = []
    for (B, L, D, dt, shift) in [(64, 256, 384, torch.bfloat16, False), (32, 512, 384, torch.bfloat16, True), (5, 37, 300, torch.float32, True)]:
        x, w, b, lw, lb, sh = make(B, L, D)
        cuda = [t.cuda() for t in (x.to(dt), w, b, lw, lb, sh)]
        ref = kt.reference_forward(cuda[0].float(), cuda[5] if shift else None, *cuda[1:5], 1e-5, torch.float32)
        for cfg in kt.TILE_CANDIDATES + [c for c in kt.STRIP_CANDIDATES]:
            try:
                y, m, r = kt.triton_forward(cuda[0], cuda[5] if shift else None, *cuda[1:5], 1e-5, dt, config=cfg)
                torch.cuda.synchronize()
                err = ((y.float() - ref[0]).abs().max() / ref[0].abs().max()).item()
                merr = (m - ref[1]).abs().max().item()
                res.append(dict(shape=[B, L, D], dtype=str(dt), shift=shift, cfg=list(cfg), rel_err=err, mean_err=merr))
            except Exception as e:
                res.append(dict(shape=[B, L, D], cfg=list(cfg), error=repr(e)[:300]))
        y, m, r = kt.triton_forward(cuda[0], cuda[5] if shift else None, *cuda[1:5], 1e-5, dt)
        res.append(dict(shape=[B, L, D], tuned=True, rel_err=((y.float() - ref[0]).abs().max() / ref[0].abs().max()).item()))
    json.dump(res, open(OUT + "/kernel_check.json", "w"), indent=1)
    bad = [r for r in res if "error" in r or r.get("rel_err", 0) > 2e-2]
    print("forward:", len(res), "checks,", len(bad), "bad", json.dumps(bad[:5]), flush=True)


NAMES = ("dx", "d_w", "d_b", "d_ln_w", "d_ln_b")


def rel(a, r):
    return float((a.double() - r.double()).norm() / r.double().norm())


def exact_grads(x, w, b, lw, lb, dy, eps):
    """float64 autograd of F.conv1d + F.layer_norm (the modules' function)."""
    ins = [t.detach().double().requires_grad_() for t in (x, w, b, lw, lb)]
    D, k = x.shape[-1], w.shape[0]
    c = F.conv1d(ins[0].transpose(1, 2), ins[1].t()[:, None, :], ins[2], padding=k // 2, groups=D)
    y = F.layer_norm(c.transpose(1, 2), (D,), ins[3], ins[4], eps)
    return torch.autograd.grad(y, ins, dy.double())


def backward_checks(res, save):
    eps = 1e-6
    # (B, L, D, k, dtype, x strided): the training shape in bf16 and fp32, odd shapes, a strided x
    # every configuration and the tuned choice at the training shape in bf16 (compiled by the timing's
    # tuning already) and the tuned choice at 64 windows; elsewhere the reference configuration and a 2-lane
    # one (each new dtype/shape compiles anew: no tuning of those in this script)
    few = [kb.REFERENCE, ("bwd", 2, 32, 4, 1, 4, 1), ("bwd", 1, 64, 4, 1, 4, 1)]
    for (B, L, D, k, dt, strided, cfgs) in [
            (1024, 256, 384, 7, torch.bfloat16, False, kb.candidates(256)), (1024, 256, 384, 7, torch.float32, False, few),
            (5, 37, 300, 7, torch.float32, False, few), (7, 100, 384, 5, torch.bfloat16, True, few),
            (3, 513, 20, 3, torch.float32, True, few), (64, 256, 384, 7, torch.bfloat16, False, [])]:
        x, w, b, lw, lb, _ = make(B, L, D, k, seed=L)
        x, w, b, lw, lb = (t.to(dt).cuda() for t in (x, w, b, lw, lb))
        if strided:
            big = torch.randn(B, L + 9, D, device="cuda", dtype=dt)
            big[:, 5:5 + L] = x
            x = big[:, 5:5 + L]
        _, mean, rstd = kt.triton_forward(x, None, w, b, lw, lb, eps, dt)
        dy = torch.randn(B, L, D, device="cuda", generator=torch.Generator("cuda").manual_seed(1)).to(dt)
        ref = kb.reference_backward(dy, x, w, b, lw, mean, rstd)
        exact = exact_grads(x, w, b, lw, lb, dy, eps)
        row = dict(shape=[B, L, D], k=k, dtype=str(dt), strided=strided,
                   torch_vs_fp64={n: rel(r, e) for n, r, e in zip(NAMES, ref, exact)}, configs={})
        tuned = [None] if dt == torch.bfloat16 and L == 256 else []
        for cfg in [c for c in cfgs if c[1] * c[2] <= max(L, 16) * 2] + tuned:
            name = "tuned" if cfg is None else kt.config_name(cfg)
            try:
                got = kb.triton_backward(dy, x, w, b, lw, mean, rstd, config=cfg)
                torch.cuda.synchronize()
                row["configs"][name] = dict(
                    dtypes_ok=all(a.dtype == r.dtype and a.shape == r.shape for a, r in zip(got, ref)),
                    vs_torch={n: rel(a, r) for n, a, r in zip(NAMES, got, ref)},
                    vs_fp64={n: rel(a, e) for n, a, e in zip(NAMES, got, exact)})
                if cfg is None:
                    again = kb.triton_backward(dy, x, w, b, lw, mean, rstd)
                    row["deterministic"] = all(torch.equal(a, r) for a, r in zip(got, again))
            except Exception as e:  # noqa: BLE001
                row["configs"][name] = dict(error=repr(e)[:400])
        key = kb.tune_key(x, w, dy)
        row["chosen"] = kt.config_name(kt._BEST[key]) if key in kt._BEST else None
        row["tuning_ms"] = kt.TUNE_RESULTS.get(key)
        res["checks"].append(row)
        save()
        worst = max((max(c["vs_torch"].values()) for c in row["configs"].values() if "vs_torch" in c), default=None)
        print(f"backward {B}x{L}x{D} k={k} {dt} strided={strided}: {len(row['configs'])} configs, "
              f"errors {sum('error' in c for c in row['configs'].values())}, worst rel vs torch {worst}, "
              f"torch vs fp64 {max(row['torch_vs_fp64'].values()):.2e}, chosen {row['chosen']}", flush=True)
        del x, dy, ref, exact
        torch.cuda.empty_cache()


def timed(fn):
    from triton.testing import do_bench
    return do_bench(fn, warmup=10, rep=100) / 1e3


def backward_timing(res, save):
    B, L, D, k, dt, eps = 1024, 256, 384, 7, torch.bfloat16, 1e-6
    x, w, b, lw, lb, _ = make(B, L, D, k)
    x, w, b, lw, lb = (t.to(dt).cuda() for t in (x, w, b, lw, lb))
    y, mean, rstd = kt.triton_forward(x, None, w, b, lw, lb, eps, dt)
    dy = torch.randn_like(y)
    moved = 3 * x.numel() * 2 + B * L * 8  # bf16 x and dy read, bf16 dx written, fp32 mean + rstd read
    compiled = torch.compile(kb.reference_backward, dynamic=False, fullgraph=True)
    impls = {"triton_bwd": lambda: kb.triton_backward(dy, x, w, b, lw, mean, rstd),
             "inductor_bwd": lambda: compiled(dy, x, w, b, lw, mean, rstd),
             "triton_fwd": lambda: kt.triton_forward(x, None, w, b, lw, lb, eps, dt)}
    out = {"shape": [B, L, D], "k": k, "dtype": "bf16", "bytes_bwd": moved}
    for name, fn in impls.items():
        fn()
        sec = timed(fn)
        out[f"{name}_ms"] = sec * 1e3
        out[f"{name}_tb_per_s"] = (moved if "bwd" in name else 2 * x.numel() * 2 + B * L * 8) / sec / 1e12
    key = kb.tune_key(x, w, dy)
    out["chosen"] = kt.config_name(kt._BEST[key])
    res["timing"] = out
    save()
    print("timing:", json.dumps(out), flush=True)


if __name__ == "__main__":
    if "--skip-forward" not in sys.argv:
        forward_checks()
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "checks": []}
    import triton
    res["triton"] = triton.__version__

    def save():
        json.dump(res, open(OUT + "/kernel_check_bwd.json", "w"), indent=1)
    t = time.time()
    backward_timing(res, save)
    backward_checks(res, save)
    res["seconds"] = time.time() - t
    save()
    bad = [(c["shape"], n) for c in res["checks"] for n, v in c["configs"].items()
           if "error" in v or not v["dtypes_ok"] or max(v["vs_torch"].values()) > 2e-2]
    print("backward:", len(res["checks"]), "shapes,", len(bad), "bad:", bad[:8], flush=True)
