"""Stage-2 pretraining on real DNA tokens: learning, saving, long inputs, exact resume."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from test_tokens_data import tiny_token_dir
from vqdna.models import VQDNAForMaskedLM, VQDNAModel, collate
from vqdna.models.pretrain import MLMBatcher, PretrainSettings, evaluate, pretrain
from vqdna.tokens import TokenFile

WINDOW = 128
MAX_LEN = 32  # training sequences: [CLS] + 31 tokens; windows hold 128 (4x)

BASE_CFG = {
    "device": "cpu",
    "seed": 0,
    "tokens": {"batch_nt": 1 << 14},
    "pretrain": {
        "model": {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 96},
        "max_len": MAX_LEN, "steps": 120, "batch_size": 32, "micro_batch_size": 32, "lr": 3e-3,
        "warmup_steps": 10, "log_every": 20, "checkpoint_every": 40, "eval_batches": 2, "cpu_threads": 1,
    },
}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return tiny_token_dir(tmp_path_factory.mktemp("pretrain"), WINDOW, train_rows=64, train_shards=3,
                          valid_rows=32, valid_offset=200, cfg=BASE_CFG)


def cfg_with(**pretrain_overrides):
    cfg = copy.deepcopy(BASE_CFG)
    cfg["pretrain"].update(pretrain_overrides)
    return cfg


def unigram_entropy(file: TokenFile, level: int) -> float:
    ids = np.asarray(file.ids[..., level]).ravel()
    p = np.bincount(ids) / ids.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_mlm_learns_saves_and_runs_4x_longer(tokens):
    out = tokens / "out"
    metrics = pretrain(tokens / "tokens", tokens / "tok", out, BASE_CFG, track=False)
    valid = TokenFile(tokens / "tokens", "valid")
    # Well below guessing uniformly, and below the best context-free guess (the unigram entropy).
    assert metrics["eval_loss"] < metrics["uniform_loss"] - 0.4
    for level in range(2):
        assert metrics[f"eval_loss_level{level}"] < unigram_entropy(valid, level) - 0.1, metrics
    assert not (tokens / "out.ckpt").exists()  # superseded by the finished model

    # The saved directory is the trained model: it scores the same held-out masks the same.
    model = VQDNAForMaskedLM.from_pretrained(out)
    settings = PretrainSettings.from_config(BASE_CFG)
    batcher = MLMBatcher(model.config, settings, torch.device("cpu"), 0, valid.meta.tokens_per_window)
    again = evaluate(model, valid, batcher, settings.eval_batches)
    assert again["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-5)

    # 4x the training length (128 tokens + [CLS] vs 32) gives finite outputs.
    encoder = VQDNAModel.from_pretrained(out).eval()
    batch = collate([valid.window(i) for i in range(4)], encoder.config)
    assert batch["input_ids"].shape[1] == 4 * MAX_LEN + 1
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
    assert torch.isfinite(hidden).all() and hidden.shape == (4, 4 * MAX_LEN + 1, 48)


@pytest.mark.parametrize("precision", ["fp32", "bf16_weights", "fp8"])
def test_resume_after_kill_equals_uninterrupted(tokens, precision):
    from safetensors.torch import load_file

    # 2 accumulation steps, dropout on; bf16_weights: bf16 model, fp32 masters in the optimizer;
    # fp8: that plus float8 matmuls in the blocks (emulated on CPU)
    cfg = cfg_with(steps=6, checkpoint_every=3, micro_batch_size=16, precision=precision)
    whole_dir, resumed_dir = tokens / f"whole_{precision}", tokens / f"resumed_{precision}"
    pretrain(tokens / "tokens", tokens / "tok", whole_dir, cfg, track=False)

    pretrain(tokens / "tokens", tokens / "tok", resumed_dir, cfg, track=False, stop_after=3)
    assert not resumed_dir.exists() and (tokens / f"resumed_{precision}.ckpt" / "last.pt").exists()
    resumed_metrics = pretrain(tokens / "tokens", tokens / "tok", resumed_dir, cfg, track=False)
    assert resumed_metrics["resumed_from_step"] == 3  # it did continue from the checkpoint

    whole = load_file(whole_dir / "model.safetensors")
    resumed = load_file(resumed_dir / "model.safetensors")
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert whole[key].dtype == torch.float32 or "codebook" in key  # fp32 masters are what is saved
        assert torch.equal(whole[key], resumed[key]), key
    whole_metrics = json.loads((whole_dir / "pretrain_metrics.json").read_text())
    for key in ("eval_loss", "eval_masked_acc_level0", "eval_masked_acc_level1"):
        assert whole_metrics[key] == resumed_metrics[key]


def test_fp8_rowwise_pretraining_learns(tokens):
    metrics = pretrain(tokens / "tokens", tokens / "tok", tokens / "fp8_rowwise", cfg_with(precision="fp8", fp8_recipe="rowwise"),
                       track=False)
    assert metrics["eval_loss"] < metrics["uniform_loss"] - 0.4
    model = VQDNAForMaskedLM.from_pretrained(tokens / "fp8_rowwise")  # saved as a plain fp32 model
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_checkpoint_of_other_settings_is_not_resumed(tokens):
    cfg = cfg_with(steps=4, checkpoint_every=2)
    pretrain(tokens / "tokens", tokens / "tok", tokens / "other", cfg, track=False, stop_after=2)
    changed = cfg_with(steps=4, checkpoint_every=2, lr=1e-3)
    assert pretrain(tokens / "tokens", tokens / "tok", tokens / "other", changed, track=False)["resumed_from_step"] == 0
    pretrain(tokens / "tokens", tokens / "tok", tokens / "fresh", changed, track=False)
    assert (tokens / "other" / "model.safetensors").read_bytes() == (tokens / "fresh" / "model.safetensors").read_bytes()
