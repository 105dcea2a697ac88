"""LoRA fine-tuning on real demo data with a tiny backbone: frozen weights stay bit-identical,
the same seed repeats the same metrics on CPU, pooling ignores padding, crops are seeded."""

from pathlib import Path

import numpy as np
import pytest
import torch

from vqdna.config import load_config
from vqdna.datasets.gue import load_gue
from vqdna.datasets.registry import load_registry
from vqdna.datasets.store import write_prepared
from vqdna.finetune.data import encode_all, random_crop
from vqdna.finetune.model import build_model, pool
from vqdna.finetune.run import finetune_once
from vqdna.finetune.tiny import save_tiny_backbone
from vqdna.finetune.train import fit
from vqdna.models import VQDNAModel
from vqdna.tokenizers.onehot import OneHotTokenizer

ROOT = Path(__file__).resolve().parents[1]
CFG = load_config([ROOT / "config" / "config.yaml"])
FT = {**CFG["finetune"], "train_max_tokens": 64, "cpu_threads": 1}
PARAMS = {"lr": 3e-3, "lora_dropout": 0.05, "epochs": 1}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Tokenizer + tiny backbone + the prepared demo tf_0 (real dm3 promoter windows, 100 nt), cut small."""
    d = tmp_path_factory.mktemp("ft")
    tok = OneHotTokenizer()
    tok.save_pretrained(d / "tok")
    save_tiny_backbone(d / "bb", tok, seed=0)
    spec = load_registry(CFG)["tf_0"]
    splits, _ = load_gue(ROOT / spec.source, spec, non_acgt="error", seed=0)
    small = {"train": splits["train"].subset(range(64)), "dev": splits["dev"].subset(range(24)),
             "test": splits["test"].subset(range(24))}
    meta = {"task": "classification", "num_labels": 2, "metric": "mcc", "family": "TFP-H", "demo_stand_in": True}
    write_prepared(d / "data", small, meta)
    return d, tok, small


def test_lora_leaves_frozen_weights_bit_identical(assets):
    d, tok, splits = assets
    torch.manual_seed(0)
    model = build_model(str(d / "bb"), 2, FT, PARAMS)
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    fit(model, encode_all(tok, splits["train"].sequences), splits["train"].labels, task="classification",
        params=PARAMS, ft_cfg=FT, backbone_config=model.backbone.config, device=torch.device("cpu"), seed=0, progress=False)
    reference = VQDNAModel.from_pretrained(d / "bb").state_dict()
    trained = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
               for k, v in model.backbone.state_dict().items() if "lora_" not in k}
    assert set(trained) == set(reference)
    for k, v in reference.items():
        assert torch.equal(trained[k], v), k  # bit-identical
    lora = {k: v for k, v in model.backbone.named_parameters() if "lora_B" in k}
    assert lora and any(v.abs().sum() > 0 for v in lora.values())  # adapters did train (B starts at 0)
    assert any(not torch.equal(head_before[k], v) for k, v in model.head.state_dict().items())
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in k or k.startswith("head.") for k in trainable)


def test_full_mode_trains_the_backbone(assets):
    d, tok, splits = assets
    model = build_model(str(d / "bb"), 2, {**FT, "mode": "full"}, PARAMS)
    fit(model, encode_all(tok, splits["train"].sequences[:32]), splits["train"].labels[:32], task="classification",
        params=PARAMS, ft_cfg=FT, backbone_config=model.backbone.config, device=torch.device("cpu"), seed=0, progress=False)
    reference = VQDNAModel.from_pretrained(d / "bb").state_dict()
    changed = [k for k, v in model.backbone.state_dict().items() if not torch.equal(v, reference[k])]
    assert any("encoder.layers.0.attention.qkv.weight" in k for k in changed)


def test_same_seed_same_metrics_on_cpu(assets):
    d, _, _ = assets
    kw = dict(data_dir=d / "data", tokenizer_dir=d / "tok", backbone_dir=d / "bb", params=PARAMS, ft_cfg=FT, progress=False)
    a = finetune_once(seed=0, **kw)
    b = finetune_once(seed=0, **kw)
    c = finetune_once(seed=1, **kw)
    assert a["dev"] == b["dev"] and a["test"] == b["test"] and a["fit"]["final_loss"] == b["fit"]["final_loss"]
    assert c["fit"]["final_loss"] != a["fit"]["final_loss"]
    assert a["n"] == {"train": 64, "dev": 24, "test": 24}
    assert set(a["dev"]) == {"mcc", "f1_macro", "accuracy"}


def test_pooling_ignores_padding():
    h = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    mean = pool(h, mask, "mean", has_cls=True)
    assert torch.allclose(mean[0], h[0, 1:3].mean(0)) and torch.allclose(mean[1], h[1, 1:].mean(0))
    mx = pool(h, mask, "max", has_cls=True)
    assert torch.equal(mx[0], h[0, 1:3].amax(0))
    assert torch.equal(pool(h, mask, "cls", has_cls=True), h[:, 0])
    with pytest.raises(ValueError):
        pool(h, mask, "cls", has_cls=False)


def test_random_crop_is_seeded_and_bounded():
    tokens = np.arange(300)[:, None]
    a = random_crop(tokens, 128, np.random.default_rng(5))
    b = random_crop(tokens, 128, np.random.default_rng(5))
    assert len(a) == 128 and np.array_equal(a, b) and np.array_equal(a[:, 0], np.arange(a[0, 0], a[0, 0] + 128))
    assert random_crop(tokens[:50], 128, np.random.default_rng(0)) is not None and len(random_crop(tokens[:50], 128, np.random.default_rng(0))) == 50


def test_cast_frozen_touches_only_frozen_weights(assets):
    from vqdna.finetune.model import cast_frozen

    d, _, _ = assets
    model = build_model(str(d / "bb"), 2, FT, PARAMS)
    n = cast_frozen(model)
    assert n == sum(p.numel() for p in model.parameters() if not p.requires_grad) > 0
    for name, p in model.named_parameters():
        assert p.dtype == (torch.float32 if p.requires_grad else torch.bfloat16), name
