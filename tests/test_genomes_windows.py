"""Windows, N splitting, IUPAC policies, soft-masking and the train/valid split (vqdna.genomes.windows)."""

import numpy as np
import pytest

from vqdna.genomes.windows import BadByte, WindowParams, batch_windows, unit_is_valid


def run(seqs, **kw):
    params = WindowParams(**{"window": 4, "stride": 4, **kw})
    raw = np.frombuffer(b"".join(seqs), dtype=np.uint8)
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    return batch_windows(raw, lengths, offsets, params, salt=123)


def windows_of(bw, w=4):
    return [bw.clean[s:s + w].tobytes() for s in bw.starts]


@pytest.mark.parametrize("length,window,stride,expected_starts", [
    (8, 4, 4, [0, 4]),          # exact fit
    (9, 4, 4, [0, 4]),          # remainder shorter than a window is dropped
    (3, 4, 4, []),              # record shorter than one window
    (4, 4, 4, [0]),
    (10, 4, 3, [0, 3, 6]),      # overlapping windows (stride < window)
    (10, 4, 6, [0, 6]),         # gaps between windows (stride > window)
    (7, 4, 1, [0, 1, 2, 3]),
])
def test_window_stride_edges(length, window, stride, expected_starts):
    seq = (b"ACGT" * 5)[:length]
    bw = run([seq], window=window, stride=stride)
    assert bw.starts.tolist() == expected_starts
    assert bw.local_starts.tolist() == expected_starts


def test_windows_never_span_records():
    bw = run([b"ACGTAC", b"GTACGT"])  # 12 bases, but each record holds only one window
    assert bw.records.tolist() == [0, 1]
    assert bw.local_starts.tolist() == [0, 0]
    assert windows_of(bw) == [b"ACGT", b"GTAC"]


def test_soft_masked_bases_become_upper_case():
    bw = run([b"acgtACgt"])
    assert windows_of(bw) == [b"ACGT", b"ACGT"]


def test_n_runs_split_and_restart_the_grid():
    # segment 1: ACGTAC (one window), N run, segment 2: GGCCAATT (two windows, grid from its start)
    bw = run([b"ACGTAC" + b"NNN" + b"GGCCAATT"])
    assert windows_of(bw) == [b"ACGT", b"GGCC", b"AATT"]
    assert bw.local_starts.tolist() == [0, 9, 13]
    assert bw.n_n == 3


def test_lower_case_n_also_splits():
    bw = run([b"ACGTnACGT"])
    assert windows_of(bw) == [b"ACGT", b"ACGT"]


def test_short_n_runs_follow_the_iupac_policy():
    seq = b"ACGTNACGTNNNNACGT"
    # min run 3: the single N is not a split; under drop the window holding it goes
    bw = run([seq], n_split_min_run=3, iupac_policy="drop")
    assert windows_of(bw) == [b"ACGT", b"ACGT"]
    assert bw.local_starts.tolist() == [0, 13]
    bw = run([seq], n_split_min_run=3, iupac_policy="replace")
    got = windows_of(bw)
    assert len(got) == 3 and all(set(w) <= set(b"ACGT") for w in got)
    assert got[1][:1] in (b"A", b"C", b"G", b"T") and got[0] == b"ACGT"


def test_iupac_drop_keeps_the_grid():
    bw = run([b"ACGTACRTACGT"], iupac_policy="drop")
    assert bw.local_starts.tolist() == [0, 8]
    assert bw.n_dropped_windows == 1 and bw.n_iupac == 1


def test_iupac_replace_uses_a_compatible_base_and_repeats():
    seq = b"RRRRYYYYSSSSWWWWKKKKMMMMBBBBDDDDHHHHVVVV"
    allowed = {"R": b"AG", "Y": b"CT", "S": b"CG", "W": b"AT", "K": b"GT", "M": b"AC",
               "B": b"CGT", "D": b"AGT", "H": b"ACT", "V": b"ACG"}
    a = run([seq], iupac_policy="replace")
    b = run([seq], iupac_policy="replace")
    assert np.array_equal(a.clean, b.clean)
    for code, base in zip(seq.decode(), a.clean.tobytes()):
        assert base in allowed[code]
    assert len(a.starts) == 10
    # both choices show up for a two-base code over many positions (seeded hash, not a constant)
    many = run([b"R" * 400], iupac_policy="replace")
    assert set(many.clean.tobytes()) == set(b"AG")


def test_iupac_replace_does_not_depend_on_batching():
    recs = [b"ACGRYACGTS", b"WWKKACGT"]
    whole = run(recs, iupac_policy="replace")
    params = WindowParams(window=4, stride=4, iupac_policy="replace")
    parts = []
    for i, r in enumerate(recs):
        off = np.array([sum(len(x) for x in recs[:i])])
        parts.append(batch_windows(np.frombuffer(r, np.uint8), np.array([len(r)]), off, params, salt=123).clean)
    assert np.array_equal(whole.clean, np.concatenate(parts))


def test_iupac_error_names_the_position():
    with pytest.raises(BadByte, match="IUPAC.*position 6"):
        run([b"ACGTACYT"], iupac_policy="error")


@pytest.mark.parametrize("byte", [b"*", b"-", b"1", b"\x00", b"\xff", b"U"])
def test_non_nucleotide_bytes_are_rejected(byte):
    with pytest.raises(BadByte, match="not a nucleotide"):
        run([b"ACGTAC" + byte + b"GT"])


def test_block_split_cuts_segments_at_block_edges():
    seq = b"ACGTACGTAC" * 2  # 20 bases, blocks of 10: windows at 0,4 and 10,14
    bw = run([seq], split_by="block", block_size=10)
    assert bw.local_starts.tolist() == [0, 4, 10, 14]
    assert bw.units.tolist() == [0, 0, 1, 1]


def test_split_assignment_is_seeded_and_order_independent():
    units = [("chr1", u) for u in range(2000)]
    a = [unit_is_valid(0, "acc", r, u, 0.1) for r, u in units]
    b = [unit_is_valid(0, "acc", r, u, 0.1) for r, u in reversed(units)][::-1]
    c = [unit_is_valid(1, "acc", r, u, 0.1) for r, u in units]
    assert a == b
    assert a != c
    assert 0.07 < np.mean(a) < 0.13
    assert not any(unit_is_valid(0, "acc", "chr1", u, 0.0) for u in range(100))
    assert all(unit_is_valid(0, "acc", "chr1", u, 1.0) for u in range(100))
