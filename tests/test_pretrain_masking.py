"""BERT masking of code ids: ratio, 80/10/10 split, specials never masked, labels."""

from __future__ import annotations

import torch

from vqdna.models import VQDNAConfig, special_token_ids
from vqdna.models.masking import mask_tokens
from vqdna.models.schedule import warmup_cosine


def test_masking_statistics_match_the_configuration():
    cfg = VQDNAConfig(levels=2, vocab_sizes=[32, 64], hidden_size=8, num_attention_heads=2)
    sp = special_token_ids(cfg)
    g = torch.Generator().manual_seed(0)
    B, T = 256, 101
    ids = torch.stack([torch.randint(0, 32, (B, T), generator=g), torch.randint(0, 64, (B, T), generator=g)], -1)
    ids[:, 0] = torch.tensor(sp["cls"])
    real = torch.randint(40, T, (B,), generator=g)  # padded rows of varying length
    pad = torch.arange(T)[None] >= real[:, None]
    ids[pad] = torch.tensor(sp["pad"])
    masked, labels = mask_tokens(ids, cfg, ratio=0.25, generator=g)

    is_target = labels[..., 0] != -100
    assert (labels[..., 0] != -100).eq(labels[..., 1] != -100).all()  # levels masked together
    assert not is_target[:, 0].any() and not is_target[pad].any()     # never [CLS] or [PAD]
    n_real = (real - 1).float()
    torch.testing.assert_close(is_target.sum(1).float(), (0.25 * n_real).round())  # exact per row
    assert torch.equal(labels[is_target], ids[is_target])
    assert torch.equal(masked[~is_target], ids[~is_target])

    targets = masked[is_target]
    as_mask = (targets == torch.tensor(sp["mask"])).all(-1)
    unchanged = (targets == ids[is_target]).all(-1)
    n = is_target.sum().item()
    assert abs(as_mask.float().mean().item() - 0.8) < 0.02
    assert abs(unchanged.float().mean().item() - 0.1) < 0.02  # kept + random draws that hit the same ids
    random_ids = targets[~as_mask]
    assert (random_ids[:, 0] < 32).all() and (random_ids[:, 1] < 64).all()
    assert n > 4000


def test_same_generator_seed_same_masks():
    cfg = VQDNAConfig(levels=1, vocab_sizes=[4], hidden_size=8, num_attention_heads=2)
    ids = torch.randint(0, 4, (8, 50, 1))
    a = mask_tokens(ids, cfg, ratio=0.3, generator=torch.Generator().manual_seed(5))
    b = mask_tokens(ids, cfg, ratio=0.3, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_warmup_then_cosine_to_floor():
    kw = dict(peak=5e-4, floor=1e-6, warmup=10, total=110)
    lrs = [warmup_cosine(s, **kw) for s in range(110)]
    assert lrs[0] == 5e-5 and lrs[9] == 5e-4
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert abs(warmup_cosine(110, **kw) - 1e-6) < 1e-12 and abs(lrs[60] - (1e-6 + 0.5 * (5e-4 - 1e-6))) < 1e-9
