"""Read what the upstream stages hand the report: fine-tune summaries, probe results,
tokenizer metrics. Every reader returns None for a run that does not exist (a missing run
is a table cell, not an error) and raises InputError for a file that exists but is wrong."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

SUMMARY_KEYS = ("dataset", "tokenizer", "metric", "test")


@dataclass
class RunResult:
    """Test result of one (tokenizer, dataset) fine-tune, raw metric scale."""

    tokenizer: str
    dataset: str
    metric: str
    per_seed: dict[str, float]
    family: str | None = None
    demo_stand_in: bool = False
    path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def values(self) -> list[float]:
        return [v for v in self.per_seed.values() if v is not None and not math.isnan(v)]

    @property
    def n_seeds(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        vals = self.values
        return sum(vals) / len(vals) if vals else None

    @property
    def std(self) -> float | None:
        """Population std over seeds (numpy's default, as the fine-tune summary computes it)."""
        vals = self.values
        if not vals:
            return None
        m = sum(vals) / len(vals)
        return math.sqrt(sum((v - m) ** 2 for v in vals) / len(vals))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON: {exc.msg}", line=exc.lineno) from None


def read_summary(path: str | Path) -> RunResult | None:
    path = Path(path)
    if not path.exists():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(path, "fine-tune summary must be a JSON object")
    missing = [k for k in SUMMARY_KEYS if k not in data]
    if missing:
        raise InputError(path, f"fine-tune summary lacks {missing} (docs/contracts.md 'Fine-tune summary')")
    test = data["test"]
    per_seed = test.get("per_seed") if isinstance(test, dict) else None
    if not isinstance(per_seed, dict):
        raise InputError(path, "test.per_seed must map seed -> metric")
    clean: dict[str, float] = {}
    for seed, value in per_seed.items():
        if value is not None and not isinstance(value, (int, float)):
            raise InputError(path, f"test.per_seed[{seed!r}] = {value!r} is not a number")
        clean[str(seed)] = None if value is None else float(value)
    return RunResult(
        tokenizer=str(data["tokenizer"]), dataset=str(data["dataset"]), metric=str(data["metric"]),
        per_seed=clean, family=data.get("family"), demo_stand_in=bool(data.get("demo_stand_in", False)),
        path=str(path),
    )


def collect_summaries(finetune_dir: str | Path, tokenizers: list[str]) -> dict[tuple[str, str], RunResult]:
    """(tokenizer, dataset) -> result for every `{finetune_dir}/{tok}/{dataset}/summary.json`.

    The directory names must agree with the file's own `tokenizer`/`dataset` fields; a
    copied or renamed summary would otherwise be joined with the wrong paper row."""
    out: dict[tuple[str, str], RunResult] = {}
    root = Path(finetune_dir)
    for tok in tokenizers:
        for path in sorted((root / tok).glob("*/summary.json")):
            res = read_summary(path)
            if res is None:
                continue
            if (res.tokenizer, res.dataset) != (tok, path.parent.name):
                raise InputError(path, f"summary names tokenizer={res.tokenizer!r} dataset={res.dataset!r} "
                                       f"but lies under {tok}/{path.parent.name}")
            out[(tok, res.dataset)] = res
    return out


def read_probe(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    data = read_json(path)
    for key in ("tokenizer", "dataset", "token_usage_pct", "linear_probe"):
        if key not in data:
            raise InputError(path, f"probe result lacks {key!r} (written by `vqdna probe`)")
    return data


def read_tokenizer_metrics(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(path, "tokenizer metrics must be a JSON object")
    return data


def lookup(data: dict | None, dotted: str) -> float | None:
    """`a.b.c` inside nested dicts, None when absent (a key the producer did not write)."""
    node: Any = data
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return float(node)
    return None
