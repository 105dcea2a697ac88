"""Every tile/strip configuration of the Triton conv+LayerNorm forward (and the tuned choice) against
the PyTorch reference on a GPU; writes $OUT/kernel_check.json. Run:
    PYTHONPATH=src OUT=<dir> python3 bench/dwconv_ln_kernel_check.py
"""
import json, os, sys, time
import torch
sys.path.insert(0, "src")
from vqdna.tokenizers import dwconv_ln_triton as kt
res = []
for (B, L, D, dt, shift) in [(64, 256, 384, torch.bfloat16, False), (32, 512, 384, torch.bfloat16, True), (5, 37, 300, torch.float32, True)]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, L, D, generator=g); x[0] += 5
    w = torch.randn(7, D, generator=g) / 7; b = torch.randn(D, generator=g)
    lw = 1 + 0.3 * torch.randn(D, generator=g); lb = 0.3 * torch.randn(D, generator=g); sh = torch.randn(D, generator=g)
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
json.dump(res, open(os.environ["OUT"] + "/kernel_check.json", "w"), indent=1)
bad = [r for r in res if "error" in r or r.get("rel_err", 0) > 2e-2]
print(len(res), "checks,", len(bad), "bad"); print(json.dumps(bad[:5]))
