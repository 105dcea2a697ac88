"""The static masked-LM path (`targets_per_row`) and `TrainStep` (the step `vqdna pretrain` and the
bench run, eager or as one CUDA graph): same loss, logits and gradients as the dynamic path, the
same updates as a hand-written step, and the graphed step equal to the eager one on CUDA."""

from __future__ import annotations

import pytest
import torch

from vqdna.models import VQDNAConfig, VQDNAForMaskedLM
from vqdna.models.masking import mask_tokens, targets_per_row
from vqdna.models.optim import MasterWeightAdamW
from vqdna.models.train_step import StepSnapshot, TrainStep

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)


def batch(cfg, B=4, T=24, seed=0, lengths=None):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_sizes[0], (B, T, cfg.levels), generator=gen)
    ids[:, 0] = cfg.vocab_sizes[0] + 2  # [CLS]
    mask = None
    if lengths is not None:  # padded rows: [PAD] past the length, an attention mask
        mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
        ids = torch.where(mask[..., None].bool(), ids, torch.full_like(ids, cfg.vocab_sizes[0]))
    masked, labels = mask_tokens(ids, cfg, ratio=0.25, generator=gen)
    return masked, mask, labels


def run(model, masked, mask, labels, **kw):
    model.zero_grad(set_to_none=True)
    out = model(masked, mask, labels=labels, **kw)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}



def model_and_optimizer(cfg, master: bool):
    """A fresh model (seed 0, train mode) and AdamW (fp32 masters when `master`)."""
    torch.manual_seed(0)
    model = VQDNAForMaskedLM(cfg).train()
    params = [{"params": list(model.parameters()), "weight_decay": 0.01}]
    opt = (MasterWeightAdamW if master else torch.optim.AdamW)(params, lr=1e-3, betas=(0.9, 0.98))
    return model, opt

def test_targets_per_row_is_the_masking_count():
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], **TINY)
    for T, ratio in ((24, 0.25), (256, 0.25), (32, 0.15), (3, 0.25), (101, 0.3)):
        ids = torch.randint(0, 20, (3, T, 1), generator=torch.Generator().manual_seed(T))
        ids[:, 0] = 22  # [CLS], never masked
        _, labels = mask_tokens(ids, cfg, ratio=ratio, generator=torch.Generator().manual_seed(1))
        counts = (labels[..., 0] != -100).sum(1)
        assert (counts == targets_per_row(T - 1, ratio)).all(), (T, ratio)


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("levels", [1, 2])
def test_static_path_equals_dynamic_path(monkeypatch, sparse, levels):
    monkeypatch.setattr(VQDNAForMaskedLM, "sparse_last_layer", sparse)
    cfg = VQDNAConfig(levels=levels, vocab_sizes=[20, 30][:levels], **TINY)
    torch.manual_seed(0)
    model = VQDNAForMaskedLM(cfg).eval()
    masked, mask, labels = batch(cfg)
    K = targets_per_row(masked.shape[1] - 1, 0.25)
    dyn, g_dyn = run(model, masked, mask, labels)
    sta, g_sta = run(model, masked, mask, labels, targets_per_row=K)
    assert torch.equal(sta.masked_positions, dyn.masked_positions)
    torch.testing.assert_close(sta.logits, dyn.logits, rtol=0, atol=0)
    torch.testing.assert_close(sta.loss, dyn.loss, rtol=0, atol=0)
    assert torch.equal(sta.level_correct, dyn.level_correct)
    assert int(sta.num_masked) == int(dyn.num_masked) == int(sta.num_targets) == 4 * K
    for name in g_dyn:
        torch.testing.assert_close(g_sta[name], g_dyn[name], rtol=1e-6, atol=1e-7, msg=name)


def test_static_path_pads_short_rows_with_ignored_entries():
    """Padded rows have fewer targets than K: the extra entries are scored nowhere (same loss,
    counts and gradients as the dynamic path); a K below a row's count leaves targets out, which
    num_targets shows."""
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], **TINY)
    torch.manual_seed(0)
    model = VQDNAForMaskedLM(cfg).eval()
    masked, mask, labels = batch(cfg, lengths=[24, 17, 9, 24])
    K = targets_per_row(23, 0.25)
    dyn, g_dyn = run(model, masked, mask, labels)
    sta, g_sta = run(model, masked, mask, labels, targets_per_row=K)
    assert sta.logits.shape[0] == 4 * K > dyn.logits.shape[0]
    torch.testing.assert_close(sta.loss, dyn.loss, rtol=1e-6, atol=1e-7)
    assert int(sta.num_masked) == int(dyn.num_masked) == int(sta.num_targets)
    assert torch.equal(sta.level_correct, dyn.level_correct)
    for name in g_dyn:
        torch.testing.assert_close(g_sta[name], g_dyn[name], rtol=1e-5, atol=1e-7, msg=name)
    short = model(masked, mask, labels=labels, targets_per_row=K - 2)
    assert int(short.num_masked) < int(short.num_targets)
    with pytest.raises(ValueError, match="targets_per_row"):
        model(masked, mask, labels=labels, targets_per_row=0)


@pytest.mark.parametrize("master", [False, True])
def test_train_step_equals_a_hand_written_step(master):
    """Two optimizer steps of 2 micro-batches each (accumulation, clipping, AdamW) through TrainStep
    and written out by hand: same losses and weights."""
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], **TINY)
    data = [[batch(cfg, seed=10 * s + m) for m in range(2)] for s in range(2)]
    K = targets_per_row(23, 0.25)

    def fresh():
        return model_and_optimizer(cfg, master)

    model, opt = fresh()
    step = TrainStep(model, opt, accum=2, grad_clip=0.5, master_weights=master, targets_per_row=K)
    losses_a = []
    for s, micro in enumerate(data):
        outs = step(micro, 1e-3 * (s + 1), [100 + s, 200 + s])
        losses_a.append([float(o["loss"]) for o in outs])

    model_b, opt_b = fresh()
    losses_b = []
    for s, micro in enumerate(data):
        for group in opt_b.param_groups:
            group["lr"] = 1e-3 * (s + 1)
        row = []
        for m, (masked, mask, labels) in enumerate(micro):
            torch.manual_seed([100 + s, 200 + s][m])
            out = model_b(masked, mask, labels=labels)
            (out.loss / 2).backward()
            row.append(float(out.loss.detach()))
        if master:
            opt_b.step(max_grad_norm=0.5)
        else:
            torch.nn.utils.clip_grad_norm_(model_b.parameters(), 0.5)
            opt_b.step()
        opt_b.zero_grad(set_to_none=True)
        losses_b.append(row)
    assert losses_a == losses_b
    for (name, a), b in zip(model.named_parameters(), model_b.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)


def test_cuda_graphs_needs_static_shapes_and_cuda():
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], **TINY)
    model = VQDNAForMaskedLM(cfg)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="targets_per_row"):
        TrainStep(model, opt, cuda_graphs=True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            TrainStep(model, opt, cuda_graphs=True, targets_per_row=4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("accum", [1, 2])
def test_graphed_step_equals_eager_step_on_cuda(accum):
    """Eval mode (no dropout: the graph draws another stream by design): 6 steps eager and as a
    graph (2 throwaway warm-up steps, capture, 6 replays) give the same losses and weights."""
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], **TINY)
    data = [[tuple(t.cuda() if t is not None else None for t in batch(cfg, seed=10 * s + m)) for m in range(accum)]
            for s in range(6)]
    K = targets_per_row(23, 0.25)
    results = []
    for graphs in (False, True):
        torch.manual_seed(0)
        model = VQDNAForMaskedLM(cfg).cuda().eval()
        opt = MasterWeightAdamW([{"params": list(model.parameters())}], lr=1e-3, fused=True)
        step = TrainStep(model, opt, accum=accum, grad_clip=1.0, master_weights=True, targets_per_row=K,
                         cuda_graphs=graphs, warmup_steps=2)
        losses = [[float(o["loss"]) for o in step(micro, 1e-3, list(range(accum)))] for micro in data]
        results.append((losses, [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.equal(a, b)


def optimizer_tensors(opt) -> list[torch.Tensor]:
    """Every tensor of an optimizer's state_dict (masters, steps, moments), in a fixed order."""
    out = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            out.append(x)
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                walk(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(opt.state_dict())
    return out


@pytest.mark.parametrize("master", [False, True])
def test_snapshot_undoes_steps_exactly(master):
    """StepSnapshot, what the graphed step's throwaway warm-up rests on: steps taken after a
    snapshot are undone exactly, from a fresh optimizer (its lazily created state reset to AdamW's
    zeros) and midway, so a run with such detours equals the run without them (dropout on)."""
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], hidden_dropout_prob=0.1, **TINY)
    data = [[batch(cfg, seed=10 * s + m) for m in range(2)] for s in range(4)]
    other = [batch(cfg, seed=999 + m) for m in range(2)]
    K = targets_per_row(23, 0.25)

    def fresh():
        model, opt = model_and_optimizer(cfg, master)
        return model, opt, TrainStep(model, opt, accum=2, grad_clip=0.5, master_weights=master, targets_per_row=K)

    def train(step, steps):
        for s in steps:
            step(data[s], 1e-3, [100 + s, 200 + s])

    def detour(model, opt, step):
        snap = StepSnapshot(model, opt)
        before = [p.detach().clone() for p in model.parameters()]
        for s in range(3):
            step(other, 2e-3, [7 + s, 8 + s])
        assert not all(torch.equal(a, p) for a, p in zip(before, model.parameters()))  # it did move
        snap.restore()

    model_a, opt_a, step_a = fresh()
    train(step_a, range(4))
    model_b, opt_b, step_b = fresh()
    detour(model_b, opt_b, step_b)  # fresh: no optimizer state before, AdamW's after
    train(step_b, range(2))
    detour(model_b, opt_b, step_b)  # midway
    train(step_b, range(2, 4))
    for (name, a), b in zip(model_a.named_parameters(), model_b.parameters()):
        assert torch.equal(a, b), name
    ta, tb = optimizer_tensors(opt_a), optimizer_tensors(opt_b)
    assert len(ta) == len(tb) > 0
    for a, b in zip(ta, tb):
        assert torch.equal(a, b)


def test_snapshot_refuses_state_it_cannot_reset():
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], **TINY)
    model = VQDNAForMaskedLM(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # lazily creates momentum buffers
    snap = StepSnapshot(model, opt)
    step = TrainStep(model, opt, targets_per_row=targets_per_row(23, 0.25))
    step([batch(cfg)], 0.1, [0])
    with pytest.raises(RuntimeError, match="momentum_buffer"):
        snap.restore()
