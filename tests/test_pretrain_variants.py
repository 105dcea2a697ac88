"""Pretraining variants (pretrain.variants, the paper's Table 9): config checks, resolution, and a
tiny CPU pretraining through the CLI that masks at the variant's ratio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_tokens_data import tiny_token_dir
from vqdna.cli import main
from vqdna.config import load_config
from vqdna.errors import ConfigError
from vqdna.variants import (is_alias, pretrain_variants, run_name, trained_variants, variant_config,
                            variant_finetune_pairs)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "config" / "config.yaml"


def demo_with(*overrides):
    return load_config([DEMO], list(overrides))


@pytest.mark.parametrize("variant, message", [
    ("{tokenizer: vqq, mask_ratio: 0.15}", "pretrain.variants.v.tokenizer: 'vqq' is not a trained tokenizer"),
    ("{tokenizer: kmer3, mask_ratio: 0.15}", "'kmer3' is not a trained tokenizer"),  # defined, not trained
    ("{tokenizer: vq, mask_rato: 0.15}", "pretrain.variants.v: unknown pretrain key(s) ['mask_rato']"),
    ("{tokenizer: vq, tokenizers: [vq]}", "unknown pretrain key(s) ['tokenizers']"),
    ("{tokenizer: vq, mask_ratio: 1.5}", "pretrain.mask_ratio: 1.5 is greater than the maximum of 1"),
    ("{tokenizer: vq, model: {hidden_size: 0}}", "pretrain.model.hidden_size: 0 is less than the minimum"),
    ("{mask_ratio: 0.15}", "'tokenizer' is a required property"),
])
def test_bad_variant_is_a_config_error_naming_it(variant, message):
    with pytest.raises(ConfigError) as err:
        demo_with(f"pretrain.variants={{v: {variant}}}")
    assert message in str(err.value)


def test_variant_may_not_take_a_tokenizer_name():
    with pytest.raises(ConfigError, match="pretrain.variants.hrq: the name is taken by a tokenizer"):
        demo_with("pretrain.variants={hrq: {tokenizer: vq, mask_ratio: 0.15}}")


def test_variant_overrides_merge_into_the_pretrain_section():
    cfg = demo_with("pretrain.variants={v15: {tokenizer: hrq, mask_ratio: 0.15, model: {num_hidden_layers: 1}},"
                    " v25: {tokenizer: vq, mask_ratio: 0.25}}")
    resolved = variant_config(cfg, "v15")["pretrain"]
    assert resolved["mask_ratio"] == 0.15 and resolved["model"]["num_hidden_layers"] == 1
    assert resolved["model"]["hidden_size"] == cfg["pretrain"]["model"]["hidden_size"]  # merged, not replaced
    assert cfg["pretrain"]["mask_ratio"] == 0.25  # the base section is untouched
    # the demo's own ratio is 0.25: v25 is the vq backbone itself, not a second pretraining
    assert not is_alias(cfg, "v15") and is_alias(cfg, "v25")
    assert run_name(cfg, "v15") == "v15" and run_name(cfg, "v25") == "vq" and run_name(cfg, "hrq") == "hrq"
    assert list(trained_variants(cfg)) == ["v15"]
    assert variant_finetune_pairs(cfg, ["emp_H3", "covid", "tf_0"]) == [
        ("v15", "emp_H3"), ("v15", "covid"), ("vq", "emp_H3"), ("vq", "covid")]
    with pytest.raises(ConfigError, match=r"finetune.variant_datasets names \['covid'\]"):
        variant_finetune_pairs(cfg, ["emp_H3"])
    with pytest.raises(ConfigError, match="pretrain.variants has no 'v30'"):
        variant_config(cfg, "v30")


def test_ablation_overlay_declares_table9_variants_and_demo_none():
    assert pretrain_variants(load_config([DEMO])) == {}  # the demo stays fast
    cfg = load_config([ROOT / "config" / "paper.yaml", ROOT / "config" / "ablations.yaml"])
    variants = pretrain_variants(cfg)
    assert sorted(variants) == sorted(f"{b}_mask_{r}" for b in ("vq", "hrq") for r in (15, 20, 25, 30))
    for name, v in variants.items():
        assert v.tokenizer == name.split("_")[0] and v.overrides == {"mask_ratio": int(name[-2:]) / 100}
    assert cfg["finetune"]["variant_datasets"] == ["emp_H3", "covid"]
    assert sorted(trained_variants(cfg)) == sorted(f"{b}_mask_{r}" for b in ("vq", "hrq") for r in (15, 20, 30))


# ---- a variant trains with its own mask ratio ---------------------------------------------

WINDOW, MAX_LEN = 128, 32


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return tiny_token_dir(tmp_path_factory.mktemp("variant"), WINDOW, train_rows=32, train_shards=1,
                          valid_rows=16, valid_offset=100,
                          cfg={"device": "cpu", "seed": 0, "tokens": {"batch_nt": 1 << 14}})


def test_cli_variant_pretrains_with_its_mask_ratio(tokens, tmp_path, monkeypatch):
    import vqdna.models.pretrain as pretrain_module

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seen: list[tuple[float, float]] = []  # (ratio asked for, share of real tokens masked) per batch
    real_mask_tokens = pretrain_module.mask_tokens

    def recording_mask_tokens(input_ids, config, *, ratio, **kw):
        masked, labels = real_mask_tokens(input_ids, config, ratio=ratio, **kw)
        maskable = input_ids[..., 0] < config.vocab_sizes[0]
        seen.append((ratio, float((labels[..., 0] != -100).sum() / maskable.sum())))
        return masked, labels

    monkeypatch.setattr(pretrain_module, "mask_tokens", recording_mask_tokens)
    overlay = tmp_path / "overlay.json"
    overlay.write_text(json.dumps({
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "pretrain": {
            "model": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
            "max_len": MAX_LEN, "steps": 3, "batch_size": 8, "micro_batch_size": 8, "warmup_steps": 1,
            "eval_batches": 1, "log_every": 1, "cpu_threads": 1,
            "variants": {"hrq_mask_15": {"tokenizer": "hrq", "mask_ratio": 0.15},
                         "hrq_mask_40": {"tokenizer": "hrq", "mask_ratio": 0.40}},
        },
    }))
    stats = {}
    for variant in ("hrq_mask_15", "hrq_mask_40"):
        seen.clear()
        out = tmp_path / variant
        rc = main(["pretrain", "--config", str(DEMO), "--config", str(overlay), "--variant", variant,
                   "--tokens", str(tokens / "tokens"), "--tokenizer", str(tokens / "tok"), "--out", str(out)])
        assert rc == 0
        metrics = json.loads((out / "pretrain_metrics.json").read_text())
        stats[variant] = (metrics["mask_ratio"], {r for r, _ in seen}, [share for _, share in seen])
    for variant, ratio in (("hrq_mask_15", 0.15), ("hrq_mask_40", 0.40)):
        recorded, asked, shares = stats[variant]
        assert recorded == ratio and asked == {ratio}
        # exactly round(ratio * 31) of the 31 real tokens after [CLS]: within half a token of the ratio
        assert len(shares) >= 3 and all(abs(s - ratio) <= 0.5 / (MAX_LEN - 1) + 1e-6 for s in shares), shares
    assert torch.tensor(stats["hrq_mask_40"][2]).mean() > 2 * torch.tensor(stats["hrq_mask_15"][2]).mean()


def test_cli_unknown_variant_is_an_error(tokens, tmp_path, capsys):
    rc = main(["pretrain", "--config", str(DEMO), "--variant", "hrq_mask_99", "--tokens", str(tokens / "tokens"),
               "--tokenizer", str(tokens / "tok"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "pretrain.variants has no 'hrq_mask_99'" in capsys.readouterr().err
