"""GUE / EEP loaders on real sample files written in the documented formats, and every
malformed-file case: each error names the file and the line."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from vqdna.datasets.eep import load_eep, seeded_dev_split
from vqdna.datasets.gue import load_gue
from vqdna.datasets.registry import DatasetSpec
from vqdna.errors import ConfigError, InputError

SHARED = Path(__file__).resolve().parents[2] / "shared"
EEP_CFG = {"sequence_column": "sequence", "label_column": "efficiency", "exact_length": True,
           "dev_fraction": 0.25, "split_seed": 3}


def lambda_genome() -> str:
    with gzip.open(SHARED / "data" / "genomes" / "NC_001416_lambda_phage.fa.gz", "rt") as fh:
        return "".join(line.strip() for line in fh if not line.startswith(">"))


def windows(n: int, length: int, offset: int = 0) -> list[str]:
    g = lambda_genome()
    return [g[offset + i * 97: offset + i * 97 + length] for i in range(n)]


def spec(task="classification", num_labels=2, length=100, name="tf_0", fmt="gue_csv"):
    return DatasetSpec(name=name, family="X", task=task, metric="mcc" if task == "classification" else "spearman",
                       num_labels=num_labels, length=length, format=fmt, source="", sha256="", paper_table="3",
                       demo_stand_in=False, description="", base=name)


def write_gue(d: Path, rows_by_split: dict, header="sequence,label", names=None):
    d.mkdir(parents=True, exist_ok=True)
    for split, rows in rows_by_split.items():
        fname = (names or {}).get(split, f"{split}.csv")
        (d / fname).write_text(header + "\n" + "".join(f"{s},{y}\n" for s, y in rows))


def good_rows(n=6, length=100, k=2, offset=0):
    return [(s, i % k) for i, s in enumerate(windows(n, length, offset))]


def test_gue_dnabert2_layout(tmp_path):
    write_gue(tmp_path, {"train": good_rows(8), "dev": good_rows(4, offset=2000), "test": good_rows(4, offset=4000)})
    splits, stats = load_gue(tmp_path, spec(), non_acgt="error", seed=0)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [8, 4, 4]
    assert splits["train"].sequences[0] == lambda_genome()[:100].upper()
    assert splits["train"].labels.dtype == np.int64 and list(splits["train"].labels[:3]) == [0, 1, 0]


def test_gue_flattened_mirror_names(tmp_path):
    names = {s: f"emp_H3_{s}.csv" for s in ("train", "dev", "test")}
    write_gue(tmp_path, {"train": good_rows(), "dev": good_rows(), "test": good_rows()}, names=names)
    splits, _ = load_gue(tmp_path, spec(), non_acgt="error", seed=0)
    assert len(splits["test"]) == 6


def test_gue_lower_case_is_upper_cased(tmp_path):
    rows = [(s.lower(), y) for s, y in good_rows()]
    write_gue(tmp_path, {"train": rows, "dev": rows, "test": rows})
    splits, _ = load_gue(tmp_path, spec(), non_acgt="error", seed=0)
    assert set("".join(splits["dev"].sequences)) <= set("ACGT")


def _bad(tmp_path, train_text):
    write_gue(tmp_path, {"dev": good_rows(), "test": good_rows()})
    (tmp_path / "train.csv").write_text(train_text)
    return tmp_path / "train.csv"


@pytest.mark.parametrize("make_text,needle,line", [
    (lambda s: "seq,label\n" + f"{s},0\n", "missing column(s) ['sequence']", 1),
    (lambda s: f"sequence,label\n{s},0\n{s},2\n", "label 2 out of range 0..1", 3),
    (lambda s: f"sequence,label\n{s},0\n,1\n", "empty sequence", 3),
    (lambda s: f"sequence,label\n{s},0\n{s[:10]}N{s[11:]},1\n", "non-ACGT symbol 'N' at position 11", 3),
    (lambda s: f"sequence,label\n{s},x\n", "not an integer class id", 2),
    (lambda s: f"sequence,label\n{s},\n", "missing label", 2),
    (lambda s: f"sequence,label\n{s},0,7\n", "3 fields, header has 2", 2),
    (lambda s: "", "file is empty", 1),
])
def test_gue_malformed(tmp_path, make_text, needle, line):
    seq = windows(1, 100)[0]
    path = _bad(tmp_path, make_text(seq))
    with pytest.raises(InputError) as exc:
        load_gue(tmp_path, spec(), non_acgt="error", seed=0)
    assert needle in str(exc.value), str(exc.value)
    assert f"{path}:{line}" in str(exc.value)


def test_gue_header_only_file(tmp_path):
    path = _bad(tmp_path, "sequence,label\n")
    with pytest.raises(InputError, match="no usable records") as exc:
        load_gue(tmp_path, spec(), non_acgt="error", seed=0)
    assert str(path) in str(exc.value)


def test_gue_missing_split(tmp_path):
    write_gue(tmp_path, {"train": good_rows(), "dev": good_rows()})
    with pytest.raises(InputError, match="no test split"):
        load_gue(tmp_path, spec(), non_acgt="error", seed=0)


def test_non_acgt_policies(tmp_path):
    s = windows(3, 100)
    rows = [(s[0], 0), (s[1][:50] + "NNRY" + s[1][54:], 1), (s[2], 0)]
    write_gue(tmp_path, {"train": rows, "dev": rows, "test": rows})
    dropped, stats = load_gue(tmp_path, spec(), non_acgt="drop", seed=0)
    assert len(dropped["train"]) == 2 and stats["train"]["dropped_non_acgt"] == 1
    replaced, stats = load_gue(tmp_path, spec(), non_acgt="replace_random", seed=0)
    fixed = replaced["train"].sequences[1]
    assert len(fixed) == 100 and set(fixed) <= set("ACGT") and fixed[:50] == s[1][:50].upper()
    again, _ = load_gue(tmp_path, spec(), non_acgt="replace_random", seed=0)
    assert again["train"].sequences[1] == fixed  # seeded
    with pytest.raises(ConfigError):
        load_gue(tmp_path, spec(), non_acgt="ignore", seed=0)


def write_eep(d: Path, splits: dict, header="sequence\tefficiency"):
    d.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        (d / f"{split}.tsv").write_text(header + "\n" + "".join(f"{s}\t{y}\n" for s, y in rows))


def eep_rows(n, offset=0):
    seqs = windows(n, 63, offset)
    return [(s.replace("T", "U").lower() if i == 0 else s, round(0.01 * i, 3)) for i, s in enumerate(seqs)]


def test_eep_seeded_dev_split(tmp_path):
    write_eep(tmp_path, {"train": eep_rows(20), "test": eep_rows(5, 5000)})
    sp = spec(task="regression", num_labels=1, length=63, name="eep_k562", fmt="eep_tsv")
    splits, stats = load_eep(tmp_path, sp, EEP_CFG, non_acgt="error", seed=0)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [15, 5, 5]
    assert "seeded split" in stats["dev_source"]
    # RNA, lower case in the file -> upper-case DNA
    everything = splits["train"].sequences + splits["dev"].sequences
    assert windows(1, 63)[0].upper() in everything
    assert splits["dev"].labels.dtype == np.float64
    again, _ = load_eep(tmp_path, sp, EEP_CFG, non_acgt="error", seed=0)
    assert again["dev"].sequences == splits["dev"].sequences
    other = seeded_dev_split(again["train"].__class__(everything, np.zeros(20)), 0.25, seed=4)[1]
    assert other.sequences != splits["dev"].sequences  # a different seed draws other rows


def test_eep_dev_file_used_when_present(tmp_path):
    write_eep(tmp_path, {"train": eep_rows(10), "dev": eep_rows(3, 3000), "test": eep_rows(4, 5000)})
    sp = spec(task="regression", num_labels=1, length=63, name="eep_h1", fmt="eep_tsv")
    splits, stats = load_eep(tmp_path, sp, EEP_CFG, non_acgt="error", seed=0)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [10, 3, 4] and stats["dev_source"] == "file"


@pytest.mark.parametrize("text,needle,line", [
    ("sequence,efficiency\n", "missing column(s) ['sequence', 'efficiency']", 1),
    ("sequence\tefficiency\n{s}\thigh\n", "is not a number", 2),
    ("sequence\tefficiency\n{s}\tnan\n", "is not finite", 2),
    ("sequence\tefficiency\n{s}\t0.1\n{short}\t0.2\n", "sequence has 40 nt", 3),
    ("sequence\tefficiency\n{s}\t0.1\n\t0.2\n", "empty sequence", 3),
    ("sequence\tefficiency\n{s}\t0.1\t9\n", "3 tab-separated fields", 2),
])
def test_eep_malformed(tmp_path, text, needle, line):
    s = windows(1, 63)[0]
    write_eep(tmp_path, {"test": eep_rows(4)})
    (tmp_path / "train.tsv").write_text(text.format(s=s, short=s[:40]))
    sp = spec(task="regression", num_labels=1, length=63, name="eep_k562", fmt="eep_tsv")
    with pytest.raises(InputError) as exc:
        load_eep(tmp_path, sp, EEP_CFG, non_acgt="error", seed=0)
    assert needle in str(exc.value), str(exc.value)
    assert f"{tmp_path / 'train.tsv'}:{line}" in str(exc.value)
