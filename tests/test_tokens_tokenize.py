"""`vqdna tokenize` and `TokenFile` on real DNA shards (lambda phage)."""

from __future__ import annotations

import numpy as np
import pytest

from test_tokens_data import genome_text, tiny_vq_tokenizer, write_shards
from vqdna.errors import InputError
from vqdna.genomes.shards_io import ascii_matrix, open_shard
from vqdna.tokenizers.onehot import OneHotTokenizer
from vqdna.tokens import TokenFile, read_meta, token_paths
from vqdna.tokens.tokenize import tokenize_split

CFG = {"device": "cpu", "tokens": {"batch_nt": 300}}  # 300 nt: batches cut through shards
WINDOW = 64


def shard_sequences(paths) -> list[str]:
    return [row.tobytes().decode() for p in paths for row in ascii_matrix(open_shard(p))]


@pytest.fixture
def hrq_dir(tmp_path):
    tok = tiny_vq_tokenizer("hrq")
    tok.save_pretrained(tmp_path / "tok" / "hrq")
    return tmp_path / "tok" / "hrq"


@pytest.fixture
def shards(tmp_path):
    return write_shards(tmp_path / "shards", "train", window=WINDOW, rows_per_shard=7, n_shards=3)


def test_round_trip_equals_encoder_output(tmp_path, hrq_dir, shards):
    from vqdna.tokenizers import load_tokenizer

    meta, _ = tokenize_split(hrq_dir, tmp_path / "shards", "train", tmp_path / "out", CFG, name="hrq")
    tf = TokenFile(tmp_path / "out", "train")
    expected = load_tokenizer(hrq_dir).encode(shard_sequences(shards))
    assert len(tf) == 21 and tf.meta.dtype == "uint16" and tf.meta.levels == 2
    assert tf.meta.vocab_sizes == [8, 16] and tf.meta.window_nt == WINDOW and tf.meta.tokens_per_window == WINDOW
    for i, exp in enumerate(expected):
        np.testing.assert_array_equal(tf.window(i), exp)
    assert read_meta(tmp_path / "out", "train") == meta


def test_tokenizing_twice_is_byte_identical(tmp_path, hrq_dir, shards):
    tokenize_split(hrq_dir, tmp_path / "shards", "train", tmp_path / "a", CFG)
    tokenize_split(hrq_dir, tmp_path / "shards", "train", tmp_path / "b", {"device": "cpu", "tokens": {"batch_nt": 4096}})
    for key in ("bin", "meta"):
        assert token_paths(tmp_path / "a", "train")[key].read_bytes() == token_paths(tmp_path / "b", "train")[key].read_bytes()


def test_sample_reads_crops_of_stored_windows(tmp_path, shards):
    (tmp_path / "onehot").mkdir()
    OneHotTokenizer().save_pretrained(tmp_path / "onehot")
    tokenize_split(tmp_path / "onehot", tmp_path / "shards", "train", tmp_path / "out", CFG)
    tf = TokenFile(tmp_path / "out", "train")
    text = genome_text()
    ids, lengths = tf.sample(np.random.default_rng(3), batch=16, length=20)
    assert ids.shape == (16, 20, 1) and (lengths == 20).all()
    for row in ids:
        assert "".join("ACGT"[i] for i in row[:, 0]) in text[: 21 * WINDOW]
    again, _ = tf.sample(np.random.default_rng(3), batch=16, length=20)
    np.testing.assert_array_equal(ids, again)
    ids, _ = tf.sample(np.random.default_rng(4), batch=4, length=10 * WINDOW)
    assert ids.shape == (4, WINDOW, 1)  # capped at the window


def test_bad_window_names_shard_and_record_and_keeps_old_output(tmp_path, shards):
    (tmp_path / "onehot").mkdir()
    OneHotTokenizer().save_pretrained(tmp_path / "onehot")
    tokenize_split(tmp_path / "onehot", tmp_path / "shards", "train", tmp_path / "out", CFG)
    before = token_paths(tmp_path / "out", "train")["bin"].read_bytes()
    # Overwrite shard 1 with one window holding an N.
    seqs = shard_sequences(shards[1:2])
    seqs[4] = seqs[4][:10] + "N" + seqs[4][11:]
    import pyarrow as pa

    from vqdna.genomes.shards_io import shard_schema

    table = pa.table({"sequence": pa.array([s.encode() for s in seqs], type=pa.binary(WINDOW)),
                      "accession": ["x"] * 7, "species": ["x"] * 7, "record_id": ["x"] * 7, "start": list(range(7))},
                     schema=shard_schema(WINDOW))
    with pa.OSFile(str(shards[1]), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    with pytest.raises(InputError, match=r"00001\.arrow.*record '4'"):
        tokenize_split(tmp_path / "onehot", tmp_path / "shards", "train", tmp_path / "out", CFG)
    assert token_paths(tmp_path / "out", "train")["bin"].read_bytes() == before
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


class RunLengthTokenizer(OneHotTokenizer):
    """A variable-rate stand-in (like BPE): one token per run of equal bases."""

    kind = "runlength"

    @property
    def fixed_rate(self) -> bool:
        return False

    def num_tokens(self, length):
        return None

    def encode(self, seqs):
        out = []
        for s in seqs:
            codes = super().encode([s])[0][:, 0]
            keep = np.r_[True, codes[1:] != codes[:-1]]
            out.append(codes[keep][:, None])
        return out


def test_variable_rate_tokenizer_is_padded_with_lengths(tmp_path, shards, monkeypatch):
    import vqdna.tokenizers as tokenizers

    monkeypatch.setattr(tokenizers, "load_tokenizer", lambda path, **kw: RunLengthTokenizer())
    (tmp_path / "rl").mkdir()
    (tmp_path / "rl" / "config.json").write_text('{"kind": "runlength"}')
    tokenize_split(tmp_path / "rl", tmp_path / "shards", "train", tmp_path / "out", CFG)
    tf = TokenFile(tmp_path / "out", "train")
    expected = RunLengthTokenizer().encode(shard_sequences(shards))
    assert not tf.meta.fixed_rate and tf.meta.tokens_per_window == WINDOW
    for i, exp in enumerate(expected):
        np.testing.assert_array_equal(tf.window(i), exp)
        assert (np.asarray(tf.ids[i, len(exp):]) == 4).all()  # [PAD] = vocab size
    ids, lengths = tf.sample(np.random.default_rng(0), batch=8, length=WINDOW)
    for row, n in zip(ids, lengths):
        assert (row[n:] == 4).all() and (row[:n] < 4).all()


def test_truncated_token_file_is_an_input_error(tmp_path, shards):
    (tmp_path / "onehot").mkdir()
    OneHotTokenizer().save_pretrained(tmp_path / "onehot")
    tokenize_split(tmp_path / "onehot", tmp_path / "shards", "train", tmp_path / "out", CFG)
    path = token_paths(tmp_path / "out", "train")["bin"]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InputError, match="truncated"):
        TokenFile(tmp_path / "out", "train")
