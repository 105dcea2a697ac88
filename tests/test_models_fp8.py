"""Float8 matmuls of the encoder (vqdna.models.fp8): scaling, casts, layouts and the model path,
on CPU (the same function the GPU computes through torch._scaled_mm)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqdna.models import VQDNAConfig, VQDNAForMaskedLM
from vqdna.models.fp8 import (E4M3, E5M2, Float8Linear, convert_to_float8, fp8_linear, fp8_supported,
                              scaled_mm, to_float8, to_float8_rows)
from vqdna.models.masking import mask_tokens


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("dtype", [E4M3, E5M2])
def test_to_float8_puts_amax_on_the_format_maximum(dtype):
    x = torch.randn(64, 48) * 37.0
    x8, inv = to_float8(x, dtype)
    assert x8.dtype == dtype
    fmax = torch.finfo(dtype).max
    assert float(x8.float().abs().max()) == fmax  # the largest magnitude lands exactly on the maximum
    back = x8.float() * inv
    # round-to-nearest with 3 (e4m3) or 2 (e5m2) mantissa bits: relative error per element under 2^-4 / 2^-3
    tol = 2.0 ** -4 if dtype == E4M3 else 2.0 ** -3
    big = x.abs() > x.abs().max() / 100  # away from the subnormal range
    assert ((back - x).abs()[big] <= tol * x.abs()[big] + 1e-6).all()
    zeros = torch.zeros(16, 16)
    z8, zinv = to_float8(zeros, dtype)
    assert torch.isfinite(zinv) and float(z8.float().abs().max()) == 0.0


@pytest.mark.skipif(not hasattr(torch, "_scaled_mm"), reason="no torch._scaled_mm")
def test_cpu_product_matches_torch_scaled_mm_semantics():
    a8, ia = to_float8(torch.randn(32, 64), E4M3)
    b8, ib = to_float8(torch.randn(48, 64), E5M2)
    mine = scaled_mm(a8, b8.t(), ia, ib, torch.float32)
    try:
        ref = torch._scaled_mm(a8, b8.t(), scale_a=ia, scale_b=ib, out_dtype=torch.float32)
    except (RuntimeError, NotImplementedError) as exc:  # CPU kernel missing in this torch build
        pytest.skip(f"torch._scaled_mm on CPU: {exc}")
    assert torch.allclose(mine, ref, rtol=1e-5, atol=1e-5)


def test_forward_and_gradients_are_the_float8_products():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 32, requires_grad=True)
    w = torch.randn(48, 32, requires_grad=True)
    b = torch.randn(48, requires_grad=True)
    y = fp8_linear(x, w, b)
    g = torch.randn_like(y)
    y.backward(g)

    # exactly the products of the dequantised float8 operands (e4m3 forward, e5m2 gradient)
    x8, ix = to_float8(x.detach().reshape(-1, 32), E4M3)
    w8, iw = to_float8(w.detach(), E4M3)
    g8, ig = to_float8(g.reshape(-1, 48), E5M2)
    xq, wq, gq = x8.float() * ix, w8.float() * iw, g8.float() * ig
    assert torch.allclose(y.detach().reshape(-1, 48), xq @ wq.t() + b.detach(), rtol=1e-5, atol=1e-5)
    assert torch.allclose(x.grad.reshape(-1, 32), gq @ wq, rtol=1e-5, atol=1e-5)
    assert torch.allclose(w.grad, gq.t() @ xq, rtol=1e-5, atol=1e-5)
    assert torch.allclose(b.grad, g.reshape(-1, 48).sum(0), rtol=1e-5, atol=1e-5)  # the bias stays exact

    # and close to, but not equal to, the exact products (float8 rounding is really there)
    exact_y = F.linear(x.detach(), w.detach(), b.detach())
    assert 1e-3 < rel(y.detach(), exact_y) < 0.08
    exact_gw = g.reshape(-1, 48).t() @ x.detach().reshape(-1, 32)
    assert 1e-3 < rel(w.grad, exact_gw) < 0.15


def test_rowwise_recipe_scales_each_row_and_keeps_grad_weight_exact():
    torch.manual_seed(1)
    # rows of very different magnitude: one scale per row keeps the small rows precise
    x = (torch.randn(32, 32) * torch.logspace(-3, 3, 32)[:, None]).requires_grad_(True)
    w = torch.randn(48, 32, requires_grad=True)
    y = fp8_linear(x, w, None, recipe="rowwise")
    g = torch.randn_like(y)
    y.backward(g)

    x8, ix = to_float8_rows(x.detach(), E4M3, dim=1)
    assert ix.shape == (32, 1)
    assert (x8.float().abs().amax(dim=1) == torch.finfo(E4M3).max).all()  # every row on the maximum
    w8, iw = to_float8_rows(w.detach(), E4M3, dim=1)
    assert rel(y.detach(), (x8.float() * ix) @ (w8.float() * iw).t()) < 1e-5
    g8, ig = to_float8_rows(g, E4M3, dim=1)
    wc8, iwc = to_float8_rows(w.detach(), E4M3, dim=0)
    assert iwc.shape == (1, 32)
    assert rel(x.grad, (g8.float() * ig) @ (wc8.float() * iwc)) < 1e-5
    assert rel(w.grad, g.t() @ x.detach()) < 1e-6  # weight gradient in full precision

    # per-row scaling is what keeps the smallest rows accurate; one tensor-wide scale flushes them
    exact = x.detach() @ w.detach().t()
    tensorwise = fp8_linear(x.detach(), w.detach(), None, recipe="tensorwise")
    assert rel(y.detach()[:4], exact[:4]) < 0.08 < rel(tensorwise[:4], exact[:4])


def test_shapes_the_kernels_cannot_take_fall_back_to_plain_linear():
    x = torch.randn(3, 5, 24)  # 24 is not a multiple of 16
    w, b = torch.randn(32, 24), torch.randn(32)
    assert not fp8_supported(x, w)
    assert torch.equal(fp8_linear(x, w, b), F.linear(x, w, b))
    assert fp8_supported(torch.randn(4, 4, 32), torch.randn(48, 32))
    assert not fp8_supported(torch.randn(3, 5, 32), torch.randn(48, 32))  # 15 tokens


def tiny_model():
    torch.manual_seed(0)
    cfg = VQDNAConfig(levels=1, vocab_sizes=[40], embedding="codebook", code_dim=16, hidden_size=64,
                      num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    model = VQDNAForMaskedLM(cfg)
    model.load_code_vectors([torch.randn(40, 16)])
    return model


@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise"])
def test_convert_keeps_parameters_and_keys_and_tracks_the_fp32_model(recipe):
    ref, fp8 = tiny_model().eval(), tiny_model().eval()
    keys = list(ref.state_dict())
    n = convert_to_float8(fp8, recipe)
    assert n == 4 * ref.config.num_hidden_layers  # qkv, out_proj, fc1, fc2 of every block
    assert list(fp8.state_dict()) == keys
    assert isinstance(fp8.vqdna.encoder.layers[0].mlp.fc1, Float8Linear)
    assert type(fp8.mlm_head.dense) is torch.nn.Linear  # the head stays as it is

    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 40, (8, 32, 1), generator=gen)
    masked, labels = mask_tokens(ids, ref.config, ratio=0.25, generator=gen)
    out_ref, out = ref(masked, None, labels=labels), fp8(masked, None, labels=labels)
    out_ref.loss.backward()
    out.loss.backward()
    assert out.loss.item() == pytest.approx(out_ref.loss.item(), rel=0.01)
    assert out.loss.item() != out_ref.loss.item()
    g_ref = torch.cat([p.grad.flatten() for p in ref.parameters() if p.grad is not None])
    g = torch.cat([p.grad.flatten() for p in fp8.parameters() if p.grad is not None])
    assert rel(g, g_ref) < 0.1
    # the sparse last block (queries at the masked positions only) runs through float8 as well
    assert isinstance(fp8.vqdna.encoder.layers[-1].attention.qkv, Float8Linear)
    assert fp8.vqdna.encoder.layers[-1].attention.qkv.fp8_recipe == recipe
    with pytest.raises(ValueError, match="recipe"):
        convert_to_float8(fp8, "blockwise")
