"""The fused qkv-bias + RoPE op (vqdna.models.fused_rope) and the model path that uses it
(VQDNAConfig.fused_rope): same function and gradients as the plain composition (projection with
its bias, view, positions.apply_rope on q and k), both output layouts; the model with the flag on
equals the model with it off; the Triton kernels on CUDA or under Triton's CPU interpreter."""

from __future__ import annotations

import textwrap

import pytest
import torch

from vqdna.models import VQDNAConfig, VQDNAForMaskedLM, fused_rope
from vqdna.models.positions import apply_rope, rope_tables

from mlm_checks import run_model, tiny_batch
from interpreter_probe import has_triton, run_interpreter_script, skip_unless_interpreter_runs_runtime_loops

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


def plain(qkv, bias, cos, sin):
    """What the op must compute: bias add, then apply_rope on the q and k slots, v as it is."""
    B, T, _, nh, d = qkv.shape
    z = qkv if bias is None else qkv + bias.view(3, nh, d)
    c, s = cos[:, None], sin[:, None]
    return apply_rope(z[:, :, 0], c, s), apply_rope(z[:, :, 1], c, s), z[:, :, 2]


def run_both(device, dtype, with_bias, layout, B=3, T=11, nh=4, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, T, 3, nh, d, generator=gen).to(device, dtype)
    bias = torch.randn(3 * nh * d, generator=gen).to(device, dtype) if with_bias else None
    grads = [torch.randn(B, T, nh, d, generator=gen).to(device, dtype) for _ in range(3)]
    cos, sin = rope_tables(T, d, 10000.0, device, dtype)
    old = fused_rope.LAYOUT
    fused_rope.LAYOUT = layout
    try:
        ins = [qkv.clone().requires_grad_()] + ([bias.clone().requires_grad_()] if with_bias else [])
        outs = fused_rope.rope_qkv(ins[0], ins[1] if with_bias else None, cos, sin)
    finally:
        fused_rope.LAYOUT = old
    torch.autograd.backward(outs, grads)
    # reference in float64 from the same (rounded) inputs and tables
    ref_ins = [t.detach().double().requires_grad_() for t in ins]
    ref = plain(ref_ins[0], ref_ins[1] if with_bias else None, cos.double(), sin.double())
    torch.autograd.backward(ref, [g.double() for g in grads])
    return outs, ref, [t.grad for t in ins], [t.grad for t in ref_ins]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("layout", ["bthd", "bhtd"])
def test_op_equals_plain_composition_fp32(device, with_bias, layout):
    outs, ref, grads, ref_grads = run_both(device, torch.float32, with_bias, layout)
    for name, a, r in zip("qkv", outs, ref):
        assert a.shape == r.shape and a.dtype == torch.float32
        assert rel(a, r) < 1e-6, name
    assert len(grads) == (2 if with_bias else 1)
    for name, a, r in zip(("dqkv", "dbias"), grads, ref_grads):
        assert a.shape == r.shape
        assert rel(a, r) < 1e-6, name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["bthd", "bhtd"])
def test_op_equals_plain_composition_bf16(device, layout):
    outs, ref, grads, ref_grads = run_both(device, torch.bfloat16, True, layout, B=4, T=64, nh=12, d=64)
    for name, a, r in zip(["q", "k", "v", "dqkv", "dbias"], list(outs) + grads, list(ref) + ref_grads):
        assert a.dtype == torch.bfloat16
        assert rel(a, r) < 1e-2, name  # bf16 storage: one rounding, ~3e-3


def test_layouts_and_odd_shapes():
    """The bhtd layout is contiguous [B, heads, T, d] memory; heads and half head dims that are
    not powers of two (padded lanes in the kernels) give the same function."""
    fused_rope.LAYOUT = "bhtd"
    try:
        q, _, _ = fused_rope.rope_qkv(torch.randn(2, 5, 3, 3, 12), None, *rope_tables(5, 12, 100.0, "cpu", torch.float32))
    finally:
        fused_rope.LAYOUT = "bthd"
    assert q.shape == (2, 5, 3, 12) and q.transpose(1, 2).is_contiguous()
    outs, ref, grads, ref_grads = run_both("cpu", torch.float32, True, "bthd", nh=3, d=12)
    for a, r in zip(list(outs) + grads, list(ref) + ref_grads):
        assert rel(a, r) < 1e-6
    assert not fused_rope.applies(2, 5, 3, 7)  # odd head dim: the plain path runs
    with pytest.raises(ValueError, match="tables"):
        fused_rope.rope_qkv(torch.randn(2, 5, 3, 3, 12), None, *rope_tables(5, 8, 100.0, "cpu", torch.float32))







def assert_close_runs(a, b, rtol=1e-4, atol=1e-6):
    torch.testing.assert_close(a[0], b[0], rtol=rtol, atol=atol)
    torch.testing.assert_close(a[1], b[1], rtol=rtol, atol=atol)
    assert a[2].keys() == b[2].keys()
    for name in b[2]:
        torch.testing.assert_close(a[2][name], b[2][name], rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("fused_norm", [False, True])
def test_model_with_flag_equals_model_without(norm_position, sparse, fused_norm):
    """Eval mode: same loss, logits and gradients (every parameter, the qkv biases included)."""
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], norm_position=norm_position, fused_dropout_norm=fused_norm, **TINY)
    torch.manual_seed(0)
    model = VQDNAForMaskedLM(cfg).eval()
    model.sparse_last_layer = sparse
    masked, labels = tiny_batch(cfg)
    plain_run = run_model(model, masked, labels)
    cfg.fused_rope = True
    fused_run = run_model(model, masked, labels)
    assert_close_runs(fused_run, plain_run)
    assert any("qkv.bias" in n for n in fused_run[2])


@pytest.mark.parametrize("fused_norm", [False, True])
def test_train_mode_draws_the_same_dropout(fused_norm):
    """Train mode: the op draws no random numbers, so with the same seed the flag changes nothing
    but rounding (dropout on the residual stream, fused op or nn.Dropout)."""
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], fused_dropout_norm=fused_norm, **TINY)
    torch.manual_seed(0)
    model = VQDNAForMaskedLM(cfg).train()
    masked, labels = tiny_batch(cfg)
    plain_run = run_model(model, masked, labels)
    cfg.fused_rope = True
    fused_run = run_model(model, masked, labels)
    assert_close_runs(fused_run, plain_run)
    model.eval()
    assert not torch.equal(run_model(model, masked, labels)[0], fused_run[0])  # dropout was on


def test_alibi_ignores_the_flag():
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], position_encoding="alibi", **TINY)
    torch.manual_seed(0)
    model = VQDNAForMaskedLM(cfg).eval()
    masked, labels = tiny_batch(cfg)
    plain_run = run_model(model, masked, labels)
    cfg.fused_rope = True
    assert_close_runs(run_model(model, masked, labels), plain_run, rtol=0, atol=0)


def test_padded_batch_with_the_flag():
    """A padding mask goes to SDPA as before; the op only makes q, k and v."""
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], **TINY)
    torch.manual_seed(0)
    model = VQDNAForMaskedLM(cfg).eval()
    masked, labels = tiny_batch(cfg)
    attention_mask = torch.ones(masked.shape[:2], dtype=torch.long)
    attention_mask[1, 10:] = 0
    out_plain = model(masked, attention_mask).logits
    cfg.fused_rope = True
    torch.testing.assert_close(model(masked, attention_mask).logits, out_plain, rtol=1e-4, atol=1e-6)


def test_compiled_blocks_match_eager():
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], fused_rope=True, fused_dropout_norm=True, **TINY)
    torch.manual_seed(0)
    model = VQDNAForMaskedLM(cfg).train()
    masked, labels = tiny_batch(cfg)
    eager = run_model(model, masked, labels)
    model.vqdna.compile_blocks(backend="aot_eager", dynamic=False)
    try:
        assert_close_runs(run_model(model, masked, labels), eager, rtol=1e-5, atol=1e-7)
    finally:
        torch._dynamo.reset()


def test_flag_survives_save_pretrained(tmp_path):
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], fused_rope=True, **TINY)
    model = VQDNAForMaskedLM(cfg)
    model.save_pretrained(tmp_path)
    loaded = VQDNAForMaskedLM.from_pretrained(tmp_path)
    assert loaded.config.fused_rope is True
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert VQDNAConfig().fused_rope is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("layout", ["bthd", "bhtd"])
def test_triton_and_reference_paths_agree_on_cuda(layout):
    """The Triton kernels against the PyTorch reference on the same CUDA tensors, BERT-base head
    shape, bf16, strided gradients as SDPA hands them back (transposed views)."""
    B, T, nh, d = 8, 256, 12, 64
    qkv = torch.randn(B, T, 3, nh, d, device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(3 * nh * d, device="cuda", dtype=torch.bfloat16)
    cos, sin = rope_tables(T, d, 10000.0, "cuda", torch.bfloat16)
    got = fused_rope.triton_forward(qkv, bias, cos, sin, layout)
    ref = fused_rope.reference_forward(qkv, bias, cos, sin, layout)
    for a, r in zip(got, ref):
        assert a.stride() == r.stride()
        assert rel(a, r) < 1e-2 and float((a.float() - r.float()).abs().max()) < 0.07
    grads = [torch.randn(B, nh, T, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in range(3)]
    for bias_dtype in (torch.bfloat16, None):
        g = fused_rope.triton_backward(*grads, cos, sin, bias_dtype)
        r = fused_rope.reference_backward(*grads, cos, sin, bias_dtype)
        assert rel(g[0], r[0]) < 1e-2
        if bias_dtype is not None:
            assert rel(g[1], r[1]) < 1e-2
        else:
            assert g[1].numel() == 0


@pytest.mark.skipif(not has_triton(), reason="Triton not installed")
def test_triton_kernels_under_the_cpu_interpreter():
    """The Triton kernels on CPU tensors (TRITON_INTERPRET=1, its own process), against the plain
    composition: both layouts, with and without bias, padded heads / half dims, several launch
    shapes, strided incoming gradients; and once through the custom op and its autograd formula."""
    skip_unless_interpreter_runs_runtime_loops("the backward kernel's row loop")
    script = textwrap.dedent("""
        import torch
        from vqdna.models import fused_rope as fr
        from vqdna.models.positions import apply_rope, rope_tables
        from test_models_fused_rope import plain

        # bwd_loads_first / bwd_stages: the backward's load order (session 6)
        cases = [(2, 7, 4, 16, True, "bthd", {}),
                 (3, 5, 3, 12, True, "bhtd", dict(fwd_rows=4, bwd_rows=2, bwd_progs_per_sm=1, bwd_loads_first=0)),
                 (1, 9, 2, 8, False, "bthd", dict(fwd_rows=1, fwd_warps=1, bwd_rows=4, bwd_warps=4, bwd_loads_first=1,
                                                  bwd_stages=2)),
                 (2, 9, 3, 12, True, "bthd", dict(bwd_rows=1, bwd_warps=2, bwd_progs_per_sm=2, bwd_loads_first=0,
                                                  bwd_stages=3))]
        for B, T, nh, d, with_bias, layout, tiles in cases:
            fr.set_tiles(**tiles)
            qkv = torch.randn(B, T, 3, nh, d)
            bias = torch.randn(3 * nh * d) if with_bias else None
            cos, sin = rope_tables(T, d, 100.0, "cpu", torch.float32)
            got = fr.triton_forward(qkv, bias, cos, sin, layout)
            ins = [qkv.clone().requires_grad_()] + ([bias.clone().requires_grad_()] if with_bias else [])
            ref = plain(ins[0], ins[1] if with_bias else None, cos, sin)
            grads = [torch.randn(B, nh, T, d).transpose(1, 2) for _ in range(3)]  # strided, as from SDPA
            torch.autograd.backward(ref, grads)
            for a, r in zip(got, ref):
                assert a.stride() == fr._empty_out(qkv, layout).stride()
                assert ((a - r).norm() / r.norm()).item() < 1e-6, (B, T, nh, d, layout)
            dqkv, dbias = fr.triton_backward(*grads, cos, sin, torch.float32 if with_bias else None)
            assert ((dqkv - ins[0].grad).norm() / ins[0].grad.norm()).item() < 1e-6
            if with_bias:
                assert ((dbias - ins[1].grad).norm() / ins[1].grad.norm()).item() < 1e-6
        # through the custom op and its autograd formula (what the model calls on CUDA)
        fr.triton_available = lambda device: True
        ins = [qkv.clone().requires_grad_()]
        outs = fr.rope_qkv(ins[0], None, cos, sin)
        torch.autograd.backward(outs, grads)
        assert ((ins[0].grad - dqkv).norm() / dqkv.norm()).item() < 1e-6
        print("ok")
    """)
    run_interpreter_script(script, timeout=600)
