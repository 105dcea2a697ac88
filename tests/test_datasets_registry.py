"""The dataset registries: 32 paper datasets named as in the paper's results, demo rows flagged."""

import csv
from pathlib import Path

import pytest

from vqdna.config import load_config
from vqdna.datasets.registry import load_registry, read_table, species_name
from vqdna.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"


def paper_names() -> set[str]:
    with open(SHARED / "paper" / "vqdna_paper_results.csv") as fh:
        rows = list(csv.DictReader(fh))
    return {r["dataset"] for r in rows if r["table"] in {"3", "4", "5", "6"}}


@pytest.mark.parametrize("table", ["config/datasets.tsv", "config/datasets.demo.tsv"])
def test_registry_has_the_32_paper_datasets(table):
    rows = read_table(ROOT / table)
    assert len(rows) == 32
    names = {r.name for r in rows}
    expected = paper_names()
    species_cols = {n for n in expected if n.startswith("species_")}
    assert names - {"species"} == expected - species_cols
    assert "species" in names
    demo = table.endswith("demo.tsv")
    assert all(r.demo_stand_in is demo for r in rows)
    by = {r.name: r for r in rows}
    assert by["covid"].metric == "f1_macro" and by["covid"].num_labels == 9 and by["covid"].length == 1000
    assert by["eep_h1"].task == "regression" and by["eep_h1"].metric == "spearman" and by["eep_h1"].length == 63
    assert by["splice_reconstructed"].num_labels == 3
    assert by["prom_core_tata"].length == 70 and by["emp_H4ac"].length == 500
    # GUE's TF sequences are 101-bp peak-centred regions (docs/datasets-sources.md); the shipped demo
    # stand-ins were cut at 100 nt
    assert by["tf_3"].length == by["mouse_0"].length == (100 if demo else 101)


def test_species_expands_to_table6_names():
    cfg = load_config([ROOT / "config" / "paper.yaml"])
    reg = load_registry(cfg)
    assert [n for n in reg if n.startswith("species")] == ["species_1k", "species_20k", "species_32k"]
    assert reg["species_32k"].length == 32000
    assert {"species_1k", "species_20k", "species_32k"} <= paper_names()
    assert species_name("species", 1500) == "species_1500"


def test_demo_registry_points_at_shipped_files():
    cfg = load_config([ROOT / "config" / "config.yaml"])
    reg = load_registry(cfg)
    assert len(reg) == 32 and "species_1k" in reg
    for spec in reg.values():
        if spec.format != "species":
            assert (ROOT / spec.source).is_dir(), spec.source
            assert spec.description.startswith("DEMO STAND-IN")


HEADER = "name\tfamily\ttask\tmetric\tnum_labels\tlength\tformat\tsource\tsha256\tpaper_table\tdemo_stand_in\tdescription\n"
GOOD = "emp_H3\tEMP\tclassification\tmcc\t2\t500\tgue_csv\tdata/x\t\t5\tfalse\tx\n"


@pytest.mark.parametrize("text,needle,line", [
    (HEADER.replace("\tmetric", ""), "missing columns ['metric']", 1),
    (HEADER + GOOD + GOOD, "duplicate dataset name", 3),
    (HEADER + GOOD.replace("classification", "ranking"), "task must be one of", 2),
    (HEADER + GOOD.replace("\tmcc\t", "\tauc\t"), "metric must be one of", 2),
    (HEADER + GOOD.replace("\t2\t500", "\ttwo\t500"), "must be integers", 2),
    (HEADER + GOOD.replace("\tfalse\t", "\tmaybe\t"), "demo_stand_in must be true/false", 2),
    (HEADER + GOOD.replace("classification\tmcc\t2", "regression\tspearman\t2"), "num_labels 1", 2),
    (HEADER + "emp_H3\tEMP\n", "2 fields", 2),
])
def test_malformed_registry_names_file_and_line(tmp_path, text, needle, line):
    p = tmp_path / "datasets.tsv"
    p.write_text(text)
    with pytest.raises(InputError) as exc:
        read_table(p)
    assert needle in str(exc.value)
    assert f"{p}:{line}" in str(exc.value)


# DNABERT-2's GUE folders (MAGICS-LAB/DNABERT_2 finetune/scripts/run_dnabert2.sh) and the folder the
# leannmlindsey/GUE mirror stores each under (its README configs); docs/datasets-sources.md.
GUE_MIRROR = "https://huggingface.co/datasets/leannmlindsey/GUE/resolve/main/GUE/"
GUE_LAYOUT = {
    **{f"emp_{m}": (f"EMP/{m}", f"emp_{m}") for m in
       ("H3", "H3K14ac", "H3K36me3", "H3K4me1", "H3K4me2", "H3K4me3", "H3K79me3", "H3K9ac", "H4", "H4ac")},
    **{f"tf_{i}": (f"tf/{i}", f"human_tf_{i}") for i in range(5)},
    **{f"mouse_{i}": (f"mouse/{i}", f"mouse_{i}") for i in range(5)},
    **{f"prom_{k}_{t}": (f"prom/prom_{k}_{t}", f"prom_{k}_{t}") for k in ("300", "core") for t in ("all", "notata", "tata")},
    "splice_reconstructed": ("splice/reconstructed", "splice_reconstructed"),
    "covid": ("virus/covid", "virus_covid"),
}


def test_gue_rows_match_the_benchmark():
    """28 GUE datasets, each fetched from its mirror folder; MCC everywhere but covid (macro F1, as
    DNABERT-2's train.py computes `f1` with average='macro'); 2 classes but splice (3) and covid (9)."""
    rows = {r.name: r for r in read_table(ROOT / "config" / "datasets.tsv") if r.format == "gue_csv"}
    assert set(rows) == set(GUE_LAYOUT)
    lengths = {"EMP": 500, "TFP-H": 101, "TFP-M": 101, "PD": 300, "CPD": 70, "SSP": 400, "CVC": 1000}
    for name, row in rows.items():
        assert row.source == GUE_MIRROR + GUE_LAYOUT[name][1], name
        assert row.metric == ("f1_macro" if name == "covid" else "mcc"), name
        assert row.num_labels == {"covid": 9, "splice_reconstructed": 3}.get(name, 2), name
        assert row.length == lengths[row.family], name
