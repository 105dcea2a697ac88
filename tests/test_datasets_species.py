"""Species windows from real genomes: deterministic, chromosome-level (or region) splits,
no window shared between splits."""

from pathlib import Path

import numpy as np
import pytest

from vqdna.datasets.registry import DatasetSpec
from vqdna.datasets.species import assign_units, build_species
from vqdna.errors import InputError

GENOMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "genomes"


def spec(length=500, n=3):
    return DatasetSpec(name=f"species_{length}", family="SC", task="classification", metric="accuracy",
                       num_labels=n, length=length, format="species", source="config", sha256="",
                       paper_table="6", demo_stand_in=True, description="", base="species")


def cfg(**kw):
    base = {
        "genomes": [
            {"name": "lambda", "files": [str(GENOMES / "NC_001416_lambda_phage.fa.gz")]},
            {"name": "human", "files": [str(GENOMES / "human_GRCh37_chr1_first240kb.fasta.gz")]},
            {"name": "chloroplast", "files": [str(GENOMES / "NC_000932_arabidopsis_chloroplast.gb.gz")]},
        ],
        "windows": {"train": 6, "dev": 3, "test": 3},
        "split_fractions": {"train": 0.8, "dev": 0.1, "test": 0.1},
        "min_records_for_chromosome_split": 3, "max_n_fraction": 0.0, "oversample": 4,
    }
    base.update(kw)
    return base


def test_species_windows_are_deterministic_and_clean():
    a, meta = build_species(spec(), cfg(), seed=0)
    b, _ = build_species(spec(), cfg(), seed=0)
    c, _ = build_species(spec(), cfg(), seed=1)
    assert a["train"].sequences == b["train"].sequences and a["test"].sequences == b["test"].sequences
    assert a["train"].sequences != c["train"].sequences
    assert [len(a[s]) for s in ("train", "dev", "test")] == [18, 9, 9]
    assert list(np.bincount(a["test"].labels)) == [3, 3, 3]
    for s in a.values():
        assert all(len(w) == 500 and set(w) <= set("ACGT") for w in s.sequences)
    # human chr1 excerpt: N runs at 0-10k and 177-227k; the region split follows sequenced bases
    human = meta["genomes"]["human"]
    assert human["split_rule"] == "region"
    assert all(":" in r for rs in human["records"].values() for r in rs)


def test_windows_come_from_their_split_region_only():
    splits, meta = build_species(spec(), cfg(), seed=0)
    genome = "".join(line.strip() for line in __import__("gzip").open(
        GENOMES / "NC_001416_lambda_phage.fa.gz", "rt") if not line.startswith(">")).upper()
    for split in ("train", "dev", "test"):
        (region,) = meta["genomes"]["lambda"]["records"][split]
        lo, hi = map(int, region.rsplit(":", 1)[1].split("-"))
        for w, y in zip(splits[split].sequences, splits[split].labels):
            if y == 0:
                pos = genome.find(w)
                assert lo <= pos and pos + len(w) <= hi


def test_chromosome_split_keeps_records_whole():
    lengths = [("f", f"chr{i}", n) for i, n in enumerate([100, 90, 80, 30, 20, 10, 5])]
    units, rule = assign_units(lengths, {"train": 0.8, "dev": 0.1, "test": 0.1}, 3)
    assert rule == "chromosome"
    seen = [u.record for s in units.values() for u in s]
    assert sorted(seen) == sorted(r for _, r, _ in lengths)  # every record exactly once
    assert all(units[s] for s in units)
    assert all(u.start == 0 and u.end == n for s in units.values() for u in s for f, r, n in lengths if r == u.record)


def test_multi_record_genome_uses_chromosome_split():
    dm3 = {"name": "fly", "files": [str(Path(__file__).resolve().parents[1] / "data/demo/genomes/dm3_upstream2000_first3000.fa.gz")]}
    c = cfg(genomes=cfg()["genomes"][:2] + [dm3])
    splits, meta = build_species(spec(), c, seed=0)
    fly = meta["genomes"]["fly"]
    assert fly["split_rule"] == "chromosome"
    recs = {s: set(fly["records"][s]) for s in ("train", "dev", "test")}
    assert not (recs["train"] & recs["test"]) and not (recs["train"] & recs["dev"]) and not (recs["dev"] & recs["test"])


def test_too_long_windows_fail_clearly():
    with pytest.raises(InputError, match="no dev record of at least 20000 nt"):
        build_species(spec(length=20000), cfg(), seed=0)
