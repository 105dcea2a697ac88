"""The faster training path (`tokenizers.training.precision`/`dwconv_ln`) is the same model and loss:
the fused conv+LayerNorm function against the two modules (values, gradients), the whole VQ/HRQ
model's forward, loss, gradients and EMA update with either block implementation, and the
fp32-master optimizer against plain AdamW, all in fp32 (float64 for the gradient check)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from vqdna.tokenizers.convnext import ConvNeXtBlock1d
from vqdna.tokenizers.dwconv_ln import dwconv_layer_norm
from vqdna.tokenizers.model import VQModelConfig, VQVAE
from vqdna.tokenizers.train_path import StepOptimizer, cast_weights, set_dwconv_ln


def reference(x, w, b, ln_w, ln_b, eps):
    """F.conv1d + F.layer_norm, channels-first conv as the module does it."""
    conv = F.conv1d(x.transpose(1, 2), w.t().unsqueeze(1), b, padding=w.shape[0] // 2, groups=x.shape[-1])
    return F.layer_norm(conv.transpose(1, 2), (x.shape[-1],), ln_w, ln_b, eps)


def random_inputs(dtype, k=7, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 13, dim, generator=g, dtype=dtype)
    w = torch.randn(k, dim, generator=g, dtype=dtype)
    b, ln_w, ln_b = (torch.randn(dim, generator=g, dtype=dtype) for _ in range(3))
    return [t.requires_grad_(True) for t in (x, w, b, ln_w, ln_b)]


@pytest.mark.parametrize("k", [1, 3, 7])
def test_fused_dwconv_ln_passes_the_gradient_check(k):
    inputs = random_inputs(torch.float64, k=k, seed=k)
    assert torch.autograd.gradcheck(lambda *t: dwconv_layer_norm(*t, 1e-6), inputs)


def test_fused_dwconv_ln_equals_conv_then_layer_norm():
    inputs = random_inputs(torch.float32, seed=1)
    got = dwconv_layer_norm(*inputs, 1e-6)
    ref = reference(*inputs, 1e-6)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    dy = torch.randn_like(ref)
    g_got = torch.autograd.grad(got, inputs, dy)
    g_ref = torch.autograd.grad(ref, inputs, dy)
    for name, a, r in zip(["x", "w", "b", "ln_w", "ln_b"], g_got, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5, msg=name)


def test_fused_dwconv_ln_keeps_bf16_in_bf16_out():
    x, w, b, ln_w, ln_b = (t.detach().bfloat16().requires_grad_(True) for t in random_inputs(torch.float32))
    y = dwconv_layer_norm(x, w, b, ln_w, ln_b, 1e-6)
    assert y.dtype == torch.bfloat16
    y.float().pow(2).sum().backward()
    assert all(t.grad.dtype == torch.bfloat16 for t in (x, w, b, ln_w, ln_b))
    ref = reference(*(t.detach().float() for t in (x, w, b, ln_w, ln_b)), 1e-6)
    assert (y.float() - ref).abs().max() < 0.05  # bf16 rounding of the output only


def test_even_kernel_is_rejected():
    x, w, b, ln_w, ln_b = random_inputs(torch.float32, k=4)
    with pytest.raises(ValueError, match="odd"):
        dwconv_layer_norm(x, w, b, ln_w, ln_b, 1e-6)


@pytest.mark.parametrize("transposed", [False, True])
def test_fused_block_equals_the_module_block(transposed):
    torch.manual_seed(2)
    block = ConvNeXtBlock1d(8, 7, 2, 0.5, transposed=transposed)
    other = copy.deepcopy(block)
    other.depthwise_impl = "fused"
    x = torch.randn(2, 17, 8, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = block(x), other(x2)
    torch.testing.assert_close(y2, y, rtol=1e-5, atol=1e-6)
    dy = torch.randn_like(y)
    y.backward(dy)
    y2.backward(dy)
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-4, atol=1e-6)
    for (name, p), p2 in zip(block.named_parameters(), other.parameters()):
        torch.testing.assert_close(p2.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def tiny(kind):
    torch.manual_seed(0)
    return VQVAE(VQModelConfig(kind=kind, dim=16, stem_dim=12, depth=2, layer_scale_init=0.5, ema_decay=0.8,
                               taps=[2] if kind == "vq" else [1, 2],
                               codebook_sizes=[16] if kind == "vq" else [8, 16]))


@pytest.mark.parametrize("kind", ["vq", "hrq"])
def test_whole_model_same_forward_loss_gradients_and_ema_update(kind):
    old = tiny(kind)
    new = copy.deepcopy(old)
    set_dwconv_ln(new, "fused")
    assert all(b.depthwise_impl == "fused" for b in new.modules() if isinstance(b, ConvNeXtBlock1d))
    assert ConvNeXtBlock1d.depthwise_impl == "auto"  # the class default is untouched
    x = torch.randint(0, 4, (3, 40))
    for model in (old, new):  # codebooks from data first, as training does
        with torch.no_grad():
            model.quantizer.init_codebooks(model.encoder(x), 3, torch.Generator().manual_seed(1))
    out_old = old(x, update_codebooks=True)
    out_new = new(x, update_codebooks=True)
    assert torch.equal(out_new["codes"], out_old["codes"])
    for key in ("logits", "loss", "rec_loss", "commit_loss"):
        torch.testing.assert_close(out_new[key], out_old[key], rtol=1e-5, atol=1e-6, msg=key)
    out_old["loss"].backward()
    out_new["loss"].backward()
    for (name, p), p2 in zip(old.named_parameters(), new.parameters()):
        assert p.grad is not None, name
        torch.testing.assert_close(p2.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    for (name, b), b2 in zip(old.named_buffers(), new.buffers()):  # embed, cluster_size, embed_sum
        torch.testing.assert_close(b2, b, rtol=1e-5, atol=1e-6, msg=name)


def test_master_weight_optimizer_equals_adamw_in_fp32():
    """bf16_weights' optimizer (fp32 masters, clipping on the masters) on an fp32 model = plain AdamW."""
    old = tiny("hrq")
    new = copy.deepcopy(old)
    kw = dict(lr=1e-2, betas=(0.9, 0.98), weight_decay=0.01, fused=False)
    opt_old = StepOptimizer(old, "autocast", **kw)
    opt_new = StepOptimizer(new, "bf16_weights", **kw)  # model left fp32: masters = weights exactly
    for step in range(3):
        x = torch.randint(0, 4, (2, 24), generator=torch.Generator().manual_seed(step))
        for model, opt in ((old, opt_old), (new, opt_new)):
            model(x, update_codebooks=True)["loss"].backward()
            opt.step(grad_clip=0.05)  # small: clipping is active
            opt.zero_grad()
    for (name, p), p2 in zip(old.named_parameters(), new.parameters()):
        torch.testing.assert_close(p2, p, rtol=1e-5, atol=1e-7, msg=name)
        assert not torch.equal(p, tiny("hrq").state_dict()[name]), name  # the steps did move it


def test_bf16_weights_keep_codebooks_fp32_and_restore_exact_masters():
    model = tiny("vq")
    cast_weights(model, "bf16_weights")
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(b.dtype in (torch.float32, torch.bool) for b in model.buffers())
    opt = StepOptimizer(model, "bf16_weights", lr=1e-3, betas=(0.9, 0.98), weight_decay=0.0, fused=False)
    out = model(torch.randint(0, 4, (2, 32)), update_codebooks=True)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    opt.step(1.0)
    masters = [m.detach().clone() for m in opt.inner.masters]
    opt.restore_fp32()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # masters are grouped by weight decay, model_params in the same order
    assert all(torch.equal(p, m) for p, m in zip(opt.inner.model_params, masters))
    assert {id(p) for p in opt.inner.model_params} == {id(p) for p in model.parameters()}


def test_unknown_settings_are_rejected():
    from vqdna.tokenizers.trainer import TrainSettings

    with pytest.raises(ValueError, match="precision"):
        cast_weights(tiny("vq"), "fp16")
    with pytest.raises(ValueError, match="dwconv_ln"):
        set_dwconv_ln(tiny("vq"), "triton")
    base = dict(batch_size=2, max_steps=1, lr=1e-3, min_lr=1e-5, betas=[0.9, 0.98], weight_decay=0.0,
                warmup_steps=0, seq_len_warmup=8, seq_len=8, grad_clip=1.0, init_kmeans_iters=1,
                kmeans_after_warmup=False, kmeans_iters=1, kmeans_max_samples=64, restart_every=0,
                checkpoint_every=0, log_every=1, valid_windows=1, valid_length=None, eval_batch_rows=1)
    with pytest.raises(ValueError, match="precision"):
        TrainSettings.from_dict({**base, "precision": "fp8"})
    assert TrainSettings.from_dict(base).precision == "autocast"


@pytest.mark.parametrize("dwconv_ln", ["fused_fwd", "fused_torch"])
def test_other_fused_settings_are_the_same_model(dwconv_ln):
    """fused_fwd (Triton forward only) and fused_torch (no kernels) select other kernels of the same
    function: on CPU every one of them is the PyTorch code, so loss and gradients equal the modules'."""
    old = tiny("vq")
    new = copy.deepcopy(old)
    set_dwconv_ln(new, dwconv_ln)
    assert all(b.depthwise_impl == dwconv_ln for b in new.modules() if isinstance(b, ConvNeXtBlock1d))
    x = torch.randint(0, 4, (2, 24))
    out_old, out_new = old(x), new(x)
    torch.testing.assert_close(out_new["loss"], out_old["loss"], rtol=1e-5, atol=1e-6)
    out_old["loss"].backward()
    out_new["loss"].backward()
    for (name, p), p2 in zip(old.named_parameters(), new.parameters()):
        torch.testing.assert_close(p2.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
