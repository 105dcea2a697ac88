"""Nearest-code search precisions (`tokenizers.training.distance`, `vqdna.tokenizers.distance`): bf16x3
gives the fp32 search's codes except at near-exact ties, single bf16 does not, and the quantizer and the
training settings take the key."""

import pytest
import torch

from vqdna.tokenizers.distance import mm_f32, nearest_code, split_left, split_right
from vqdna.tokenizers.quantizer import HierarchicalQuantizer
from vqdna.tokenizers.trainer import TrainSettings


def exact_scores(x, e):
    """||e||²/2 − x·e in float64 (what every mode's argmin approximates)."""
    x, e = x.double(), e.double()
    return 0.5 * e.pow(2).sum(1) - x @ e.t()


def margins(scores):
    top2 = scores.topk(2, dim=1, largest=False).values
    return top2[:, 1] - top2[:, 0]


def latents_and_codebook(n=8192, k=512, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(k, d, generator=g) * 0.8


def test_bf16x3_scores_are_fp32_accurate_and_bf16_scores_are_not():
    x, e = latents_and_codebook()
    exact = exact_scores(x, e)
    half_sq = 0.5 * e.pow(2).sum(1)
    err = {}
    for mode in ("fp32", "bf16x3", "bf16"):
        got = half_sq.double() - mm_f32(split_left(x, mode), split_right(e, mode)).double()
        err[mode] = ((got - exact).norm() / exact.norm()).item()
    assert err["fp32"] < 1e-6
    assert err["bf16x3"] < 2e-5
    assert err["bf16"] > max(2e-4, 20 * err["bf16x3"])  # the split is what buys the accuracy


def test_bf16x3_codes_differ_from_fp32_only_at_near_ties():
    x, e = latents_and_codebook()
    exact = exact_scores(x, e)
    best = exact.argmin(1)
    fp32 = nearest_code(x, e)
    x3 = nearest_code(x, e, mode="bf16x3")
    one = nearest_code(x, e, mode="bf16")
    assert x3.dtype == fp32.dtype == torch.int64
    scale = exact.abs().max(1).values
    clear = margins(exact) > 1e-4 * scale  # a gap far above bf16x3's ~1e-5 relative error
    assert clear.float().mean() > 0.97
    assert torch.equal(x3[clear], best[clear])
    assert torch.equal(fp32[clear], best[clear])
    # single bf16 flips codes whose margin is clear at bf16x3's precision
    assert (one[clear] != best[clear]).sum() > 0


def test_unknown_distance_is_rejected():
    x, e = latents_and_codebook(n=8, k=4, d=4)
    with pytest.raises(ValueError, match="distance must be one of"):
        nearest_code(x, e, mode="tf32")
    q = HierarchicalQuantizer([4], 4, decay=0.9, eps=1e-5, dead_threshold=0.0)
    with pytest.raises(ValueError, match="tokenizers.training.distance"):
        q.set_distance("bf16")  # inference-only precision
    settings = dict(batch_size=2, max_steps=1, lr=1e-3, min_lr=1e-5, betas=(0.9, 0.98), weight_decay=0.0,
                    warmup_steps=0, seq_len_warmup=8, seq_len=8, grad_clip=0.0, init_kmeans_iters=1,
                    kmeans_after_warmup=False, kmeans_iters=1, kmeans_max_samples=64, restart_every=0,
                    checkpoint_every=0, log_every=1, valid_windows=1, valid_length=None, eval_batch_rows=1)
    assert TrainSettings(**settings, distance="bf16x3").distance == "bf16x3"
    with pytest.raises(ValueError, match="tokenizers.training.distance"):
        TrainSettings(**settings, distance="tf32")


@pytest.mark.parametrize("sizes", [[64], [32, 64]])
def test_quantizer_step_with_bf16x3_equals_fp32(sizes):
    """A VQ/HRQ forward with the EMA update: same codes, commitment loss and codebook state under either
    search when the latents sit clearly closer to one code (as after training: 100% reconstruction)."""
    d = 16
    g = torch.Generator().manual_seed(3)
    base = HierarchicalQuantizer(sizes, d, decay=0.9, eps=1e-5, dead_threshold=0.0)
    latents = []
    for cb in base.codebooks:
        cb.embed.copy_(torch.randn(cb.size, d, generator=g))
        cb.embed_sum.copy_(cb.embed)
        cb.cluster_size.fill_(1.0)
    for _ in sizes:
        latents.append(torch.randn(4, 50, d, generator=g))
    results = {}
    for mode in ("fp32", "bf16x3"):
        q = HierarchicalQuantizer(sizes, d, decay=0.9, eps=1e-5, dead_threshold=0.0)
        q.load_state_dict(base.state_dict())
        q.set_distance(mode)
        out = q([z.clone() for z in latents], update=True)
        results[mode] = (out, {k: v.clone() for k, v in q.state_dict().items()})
    (a, sa), (b, sb) = results["fp32"], results["bf16x3"]
    assert torch.equal(a.codes, b.codes)
    torch.testing.assert_close(a.commit_loss, b.commit_loss, rtol=0, atol=0)
    torch.testing.assert_close(a.z_q, b.z_q, rtol=0, atol=0)
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)
