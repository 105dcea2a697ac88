"""Baseline tokenizers (k-mer, BPE, one-hot): exact round trips on real DNA, token counts,
vocabularies, save/load through the registry, and refusal of non-ACGT input."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from vqdna.errors import InputError
from vqdna.tokenizers import REGISTRY, load_tokenizer, tokenizer_class
from vqdna.tokenizers.bpe import BPETokenizer
from vqdna.tokenizers.kmer import KmerTokenizer
from vqdna.tokenizers.onehot import OneHotTokenizer

GENOMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "genomes"


@pytest.fixture(scope="module")
def lambda_dna() -> str:
    with gzip.open(GENOMES / "NC_001416_lambda_phage.fa.gz", "rt") as fh:
        return "".join(line.strip().upper() for line in fh if not line.startswith(">"))


@pytest.fixture(scope="module")
def pieces(lambda_dna) -> list[str]:
    # real DNA of many lengths, including shorter than k and not multiples of k
    rng = np.random.default_rng(0)
    out = []
    for length in [0, 1, 2, 5, 6, 7, 11, 64, 255, 1000]:
        start = int(rng.integers(0, len(lambda_dna) - length))
        out.append(lambda_dna[start:start + length])
    return out


@pytest.mark.parametrize("k", [3, 6])
@pytest.mark.parametrize("overlap", [True, False])
def test_kmer_round_trip_and_token_counts(pieces, k, overlap):
    tok = KmerTokenizer(k=k, overlap=overlap)
    ids = tok.encode(pieces)
    assert tok.decode(ids) == pieces
    assert [len(a) for a in ids] == [tok.num_tokens(len(p)) for p in pieces]
    assert all(a.ndim == 2 and a.shape[1] == 1 and a.dtype == np.int64 for a in ids)
    assert max(int(a.max()) for a in ids if a.size) < tok.vocab_sizes[0] == 4 ** k + 4


def test_kmer_ids_are_base4_numbers():
    ids = KmerTokenizer(k=3, overlap=False).encode(["ACGTTT"])[0][:, 0].tolist()
    assert ids == [0 * 16 + 1 * 4 + 2, 3 * 16 + 3 * 4 + 3]
    ov = KmerTokenizer(k=3, overlap=True).encode(["ACGT"])[0][:, 0].tolist()
    assert ov == [0 * 16 + 1 * 4 + 2, 1 * 16 + 2 * 4 + 3]
    # a non-overlapping tail shorter than k becomes single-base tokens after the 4^k k-mers
    tail = KmerTokenizer(k=3, overlap=False).encode(["ACGTA"])[0][:, 0].tolist()
    assert tail == [6, 64 + 3, 64 + 0]


def test_kmer_lower_case_is_upper_case():
    tok = KmerTokenizer(k=6)
    assert np.array_equal(tok.encode(["acgtacgtac"])[0], tok.encode(["ACGTACGTAC"])[0])


def test_bpe_trained_on_real_dna_round_trips(lambda_dna, pieces, tmp_path):
    windows = [lambda_dna[i:i + 512] for i in range(0, 40000, 512)]
    tok = BPETokenizer.train(windows, vocab_size=512)
    assert tok.vocab_sizes == (512,)
    held_out = [lambda_dna[45000 + i * 300:45000 + i * 300 + 300] for i in range(5)] + pieces
    ids = tok.encode(held_out)
    assert tok.decode(ids) == held_out
    # merges compress: fewer tokens than nucleotides on held-out DNA
    assert sum(len(a) for a in ids[:5]) < 0.5 * 1500
    tok.save_pretrained(tmp_path / "bpe")
    again = load_tokenizer(tmp_path / "bpe")
    assert all(np.array_equal(a, b) for a, b in zip(again.encode(held_out), ids))
    assert tok.num_tokens(100) is None and not tok.fixed_rate


@pytest.mark.parametrize("tok", [KmerTokenizer(6, False), KmerTokenizer(3, True), OneHotTokenizer()])
def test_save_and_load_through_the_registry(tok, tmp_path, pieces):
    tok.save_pretrained(tmp_path / "t")
    again = load_tokenizer(tmp_path / "t")
    assert type(again) is type(tok)
    assert again.vocab_sizes == tok.vocab_sizes
    assert again.decode(again.encode(pieces)) == pieces


@pytest.mark.parametrize("tok", [KmerTokenizer(6, False), OneHotTokenizer()])
def test_non_acgt_input_is_refused(tok):
    with pytest.raises(ValueError, match="sequence 1"):
        tok.encode(["ACGTACGT", "ACGNNNACGT"])


def test_bpe_refuses_non_acgt(lambda_dna):
    tok = BPETokenizer.train([lambda_dna[:5000]], vocab_size=64)
    with pytest.raises(ValueError, match="sequence 0"):
        tok.encode(["ACGRT"])


def test_registry_covers_every_kind():
    for kind in REGISTRY:
        assert tokenizer_class(kind).__name__.endswith("Tokenizer")


def test_missing_config_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="config.json"):
        load_tokenizer(tmp_path)


def test_evaluate_counts_wrong_bases_and_level_usage(lambda_dna):
    from vqdna.dna import batch_to_codes
    from vqdna.tokenizers.evaluate import evaluate_tokenizer

    class AllA(OneHotTokenizer):  # reconstructs every base as A
        def decode(self, ids):
            return ["A" * len(a) for a in ids]

    windows = batch_to_codes([lambda_dna[i:i + 100] for i in range(0, 2000, 100)])
    m = evaluate_tokenizer(AllA(), windows, batch_rows=7)
    assert m["valid_reconstruction_accuracy"] == pytest.approx(float((windows == 0).mean()))
    assert m["valid_nucleotides"] == windows.size and m["nucleotides_per_token"] == 1.0
    assert m["usage_pct"] == [100.0] and 3.5 < m["perplexity"][0] <= 4.0
    exact = evaluate_tokenizer(KmerTokenizer(6, False), windows)
    assert exact["valid_reconstruction_accuracy"] == 1.0
    assert exact["nucleotides_per_token"] == pytest.approx(100 / (16 + 4))
