"""`vqdna summarize`: choose the grid point on dev, report its test metric over seeds.

Reads `{runs}/{point}/seed{seed}/metrics.json` for every configured point and seed, picks the
point with the best mean dev metric (`grid.select_best`, which never sees a test value), and
writes `summary.json` (docs/contracts.md, "Fine-tune summary"). MLflow: one parent run per
dataset; every job's run becomes its child (tag `mlflow.parentRunId`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--runs", required=True, help="results/finetune/{tok}/{dataset}/runs")
    parser.add_argument("--data", required=True, help="prepared dataset directory (for meta.json)")
    parser.add_argument("--out", required=True, help="summary.json to write")


def read_runs(runs_dir: str | Path, points: list[dict], seeds: list[int]) -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    for p in points:
        for seed in seeds:
            path = Path(runs_dir) / p["point"] / f"seed{seed}" / "metrics.json"
            if not path.exists():
                raise InputError(path, "fine-tune run missing (run its `vqdna finetune` job first)")
            try:
                runs.setdefault(p["point"], {})[seed] = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise InputError(path, f"not valid JSON: {exc.msg}", line=exc.lineno) from None
    return runs


def build_summary(*, dataset: str, tokenizer: str, meta: dict, points: list[dict], seeds: list[int],
                  runs: dict[str, dict[int, dict]]) -> dict:
    """Pure function: the summary dict. Selection uses `dev` only; `test` is read for the winner."""
    from .grid import select_best

    metric = meta["metric"]
    dev_scores = {p["point"]: [runs[p["point"]][s]["dev"][metric] for s in seeds] for p in points}
    best = select_best(dev_scores, [p["point"] for p in points])
    best_params = next(p["params"] for p in points if p["point"] == best)
    per_seed = {str(s): float(runs[best][s]["test"][metric]) for s in seeds}
    vals = np.array(list(per_seed.values()), dtype=np.float64)
    return {
        "dataset": dataset, "tokenizer": tokenizer, "family": meta["family"], "task": meta["task"],
        "metric": metric, "demo_stand_in": bool(meta.get("demo_stand_in", False)),
        "grid": [{"point": p["point"], "params": p["params"], "dev": float(np.mean(dev_scores[p["point"]])),
                  "dev_per_seed": {str(s): float(v) for s, v in zip(seeds, dev_scores[p["point"]])}} for p in points],
        "selection": f"highest mean dev {metric} over seeds {seeds}; ties -> earlier grid point",
        "best_point": best, "best_params": best_params,
        "test": {"per_seed": per_seed, "mean": float(vals.mean()), "std": float(vals.std()), "n_seeds": len(per_seed)},
    }


def run(args, cfg) -> int:
    from ..atomic import write_json
    from ..datasets.store import read_meta
    from ..tracking import start_run, with_retries
    from .grid import grid_points

    ft = cfg["finetune"]
    points = grid_points(ft["grid"])
    seeds = [int(s) for s in ft["seeds"]]
    meta = read_meta(args.data)
    runs = read_runs(args.runs, points, seeds)
    summary = build_summary(dataset=args.dataset, tokenizer=args.tokenizer, meta=meta, points=points, seeds=seeds, runs=runs)
    name = f"dataset/{args.tokenizer}/{args.dataset}"
    with start_run(cfg, stage="summarize", name=name,
                   tags={"dataset": args.dataset, "tokenizer": args.tokenizer, "demo_stand_in": summary["demo_stand_in"]},
                   params={"best_point": summary["best_point"], **{f"best.{k}": v for k, v in summary["best_params"].items()},
                           "seeds": seeds, "grid_size": len(points)}) as parent:
        parent.log_metrics({f"test.{summary['metric']}.mean": summary["test"]["mean"],
                            f"test.{summary['metric']}.std": summary["test"]["std"],
                            **{f"dev.{summary['metric']}.{g['point']}": g["dev"] for g in summary["grid"]}})
        client = parent.client  # the run's own client: a second one would open the store again
        linked = 0
        for point_runs in runs.values():
            for rec in point_runs.values():
                child = rec.get("mlflow_run_id")
                if child:
                    try:
                        with_retries(lambda: client.set_tag(child, "mlflow.parentRunId", parent.run_id), what="link child")
                        linked += 1
                    except Exception as exc:  # noqa: BLE001 - a run from another tracking store: keep going
                        log.warning("could not link run %s to %s: %s", child, parent.run_id, exc)
        summary["mlflow"] = {"parent_run_id": parent.run_id, "linked_child_runs": linked}
        write_json(args.out, summary)
        parent.log_dict(summary, "summary.json")
    log.info("%s/%s: best %s, test %s = %.4f +- %.4f (%d seeds)", args.tokenizer, args.dataset, summary["best_point"],
             summary["metric"], summary["test"]["mean"], summary["test"]["std"], len(seeds))
    return 0
