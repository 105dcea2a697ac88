"""Build the paper's Tables 1-9 from this run's results, next to the paper's numbers.

Every comparison row holds this run's mean ± std over seeds (on the paper's ×100 scale),
the paper's value for the paper model that the tokenizer is compared with
(`report.paper_methods`), and the difference ours − paper. A run that did not happen is
`missing` (an empty CSV cell), never 0; a run with fewer seeds than `report.expected_seeds`
is marked `partial`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .inputs import RunResult, lookup
from .names import DATASET_TABLE_NAMES, TABLES
from .paper import PaperResults, PaperValue, check_known_datasets
from .render import MISSING, NO_VALUE, Table, fmt_mean_std, fmt_number

STAND_IN_NOTE = ("demo stand-in: a small dataset built from the demo genomes in the real dataset's "
                 "format, not the benchmark itself; compare with the paper only as a smoke test")


@dataclass
class ReportData:
    """Everything the table builders read; built by `aggregate` from files, by tests from fixtures."""

    paper: PaperResults
    tokenizers: list[str]
    paper_methods: dict[str, str | None]
    summaries: dict[tuple[str, str], RunResult] = field(default_factory=dict)
    probes: dict[tuple[str, str], dict] = field(default_factory=dict)
    tokenizer_metrics: dict[str, dict] = field(default_factory=dict)
    decimals: int = 2
    scale: float = 100.0
    expected_seeds: int = 1
    table1_dataset: str = "covid"
    extra_datasets: dict[str, int] = field(default_factory=dict)
    ablations: dict[str, Any] = field(default_factory=dict)
    # tokenizers planned on every dataset (finetune.tokenizers); Tables 3-6 list their missing runs.
    # None = all of `tokenizers`. Other tokenizers appear there only with the datasets they ran.
    dataset_tokenizers: list[str] | None = None
    # Table 9: variant name -> the run whose results it reads (itself, or its base when the
    # variant changes no pretrain setting: vqdna.variants.run_name); absent = itself
    variant_runs: dict[str, str] = field(default_factory=dict)
    # backbone run -> its pretrain_metrics.json (Table 9 shows the mask ratio each one used)
    pretrain_metrics: dict[str, dict] = field(default_factory=dict)

    def tokenizers_for(self, dataset: str) -> list[str]:
        planned = self.tokenizers if self.dataset_tokenizers is None else self.dataset_tokenizers
        return [t for t in self.tokenizers if t in planned or (t, dataset) in self.summaries]


# ---- one comparison row ---------------------------------------------------------------

def _status(n_seeds: int, expected: int) -> str:
    if n_seeds == 0:
        return MISSING
    if n_seeds < expected:
        return f"partial ({n_seeds}/{expected} seeds)"
    return "ok"


def compare(*, ours_mean: float | None, ours_std: float | None, n_seeds: int, paper: PaperValue | None,
            paper_method: str | None, expected: int, decimals: int, significant: bool = False) -> tuple[dict, list[str]]:
    """Numbers (CSV record part) and display cells [ours, paper, Δ, status] of one comparison."""
    paper_num = paper.number if paper is not None else None
    diff = ours_mean - paper_num if (ours_mean is not None and paper_num is not None) else None
    record = {
        "ours_mean": ours_mean, "ours_std": ours_std if n_seeds > 1 else None, "n_seeds": n_seeds,
        "paper_method": paper_method, "paper_value": paper.raw if paper is not None else None,
        "paper": paper_num, "diff": diff, "status": _status(n_seeds, expected),
    }
    paper_cell = NO_VALUE if paper is None else (paper.raw if paper_num is None or "+" in paper.raw
                                                 else fmt_number(paper_num, decimals))
    ours_cell = (fmt_number(ours_mean, decimals, significant=True) if significant and n_seeds == 1
                 else fmt_mean_std(ours_mean, ours_std, n_seeds, decimals))
    cells = [ours_cell, paper_cell, fmt_number(diff, decimals, sign=True, significant=significant), record["status"]]
    return record, cells


def _run_stats(run: RunResult | None, scale: float) -> tuple[float | None, float | None, int]:
    if run is None or run.n_seeds == 0:
        return None, None, 0
    return run.mean * scale, run.std * scale, run.n_seeds


def _single(value: float | None) -> tuple[float | None, None, int]:
    return (value, None, 0 if value is None else 1)


# ---- Tables 3-6: per-dataset fine-tune metrics ------------------------------------------

def dataset_table(data: ReportData, table_no: int) -> Table:
    info = data.paper.dataset_info()
    ours_names = {ds for (_tok, ds) in data.summaries}
    check_known_datasets(ours_names, data.paper, data.extra_datasets,
                         where={r.dataset: r.path for r in data.summaries.values()})
    datasets = data.paper.datasets(table_no) + [d for d, t in data.extra_datasets.items() if t == table_no]
    header = ["Family", "Dataset", "Tokenizer", "Metric", "Ours (mean ± std)", "Paper", "Δ", "Status", "Paper model"]
    rows, records, stand_in = [], [], False
    for ds in datasets:
        _t, family, metric = info.get(ds, (table_no, "", ""))
        for tok in data.tokenizers_for(ds):
            run = data.summaries.get((tok, ds))
            method = data.paper_methods.get(tok)
            mean, std, n = _run_stats(run, data.scale)
            record, cells = compare(ours_mean=mean, ours_std=std, n_seeds=n,
                                    paper=data.paper.value(table_no, method, ds, metric), paper_method=method,
                                    expected=data.expected_seeds, decimals=data.decimals)
            metric_name = run.metric if run is not None else metric
            is_stand_in = bool(run is not None and run.demo_stand_in)
            stand_in |= is_stand_in
            shown_ds = ds + (" †" if is_stand_in else "")
            records.append({"table": table_no, "family": family, "dataset": ds, "tokenizer": tok,
                            "metric": metric_name, "demo_stand_in": is_stand_in, **record})
            rows.append([family, shown_ds, tok, metric_name, *cells, method or NO_VALUE])
    name = DATASET_TABLE_NAMES[table_no]
    notes = [f"Ours and paper on the paper's ×{data.scale:g} scale; Δ = ours − paper; "
             "'Paper model' is the published model compared with each tokenizer (report.paper_methods)."]
    if table_no == 6:
        notes.append("Paper N/A = out of memory in the paper.")
    if stand_in:
        notes.append("† " + STAND_IN_NOTE)
    return Table(name, TABLES[name], header, rows, records, notes)


# ---- Table 1: tokenizer analysis on covid -----------------------------------------------

TABLE1_QUANTITIES = (
    # (paper metric, display name)
    ("token_usage_pct", "token usage %"),
    ("linear_probe_f1", "linear probe macro F1"),
    ("finetune_f1", "fine-tune macro F1"),
)


def table1(data: ReportData) -> Table:
    ds = data.table1_dataset
    header = ["Tokenizer", "Quantity", "Ours (mean ± std)", "Paper", "Δ", "Status", "Paper model"]
    rows, records, stand_in = [], [], False
    for tok in data.tokenizers:
        method = data.paper_methods.get(tok)
        probe = data.probes.get((tok, ds))
        run = data.summaries.get((tok, ds))
        stand_in |= bool(run is not None and run.demo_stand_in) or bool(probe and probe.get("demo_stand_in"))
        ours = {
            # token usage is a percentage already
            "token_usage_pct": _single(lookup(probe, "token_usage_pct")),
            "linear_probe_f1": _single(_scale(lookup(probe, "linear_probe.test_f1_macro"), data.scale)),
            "finetune_f1": _run_stats(run, data.scale),
        }
        for metric, label in TABLE1_QUANTITIES:
            mean, std, n = ours[metric]
            record, cells = compare(ours_mean=mean, ours_std=std, n_seeds=n,
                                    paper=data.paper.value(1, method, "covid", metric), paper_method=method,
                                    expected=data.expected_seeds if metric == "finetune_f1" else 1,
                                    decimals=data.decimals)
            records.append({"table": 1, "dataset": ds, "tokenizer": tok, "quantity": metric, **record})
            rows.append([tok, label, *cells, method or NO_VALUE])
    notes = [f"Dataset: {ds}{' †' if stand_in else ''}. Token usage = share of the vocabulary used when tokenizing the dataset; "
             "linear probe = logistic regression on mean-pooled frozen backbone features (test macro F1)."]
    if stand_in:
        notes.append("† " + STAND_IN_NOTE)
    return Table("table1_tokenizers", TABLES["table1_tokenizers"], header, rows, records, notes)


def _scale(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


# ---- Table 2: efficiency and average rank -----------------------------------------------

def average_ranks(data: ReportData) -> tuple[dict[str, float], list[str]]:
    """Average rank (1 = best) of each tokenizer over the datasets that every tokenizer ran.

    Datasets some tokenizer lacks are left out rather than ranked among fewer competitors,
    which would favour tokenizers with fewer finished runs. Ties share the average rank."""
    import pandas as pd

    per_dataset: dict[str, dict[str, float]] = {}
    for (tok, ds), run in data.summaries.items():
        if tok in data.tokenizers and run.mean is not None:
            per_dataset.setdefault(ds, {})[tok] = run.mean
    common = sorted(ds for ds, vals in per_dataset.items() if set(vals) == set(data.tokenizers))
    if not common or len(data.tokenizers) < 1:
        return {}, []
    frame = pd.DataFrame({ds: per_dataset[ds] for ds in common})  # rows: tokenizers
    # every metric of Tables 3-6 (MCC, F1, Spearman, accuracy) is higher-is-better
    ranks = frame.rank(axis=0, ascending=False, method="average")
    return {tok: float(ranks.loc[tok].mean()) for tok in frame.index}, common


TABLE2_QUANTITIES = (
    ("params_M", "parameters (M), backbone+tokenizer"),
    ("gflops_512nt", "GFLOPs at 512 nt, backbone+tokenizer"),
    ("train_tokens_B", "pretraining tokens (B)"),
    ("average_rank", "average rank"),
)


def table2(data: ReportData) -> Table:
    ranks, common = average_ranks(data)
    header = ["Tokenizer", "Quantity", "Ours", "Paper", "Δ", "Status", "Paper model"]
    rows, records = [], []
    for tok in data.tokenizers:
        method = data.paper_methods.get(tok)
        probe = data.probes.get((tok, data.table1_dataset))
        parts = {
            "params_M": (_scale(lookup(probe, "model.backbone_params"), 1e-6),
                         _scale(lookup(probe, "model.tokenizer_params"), 1e-6)),
            "gflops_512nt": (_scale(lookup(probe, "model.backbone_flops"), 1e-9),
                             _scale(lookup(probe, "model.tokenizer_flops"), 1e-9)),
        }
        for metric, label in TABLE2_QUANTITIES:
            shown = None
            if metric in parts:
                backbone, tokenizer = parts[metric]
                total = None if backbone is None else backbone + (tokenizer or 0.0)
                if backbone is not None and tokenizer:
                    shown = (backbone, tokenizer)
            elif metric == "train_tokens_B":
                total = _scale(lookup(probe, "model.pretrain_tokens"), 1e-9)
            else:
                total = ranks.get(tok)
            record, cells = compare(ours_mean=total, ours_std=None, n_seeds=0 if total is None else 1,
                                    paper=data.paper.value(2, method, "all", metric), paper_method=method,
                                    expected=1, decimals=data.decimals, significant=True)
            if shown is not None:
                cells[0] = "+".join(fmt_number(v, data.decimals, significant=True) for v in shown)
            records.append({"table": 2, "tokenizer": tok, "quantity": metric, **record})
            rows.append([tok, label, *cells, method or NO_VALUE])
    notes = [
        f"Average rank over the {len(common)} dataset(s) every tokenizer of this run finished"
        + (f" ({', '.join(common)})" if 0 < len(common) <= 8 else "") + "; the paper ranks 6 models over 32 datasets.",
        "FLOPs counted by torch.utils.flop_counter (a multiply-add = 2 FLOPs) for one 512-nt sequence.",
    ]
    return Table("table2_efficiency", TABLES["table2_efficiency"], header, rows, records, notes)


# ---- Tables 7-9: ablations ----------------------------------------------------------------

def _variant(data: ReportData, base: str, row: str) -> str:
    return data.ablations.get("variant_name", "{base}_{row}").format(base=base, row=row)


def _bases(data: ReportData) -> dict[str, str]:
    """paper method -> our base tokenizer (e.g. VQDNA -> vq)."""
    return dict(data.ablations.get("base_tokenizers", {"VQDNA": "vq", "VQDNA-HRQ": "hrq"}))


def tokenizer_ablation_table(data: ReportData, table_no: int) -> Table:
    """Tables 7 and 8: reconstruction accuracy and linear probe of stage-1 tokenizer variants."""
    name = "table7_codebook_size" if table_no == 7 else "table8_code_dim"
    rec_key = data.ablations.get("reconstruction_key", "val_reconstruction_acc")
    probe_ds = data.ablations.get("probe_dataset", data.table1_dataset)
    header = ["Setting", "Model", "Quantity", "Tokenizer run", "Ours", "Paper", "Δ", "Status"]
    rows, records = [], []
    seen: set[tuple[str, str, str]] = set()
    for prow in data.paper.rows_of(table_no):
        key = (prow.dataset, prow.method, prow.metric)
        if key in seen:
            continue
        seen.add(key)
        base = _bases(data).get(prow.method)
        variant = _variant(data, base, prow.dataset) if base else None
        if prow.metric == "reconstruction_acc":
            ours = _scale(lookup(data.tokenizer_metrics.get(variant), rec_key), data.scale)
        else:
            ours = _scale(lookup(data.probes.get((variant, probe_ds)), "linear_probe.test_f1_macro"), data.scale)
        record, cells = compare(ours_mean=ours, ours_std=None, n_seeds=0 if ours is None else 1,
                                paper=prow.value, paper_method=prow.method, expected=1, decimals=data.decimals)
        records.append({"table": table_no, "setting": prow.dataset, "method": prow.method,
                        "quantity": prow.metric, "tokenizer": variant, **record})
        rows.append([prow.dataset, prow.method, prow.metric, variant or NO_VALUE, *cells])
    notes = [f"Run with `--configfile config/ablations.yaml`; tokenizer variants are named "
             f"{data.ablations.get('variant_name', '{base}_{row}')}. Linear probe on {probe_ds}."]
    return Table(name, TABLES[name], header, rows, records, notes)


def mask_ablation_table(data: ReportData) -> Table:
    """Table 9: fine-tune results after pretraining with each mask ratio."""
    header = ["Setting", "Model", "Dataset", "Metric", "Run", "Mask ratio (run)", "Ours (mean ± std)", "Paper", "Δ",
              "Status"]
    rows, records = [], []
    for prow in data.paper.rows_of(9):
        setting, _, ds = prow.dataset.partition(":")
        base = _bases(data).get(prow.method)
        variant = _variant(data, base, setting) if base else None
        run_name = data.variant_runs.get(variant, variant) if variant else None
        run = data.summaries.get((run_name, ds))
        mask_ratio = lookup(data.pretrain_metrics.get(run_name), "mask_ratio")
        mean, std, n = _run_stats(run, data.scale)
        record, cells = compare(ours_mean=mean, ours_std=std, n_seeds=n, paper=prow.value,
                                paper_method=prow.method, expected=data.expected_seeds, decimals=data.decimals)
        records.append({"table": 9, "setting": setting, "method": prow.method, "dataset": ds,
                        "metric": prow.metric, "tokenizer": variant, "run": run_name, "mask_ratio": mask_ratio,
                        **record})
        shown = NO_VALUE if variant is None else variant if run_name == variant else f"{variant} = {run_name}"
        ratio_cell = NO_VALUE if mask_ratio is None else f"{100 * mask_ratio:g}%"
        rows.append([setting, prow.method, ds, prow.metric, shown, ratio_cell, *cells])
    notes = ["Run with `--configfile config/ablations.yaml`: one stage-2 pretraining per mask ratio "
             "(pretrain.variants) on the base tokenizer's tokens, then fine-tuning on these datasets. "
             "'a = b': the variant has its base's settings (the main 25%), so its row reads the base's runs. "
             "Mask ratio (run) is read from the backbone's pretrain_metrics.json."]
    return Table("table9_mask_ratio", TABLES["table9_mask_ratio"], header, rows, records, notes)


def build_all(data: ReportData) -> list[Table]:
    data.paper.check_methods(data.paper_methods.values(), key="report.paper_methods")
    data.paper.check_methods(_bases(data), key="report.ablations.base_tokenizers")
    return [table1(data), table2(data), *(dataset_table(data, t) for t in (3, 4, 5, 6)),
            tokenizer_ablation_table(data, 7), tokenizer_ablation_table(data, 8), mask_ablation_table(data)]
