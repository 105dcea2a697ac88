"""LoRA fine-tuning of a backbone pretrained with the fused kernels (`fused_dropout_norm`,
`fused_rope`, `fused_gelu` travel in its saved config): the adapters on qkv, out_proj, fc1 and
fc2 must act exactly as on the plain backbone — the fused paths take the linear layers' biases
into their ops, which must not bypass peft's wrappers."""

from __future__ import annotations

import pytest
import torch

from vqdna.finetune.model import wrap_backbone
from vqdna.models import LORA_TARGET_MODULES, VQDNAConfig, VQDNAModel

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
FT = {"mode": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "pooling": "mean", "head_hidden": 16,
      "head_dropout": 0.0, "add_cls": True}
FUSED = {"fused_dropout_norm": True, "fused_rope": True, "fused_gelu": True}


def lora_model(fused: dict):
    cfg = VQDNAConfig(levels=1, vocab_sizes=[20], **TINY, **fused)
    torch.manual_seed(0)
    backbone = VQDNAModel(cfg)
    model = wrap_backbone(backbone, cfg.hidden_size, 3, FT, {}, LORA_TARGET_MODULES)
    # peft starts every adapter at B = 0 (a no-op); give them weights so they change the output
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.eval()


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("flag", [*FUSED, "all"])
def test_lora_on_a_fused_backbone_equals_the_plain_backbone(flag, device):
    fused = FUSED if flag == "all" else {flag: True}
    plain, model = lora_model({}).to(device), lora_model(fused).to(device)
    model.load_state_dict(plain.state_dict())  # same backbone, adapters and head
    ids = torch.randint(0, 20, (3, 17, 1), generator=torch.Generator().manual_seed(2)).to(device)
    mask = torch.ones(3, 17, dtype=torch.long, device=device)
    mask[1, 12:] = 0  # one padded row: the masked-attention path too
    out_plain, out = plain(ids, mask), model(ids, mask)
    # CUDA: the Triton kernels (fp32) sum in another order than PyTorch
    tol = dict(rtol=1e-5, atol=1e-6) if device == "cpu" else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, out_plain, **tol)
    # the adapters matter (the comparison above is not vacuous) and all of them get gradients
    out.sum().backward()
    adapters = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(adapters) == 2 * len(LORA_TARGET_MODULES) * TINY["num_hidden_layers"]
    for name, p in adapters.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
