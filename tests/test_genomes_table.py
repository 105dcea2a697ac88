"""The genome tables: the shipped ones parse and match their files; bad tables name the line."""

from pathlib import Path

import pytest

from vqdna.atomic import sha256_file
from vqdna.errors import InputError
from vqdna.genomes.table import read_genome_table

ROOT = Path(__file__).resolve().parents[1]


def test_demo_table_checksums_match_the_shipped_files():
    rows = read_genome_table(ROOT / "config" / "genomes.demo.tsv")
    assert len(rows) == 5
    for row in rows:
        assert sha256_file(ROOT / "data" / "demo" / "genomes" / row.file) == row.sha256


def test_paper_table_lists_the_appendix_c_species():
    every = read_genome_table(ROOT / "config" / "genomes.tsv", included_only=False)
    categories = {r.category for r in every}
    assert {"Fungi", "Protozoa", "Mammalian", "Other Vertebrate", "Bacteria"} <= categories
    species = {r.species for r in every}
    assert {"Homo sapiens", "Mus musculus", "Saccharomyces cerevisiae", "Phytophthora sojae"} <= species
    included = read_genome_table(ROOT / "config" / "genomes.tsv")
    # every included row is an NCBI assembly accession (pretraining: RefSeq where one was found;
    # species task: GenBank) or a full species name resolved at download (`taxon:`, pretraining
    # only). A GenBank pretraining row must say that no RefSeq assembly was found.
    by_accession = [r for r in included if not r.by_taxon]
    assert by_accession and all(r.accession.startswith(("GCF_", "GCA_")) for r in by_accession)
    pretrain = [r for r in by_accession if r.roles == {"pretrain"}]
    assert all(r.accession.startswith("GCF_") or "no RefSeq assembly found" in r.note for r in pretrain)
    by_taxon = [r for r in included if r.by_taxon]
    assert all(r.roles == {"pretrain"} and r.taxon.casefold() == r.species.casefold() for r in by_taxon)
    # a taxon row names one species: genus + epithet ("Candidatus" + genus + epithet), no strain
    assert all(len(r.taxon.split()) == (3 if r.taxon.startswith("Candidatus") else 2) for r in by_taxon)
    assert len(by_accession) + len(by_taxon) - 5 == 43  # of the 106 pre-training rows (5: species task)


@pytest.mark.parametrize("text,message", [
    ("accession\tspecies\nA\tx\n", r"genomes.tsv:1: missing column.*category"),
    ("accession\tspecies\tcategory\nA\tx\tc\nA\ty\tc\n", r"genomes.tsv:3 \(record 'A'\): duplicate"),
    ("accession\tspecies\tcategory\nA/B\tx\tc\n", r"genomes.tsv:2 .*letters, digits"),
    ("accession\tspecies\tcategory\tsha256\nA\tx\tc\tnothex\n", r"genomes.tsv:2 .*64 hex"),
    ("accession\tspecies\tcategory\tcolour\nA\tx\tc\tred\n", r"unknown column"),
    ("# only a comment\n", "empty"),
])
def test_bad_tables_name_the_line(tmp_path, text, message):
    path = tmp_path / "genomes.tsv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_genome_table(path)
