"""The fused residual add + dropout + LayerNorm op (vqdna.models.fused_norm) and the model path
that uses it (VQDNAConfig.fused_dropout_norm): same function as the plain composition, the
dropout mask regenerated in backward, mask statistics; the Triton kernels on CUDA (or under
Triton's CPU interpreter where Triton is installed)."""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn.functional as F

from vqdna.models import VQDNAConfig, VQDNAForMaskedLM
from vqdna.models import fused_norm
from vqdna.models.layers import EncoderLayer

from mlm_checks import run_model, tiny_batch
from interpreter_probe import has_triton, run_interpreter_script, skip_unless_interpreter_runs_runtime_loops

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def plain_with_mask(x, y, w, b, keep, p, eps, yb=None):
    """What the op must compute: y's bias, nn.Dropout with the op's own mask, then add, then LayerNorm."""
    if yb is not None:
        y = y + yb
    s = x + torch.where(keep, y / (1 - p), torch.zeros((), dtype=y.dtype, device=y.device))
    return s, F.layer_norm(s, (x.shape[-1],), w, b, eps)


def run_both(device, dtype, p, with_ds, N=37, H=96, eps=1e-5, seed=123, with_yb=False):
    """The op and the plain composition (float64, same mask); outputs and the gradients of x, y,
    weight, bias (and y's bias with `with_yb`)."""
    gen = torch.Generator().manual_seed(seed)
    x, y, gs, gh = (torch.randn(N, H, generator=gen).to(device, dtype) for _ in range(4))
    w = (1 + 0.3 * torch.randn(H, generator=gen)).to(device, dtype)
    b = (0.3 * torch.randn(H, generator=gen)).to(device, dtype)
    yb = (0.5 * torch.randn(H, generator=gen)).to(device, dtype)
    seed_t = torch.tensor([seed], device=device)
    keep = fused_norm.keep_mask((N, H), p, seed_t, device, dtype)
    leaves = (x, y, w, b, yb) if with_yb else (x, y, w, b)
    ins = [t.clone().requires_grad_() for t in leaves]
    ref = [t.detach().double().requires_grad_() for t in leaves]
    s, h = fused_norm.dropout_add_layer_norm(*ins[:4], p, eps, seed=seed_t, y_bias=ins[4] if with_yb else None)
    s_ref, h_ref = plain_with_mask(*ref[:4], keep, p, eps, ref[4] if with_yb else None)
    outs = [(h, h_ref, gh)] + ([(s, s_ref, gs)] if with_ds else [])
    torch.autograd.backward([o for o, _, _ in outs], [g for _, _, g in outs])
    torch.autograd.backward([r for _, r, _ in outs], [g.double() for _, _, g in outs])
    return (s, h, *[t.grad for t in ins]), (s_ref, h_ref, *[t.grad for t in ref]), keep


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("with_ds", [True, False])
def test_op_equals_plain_composition_fp32(device, p, with_ds):
    got, ref, _ = run_both(device, torch.float32, p, with_ds)
    for name, a, r in zip(("s", "h", "dx", "dy", "dweight", "dbias"), got, ref):
        assert rel(a, r) < 1e-5, name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("with_ds", [True, False])
def test_op_with_y_bias_equals_plain_composition_fp32(device, p, with_ds):
    """y's bias folded in: `x + dropout(y + b)`; its gradient is the column sum of dy."""
    got, ref, keep = run_both(device, torch.float32, p, with_ds, with_yb=True)
    assert len(got) == 7
    for name, a, r in zip(("s", "h", "dx", "dy", "dweight", "dbias", "dy_bias"), got, ref):
        assert rel(a, r) < 1e-5, name
    torch.testing.assert_close(got[6], got[3].sum(0))
    if p > 0:  # dropped where y was dropped: the bias goes through the same mask
        assert (got[3][~keep] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_yb", [False, True])
def test_op_equals_plain_composition_bf16(device, with_yb):
    got, ref, _ = run_both(device, torch.bfloat16, 0.1, True, N=64, H=768, with_yb=with_yb)
    for name, a, r in zip(("s", "h", "dx", "dy", "dweight", "dbias", "dy_bias"), got, ref):
        assert a.dtype == torch.bfloat16
        assert rel(a, r) < 1e-2, name  # bf16 storage: ~2e-3 measured


@pytest.mark.parametrize("device", DEVICES)
def test_backward_regenerates_the_forward_mask(device):
    """dy is zero exactly where forward dropped y, and ds/(1-p) elsewhere."""
    got, _, keep = run_both(device, torch.float32, 0.3, True)
    dx, dy = got[2], got[3]
    assert (dy[~keep] == 0).all()
    torch.testing.assert_close(dy[keep], dx[keep] / 0.7)


@pytest.mark.parametrize("device", DEVICES)
def test_mask_statistics(device):
    p, shape = 0.1, (512, 768)
    seed = torch.tensor([7], device=device)
    keep = fused_norm.keep_mask(shape, p, seed, device).float()
    n = keep.numel()
    assert abs(float(keep.mean()) - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5
    rows = keep.mean(1)  # every row drawn, not one row repeated
    assert float(rows.std()) > 0
    assert abs(float(rows.std()) - (p * (1 - p) / shape[1]) ** 0.5) < 0.005
    # same seed: same mask; another seed: independent (agreement p^2 + (1-p)^2)
    assert torch.equal(keep, fused_norm.keep_mask(shape, p, seed, device).float())
    other = fused_norm.keep_mask(shape, p, seed + 1, device).float()
    assert abs(float((keep == other).float().mean()) - (p * p + (1 - p) ** 2)) < 0.005
    # neighbouring columns uncorrelated
    corr = torch.corrcoef(torch.stack([keep[:, :-1].flatten(), keep[:, 1:].flatten()]))[0, 1]
    assert abs(float(corr)) < 0.01


def test_p_zero_is_a_plain_add_and_bad_p_is_rejected():
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    w, b = torch.ones(8), torch.zeros(8)
    s, h = fused_norm.dropout_add_layer_norm(x, y, w, b, 0.0, 1e-5)
    assert torch.equal(s, x + y)
    torch.testing.assert_close(h, F.layer_norm(x + y, (8,), eps=1e-5))
    with pytest.raises(ValueError, match="p must be in"):
        fused_norm.dropout_add_layer_norm(x, y, w, b, 1.0, 1e-5)







@pytest.mark.parametrize("norm_position", ["pre", "post"])
@pytest.mark.parametrize("sparse", [True, False])
def test_fused_model_equals_plain_model_without_dropout(norm_position, sparse):
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], norm_position=norm_position, **TINY)
    torch.manual_seed(0)
    model = VQDNAForMaskedLM(cfg).eval()
    model.sparse_last_layer = sparse
    masked, labels = tiny_batch(cfg)
    loss_plain, _, g_plain = run_model(model, masked, labels)
    cfg.fused_dropout_norm = True
    for fold in (True, False):  # out_proj / fc2 biases inside the op, or in the linear layers
        EncoderLayer.fold_bias = fold
        try:
            loss_fused, _, g_fused = run_model(model, masked, labels)
        finally:
            EncoderLayer.fold_bias = True
        torch.testing.assert_close(loss_fused, loss_plain, rtol=1e-5, atol=1e-6)
        assert g_fused.keys() == g_plain.keys()
        for name in g_plain:
            torch.testing.assert_close(g_fused[name], g_plain[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
@pytest.mark.parametrize("sparse", [True, False])
def test_folded_biases_keep_the_training_function(norm_position, sparse):
    """Train mode, same seed: the folded op draws the same masks (the bias is dropped with its
    y, as nn.Dropout(linear(a)) does), so folding changes only rounding."""
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], norm_position=norm_position, fused_dropout_norm=True, **TINY)
    torch.manual_seed(0)
    model = VQDNAForMaskedLM(cfg).train()
    model.sparse_last_layer = sparse
    masked, labels = tiny_batch(cfg)
    EncoderLayer.fold_bias = False
    try:
        loss_unfolded, _, g_unfolded = run_model(model, masked, labels)
    finally:
        EncoderLayer.fold_bias = True
    loss_folded, _, g_folded = run_model(model, masked, labels)
    torch.testing.assert_close(loss_folded, loss_unfolded, rtol=1e-5, atol=1e-6)
    for name in g_unfolded:
        torch.testing.assert_close(g_folded[name], g_unfolded[name], rtol=1e-4, atol=1e-6, msg=name)
    assert any(n.endswith("out_proj.bias") for n in g_folded) and any(n.endswith("fc2.bias") for n in g_folded)
    model.eval()
    assert not torch.equal(run_model(model, masked, labels)[0], loss_folded)  # dropout was on


@pytest.mark.parametrize("checkpointing", [False, True])
def test_fused_training_step_is_repeatable_and_drops(checkpointing):
    """Train mode: same seed, same loss and gradients (also when gradient checkpointing recomputes
    the blocks); another seed draws other masks; dropout changes the loss against eval mode."""
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], fused_dropout_norm=True, **TINY)
    torch.manual_seed(0)
    model = VQDNAForMaskedLM(cfg).train()
    model.vqdna.encoder.gradient_checkpointing = checkpointing
    masked, labels = tiny_batch(cfg)
    loss_a, _, g_a = run_model(model, masked, labels, seed=1)
    loss_b, _, g_b = run_model(model, masked, labels, seed=1)
    loss_c = run_model(model, masked, labels, seed=2)[0]
    assert torch.equal(loss_a, loss_b)
    for name in g_a:
        assert torch.equal(g_a[name], g_b[name]), name
    assert not torch.equal(loss_a, loss_c)
    model.eval()
    loss_eval = run_model(model, masked, labels)[0]
    assert not torch.equal(loss_a, loss_eval)


def test_compiled_fused_blocks_match_eager():
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], fused_dropout_norm=True, **TINY)
    torch.manual_seed(0)
    model = VQDNAForMaskedLM(cfg).train()
    masked, labels = tiny_batch(cfg)
    loss_eager, _, g_eager = run_model(model, masked, labels)
    model.vqdna.compile_blocks(backend="aot_eager", dynamic=False)
    loss_comp, _, g_comp = run_model(model, masked, labels)
    torch.testing.assert_close(loss_comp, loss_eager)
    for name in g_eager:
        torch.testing.assert_close(g_comp[name], g_eager[name], msg=name)
    torch._dynamo.reset()


def test_flag_survives_save_pretrained(tmp_path):
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], fused_dropout_norm=True, **TINY)
    model = VQDNAForMaskedLM(cfg)
    model.save_pretrained(tmp_path)
    loaded = VQDNAForMaskedLM.from_pretrained(tmp_path)
    assert loaded.config.fused_dropout_norm is True
    assert VQDNAConfig().fused_dropout_norm is False  # configs saved before the key load unfused


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_and_reference_paths_agree_on_cuda():
    """Same inputs and mask through the Triton kernels and the PyTorch reference: same outputs."""
    N, H, p = 300, 768, 0.1
    x, y, dh, ds = (torch.randn(N, H, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    w, b = torch.randn(H, device="cuda", dtype=torch.bfloat16), torch.randn(H, device="cuda", dtype=torch.bfloat16)
    seed = torch.tensor([5], device="cuda")
    keep = fused_norm.keep_mask((N, H), p, seed, "cuda", torch.bfloat16)
    s, h, mean, rstd = fused_norm.triton_forward(x, y, w, b, seed, p, 1e-12)
    y_masked = torch.where(keep, y, torch.zeros_like(y))
    s_r, h_r, mean_r, rstd_r = fused_norm.reference_forward(x, y_masked, w, b, seed, 0.0, 1e-12)
    # reference with p=0 on the masked y, scaled: identical up to bf16 rounding of y / (1-p)
    s_r2 = (x.float() + y_masked.float() / (1 - p)).to(torch.bfloat16)
    assert rel(s, s_r2) < 1e-2 and rel(h, fused_norm.reference_forward(s_r2, torch.zeros_like(s_r2), w, b, seed, 0.0, 1e-12)[1]) < 1e-2
    got = fused_norm.triton_backward(dh, ds, s, w, mean, rstd, seed, p, torch.bfloat16, torch.bfloat16, torch.bfloat16)
    ref = fused_norm.reference_backward(dh, ds, s, w, mean, rstd, seed, 0.0, torch.bfloat16, torch.bfloat16)
    dy_ref = torch.where(keep, ref[1].float() / (1 - p), 0.0)
    assert rel(got[0], ref[0]) < 1e-2
    assert rel(got[1], dy_ref) < 1e-2
    assert rel(got[2], ref[2]) < 1e-2 and rel(got[3], ref[3]) < 1e-2
    assert rel(got[4], dy_ref.sum(0)) < 1e-2  # the y-bias gradient: column sums of dy
    # with a y bias in forward: the same as adding it to y first
    yb = torch.randn(H, device="cuda", dtype=torch.bfloat16)
    s_b, h_b, _, _ = fused_norm.triton_forward(x, y, w, b, seed, p, 1e-12, yb)
    s_r3 = (x.float() + torch.where(keep, (y.float() + yb.float()) / (1 - p), 0.0)).to(torch.bfloat16)
    assert rel(s_b, s_r3) < 1e-2 and rel(h_b, fused_norm.reference_forward(s_r3, torch.zeros_like(s_r3), w, b, seed, 0.0, 1e-12)[1]) < 1e-2


@pytest.mark.skipif(not has_triton(), reason="Triton not installed")
def test_triton_kernels_under_the_cpu_interpreter():
    """The Triton kernels themselves on CPU tensors (TRITON_INTERPRET=1, its own process: the
    variable is read when the kernels are defined), against the plain composition."""
    skip_unless_interpreter_runs_runtime_loops("the backward kernel's row loop")
    script = textwrap.dedent("""
        import torch, torch.nn.functional as F
        from vqdna.models import fused_norm as fn
        # one chunk (H <= 128 lanes for fp32), three chunks of 128, three of 256 (H > 4 x 128), with
        # the default launch shape and others (several rows per program / per warp, loop stages)
        from vqdna.models import partial_sums as ps
        # the last two: one row over 4 warps with a register cap, and the partial sums finished
        # by the Triton kernel (the session-5 sweep's candidates); the backward's load orders
        # (bwd_loads, bwd_stages, bwd_rand_first: session 6) across the cases
        cases = [(13, 96, 0.2, {}), (13, 300, 0.2, dict(fwd_rows=2, fwd_warps=2, bwd_rows=2, bwd_warps=1, bwd_loads=0,
                                                       bwd_stages=1)),
                 (9, 520, 0.3, dict(fwd_rows=4, fwd_warps=4, bwd_rows=4, bwd_warps=4, bwd_progs_per_sm=1, bwd_loads=2,
                                    bwd_rand_first=1, bwd_stages=3)),
                 (21, 300, 0.2, dict(fwd_rows=1, fwd_warps=1, bwd_rows=1, bwd_warps=4, bwd_progs_per_sm=3,
                                     bwd_maxnreg=128, bwd_loads=1, bwd_rand_first=0, finish="triton")),
                 (13, 96, 0.2, dict(bwd_rows=1, bwd_warps=1, bwd_progs_per_sm=16, bwd_maxnreg=0, bwd_loads=2,
                                    bwd_stages=2, finish="triton"))]
        for N, H, p, tiles in cases:
            tiles = dict(tiles)
            ps.set_mode(tiles.pop("finish", "torch"))
            fn.set_tiles(**tiles)
            x, y, gh, gs = (torch.randn(N, H) for _ in range(4))
            w, b = torch.randn(H), torch.randn(H)
            seed = torch.tensor([9])
            s, h, mean, rstd = fn.triton_forward(x, y, w, b, seed, p, 1e-5)
            keep = fn.triton_forward(torch.zeros_like(x), torch.ones_like(y), w, b, seed, p, 1e-5)[0] > 0
            assert abs(keep.float().mean().item() - (1 - p)) < 0.05
            ins = [t.clone().requires_grad_() for t in (x, y, w, b)]
            s2 = ins[0] + torch.where(keep, ins[1] / (1 - p), 0.0)
            h2 = F.layer_norm(s2, (H,), ins[2], ins[3], 1e-5)
            torch.autograd.backward([s2, h2], [gs, gh])
            got = fn.triton_backward(gh, gs, s, w, mean, rstd, seed, p, torch.float32, torch.float32)
            assert got[4].numel() == 0  # no y bias
            for a, r in zip((s, h) + tuple(got[:4]), [s2, h2] + [t.grad for t in ins]):
                assert ((a - r).norm() / r.norm()).item() < 1e-5, (N, H, tiles)
            # y's bias folded in: forward adds it before the mask, backward sums dy per column
            yb = torch.randn(H)
            s_b, h_b, mean_b, rstd_b = fn.triton_forward(x, y, w, b, seed, p, 1e-5, yb)
            ins_b = [t.clone().requires_grad_() for t in (x, y, w, b, yb)]
            s4 = ins_b[0] + torch.where(keep, (ins_b[1] + ins_b[4]) / (1 - p), 0.0)
            h4 = F.layer_norm(s4, (H,), ins_b[2], ins_b[3], 1e-5)
            torch.autograd.backward([s4, h4], [gs, gh])
            got_b = fn.triton_backward(gh, gs, s_b, w, mean_b, rstd_b, seed, p, torch.float32, torch.float32, torch.float32)
            for a, r in zip((s_b, h_b) + tuple(got_b), [s4, h4] + [t.grad for t in ins_b]):
                assert ((a - r).norm() / r.norm()).item() < 1e-5, ("y bias", N, H, tiles)
        # the same kernels behind the custom op and its autograd formula (what the model calls on
        # CUDA): the op's checks (e.g. no output aliasing another) hold for the Triton path too
        fn.triton_available = lambda device: True
        ins = [t.clone().requires_grad_() for t in (x, y, w, b)]
        s3, h3 = fn.dropout_add_layer_norm(*ins, p, 1e-5, seed=seed)
        torch.autograd.backward([s3, h3], [gs, gh])
        for a, r in zip([s3, h3] + [t.grad for t in ins], (s, h) + tuple(got[:4])):
            assert ((a - r).norm() / r.norm()).item() < 1e-6
        ins = [t.clone().requires_grad_() for t in (x, y, w, b, yb)]
        s5, h5 = fn.dropout_add_layer_norm(*ins[:4], p, 1e-5, seed=seed, y_bias=ins[4])
        torch.autograd.backward([s5, h5], [gs, gh])
        for a, r in zip([s5, h5] + [t.grad for t in ins], (s_b, h_b) + tuple(got_b)):
            assert ((a - r).norm() / r.norm()).item() < 1e-6
        print("ok")
    """)
    run_interpreter_script(script, timeout=600)
