"""Figure 1 (bubble chart: performance per task family against parameters), training curves
from MLflow, and the shared PNG+SVG writer. Figure 5 lives in `codebook_map.py`."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

from ..atomic import atomic_path

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_base, formats: Sequence[str] = ("png", "svg"), dpi: int = 150,
                extra_artists: Sequence = ()) -> list[Path]:
    """Write `out_base.png` and `out_base.svg` atomically. `extra_artists`: artists outside the axes
    that the tight bounding box would otherwise cut (a second legend added with `ax.add_artist`)."""
    paths = []
    for ext in formats:
        path = Path(f"{out_base}.{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches="tight",
                        bbox_extra_artists=list(extra_artists) or None)
        paths.append(path)
    return paths


def placeholder_figure(out_base, title: str, message: str) -> list[Path]:
    """A figure that says why it is empty (e.g. the run trained no HRQ tokenizer), so the report
    shows the reason instead of a missing file."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 2.5))
    ax.axis("off")
    ax.set_title(title, fontsize=11)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=10)
    paths = save_figure(fig, out_base)
    plt.close(fig)
    return paths


# ---- Figure 1 ------------------------------------------------------------------------------

def family_scores(data) -> dict[str, dict]:
    """model label -> {"params_M": float|None, "families": {family: mean ×100}, "ours": bool}.

    Paper models: Tables 3-5 averaged per family, parameters from Table 2 (backbone+tokenizer).
    This run: each tokenizer's test means averaged per family over the datasets it finished."""
    info = data.paper.dataset_info()
    models: dict[str, dict] = {}
    for row in data.paper.rows:
        if row.table in (3, 4, 5) and row.value.number is not None:
            m = models.setdefault(row.method, {"families": {}, "ours": False,
                                               "params_M": _paper_params(data, row.method)})
            m["families"].setdefault(row.family, []).append(row.value.number)
    for tok in data.tokenizers:
        fams: dict[str, list] = {}
        for (t, ds), run in data.summaries.items():
            if t == tok and run.mean is not None and ds in info and info[ds][0] in (3, 4, 5):
                fams.setdefault(info[ds][1], []).append(run.mean * data.scale)
        if not fams:
            continue
        probe = data.probes.get((tok, data.table1_dataset)) or {}
        model = probe.get("model") or {}
        params = None
        if model.get("backbone_params") is not None:
            params = (model["backbone_params"] + (model.get("tokenizer_params") or 0)) / 1e6
        stand_in = any(r.demo_stand_in for (t, _), r in data.summaries.items() if t == tok)
        label = f"ours: {tok}" + (" (demo stand-in data)" if stand_in else "")
        models[label] = {"families": fams, "ours": True, "params_M": params}
    for m in models.values():
        m["families"] = {f: sum(v) / len(v) for f, v in m["families"].items()}
    return models


def _paper_params(data, method: str) -> float | None:
    value = data.paper.value(2, method, "all", "params_M")
    return value.number if value is not None else None


FAMILY_ORDER = ("EMP", "TFP-M", "TFP-H", "CVC", "PD", "CPD", "SSP", "EEP")


def bubble_chart(data, out_base, *, max_area: float, min_area: float) -> list[Path]:
    plt = _plt()
    models = family_scores(data)
    families = [f for f in FAMILY_ORDER if any(f in m["families"] for m in models.values())]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    if not families:
        plt.close(fig)
        return placeholder_figure(out_base, "Figure 1", "no results for Tables 3-5 in this run or the paper")
    known = [m["params_M"] for m in models.values() if m["params_M"]]
    biggest = max(known) if known else 1.0
    # paper models and this run's tokenizers from different palettes, so no two share a colour
    paper_colours, our_colours = plt.get_cmap("tab10"), plt.get_cmap("Dark2")
    n = len(models)
    n_paper = 0
    for i, (label, m) in enumerate(models.items()):
        colour = our_colours((i - n_paper) % 8) if m["ours"] else paper_colours(i % 10)
        n_paper += 0 if m["ours"] else 1
        xs, ys = [], []
        for j, fam in enumerate(families):
            if fam in m["families"]:
                # spread models horizontally inside each family column so bubbles do not hide each other
                xs.append(j + (i - (n - 1) / 2) * 0.8 / max(n, 1))
                ys.append(m["families"][fam])
        # area ∝ sqrt(parameters): 2537M against ~1M demo models would otherwise be invisible
        area = min_area if not m["params_M"] else min_area + (max_area - min_area) * math.sqrt(m["params_M"] / biggest)
        params = f"{m['params_M']:.1f}M" if m["params_M"] and m["params_M"] < 10 else (
            f"{m['params_M']:.0f}M" if m["params_M"] else "params n/a")
        ax.scatter(xs, ys, s=area, color=colour, alpha=0.65, edgecolors="k" if m["ours"] else "none",
                   linewidths=1.2 if m["ours"] else 0, marker="D" if m["ours"] else "o",
                   label=f"{label} [{params}]")
    ax.set_xticks(range(len(families)), families)
    ax.set_xlabel("task family")
    ax.set_ylabel("mean test score per family (×100: MCC, F1 or Spearman)")
    ax.set_title("Figure 1. Performance per task family; bubble area grows with parameters", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
                       title="model [parameters]", title_fontsize=9, labelspacing=1.3, borderpad=1.0)
    for handle in legend.legend_handles:
        handle.set_sizes([60])
    fig.tight_layout()
    paths = save_figure(fig, out_base)
    plt.close(fig)
    return paths


# ---- training curves from MLflow -----------------------------------------------------------

def fetch_curves(cfg, panels: Sequence[dict], max_runs: int) -> list[dict]:
    """Per panel, {"run: metric": [(step, value), ...]} of the metrics whose name fully matches one
    of the panel's `metrics` regular expressions, from runs of the panel's stage in this pipeline's
    experiment. Metrics logged once (final summaries) are not curves and are left out."""
    import re

    from ..tracking import experiment_id, get_client, with_retries

    client = get_client(cfg)
    exp = experiment_id(client, cfg)
    out = []
    for panel in panels:
        runs = with_retries(lambda: client.search_runs(
            [exp], filter_string=f"tags.`vqdna.stage` = '{panel['stage']}'", max_results=max_runs,
            order_by=["attributes.start_time DESC"]), what="search_runs")
        series: dict[str, list] = {}
        for r in runs:
            name = r.data.tags.get("mlflow.runName", r.info.run_id[:8])
            keys = sorted(k for k in r.data.metrics if any(re.fullmatch(p, k) for p in panel["metrics"]))
            for key in keys[: panel.get("max_metrics", 4)]:
                hist = with_retries(lambda: client.get_metric_history(r.info.run_id, key), what="metric_history")
                if len(hist) > 1:
                    series[f"{name}: {key}"] = sorted((m.step, m.value) for m in hist)
        out.append({**panel, "series": series})
    return out


LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v"]


def curves_figure(panels: list[dict], out_base) -> list[Path]:
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(panel["ylabel"])
        if not panel["series"]:
            ax.text(0.5, 0.5, "no logged history\nin MLflow for this stage", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, color="grey")
            continue
        for i, (label, points) in enumerate(panel["series"].items()):
            steps, values = zip(*points)
            # dashes and markers keep curves that coincide (e.g. every level at 100% usage) visible
            ax.plot(steps, values, label=label, linewidth=1.2, linestyle=LINESTYLES[i % len(LINESTYLES)],
                    marker=MARKERS[i % len(MARKERS)], markersize=3, markevery=max(1, len(steps) // 8))
        if panel.get("log_y") and all(v > 0 for pts in panel["series"].values() for _, v in pts):
            from matplotlib.ticker import FuncFormatter

            ax.set_yscale("log")
            # plain numbers (0.6, 2) instead of 6x10^-1 on log axes
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            # label only the 2x and 5x minor ticks: all eight collide near each decade
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False, ncol=1)
    fig.suptitle("Training curves (MLflow)", fontsize=11)
    fig.tight_layout()
    paths = save_figure(fig, out_base)
    plt.close(fig)
    return paths
