"""config/ablations.yaml (paper Tables 7/8) stays consistent with config/paper.yaml and the report."""

from __future__ import annotations

from pathlib import Path

from vqdna.config import load_config
from vqdna.report.aggregate import ablation_variants

ROOT = Path(__file__).resolve().parents[1]


def test_ablation_overlay_defines_every_table7_8_variant_as_one_change_of_the_base():
    base = load_config([ROOT / "config" / "paper.yaml"])
    cfg = load_config([ROOT / "config" / "paper.yaml", ROOT / "config" / "ablations.yaml"])
    assert cfg["report"]["ablations"]["enabled"] is True
    variants = [v for v in ablation_variants(cfg) if "_mask_" not in v and "unreadable" not in v]
    assert len(variants) == 4 * 2 + 3 + 2  # Table 7: 4 sizes x {vq, hrq}; Table 8: 3 vq + 2 hrq dims
    defs = cfg["tokenizers"]["defs"]
    for name in variants:
        assert name in cfg["tokenizers"]["train"] and name in defs, name
        tok, row = name.split("_", 1)
        reference = base["tokenizers"]["defs"][tok]
        changed = {k for k in set(defs[name]) | set(reference) if defs[name].get(k) != reference.get(k)}
        if row.startswith("code_size_"):
            k = int(row.rsplit("_", 1)[1])
            assert defs[name]["codebook_sizes"] == ([k] if tok == "vq" else [2 * k, 4 * k])
            assert changed <= {"codebook_sizes"}, (name, changed)
        else:
            assert defs[name]["dim"] == int(row.rsplit("_", 1)[1])
            assert changed <= {"dim"}, (name, changed)
    # the main tables and the pretraining keep to the paper's tokenizers
    assert cfg["report"]["tokenizers"] == base["tokenizers"]["train"]
    assert cfg["pretrain"]["tokenizers"] == base["tokenizers"]["train"]
