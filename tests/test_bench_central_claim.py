"""bench/central_claim.py at toy size on CPU: the whole vq/hrq/bpe chain on real DNA, held-out
chromosome arms, equal budgets, dev-only selection (the GPU run uses the same code at bench size)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENOMES = ROOT.parent / "shared" / "data" / "genomes"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (GENOMES / "dm3_upstream2000.fa.gz").exists(), reason="shared genomes absent")]


def _bench():
    spec = importlib.util.spec_from_file_location("central_claim", ROOT / "bench" / "central_claim.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cc = _bench()
    base = tmp_path_factory.mktemp("central_claim")
    data, out = base / "data", base / "out"
    assert cc.main(["prepare", "--tiny", "--out", str(data), "--genomes", str(GENOMES), "--device", "cpu"]) == 0
    assert cc.main(["run", "--data", str(data), "--out", str(out), "--device", "cpu"]) == 0
    return cc, data, json.loads((out / "central_claim.json").read_text())


def test_heldout_arms_never_reach_the_shards(tiny_run):
    from vqdna.genomes.shards_io import list_shards, open_shard

    cc, data, res = tiny_run
    held = res["data"]["pretraining_corpus"]["heldout_arms"]
    assert {"chr2L", "chr3L"} <= set(held) and all(a.startswith(("chr2L", "chr3L")) for a in held)
    for split in ("train", "valid"):
        for path in list_shards(data / "shards", split):
            table = open_shard(path)
            records = set(table.column("record_id").to_pylist())
            assert not any("_chr2L" in r or "_chr3L" in r for r in records), path
            assert "NC_000932.1" not in set(table.column("accession").to_pylist())  # task 2's genome


def test_promoter_test_sequences_are_not_in_the_corpus(tiny_run):
    from vqdna.datasets.store import read_split
    from vqdna.genomes.shards_io import list_shards, open_shard

    cc, data, res = tiny_run
    corpus = b"|".join(b"".join(open_shard(p).column("sequence").to_pylist())
                       for s in ("train", "valid") for p in list_shards(data / "shards", s))
    test = read_split(data / "tasks" / "promoter_300", "test")
    assert len(test) > 0 and sorted(set(test.labels.tolist())) == [0, 1]
    for seq in test.sequences:
        assert len(seq) == 300 and seq.encode() not in corpus


def test_every_tokenizer_ran_every_stage_with_equal_budgets(tiny_run):
    cc, data, res = tiny_run
    assert res["run"]["failed"] == []
    r = res["results"]
    for tok in cc.TOKENIZERS:
        assert set(r[tok]) >= {"stage1", "tokenize", "pretrain", "finetune"}, tok
    # same stage-1 budget for the learned tokenizers
    assert r["vq"]["stage1"]["steps"] == r["hrq"]["stage1"]["steps"] > 0
    assert r["vq"]["stage1"]["nt_seen"] == r["hrq"]["stage1"]["nt_seen"] > 0
    # stage 2: same steps and nucleotides per batch; bpe sees far fewer tokens for them
    pre = {tok: r[tok]["pretrain"] for tok in cc.TOKENIZERS}
    assert len({p["steps"] for p in pre.values()}) == 1
    assert len({p["nt_seen"] for p in pre.values()}) == 1
    assert pre["bpe"]["real_tokens_seen"] < pre["vq"]["real_tokens_seen"]
    # bpe's sequence length covers its longest window: every sample is a whole window
    assert pre["bpe"]["budget"]["max_len"] == r["bpe"]["tokenize"]["train"]["max_tokens_per_window"] + 1
    assert len({p["parameters"] > 0 for p in pre.values()}) == 1


def test_selection_on_dev_and_table(tiny_run):
    cc, data, res = tiny_run
    assert len(res["table"]) == len(cc.TASKS) * len(cc.TOKENIZERS)
    for tok in cc.TOKENIZERS:
        for task in cc.TASKS:
            t = res["results"][tok]["finetune"]["tasks"][task]
            dev = t["dev_mcc_by_point"]
            assert t["best_point"] == max(dev, key=lambda p: (dev[p], -list(dev).index(p)))
            chosen = [x for x in t["runs"] if x["point"] == t["best_point"]]
            mccs = [x["test"]["mcc"] for x in chosen]
            assert math.isclose(t["test"]["mcc"]["mean"], sum(mccs) / len(mccs))
            for m in ("mcc", "f1_macro", "accuracy"):
                lo = -1.0 if m == "mcc" else 0.0
                assert lo <= t["test"][m]["mean"] <= 1.0
    text = cc.format_table(res["table"])
    assert text.count("\n") == len(res["table"]) + 1 and "promoter_300 | hrq" in text
