"""`vqdna aggregate`: the paper's Tables 1-9 and Figures 1/5 plus training curves.

    vqdna aggregate --config results/config.resolved.json

Reads the fine-tune summaries (`finetune.out_dir`), `results/probe/*/*.json`, tokenizer
metrics (`finetune.tokenizer_dir`), the HRQ tokenizer and the prepared Figure-5 dataset
(`datasets.prepared_dir`), and MLflow; writes `results/tables/*.{csv,md,tex}` and `results/figures/*.{png,svg}` (names in
`vqdna.report.names`) and `results/tables/manifest.json` (what each table/figure was built from).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..atomic import write_json

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--probe-dir", default="results/probe", help="outputs of `vqdna probe` ({tok}/{dataset}.json)")
    parser.add_argument("--tables", default="results/tables", help="output directory of the tables")
    parser.add_argument("--figures", default="results/figures", help="output directory of the figures")
    parser.add_argument("--skip-figures", action="store_true", help="tables only (fast)")


def report_tokenizers(cfg: dict) -> list[str]:
    rcfg = cfg["report"]
    return list(rcfg["tokenizers"] if rcfg.get("tokenizers") else cfg["tokenizers"]["train"])


def ablation_variants(cfg: dict, tables=(7, 8, 9)) -> list[str]:
    """Names of the ablation runs, whether or not they were run: tokenizer variants (Tables 7/8),
    pretraining variants (Table 9, `pretrain.variants`)."""
    from .paper import load_paper_results

    acfg = cfg["report"]["ablations"]
    paper = load_paper_results(cfg["report"]["paper_results"])
    names = []
    for table in tables:
        for row in paper.rows_of(table):
            base = acfg["base_tokenizers"].get(row.method)
            if base:
                names.append(acfg["variant_name"].format(base=base, row=row.dataset.partition(":")[0]))
    return sorted(set(names))


def upstream_dirs(cfg: dict) -> dict[str, Path]:
    """Where the upstream stages write, from their config sections (defaults: results/...)."""
    ft = cfg.get("finetune") or {}
    return {
        "finetune": Path(ft.get("out_dir", "results/finetune")),
        "tokenizers": Path(ft.get("tokenizer_dir", "results/tokenizers")),
        "pretrain": Path(ft.get("backbone_dir", "results/pretrain")),
        "datasets": Path((cfg.get("datasets") or {}).get("prepared_dir", "results/datasets")),
    }


def load_report_data(cfg: dict, probe_dir: str | Path = "results/probe"):
    from ..variants import run_name
    from .inputs import collect_summaries, read_json, read_probe, read_tokenizer_metrics
    from .paper import load_paper_results
    from .tables import ReportData

    rcfg = cfg["report"]
    dirs = upstream_dirs(cfg)
    tokenizers = report_tokenizers(cfg)
    # Table 9: an alias variant (same settings as its base) reads its base's runs
    variant_runs = {v: run_name(cfg, v) for v in ablation_variants(cfg, tables=(9,))}
    everyone = sorted(set(tokenizers) | set(ablation_variants(cfg)) | set(variant_runs.values()))
    pretrain_metrics = {}
    for run in sorted(set(variant_runs.values())):
        path = dirs["pretrain"] / run / "pretrain_metrics.json"
        if path.exists():
            pretrain_metrics[run] = read_json(path)
    summaries = collect_summaries(dirs["finetune"], everyone)
    probes = {}
    for tok in everyone:
        for path in sorted((Path(probe_dir) / tok).glob("*.json")):
            probe = read_probe(path)
            probes[(tok, path.stem)] = probe
    tok_metrics = {}
    for tok in everyone:
        metrics = read_tokenizer_metrics(dirs["tokenizers"] / tok / "metrics.json")
        if metrics is not None:
            tok_metrics[tok] = metrics
    return ReportData(
        paper=load_paper_results(rcfg["paper_results"]), tokenizers=tokenizers,
        paper_methods=dict(rcfg["paper_methods"]), summaries=summaries, probes=probes,
        tokenizer_metrics=tok_metrics, decimals=rcfg["decimals"], expected_seeds=rcfg["expected_seeds"],
        table1_dataset=rcfg["table1_dataset"], extra_datasets=dict(rcfg["extra_datasets"]),
        ablations=dict(rcfg["ablations"]), variant_runs=variant_runs, pretrain_metrics=pretrain_metrics,
        dataset_tokenizers=_planned_on_all_datasets(cfg, tokenizers),
    )


def _planned_on_all_datasets(cfg: dict, tokenizers: list[str]) -> list[str] | None:
    """Tokenizers the fine-tune stage runs on every dataset (`finetune.tokenizers`), None = all."""
    planned = (cfg.get("finetune") or {}).get("tokenizers")
    return None if planned is None else [t for t in tokenizers if t in planned]


def build_figure5(cfg: dict, out_base: Path) -> dict:
    from ..datasets.store import read_split
    from .codebook_map import codebook_figure
    from .figures import placeholder_figure

    fcfg = cfg["report"]["figure5"]
    dirs = upstream_dirs(cfg)
    tok_dir = dirs["tokenizers"] / fcfg["tokenizer"]
    data_dir = dirs["datasets"] / fcfg["dataset"]
    title = f"Figure 5. {fcfg['tokenizer']} codebooks on {fcfg['dataset']} (UMAP), codes labelled by Grad-CAM class"
    if not (tok_dir / "config.json").exists() or not (data_dir / "meta.json").exists():
        why = f"not drawn: this run has no {tok_dir}" if not (tok_dir / "config.json").exists() else \
            f"not drawn: this run has no prepared dataset {data_dir}"
        placeholder_figure(out_base, title, why)
        return {"drawn": False, "reason": why}
    from ..datasets.store import read_meta
    from ..tokenizers import load_tokenizer

    meta = read_meta(data_dir)
    splits = {name: read_split(data_dir, name) for name in fcfg["fit_splits"]}
    tokenizer = load_tokenizer(tok_dir)
    if tokenizer.code_vectors() is None:
        why = f"not drawn: tokenizer {fcfg['tokenizer']} has no learned codebook"
        placeholder_figure(out_base, title, why)
        return {"drawn": False, "reason": why}
    if meta.get("demo_stand_in"):
        title += "\n(demo stand-in data, not the GUE covid set)"
    summary = codebook_figure(tokenizer, splits, out_base, fcfg, seed=int(cfg.get("seed", 0)),
                              class_names=fcfg.get("class_names"), title=title)
    return {"drawn": True, **summary}


def run(args, cfg) -> int:
    from ..tracking import start_run
    from .names import FIGURES, TABLES
    from .render import write_table
    from .tables import build_all

    tables_dir, figures_dir = Path(args.tables), Path(args.figures)
    data = load_report_data(cfg, args.probe_dir)
    tables = build_all(data)  # bad inputs (unknown dataset names, ...) fail before anything is logged
    with start_run(cfg, stage="aggregate", name="aggregate",
                   params={f"report.{k}": v for k, v in cfg["report"].items() if not isinstance(v, dict)}) as mlrun:
        assert [t.name for t in tables] == list(TABLES), "table list and names.TABLES disagree"
        for table in tables:
            for path in write_table(table, tables_dir):
                mlrun.log_artifact(path, "tables")
        manifest = {
            "tables": {t.name: {"rows": len(t.rows), "missing": sum(r["status"] == "missing" for r in t.records)}
                       for t in tables},
            "summaries": sorted(r.path for r in data.summaries.values()),
            "probes": sorted(f"{tok}/{ds}" for tok, ds in data.probes),
        }
        if not args.skip_figures:
            manifest["figures"] = build_figures(cfg, data, figures_dir)
            for name in FIGURES:
                for ext in ("png", "svg"):
                    mlrun.log_artifact(figures_dir / f"{name}.{ext}", "figures")
        write_json(tables_dir / "manifest.json", manifest)
        mlrun.log_metrics({f"missing.{name}": v["missing"] for name, v in manifest["tables"].items()})
    log.info("wrote %d tables to %s%s", len(tables), tables_dir,
             "" if args.skip_figures else f" and {len(FIGURES)} figures to {figures_dir}")
    return 0


def build_figures(cfg: dict, data, figures_dir: Path) -> dict:
    from .figures import bubble_chart, curves_figure, fetch_curves

    rcfg = cfg["report"]
    out = {}
    bubble_chart(data, figures_dir / "figure1_bubble", max_area=rcfg["figure1"]["max_area"],
                 min_area=rcfg["figure1"]["min_area"])
    out["figure1_bubble"] = {"drawn": True}
    out["figure5_hrq_codebook_umap"] = build_figure5(cfg, figures_dir / "figure5_hrq_codebook_umap")
    panels = fetch_curves(cfg, rcfg["curves"]["panels"], rcfg["curves"]["max_runs"])
    curves_figure(panels, figures_dir / "training_curves")
    out["training_curves"] = {p["title"]: sorted(p["series"]) for p in panels}
    return out
