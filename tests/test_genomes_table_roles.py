"""Genome roles: pre-training shards take only `pretrain` genomes, the species task takes
`species_task` genomes by accession; bad roles and role mismatches name the table line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vqdna.config import load_config
from vqdna.datasets.species_genomes import species_genomes
from vqdna.errors import InputError
from vqdna.genomes.table import PRETRAIN, SPECIES_TASK, read_genome_table, rows_with_role

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo" / "genomes"
HEADER = "accession\tspecies\tcategory\tinclude\trole\tnote\n"

# The assemblies HyenaDNA's README downloads for its 5-species task (Nguyen et al. 2023), which
# the paper's Table 6 reuses; config/genomes.sources.md records the source.
HYENADNA_SPECIES = {
    "GCA_009914755.4": "Homo sapiens", "GCA_020740605.1": "Lemur catta", "GCA_921998355.2": "Mus musculus",
    "GCA_002844635.1": "Sus scrofa", "GCA_023065835.1": "Hippopotamus amphibius",
}


def write_table(tmp_path, body):
    path = tmp_path / "genomes.tsv"
    path.write_text(HEADER + body)
    return path


def test_roles_default_to_pretrain_and_combine(tmp_path):
    path = write_table(tmp_path, "A\ta\tc\tyes\t\t\nB\tb\tc\tyes\tspecies_task\t\n"
                                 "C\tc\tc\tyes\tpretrain, species_task\t\nD\td\tc\tno\tspecies_task\t\n")
    rows = read_genome_table(path)
    assert [r.accession for r in rows_with_role(rows, PRETRAIN)] == ["A", "C"]
    assert [r.accession for r in rows_with_role(rows, SPECIES_TASK)] == ["B", "C"]
    assert [r.line for r in rows] == [2, 3, 4]
    # a table without the column keeps its old meaning: every genome is pre-trained on
    legacy = tmp_path / "legacy.tsv"
    legacy.write_text("accession\tspecies\tcategory\nA\ta\tc\n")
    assert read_genome_table(legacy)[0].roles == {PRETRAIN}


@pytest.mark.parametrize("role", ["finetune", "pretrain,", "pretrain;species_task"])
def test_unknown_role_names_file_and_line(tmp_path, role):
    path = write_table(tmp_path, f"A\ta\tc\tyes\tpretrain\t\nB\tb\tc\tyes\t{role}\t\n")
    with pytest.raises(InputError, match=r"genomes.tsv:3 \(record 'B'\): role must be one or more of"):
        read_genome_table(path)


def test_paper_table_roles():
    rows = read_genome_table(ROOT / "config" / "genomes.tsv")
    task = {r.accession: r for r in rows_with_role(rows, SPECIES_TASK)}
    assert {a: r.species for a, r in task.items()} == HYENADNA_SPECIES
    assert all(r.roles == {SPECIES_TASK} for r in task.values())  # none of them is sharded
    pretrain = rows_with_role(rows, PRETRAIN)
    assert {"Homo sapiens", "Mus musculus", "Saccharomyces cerevisiae"} <= {r.species for r in pretrain}
    assert not set(task) & {r.accession for r in pretrain}
    # an included row says where its accession was verified; excluded rows say why not
    assert all(r.source for r in rows)
    every = read_genome_table(ROOT / "config" / "genomes.tsv", included_only=False)
    assert all(r.note for r in every if not r.include)


def test_paper_species_task_resolves_through_the_table():
    cfg = load_config([ROOT / "config" / "config.yaml", ROOT / "config" / "paper.yaml"])
    genomes = species_genomes(cfg)
    assert [g["name"] for g in genomes] == ["human", "lemur", "mouse", "pig", "hippo"]
    assert [g["files"] for g in genomes] == [[f"resources/genomes/{a}.fna.gz"] for a in HYENADNA_SPECIES]


def test_species_task_refuses_a_genome_without_the_role(tmp_path):
    table = write_table(tmp_path, "A\ta\tc\tyes\tpretrain\t\nB\tb\tc\tyes\tspecies_task\t\nC\tc\tc\tno\tspecies_task\t\n")
    cfg = load_config([ROOT / "config" / "config.yaml"], [f"genomes.table={table}"])
    cfg["datasets"]["species"]["genomes"] = [{"name": "b", "accession": "B"}, {"name": "f", "files": ["x.fa"]}]
    assert species_genomes(cfg) == [{"name": "b", "files": ["resources/genomes/B.fna.gz"]},
                                    {"name": "f", "files": ["x.fa"]}]
    cfg["datasets"]["species"]["genomes"][0]["accession"] = "A"
    with pytest.raises(InputError, match=r"genomes.tsv:2 \(record 'A'\): genome is used as \['pretrain'\], not 'species_task'"):
        species_genomes(cfg)
    cfg["datasets"]["species"]["genomes"][0]["accession"] = "C"  # include: no
    with pytest.raises(InputError, match=r"genomes.tsv: accession 'C' is not an included row"):
        species_genomes(cfg)


def _shard(tmp_path, table, *args):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    return subprocess.run(
        [sys.executable, "-m", "vqdna", "shard", "--config", str(ROOT / "config" / "config.yaml"),
         "--set", f"genomes.table={table}", "--set", "shards.num_shards.train=2", "--set", "shards.num_shards.valid=1",
         "--genomes-dir", str(tmp_path / "genomes"), "--shards-dir", str(tmp_path / "shards"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_shards_hold_only_pretrain_genomes(tmp_path):
    genomes = tmp_path / "genomes"
    genomes.mkdir()
    shutil.copy(DEMO / "NC_001416_lambda_phage.fa.gz", genomes / "NC_001416.1.fna.gz")
    shutil.copy(DEMO / "NC_005816_yersinia_pestis_plasmid.fna.gz", genomes / "NC_005816.1.fna.gz")
    table = write_table(tmp_path, "NC_001416.1\tlambda\tVirus\tyes\tpretrain\t\n"
                                  "NC_005816.1\tyersinia\tBacteria\tyes\tspecies_task\t\n")
    r = _shard(tmp_path, table, "--step", "all")
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert [g["accession"] for g in manifest["genomes"]] == ["NC_001416.1"]
    assert not (tmp_path / "shards" / "prep" / "NC_005816.1.seq").exists()
    # the species-task row changes nothing: same shards, byte for byte, as a lambda-only table
    lambda_only = tmp_path / "lambda_only"
    lambda_only.mkdir()
    r = _shard(lambda_only, write_table(lambda_only, "NC_001416.1\tlambda\tVirus\tyes\tpretrain\t\n"),
               "--step", "all", "--genomes-dir", str(genomes))
    assert r.returncode == 0, r.stderr[-3000:]
    alone = json.loads((lambda_only / "shards" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["windows"] > 0
    assert [s["sha256"] for s in manifest["shards"]] == [s["sha256"] for s in alone["shards"]]
    # asking for a species-task genome by name is an error naming the table line
    r = _shard(tmp_path, table, "--step", "prepare", "--accession", "NC_005816.1")
    assert r.returncode == 2
    assert f"{table}:3 (record 'NC_005816.1'): genome is used as ['species_task'], not 'pretrain'" in r.stderr
    # a table whose genomes are all species-task genomes has nothing to shard
    only_task = write_table(tmp_path, "NC_005816.1\tyersinia\tBacteria\tyes\tspecies_task\t\n")
    r = _shard(tmp_path, only_task, "--step", "plan")
    assert r.returncode == 2 and "no included genome has role 'pretrain'" in r.stderr
