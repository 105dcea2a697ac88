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
    assert by["prom_core_tata"].length == 70 and by["emp_H4ac"].length == 500 and by["tf_3"].length == 100


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
