"""Table builders on fixture summaries (docs/contracts.md 'Fine-tune summary'), the join
with the paper's numbers, and the Markdown/LaTeX/CSV outputs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from vqdna.errors import ConfigError, InputError
from vqdna.report.inputs import collect_summaries, read_summary
from vqdna.report.paper import load_paper_results
from vqdna.report.render import to_csv, to_latex, to_markdown
from vqdna.report.tables import ReportData, average_ranks, build_all, dataset_table, table1, table2

ROOT = Path(__file__).resolve().parents[1]
PAPER_CSV = ROOT / "data" / "paper" / "vqdna_paper_results.csv"
METHODS = {"vq": "VQDNA", "hrq": "VQDNA-HRQ", "bpe": "DNABERT-2"}


def write_summary(root: Path, tok: str, dataset: str, per_seed: dict, *, metric="mcc", stand_in=False):
    vals = [v for v in per_seed.values() if v is not None]
    summary = {
        "dataset": dataset, "tokenizer": tok, "family": "EMP", "task": "classification", "metric": metric,
        "demo_stand_in": stand_in, "grid": [], "best_point": "p0", "best_params": {},
        "test": {"per_seed": per_seed, "mean": sum(vals) / len(vals), "std": 0.0, "n_seeds": len(vals)},
        "mlflow": {"parent_run_id": "x"},
    }
    path = root / tok / dataset / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary))
    return path


@pytest.fixture(scope="module")
def paper():
    return load_paper_results(PAPER_CSV)


def make_data(paper, summaries, **kw):
    return ReportData(paper=paper, tokenizers=kw.pop("tokenizers", ["vq", "hrq"]), paper_methods=METHODS,
                      summaries=summaries, expected_seeds=kw.pop("expected_seeds", 3), **kw)


def records_by(table, **match):
    return [r for r in table.records if all(r.get(k) == v for k, v in match.items())]


def test_paper_csv_parses_special_values(paper):
    assert paper.value(6, "VQDNA-HRQ", "species_250k", "accuracy").number is None  # N/A = out of memory
    assert paper.value(2, "VQDNA", "all", "params_M").number == pytest.approx(102.0)  # 86+16
    assert paper.value(5, "VQDNA-HRQ", "emp_H3", "mcc").number == pytest.approx(79.21)
    assert len(paper.datasets(5)) == 10 and len(paper.datasets(3)) == 11


def test_dataset_table_scales_compares_and_marks_missing_and_partial(tmp_path, paper):
    write_summary(tmp_path, "hrq", "emp_H3", {"0": 0.80, "1": 0.78, "2": 0.79})
    write_summary(tmp_path, "vq", "emp_H3", {"0": 0.70, "1": None})  # one seed of three finished
    data = make_data(paper, collect_summaries(tmp_path, ["vq", "hrq"]))
    table = dataset_table(data, 5)
    (hrq,) = records_by(table, dataset="emp_H3", tokenizer="hrq")
    assert hrq["ours_mean"] == pytest.approx(79.0)
    assert hrq["paper"] == pytest.approx(79.21)
    assert hrq["diff"] == pytest.approx(79.0 - 79.21)
    assert hrq["status"] == "ok" and hrq["n_seeds"] == 3
    (vq,) = records_by(table, dataset="emp_H3", tokenizer="vq")
    assert vq["status"] == "partial (1/3 seeds)" and vq["ours_mean"] == pytest.approx(70.0)
    # a dataset nobody ran is listed as missing, with the paper's value, never as 0
    (gone,) = records_by(table, dataset="emp_H4", tokenizer="hrq")
    assert gone["ours_mean"] is None and gone["status"] == "missing" and gone["paper"] == pytest.approx(81.84)
    row = table.rows[[r["dataset"] for r in table.records].index("emp_H4")]
    assert "missing" in row and "0.00" not in row
    frame = pd.read_csv(io.StringIO(to_csv(table)))
    assert frame.loc[(frame.dataset == "emp_H4") & (frame.tokenizer == "hrq"), "ours_mean"].isna().all()


def test_unknown_dataset_name_is_an_error(tmp_path, paper):
    path = write_summary(tmp_path, "hrq", "emp_H3K4me9", {"0": 0.5})
    data = make_data(paper, collect_summaries(tmp_path, ["hrq"]))
    with pytest.raises(InputError, match="emp_H3K4me9") as err:
        dataset_table(data, 5)
    assert str(path) in str(err.value)
    # listing it explicitly puts it into the requested table with no paper value
    data.extra_datasets = {"emp_H3K4me9": 5}
    (rec,) = records_by(dataset_table(data, 5), dataset="emp_H3K4me9", tokenizer="hrq")
    assert rec["paper"] is None and rec["ours_mean"] == pytest.approx(50.0)


def test_summary_in_wrong_directory_is_an_error(tmp_path):
    path = write_summary(tmp_path, "hrq", "emp_H3", {"0": 0.5})
    other = tmp_path / "hrq" / "emp_H4"
    other.mkdir()
    (other / "summary.json").write_text(path.read_text())
    with pytest.raises(InputError, match="lies under hrq/emp_H4"):
        collect_summaries(tmp_path, ["hrq"])


def test_malformed_summary_names_file(tmp_path):
    bad = tmp_path / "summary.json"
    bad.write_text('{"dataset": "emp_H3", "tokenizer": "hrq"}')
    with pytest.raises(InputError, match="lacks"):
        read_summary(bad)
    bad.write_text("{not json")
    with pytest.raises(InputError, match=str(bad)):
        read_summary(bad)


def test_unknown_paper_method_is_a_config_error(paper):
    data = ReportData(paper=paper, tokenizers=["vq"], paper_methods={"vq": "VQDNA-XL"})
    with pytest.raises(ConfigError, match="VQDNA-XL"):
        build_all(data)


def test_table1_and_table2_from_probe_and_summaries(tmp_path, paper):
    write_summary(tmp_path, "hrq", "covid", {"0": 0.5, "1": 0.6, "2": 0.7}, metric="f1_macro")
    write_summary(tmp_path, "vq", "covid", {"0": 0.4, "1": 0.4, "2": 0.4}, metric="f1_macro")
    write_summary(tmp_path, "hrq", "emp_H3", {"0": 0.3})
    probes = {("hrq", "covid"): {"tokenizer": "hrq", "dataset": "covid", "token_usage_pct": 87.5,
                                 "linear_probe": {"test_f1_macro": 0.42},
                                 "model": {"backbone_params": 2.0e6, "tokenizer_params": 0.5e6,
                                           "backbone_flops": 3.0e9, "tokenizer_flops": 1.0e9,
                                           "pretrain_tokens": 2.0e9}}}
    data = make_data(paper, collect_summaries(tmp_path, ["vq", "hrq"]), probes=probes)
    t1 = table1(data)
    (usage,) = records_by(t1, tokenizer="hrq", quantity="token_usage_pct")
    assert usage["ours_mean"] == pytest.approx(87.5) and usage["paper"] == pytest.approx(100)
    (probe,) = records_by(t1, tokenizer="hrq", quantity="linear_probe_f1")
    assert probe["ours_mean"] == pytest.approx(42.0) and probe["diff"] == pytest.approx(42.0 - 48.87)
    (ft,) = records_by(t1, tokenizer="hrq", quantity="finetune_f1")
    assert ft["ours_mean"] == pytest.approx(60.0) and ft["ours_std"] == pytest.approx(8.1650, abs=1e-3)
    assert records_by(t1, tokenizer="vq", quantity="linear_probe_f1")[0]["status"] == "missing"

    # ranks: only covid is common to both tokenizers (emp_H3 has hrq only), hrq 60 > vq 40
    ranks, common = average_ranks(data)
    assert common == ["covid"] and ranks == {"hrq": 1.0, "vq": 2.0}
    t2 = table2(data)
    (params,) = records_by(t2, tokenizer="hrq", quantity="params_M")
    assert params["ours_mean"] == pytest.approx(2.5) and params["paper"] == pytest.approx(103)
    assert params["paper_value"] == "86+17"
    hrq_params_row = t2.rows[[(r["tokenizer"], r["quantity"]) for r in t2.records].index(("hrq", "params_M"))]
    assert "2.00+0.50" in hrq_params_row
    (rank,) = records_by(t2, tokenizer="vq", quantity="average_rank")
    assert rank["ours_mean"] == 2.0 and rank["paper"] == 2.0


def test_ties_share_average_rank(tmp_path, paper):
    for tok in ("vq", "hrq", "bpe"):
        write_summary(tmp_path, tok, "emp_H3", {"0": 0.5 if tok != "bpe" else 0.9})
    data = make_data(paper, collect_summaries(tmp_path, ["vq", "hrq", "bpe"]), tokenizers=["vq", "hrq", "bpe"])
    ranks, _ = average_ranks(data)
    assert ranks == {"bpe": 1.0, "vq": 2.5, "hrq": 2.5}


def test_ablation_tables_missing_when_not_run_and_filled_when_run(tmp_path, paper):
    data = make_data(paper, {}, ablations={"variant_name": "{base}_{row}", "reconstruction_key": "val.rec_acc",
                                           "base_tokenizers": {"VQDNA": "vq", "VQDNA-HRQ": "hrq"}})
    tables = {t.name: t for t in build_all(data)}
    for name in ("table7_codebook_size", "table8_code_dim", "table9_mask_ratio"):
        assert tables[name].records and all(r["status"] == "missing" for r in tables[name].records)
    data.tokenizer_metrics = {"hrq_code_size_256": {"val": {"rec_acc": 0.99}}}
    data.probes = {("hrq_code_size_256", "covid"): {"linear_probe": {"test_f1_macro": 0.5}}}
    write_summary(tmp_path, "vq_mask_15", "emp_H3", {"0": 0.77, "1": 0.78, "2": 0.79})
    data.summaries = collect_summaries(tmp_path, ["vq_mask_15"])
    tables = {t.name: t for t in build_all(data)}
    (rec,) = records_by(tables["table7_codebook_size"], setting="code_size_256", method="VQDNA-HRQ",
                        quantity="reconstruction_acc")
    assert rec["ours_mean"] == pytest.approx(99.0) and rec["paper"] == pytest.approx(99.1)
    (lin,) = records_by(tables["table7_codebook_size"], setting="code_size_256", method="VQDNA-HRQ",
                        quantity="linear_probe")
    assert lin["ours_mean"] == pytest.approx(50.0)
    (mask,) = records_by(tables["table9_mask_ratio"], setting="mask_15", method="VQDNA", dataset="emp_H3")
    assert mask["ours_mean"] == pytest.approx(78.0) and mask["paper"] == pytest.approx(77.9)


def test_table9_alias_rows_read_the_base_run_and_show_each_runs_mask_ratio(tmp_path, paper):
    write_summary(tmp_path, "vq", "emp_H3", {"0": 0.786, "1": 0.786, "2": 0.786})
    write_summary(tmp_path, "hrq_mask_30", "covid", {"0": 0.74}, metric="f1_macro")
    data = make_data(paper, collect_summaries(tmp_path, ["vq", "hrq_mask_30"]),
                     variant_runs={"vq_mask_25": "vq", "hrq_mask_30": "hrq_mask_30"},
                     pretrain_metrics={"vq": {"mask_ratio": 0.25}, "hrq_mask_30": {"mask_ratio": 0.3}})
    table = {t.name: t for t in build_all(data)}["table9_mask_ratio"]
    (main,) = records_by(table, setting="mask_25", method="VQDNA", dataset="emp_H3")
    assert main["tokenizer"] == "vq_mask_25" and main["run"] == "vq" and main["mask_ratio"] == 0.25
    assert main["ours_mean"] == pytest.approx(78.6) and main["diff"] == pytest.approx(0.0)
    (hrq30,) = records_by(table, setting="mask_30", method="VQDNA-HRQ", dataset="covid")
    assert hrq30["mask_ratio"] == 0.3 and hrq30["status"] == "partial (1/3 seeds)"
    (no_run,) = records_by(table, setting="mask_15", method="VQDNA", dataset="covid")
    assert no_run["status"] == "missing" and no_run["mask_ratio"] is None and no_run["ours_mean"] is None
    cells = {tuple(r[:3]): r for r in table.rows}
    assert cells[("mask_25", "VQDNA", "emp_H3")][4:6] == ["vq_mask_25 = vq", "25%"]
    assert cells[("mask_30", "VQDNA-HRQ", "covid")][4:6] == ["hrq_mask_30", "30%"]
    assert cells[("mask_15", "VQDNA", "covid")][4:7] == ["vq_mask_15", "—", "missing"]


# ---- output formats -----------------------------------------------------------------------

def _all_tables(tmp_path, paper):
    write_summary(tmp_path, "hrq", "emp_H3", {"0": 0.8, "1": 0.7}, stand_in=True)
    write_summary(tmp_path, "hrq", "species_1k", {"0": 0.6}, metric="accuracy")
    return build_all(make_data(paper, collect_summaries(tmp_path, ["vq", "hrq"])))


def test_markdown_parses_as_table_with_constant_column_count(tmp_path, paper):
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable("table")
    for table in _all_tables(tmp_path, paper):
        tokens = md.parse(to_markdown(table))
        assert [t.type for t in tokens].count("table_open") == 1, table.name
        rows = [[]]
        for tok in tokens:
            if tok.type == "tr_close":
                rows.append([])
            elif tok.type in ("th_open", "td_open"):
                rows[-1].append(tok)
        rows = [r for r in rows if r]
        assert len(rows) == len(table.rows) + 1, table.name
        assert {len(r) for r in rows} == {len(table.header)}, table.name


def test_latex_is_balanced_with_constant_column_count(tmp_path, paper):
    # the checker (environments, column counts, escaping, braces, ASCII only) and the pdflatex
    # compile of every table live in test_report_latex.py
    from test_report_latex import latex_structure_errors

    for table in _all_tables(tmp_path, paper):
        assert latex_structure_errors(to_latex(table), len(table.header)) == [], table.name


def test_stand_in_is_marked(tmp_path, paper):
    tables = {t.name: t for t in _all_tables(tmp_path, paper)}
    text = to_markdown(tables["table5_emp"])
    assert "emp_H3 †" in text and "demo stand-in" in text
    assert "demo stand-in" not in to_markdown(tables["table3_pd_cpd_tfph"])


def test_tokenizers_not_planned_on_every_dataset_appear_only_where_they_ran(tmp_path, paper):
    write_summary(tmp_path, "hrq", "emp_H3", {"0": 0.8})
    write_summary(tmp_path, "vq", "emp_H4", {"0": 0.7})
    data = make_data(paper, collect_summaries(tmp_path, ["vq", "hrq"]), dataset_tokenizers=["hrq"])
    table = dataset_table(data, 5)
    assert {(r["dataset"], r["tokenizer"]) for r in table.records if r["tokenizer"] == "vq"} == {("emp_H4", "vq")}
    assert len(records_by(table, tokenizer="hrq")) == 10  # planned: every EMP dataset, 9 of them missing
    assert len(records_by(table, tokenizer="hrq", status="missing")) == 9


def test_small_table2_numbers_keep_significant_digits():
    from vqdna.report.render import fmt_number

    assert fmt_number(0.0049, 2, significant=True) == "0.0049"
    assert fmt_number(-0.0049, 2, sign=True, significant=True) == "-0.0049"
    assert fmt_number(12.345, 2, significant=True) == "12.35"
    assert fmt_number(0.0049, 2) == "0.00"
