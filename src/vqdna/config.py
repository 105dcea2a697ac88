"""Load, merge, override and validate the pipeline configuration.

The schema lives in `vqdna/schemas/` (the workflow's `workflow/schemas` points at the same
files), so the CLI and Snakemake validate against one definition and fill the same defaults.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import ConfigError

SCHEMA_FILE = "config.schema.yaml"


def schema_dir() -> Path:
    return Path(str(resources.files("vqdna") / "schemas"))


# libyaml's parser where PyYAML was built with it: the schemas and configs are parsed by every pipeline
# job (~0.45 s per job in pure Python, ~0.05 s with libyaml); same YAML 1.1 safe semantics
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(path: Path) -> Any:
    try:
        with open(path) as fh:
            if path.suffix == ".json":
                # YAML 1.1 would read the JSON number 1e-05 as a string
                return json.load(fh)
            return yaml.load(fh, Loader=_SafeLoader)  # noqa: S506 - a safe loader
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def deep_merge(base: dict, update: dict) -> dict:
    """Return `base` updated by `update`; nested dicts merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Apply `a.b.c=value` overrides; the value is parsed as YAML (so 1e-4, true, [1,2] work)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = cfg
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {key!r} is not a mapping")
        node[keys[-1]] = _parse_value(raw)
    return cfg


def _parse_value(raw: str) -> Any:
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        # YAML 1.1 reads "1e-4" as a string; users mean a number
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _validator():
    import jsonschema
    from jsonschema import Draft202012Validator, validators
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    sdir = schema_dir()

    def retrieve(uri: str) -> Resource:
        name = uri.rsplit("/", 1)[-1]
        contents = _load_yaml(sdir / name)
        # A section's own `$schema` would make jsonschema validate it with the stock Draft 2020-12
        # class, which does not fill defaults; every file is 2020-12, so resolve it without one.
        contents.pop("$schema", None)
        return Resource.from_contents(contents, default_specification=DRAFT202012)

    root = _load_yaml(sdir / SCHEMA_FILE)
    root.setdefault("$id", (sdir / SCHEMA_FILE).as_uri())
    registry = Registry(retrieve=retrieve)

    # Same behaviour as snakemake.utils.validate(set_default=True): fill schema defaults.
    base_props = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from base_props(validator, properties, instance, schema)

    cls = validators.extend(Draft202012Validator, {"properties": set_defaults})
    return cls(root, registry=registry), jsonschema


def validate_config(cfg: dict, *, source: str = "config") -> dict:
    """Validate and fill defaults. Raises ConfigError naming the offending key path."""
    from .variants import check_variants

    cfg = _validate_schema(cfg, source=source)
    # pretrain.variants override pretrain keys: their merged settings must pass the schema too
    check_variants(cfg, _validate_schema, source=source)
    return cfg


def _validate_schema(cfg: dict, *, source: str = "config") -> dict:
    cfg = copy.deepcopy(cfg)
    validator, jsonschema = _validator()
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            lines.append(f"  {where}: {err.message}")
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines))
    return cfg


def load_config(paths: Iterable[str | Path], overrides: Iterable[str] = ()) -> dict:
    cfg: dict = {}
    names = []
    for p in paths:
        p = Path(p)
        names.append(str(p))
        data = _load_yaml(p) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        cfg = deep_merge(cfg, data)
    cfg = apply_overrides(cfg, overrides)
    return validate_config(cfg, source=" + ".join(names) or "config")


def write_resolved(cfg: dict, path: str | Path) -> Path:
    """Write the validated config for the CLI jobs; leave the file alone if nothing changed.

    Snakemake re-parses the Snakefile in every job (also on Slurm), so rewriting an
    unchanged file would only churn mtimes.
    """
    from .atomic import atomic_path

    path = Path(path)
    text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    if path.exists() and path.read_text() == text:
        return path
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def section(cfg: dict, *keys: str) -> Any:
    node: Any = cfg
    for key in keys:
        try:
            node = node[key]
        except (KeyError, TypeError):
            raise ConfigError(f"config has no key {'.'.join(keys)!r}") from None
    return node
