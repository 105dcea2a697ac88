"""Reading real genome files: gzip and plain FASTA, GenBank, and every malformed input."""

import gzip
import shutil
from pathlib import Path

import pytest

from vqdna.errors import InputError
from vqdna.genomes import readers
from vqdna.genomes.readers import iter_records, sniff_format

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
GENOMES = SHARED / "genomes"
BAD = SHARED / "bad_inputs"
LAMBDA = GENOMES / "NC_001416_lambda_phage.fa.gz"
YERSINIA_FASTA = GENOMES / "NC_005816_yersinia_pestis_plasmid.fna.gz"
YERSINIA_GB = GENOMES / "NC_005816_yersinia_pestis_plasmid.gb.gz"
DM3 = GENOMES / "dm3_upstream2000.fa.gz"


@pytest.fixture
def plain_lambda(tmp_path):
    out = tmp_path / "lambda.fa"
    out.write_bytes(gzip.decompress(LAMBDA.read_bytes()))
    return out


def test_gzip_and_plain_fasta_give_the_same_records(plain_lambda):
    gz = list(iter_records(LAMBDA))
    plain = list(iter_records(plain_lambda))
    assert gz == plain
    assert len(gz) == 1 and len(gz[0][1]) == 48502
    assert gz[0][0] == "gi|9626243|ref|NC_001416.1|"


def test_genbank_and_fasta_of_one_plasmid_agree():
    (gb_id, gb_seq), = iter_records(YERSINIA_GB)
    (_fa_id, fa_seq), = iter_records(YERSINIA_FASTA)
    assert gb_id == "NC_005816.1"
    assert gb_seq.upper() == fa_seq.upper() and len(gb_seq) == 9609


def test_plain_genbank(tmp_path):
    plain = tmp_path / "yersinia.gb"
    plain.write_bytes(gzip.decompress(YERSINIA_GB.read_bytes()))
    assert sniff_format(plain) == "genbank"
    assert list(iter_records(plain)) == list(iter_records(YERSINIA_GB))


@pytest.mark.parametrize("chunk", [1, 7, 61, 1000, 1 << 20])
def test_fast_reader_matches_biopython_at_any_chunk_size(monkeypatch, chunk, tmp_path):
    # 400 soft-masked dm3 records, cut at awkward chunk sizes
    src = tmp_path / "dm3_head.fa"
    with gzip.open(DM3, "rt") as fh:
        lines = []
        n = 0
        for line in fh:
            n += line.startswith(">")
            if n > 400:
                break
            lines.append(line)
    src.write_text("".join(lines).replace("\n", "\r\n", 50))  # some CRLF lines too
    monkeypatch.setattr(readers, "READ_CHUNK", chunk)
    fast = list(iter_records(src, fasta_reader="fast"))
    bio = list(iter_records(src, fasta_reader="biopython"))
    assert len(fast) == 400 and fast == bio
    assert any(c in fast[0][1] for c in b"acgt")  # soft-masking kept; the shard step upper-cases


def test_empty_sequence_names_the_record(tmp_path):
    text = gzip.decompress(LAMBDA.read_bytes()).decode()
    bad = tmp_path / "empty_record.fa"
    bad.write_text(">first\nACGT\n>empty_one\n" + text)
    with pytest.raises(InputError, match="empty_one.*empty sequence"):
        list(iter_records(bad))


def test_empty_file(tmp_path):
    (tmp_path / "x.fa").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        list(iter_records(tmp_path / "x.fa"))


def test_non_fasta_bytes_are_rejected(tmp_path):
    bad = tmp_path / "binary.fa"
    bad.write_bytes(LAMBDA.read_bytes()[:200])  # gzip bytes, but named .fa and not gzip-complete
    with pytest.raises(InputError, match="binary.fa"):
        list(iter_records(bad))
    not_dna = tmp_path / "image.fa"
    not_dna.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(InputError, match="neither FASTA"):
        list(iter_records(not_dna))


def test_truncated_gzip_names_the_last_good_record(tmp_path):
    bad = tmp_path / "cut.fa.gz"
    data = DM3.read_bytes()
    bad.write_bytes(data[: len(data) // 50])
    with pytest.raises(InputError, match=r"truncated gzip after record 'NM_"):
        list(iter_records(bad))


def test_truncated_genbank_gzip(tmp_path):
    bad = tmp_path / "cut.gb.gz"
    data = (GENOMES / "NC_000932_arabidopsis_chloroplast.gb.gz").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.gb.gz.*(truncated|gzip)"):
        list(iter_records(bad))


@pytest.mark.parametrize("name,message", [
    ("bad_origin_wrap.gb", "XX_123456.1.*no sequence"),
    ("blank_seq.gb", "NP_001832.1.*protein"),
    ("no_end_marker.gb.gz", "AB070938.1.*truncated"),
    ("no_origin_no_end.gb", "record #1.*malformed genbank"),
])
def test_malformed_genbank_files_are_rejected(name, message):
    with pytest.raises(InputError, match=message) as err:
        list(iter_records(BAD / name))
    assert name in str(err.value)


def test_malformed_locus_line_is_handled_with_a_warning(caplog):
    recs = list(iter_records(BAD / "invalid_locus_line_spacing.gb.gz"))
    assert [(r, len(s)) for r, s in recs] == [("AB070938.1", 6497)]
    assert "malformed locus line" in caplog.text.lower()
    with pytest.raises(InputError, match="malformed locus"):
        list(iter_records(BAD / "invalid_locus_line_spacing.gb.gz", genbank_warnings="error"))


def test_gzip_detected_by_content_not_name(tmp_path):
    odd = tmp_path / "lambda.fasta"  # gzip bytes without .gz
    shutil.copy(LAMBDA, odd)
    assert list(iter_records(odd)) == list(iter_records(LAMBDA))
