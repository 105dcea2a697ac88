"""The hyper-parameter grid and the dev-only choice of its best point.

A grid point is one combination of `finetune.grid` values (paper: lr x lora_dropout x epochs);
its id is a readable, filesystem-safe string (`lr3e-05_do0.05_ep4`). Selection sees only dev
scores: `select_best` takes `{point: [dev score per seed]}`, never a test number.
"""

from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

from ..errors import ConfigError

# grid key -> short prefix in the point id; this order is the canonical one (ids and grid order
# must not depend on how a config file, or the sorted resolved JSON, happens to order the keys)
ABBREV = {"lr": "lr", "lora_dropout": "do", "epochs": "ep", "batch_size": "bs", "weight_decay": "wd"}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def point_id(params: Mapping) -> str:
    return "_".join(f"{ABBREV[k]}{_fmt(params[k])}" for k in ABBREV if k in params)


def grid_points(grid: Mapping[str, Sequence]) -> list[dict]:
    """Every combination, in config order: [{"point": id, "params": {...}}, ...]."""
    if not grid:
        raise ConfigError("finetune.grid is empty")
    unknown = [k for k in grid if k not in ABBREV]
    if unknown:
        raise ConfigError(f"finetune.grid has unknown keys {unknown}; known: {sorted(ABBREV)}")
    keys = [k for k in ABBREV if k in grid]
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values))
        out.append({"point": point_id(params), "params": params})
    ids = [p["point"] for p in out]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"finetune.grid has duplicate values: {ids}")
    return out


def point_params(grid: Mapping[str, Sequence], point: str) -> dict:
    for p in grid_points(grid):
        if p["point"] == point:
            return p["params"]
    raise ConfigError(f"grid point {point!r} is not in finetune.grid {dict(grid)}")


def select_best(dev_scores: Mapping[str, Sequence[float]], order: Sequence[str]) -> str:
    """The point with the highest mean dev score over its seeds; ties go to the earlier point
    in grid order (deterministic). Points with no finite dev score cannot win."""
    best, best_score = None, -math.inf
    for point in order:
        vals = [v for v in dev_scores.get(point, []) if v is not None and math.isfinite(v)]
        if not vals:
            continue
        score = sum(vals) / len(vals)
        if score > best_score:
            best, best_score = point, score
    if best is None:
        raise ConfigError("no grid point has a finite dev score")
    return best
