"""Pretraining variants: named backbones pretrained on an existing tokenizer's token files with
some `pretrain` keys changed (the paper's Table 9: one stage-2 pretraining per mask ratio of the
same tokenizer).

    pretrain:
      variants:
        vq_mask_15: {tokenizer: vq, mask_ratio: 0.15}

`vq_mask_15` reads `results/tokens/vq/`, is written to `results/pretrain/vq_mask_15/` and is
fine-tuned under its own name on `finetune.variant_datasets`. Every key but `tokenizer` overrides
the same key of the `pretrain` section (nested `model` keys merge). A variant whose overrides change
nothing is an alias of its base (`is_alias`): its results are the base's, fine-tuned on the same
datasets. Light on purpose: the workflow imports it at parse time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from .errors import ConfigError

# pretrain keys a variant cannot change: they say which backbones exist, not how one trains
NOT_OVERRIDABLE = ("tokenizers", "variants")


@dataclass(frozen=True)
class Variant:
    name: str
    tokenizer: str  # the base tokenizer whose token files it trains on
    overrides: dict


def pretrain_variants(cfg: dict) -> dict[str, Variant]:
    """name -> Variant, in config order (no checks: `check_variants` runs at validation)."""
    defs = (cfg.get("pretrain") or {}).get("variants") or {}
    return {name: Variant(name, str(d["tokenizer"]), {k: v for k, v in d.items() if k != "tokenizer"})
            for name, d in defs.items()}


def variant_config(cfg: dict, name: str) -> dict:
    """`cfg` with the variant's overrides applied to its `pretrain` section."""
    from .config import deep_merge

    variants = pretrain_variants(cfg)
    if name not in variants:
        raise ConfigError(f"pretrain.variants has no {name!r}; defined: {sorted(variants) or 'none'}")
    out = copy.deepcopy(cfg)
    out["pretrain"] = deep_merge(cfg["pretrain"], variants[name].overrides)
    return out


def is_alias(cfg: dict, name: str) -> bool:
    """A variant that changes no pretrain setting of its base (e.g. the paper's 25% row, its main
    setting) is the base's own backbone: pretraining or fine-tuning it again would only repeat the
    base's jobs with the same seeds."""
    resolved = variant_config(cfg, name)["pretrain"]
    return {k: v for k, v in resolved.items() if k not in NOT_OVERRIDABLE} == \
        {k: v for k, v in cfg["pretrain"].items() if k not in NOT_OVERRIDABLE}


def run_name(cfg: dict, name: str) -> str:
    """Where a backbone name's results live ({backbone_dir}/{run}, {finetune out_dir}/{run}):
    an alias variant's are its base's, any other name's its own."""
    variants = pretrain_variants(cfg)
    if name in variants and is_alias(cfg, name):
        return variants[name].tokenizer
    return name


def trained_variants(cfg: dict) -> dict[str, Variant]:
    """The variants that need their own pretraining and fine-tunes (aliases excluded)."""
    return {n: v for n, v in pretrain_variants(cfg).items() if not is_alias(cfg, n)}


def overridable_keys() -> list[str]:
    from .config import _load_yaml, schema_dir

    props = _load_yaml(schema_dir() / "pretrain.schema.yaml")["properties"]
    return sorted(k for k in props if k not in NOT_OVERRIDABLE)


def check_variants(cfg: dict, validate_section, *, source: str = "config") -> None:
    """Raise ConfigError for a variant whose base is not a trained tokenizer, whose name is taken
    by a tokenizer, or whose overrides name unknown keys or give values the schema refuses.
    `validate_section(cfg, source)` is the schema check of a whole config."""
    variants = pretrain_variants(cfg)
    if not variants:
        return
    trained = list(cfg["tokenizers"]["train"])
    tokenizers = set(trained) | set(cfg["tokenizers"].get("defs") or {})
    allowed = overridable_keys()
    for name, variant in variants.items():
        where = f"{source}: pretrain.variants.{name}"
        if name in tokenizers:
            raise ConfigError(f"{where}: the name is taken by a tokenizer (tokenizers.defs/train); "
                              f"a variant needs its own results/pretrain/{name}/ directory")
        if variant.tokenizer not in trained:
            raise ConfigError(f"{where}.tokenizer: {variant.tokenizer!r} is not a trained tokenizer; "
                              f"its token files come from tokenizers.train: {trained}")
        unknown = sorted(set(variant.overrides) - set(allowed))
        if unknown:
            raise ConfigError(f"{where}: unknown pretrain key(s) {unknown}; a variant may override {allowed}")
        merged = variant_config(cfg, name)
        merged["pretrain"]["variants"] = {}
        validate_section(merged, source=f"{where} (the variant's resolved pretrain settings)")


def variant_finetune_pairs(cfg: dict, datasets) -> list[tuple[str, str]]:
    """(run, dataset) fine-tunes the variants need: every variant on `finetune.variant_datasets`,
    an alias variant under its base's name. A dataset this run does not have is an error."""
    variants = pretrain_variants(cfg)
    if not variants:
        return []
    wanted = list(cfg["finetune"]["variant_datasets"])
    unknown = [d for d in wanted if d not in datasets]
    if unknown:
        raise ConfigError(f"finetune.variant_datasets names {unknown}, not datasets of this run "
                          f"(datasets.table / datasets.include): {sorted(datasets)}")
    return [(run_name(cfg, v), d) for v in variants for d in wanted]
