"""The fused fc1-bias + GELU op (vqdna.models.fused_gelu) and the model path that uses it
(VQDNAConfig.fused_gelu): the same function and gradients as F.gelu(h0 + b), the model with the
flag equal to the model without it, compile and float8 still working; the Triton kernels on CUDA
(or under Triton's CPU interpreter where Triton is installed)."""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn.functional as F

from vqdna.models import VQDNAConfig, VQDNAForMaskedLM
from vqdna.models import fused_gelu
from vqdna.models.feedforward import FeedForward
from vqdna.models.fp8 import Float8Linear, convert_to_float8

from mlm_checks import run_model, tiny_batch
from interpreter_probe import has_triton, run_interpreter_script

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


def inputs(shape, device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # spread over GELU's curved range and its tails (|z| up to ~12)
    h0 = (3 * torch.randn(*shape, generator=gen)).to(device, dtype)
    b = torch.randn(shape[-1], generator=gen).to(device, dtype)
    da = torch.randn(*shape, generator=gen).to(device, dtype)
    return h0, b, da


def op_and_plain(h0, b, da, ref_dtype):
    """The op's output and gradients, and F.gelu(h0 + b)'s in `ref_dtype`."""
    hi, bi = h0.clone().requires_grad_(), b.clone().requires_grad_()
    a = fused_gelu.bias_gelu(hi, bi)
    a.backward(da)
    hr, br = (t.detach().to(ref_dtype).requires_grad_() for t in (h0, b))
    ar = F.gelu(hr + br)
    ar.backward(da.to(ref_dtype))
    return (a, hi.grad, bi.grad), (ar, hr.grad, br.grad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(37, 96), (2, 13, 300)])
def test_op_equals_gelu_of_sum_fp32(device, shape):
    h0, b, da = inputs(shape, device, torch.float32)
    got, ref = op_and_plain(h0, b, da, torch.float32)
    for name, x, r in zip(("a", "dh0", "db"), got, ref):
        assert x.dtype == torch.float32 and x.shape == r.shape
        assert rel(x, r) < 1e-6, name


@pytest.mark.parametrize("device", DEVICES)
def test_op_bf16_within_bf16_rounding(device):
    h0, b, da = inputs((64, 3, 768), device, torch.bfloat16)
    got, exact = op_and_plain(h0, b, da, torch.float64)
    _, plain = op_and_plain(h0, b, da, torch.bfloat16)  # what stock bf16 autograd gives
    for name, x, r, p in zip(("a", "dh0", "db"), got, exact, plain):
        assert x.dtype == torch.bfloat16
        # bf16 storage: ~2e-3 relative per element (8 mantissa bits); stock bf16 is no closer
        assert rel(x, r) < 4e-3, name
        assert rel(x, r) <= rel(p, r) * 1.5 + 1e-4, name


def test_gelu_is_exact_erf_not_tanh():
    z = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    a = fused_gelu.bias_gelu(z[None], torch.zeros(1001, dtype=torch.float64))[0]
    torch.testing.assert_close(a, 0.5 * z * (1 + torch.erf(z / 2 ** 0.5)), rtol=1e-12, atol=1e-14)
    assert (a - F.gelu(z, approximate="tanh")).abs().max() > 1e-5  # the tanh form is another function


def test_gradcheck_fp64():
    h0, b, _ = inputs((9, 24), "cpu", torch.float64)
    assert torch.autograd.gradcheck(fused_gelu.bias_gelu, (h0.requires_grad_(), b.requires_grad_()))


def test_bias_shape_is_checked():
    with pytest.raises(ValueError, match="bias of shape"):
        fused_gelu.bias_gelu(torch.randn(4, 8), torch.randn(7))







@pytest.mark.parametrize("norm_position", ["pre", "post"])
@pytest.mark.parametrize("fused_dropout_norm", [False, True])
def test_model_with_fused_gelu_equals_model_without(norm_position, fused_dropout_norm):
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], norm_position=norm_position,
                      fused_dropout_norm=fused_dropout_norm, **TINY)
    torch.manual_seed(0)
    model = VQDNAForMaskedLM(cfg).eval()
    masked, labels = tiny_batch(cfg)
    loss_plain, logits_plain, g_plain = run_model(model, masked, labels)
    cfg.fused_gelu = True
    loss_fused, logits_fused, g_fused = run_model(model, masked, labels)
    torch.testing.assert_close(loss_fused, loss_plain, rtol=1e-5, atol=1e-6)
    for lf, lp in zip(logits_fused if isinstance(logits_fused, (list, tuple)) else [logits_fused],
                      logits_plain if isinstance(logits_plain, (list, tuple)) else [logits_plain]):
        torch.testing.assert_close(lf, lp, rtol=1e-5, atol=1e-5)
    assert g_fused.keys() == g_plain.keys()
    assert "vqdna.encoder.layers.0.mlp.fc1.bias" in g_fused
    for name in g_plain:
        torch.testing.assert_close(g_fused[name], g_plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_fused_path_calls_the_op(monkeypatch):
    """The flag changes what runs (the op on fc1's product without its bias), not only a
    number within tolerance; add_bias=False leaves out fc2's bias only."""
    import vqdna.models.feedforward as ff
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], fused_gelu=True, **TINY)
    torch.manual_seed(0)
    mlp = FeedForward(cfg)
    x = torch.randn(5, 32)
    seen = []

    def spy(h0, bias):
        seen.append((h0.detach().clone(), bias))
        return fused_gelu.bias_gelu(h0, bias)

    monkeypatch.setattr(ff, "bias_gelu", spy)
    y = mlp(x)
    y_nobias = mlp(x, add_bias=False)
    assert len(seen) == 2 and seen[0][1] is mlp.fc1.bias
    torch.testing.assert_close(seen[0][0], x @ mlp.fc1.weight.detach().t())
    torch.testing.assert_close(y - y_nobias, mlp.fc2.bias.detach().expand_as(y), rtol=1e-5, atol=1e-6)
    cfg.fused_gelu = False
    torch.testing.assert_close(mlp(x), y, rtol=1e-5, atol=1e-6)
    assert len(seen) == 2


def test_compiled_blocks_match_eager():
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], fused_gelu=True, fused_dropout_norm=True, **TINY)
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


def test_feedforward_compiles_as_one_graph_with_the_op():
    """fullgraph: the op is traced (fake implementation), no graph break; its forward and
    backward ops are in the joint graph."""
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], fused_gelu=True, **TINY)
    torch.manual_seed(0)
    mlp = FeedForward(cfg)
    seen = []

    def backend(gm, example_inputs):
        from functorch.compile import make_boxed_func
        from torch._functorch.aot_autograd import aot_module_simplified

        def record(g, _):
            seen.extend(str(n.target) for n in g.graph.nodes if n.op == "call_function")
            return make_boxed_func(g)
        return aot_module_simplified(gm, example_inputs, fw_compiler=record, bw_compiler=record)

    compiled = torch.compile(mlp, backend=backend, fullgraph=True, dynamic=False)
    x = torch.randn(6, 32, requires_grad=True)
    y = compiled(x)
    y.sum().backward()
    assert "vqdna.bias_gelu.default" in seen and "vqdna.bias_gelu_backward.default" in seen
    x2 = x.detach().clone().requires_grad_()
    y2 = mlp(x2)
    y2.sum().backward()
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(x.grad, x2.grad)
    torch._dynamo.reset()


def test_flag_survives_save_pretrained(tmp_path):
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], fused_gelu=True, **TINY)
    VQDNAForMaskedLM(cfg).save_pretrained(tmp_path)
    loaded = VQDNAForMaskedLM.from_pretrained(tmp_path)
    assert loaded.config.fused_gelu is True
    assert loaded.vqdna.encoder.layers[0].mlp.config.fused_gelu is True
    assert VQDNAConfig().fused_gelu is False  # configs saved before the key load unfused


def test_float8_still_converts_fc1_and_fc2_and_the_fused_path_uses_it():
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], fused_gelu=True, **TINY)
    torch.manual_seed(0)
    model = VQDNAForMaskedLM(cfg).eval()
    masked, labels = tiny_batch(cfg)
    loss_bf, _, _ = run_model(model, masked, labels)
    n = convert_to_float8(model)
    assert n == 4 * cfg.num_hidden_layers
    mlp = model.vqdna.encoder.layers[0].mlp
    assert isinstance(mlp.fc1, Float8Linear) and isinstance(mlp.fc2, Float8Linear)
    loss_f8, _, g_f8 = run_model(model, masked, labels)
    cfg.fused_gelu = False
    loss_f8_plain, _, g_plain = run_model(model, masked, labels)
    # float8 products (not the bf16/fp32 ones) on both paths: same loss up to where the bias is added
    assert not torch.equal(loss_f8, loss_bf)
    torch.testing.assert_close(loss_f8, loss_f8_plain, rtol=1e-4, atol=1e-5)
    for name in g_plain:
        assert rel(g_f8[name], g_plain[name]) < 1e-3, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_and_reference_paths_agree_on_cuda(dtype):
    h0, b, da = inputs((300, 3072), "cuda", dtype)
    a = fused_gelu.triton_forward(h0, b)
    a_ref = fused_gelu.reference_forward(h0, b)
    dh, db = fused_gelu.triton_backward(da, h0, b)
    dh_ref, db_ref = fused_gelu.reference_backward(da, h0, b)
    tol = 1e-6 if dtype == torch.float32 else 4e-3
    assert a.dtype == dtype and dh.dtype == dtype and db.dtype == dtype
    assert rel(a, a_ref) < tol and rel(dh, dh_ref) < tol and rel(db, db_ref) < tol
    # deterministic: the bias gradient's partial sums are reduced in a fixed order
    dh2, db2 = fused_gelu.triton_backward(da, h0, b)
    assert torch.equal(dh, dh2) and torch.equal(db, db2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_model_paths_agree_on_cuda():
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], **TINY)
    torch.manual_seed(0)
    model = VQDNAForMaskedLM(cfg).cuda().eval()
    masked, labels = (t.cuda() for t in tiny_batch(cfg))
    loss_plain, _, g_plain = run_model(model, masked, labels)
    cfg.fused_gelu = True
    loss_fused, _, g_fused = run_model(model, masked, labels)
    torch.testing.assert_close(loss_fused, loss_plain, rtol=1e-5, atol=1e-6)
    for name in g_plain:
        torch.testing.assert_close(g_fused[name], g_plain[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.skipif(not has_triton(), reason="Triton not installed")
def test_triton_kernels_under_the_cpu_interpreter():
    """The Triton kernels on CPU tensors (TRITON_INTERPRET=1, its own process: the variable is
    read when the kernels are defined) against F.gelu(h0 + b)'s autograd, for column blocks
    narrower than, equal to and wider than the width, several row-loop lengths and a partial
    last stripe; then the same kernels behind the custom op."""
    script = textwrap.dedent("""
        import torch, torch.nn.functional as F
        from vqdna.models import fused_gelu as fg
        cases = [((37, 96), dict(erf_poly=2)),  # the branch-free erf in fp32 (2: every dtype): ~1e-7, the same 1e-6 bound
                 ((2, 21, 300), dict(erf_poly=2, fwd_rows=4, fwd_cols=128, bwd_rows=4, bwd_cols=128,
                                     bwd_rows_per_stripe=16)),
                 ((37, 96), {}),
                 ((2, 21, 300), dict(fwd_rows=4, fwd_cols=128, bwd_rows=4, bwd_cols=128, bwd_rows_per_stripe=16)),
                 ((50, 64), dict(fwd_rows=2, fwd_cols=512, bwd_rows=8, bwd_cols=32, bwd_rows_per_stripe=8)),
                 ((3, 40), dict(bwd_rows=1, bwd_rows_per_stripe=1))]  # last: the op below reuses its tensors
        for shape, tiles in cases:
            old = fg.set_tiles(**tiles)
            g = torch.Generator().manual_seed(1)
            h0 = 3 * torch.randn(*shape, generator=g)
            b, da = torch.randn(shape[-1], generator=g), torch.randn(*shape, generator=g)
            a = fg.triton_forward(h0, b)
            dh, db = fg.triton_backward(da, h0, b)
            hr, br = h0.clone().requires_grad_(), b.clone().requires_grad_()
            ar = F.gelu(hr + br)
            ar.backward(da)
            for x, r in ((a, ar), (dh, hr.grad), (db, br.grad)):
                assert x.shape == r.shape and x.dtype == r.dtype
                assert ((x - r).norm() / r.norm()).item() < 1e-6, (shape, tiles)
            it, stripes = fg._backward_grid(h0.numel() // shape[-1], fg.TILES["bwd_rows"])
            assert stripes * it * fg.TILES["bwd_rows"] >= h0.numel() // shape[-1]
            fg.set_tiles(**old)
        old = fg.set_tiles(erf_poly=2)
        z = torch.linspace(-12, 12, 64 * 1000).view(64, 1000)
        zero, ones = torch.zeros(1000), torch.ones(64, 1000)
        a_ref = F.gelu(z.double())
        dz_ref = torch.ops.aten.gelu_backward(ones.double(), z.double())
        assert (fg.triton_forward(z, zero).double() - a_ref).abs().max() < 2e-6 * 12  # |z| x 1.5e-7 erf bound
        assert (fg.triton_backward(ones, z, zero)[0].double() - dz_ref).abs().max() < 2e-6
        fg.set_tiles(**old)
        fg.triton_available = lambda device: True
        hi, bi = h0.clone().requires_grad_(), b.clone().requires_grad_()
        a2 = fg.bias_gelu(hi, bi)
        a2.backward(da)
        assert torch.equal(a2, a) and torch.equal(hi.grad, dh) and torch.equal(bi.grad, db)
        print("ok")
    """)
    run_interpreter_script(script, timeout=600)
