"""The configuration a user edits: defaults, overrides and clear errors for wrong keys/types."""

from pathlib import Path

import pytest

from vqdna.config import apply_overrides, load_config, validate_config
from vqdna.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_validate(name):
    cfg = load_config([ROOT / "config" / name])
    assert cfg["tracking"]["uri"].startswith("sqlite:///")


def test_defaults_filled():
    cfg = load_config([ROOT / "config" / "config.yaml"])
    base = {k: v for k, v in cfg.items() if k != "seed"}
    assert validate_config(base)["seed"] == 0


def test_misspelt_top_level_key_names_the_key(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text((ROOT / "config" / "config.yaml").read_text() + "\nsede: 3\n")
    with pytest.raises(ConfigError, match="sede"):
        load_config([bad])


def test_wrong_type_names_the_path():
    with pytest.raises(ConfigError, match="seed"):
        load_config([ROOT / "config" / "config.yaml"], ["seed=minus-one"])


def test_override_parses_yaml_values():
    cfg = apply_overrides({"a": {"b": 1}}, ["a.b=1e-4", "a.c=[1, 2]", "d=true"])
    assert cfg == {"a": {"b": 1e-4, "c": [1, 2]}, "d": True}


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["noequals"])
