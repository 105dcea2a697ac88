"""VQ/HRQ model pieces on tiny dimensions: shapes, one code per nucleotide, straight-through
gradients, the EMA update, the HRQ formula, dead-code restart, k-means initialisation."""

from pathlib import Path

import pytest
import torch

from vqdna.config import load_config
from vqdna.tokenizers.model import VQModelConfig, VQVAE
from vqdna.tokenizers.quantizer import EMACodebook, HierarchicalQuantizer, kmeans, usage_and_perplexity

ROOT = Path(__file__).resolve().parents[1]


def tiny(kind="vq", **kw):
    base = dict(kind=kind, dim=8, stem_dim=6, depth=2, layer_scale_init=0.5,
                taps=[2] if kind == "vq" else [1, 2], codebook_sizes=[16] if kind == "vq" else [8, 16])
    base.update(kw)
    torch.manual_seed(0)
    return VQVAE(VQModelConfig(**base))


@pytest.mark.parametrize("kind", ["vq", "hrq"])
@pytest.mark.parametrize("length", [1, 7, 64])
def test_shapes_and_one_code_per_nucleotide(kind, length):
    model = tiny(kind)
    x = torch.randint(0, 4, (3, length))
    out = model(x)
    levels = 1 if kind == "vq" else 2
    assert out["logits"].shape == (3, length, 4)
    assert out["codes"].shape == (3, length, levels)
    assert model.encode(x).shape == (3, length, levels)
    for level, size in enumerate(model.config.codebook_sizes):
        assert 0 <= int(out["codes"][..., level].min()) and int(out["codes"][..., level].max()) < size
    assert model.decode(out["codes"]).shape == (3, length, 4)


def test_straight_through_gradient_reaches_the_encoder():
    # β = 0: the only path from the loss to the encoder is the straight-through estimator
    model = tiny("hrq", beta=0.0)
    out = model(torch.randint(0, 4, (2, 32)))
    out["rec_loss"].backward()
    assert model.encoder.stem.weight.grad is not None
    assert model.encoder.stem.weight.grad.abs().sum() > 0
    assert model.encoder.blocks[-1].fc2.weight.grad.abs().sum() > 0
    # the codebooks are buffers (EMA), never optimised by gradients
    assert all(not cb.embed.requires_grad for cb in model.quantizer.codebooks)


def test_commitment_gradient_pulls_latents_to_codes():
    model = tiny("vq", beta=1.0)
    out = model(torch.randint(0, 4, (2, 16)))
    out["commit_loss"].backward()
    assert model.encoder.blocks[0].fc1.weight.grad.abs().sum() > 0
    assert model.decoder.head.weight.grad is None  # commitment does not touch the decoder


def test_ema_update_equals_hand_computation():
    cb = EMACodebook(size=3, dim=2, decay=0.5, eps=0.0, dead_threshold=0.0)
    cb.embed.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
    cb.cluster_size.copy_(torch.tensor([2.0, 4.0, 2.0]))
    cb.embed_sum.copy_(torch.tensor([[0.0, 0.0], [40.0, 0.0], [0.0, 20.0]]))
    x = torch.tensor([[1.0, 1.0], [9.0, 1.0], [11.0, -1.0], [3.0, 0.0]])
    idx = cb.assign(x)
    assert idx.tolist() == [0, 1, 1, 0]
    cb.ema_update(x, idx)
    # by hand: counts n = (2, 2, 0); sums = ((4, 1), (20, 0), (0, 0))
    # cluster_size = 0.5*old + 0.5*n = (2, 3, 1); embed_sum = 0.5*old + 0.5*sums
    #   = ((2, 0.5), (30, 0), (0, 10)); with eps = 0 embed = embed_sum / cluster_size
    assert cb.cluster_size.tolist() == [2.0, 3.0, 1.0]
    expected = [[1.0, 0.25], [10.0, 0.0], [0.0, 10.0]]
    assert torch.allclose(cb.embed, torch.tensor(expected))


def test_ema_laplace_smoothing_keeps_empty_codes_finite():
    cb = EMACodebook(size=4, dim=3, decay=0.9, eps=1e-5, dead_threshold=0.0)
    cb.cluster_size.zero_()
    x = torch.randn(10, 3)
    cb.ema_update(x, torch.zeros(10, dtype=torch.long))
    assert torch.isfinite(cb.embed).all()


def test_hrq_matches_a_direct_computation():
    torch.manual_seed(1)
    q = HierarchicalQuantizer([5, 7], dim=3, decay=0.99, eps=1e-5, dead_threshold=0.0)
    z1, z2 = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    out = q([z1, z2])
    e1, e2 = q.codebooks[0].embed, q.codebooks[1].embed
    commit = 0.0
    for b in range(2):
        for i in range(4):
            m1 = min(range(5), key=lambda k: float(((z1[b, i] - e1[k]) ** 2).sum()))
            h2 = 2 * z2[b, i] - e1[m1]                      # H(2) = 2·Z(2) − e(M(1))
            m2 = min(range(7), key=lambda k: float(((h2 - e2[k]) ** 2).sum()))
            assert out.codes[b, i].tolist() == [m1, m2]
            z_hat = (e1[m1] + e2[m2]) / 2                   # mean of the level embeddings
            assert torch.allclose(out.z_q[b, i], z_hat, atol=1e-6)
            commit += float(((z1[b, i] - e1[m1]) ** 2).sum() + ((z2[b, i] - z_hat) ** 2).sum())
    assert out.commit_loss.item() == pytest.approx(commit / (2 * 4 * 3), rel=1e-5)
    assert torch.allclose(q.embed(out.codes), out.z_q, atol=1e-6)


def test_vq_is_the_one_level_case():
    torch.manual_seed(2)
    q = HierarchicalQuantizer([6], dim=4, decay=0.99, eps=1e-5, dead_threshold=0.0)
    z = torch.randn(3, 5, 4)
    out = q([z])
    d = ((z.reshape(-1, 1, 4) - q.codebooks[0].embed[None]) ** 2).sum(-1)
    assert out.codes.reshape(-1).tolist() == d.argmin(1).tolist()


def test_dead_code_restart_revives_unused_codes():
    torch.manual_seed(3)
    cb = EMACodebook(size=8, dim=2, decay=0.9, eps=1e-5, dead_threshold=0.5)
    x = torch.cat([torch.randn(50, 2) * 0.1 + 5, torch.randn(50, 2) * 0.1 - 5])
    cb.embed.copy_(torch.tensor([[5.0, 5.0], [-5.0, -5.0]] + [[100.0, 100.0]] * 6))
    for _ in range(20):  # only two codes are ever chosen: the others' EMA counts decay to ~0
        cb.ema_update(x, cb.assign(x))
    assert len(cb.assign(x).unique()) == 2
    dead_before = (cb.cluster_size < 0.5).sum().item()
    assert dead_before == 6
    n = cb.restart_dead(x, torch.Generator().manual_seed(0))
    assert n == 6
    assert len(cb.assign(x).unique()) > 2
    # restarted codes sit on real latents
    for k in range(2, 8):
        assert (cb.embed[k] == x).all(1).any()


def test_kmeans_finds_separated_clusters():
    torch.manual_seed(4)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = (centers[:, None, :] + 0.1 * torch.randn(3, 40, 2)).reshape(-1, 2)
    found, counts = kmeans(x, 3, 20, torch.Generator().manual_seed(1))
    assert sorted(counts.tolist()) == [40.0, 40.0, 40.0]
    dists = torch.cdist(centers, found).min(1).values
    assert (dists < 0.2).all()


def test_usage_and_perplexity():
    assert usage_and_perplexity(torch.tensor([5, 5, 0, 0])) == (50.0, pytest.approx(2.0))
    assert usage_and_perplexity(torch.tensor([0, 0])) == (0.0, 0.0)


@pytest.mark.parametrize("name,paper_millions", [("vq", 16), ("hrq", 17)])
def test_paper_size_parameter_count_within_ten_percent(name, paper_millions):
    cfg = load_config([ROOT / "config" / "paper.yaml"])
    d = {k: v for k, v in cfg["tokenizers"]["defs"][name].items() if k != "training"}
    counts = VQVAE(VQModelConfig(**d)).num_parameters()
    assert abs(counts["total"] / (paper_millions * 1e6) - 1) <= 0.10, counts


def test_config_rejects_mismatched_levels():
    with pytest.raises(ValueError):
        VQModelConfig(kind="vq", taps=[3, 6], codebook_sizes=[8, 16])
    with pytest.raises(ValueError):
        VQModelConfig(kind="hrq", taps=[3, 6], codebook_sizes=[8])


@pytest.mark.parametrize("transposed", [False, True])
def test_shifted_sum_depthwise_equals_the_convolution(transposed):
    from vqdna.tokenizers.convnext import ConvNeXtBlock1d

    torch.manual_seed(5)
    block = ConvNeXtBlock1d(6, 7, 2, 0.5, transposed=transposed)
    x = torch.randn(3, 11, 6)
    block.depthwise_impl = "conv"
    ref = block.depthwise(x)
    block.depthwise_impl = "shift"
    assert torch.allclose(block.depthwise(x), ref, atol=1e-5)
    block.depthwise_impl = "auto"  # eager -> the convolution
    assert torch.equal(block.depthwise(x), ref)
