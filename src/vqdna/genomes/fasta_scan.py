"""Whole-chunk FASTA scan for the shard prepare step: clean bases out, sparse facts back.

Reads a (gzipped) FASTA file in chunks of whole lines and, per chunk, with a handful of passes
over the buffer instead of one Python object per record:
  * header lines found with numpy (`>` at a line start), record ids cut from them (one decode per chunk);
  * the bodies joined without their headers, then one `bytes.translate` that drops the newlines,
    upper-cases A/C/G/T/N, and maps other IUPAC codes to lower case and every other byte to
    0xFF, so that one `max()` tells whether anything but A/C/G/T/N is there at all;
  * N and IUPAC positions (numpy) only in chunks that hold any; the bases go straight to the
    `.seq` file (IUPAC codes in lower case until the caller settles them: `settle_iupac`).
It returns what the window step needs: record ids and lengths, N runs and IUPAC positions in
`.seq` coordinates.

Anything unusual - a byte that is no nucleotide code, whitespace other than `\\n` (CRLF files),
an empty record or header, a corrupt gzip - raises `NotPlain`, and the caller runs the general
record-by-record path (`readers.iter_records` + `windows.batch_windows`), which gives the same
result or the error naming file and record. `tests/test_genomes_fasta_scan.py` checks that both
paths write identical prepared files and shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .readers import GZIP_ERRORS, open_binary
from .windows import _COMPATIBLE, _runs

# Decompressed bytes per read: big enough that per-chunk Python work vanishes, small enough that
# the buffers stay in cache and their memory is reused (fresh 50 MB buffers cost more in page
# faults than the passes over them). 512 KiB was the fastest of 128 KiB-2 MiB on the bench
# input, by a few per cent.
SCAN_CHUNK = 1 << 19
_NEWLINE, _GT, _T, _BAD = 10, 62, ord("T"), 0xFF
# ASCII bytes that str.split() takes for whitespace and bytes.split() does not
_STR_ONLY_SPACE = (b"\x1c", b"\x1d", b"\x1e", b"\x1f")


def _scan_table() -> bytes:
    table = bytearray([_BAD]) * 256
    for c in "ACGTN":
        table[ord(c)] = table[ord(c.lower())] = ord(c)
    for c in _COMPATIBLE:  # other IUPAC codes sort above 'T' in lower case
        table[ord(c)] = table[ord(c.lower())] = ord(c.lower())
    return bytes(table)


SCAN_TABLE = _scan_table()


class NotPlain(Exception):
    """The input needs the general reader (which also words the error, if there is one)."""


@dataclass
class ScanResult:
    record_ids: list[str]
    record_lengths: np.ndarray  # int64
    n_starts: np.ndarray        # N runs in .seq coordinates, ends exclusive; never across records
    n_ends: np.ndarray
    iupac_pos: np.ndarray       # positions of other IUPAC codes in .seq coordinates (lower case there)
    n_bases: int


def _chunks(fh: BinaryIO):
    """(buffer, end, at_line_start): process buffer[:end]; a header line is never cut in two (an
    unfinished last line that starts with '>' waits for the next read)."""
    carry = b""
    at_line_start = True
    while True:
        try:
            data = fh.read(SCAN_CHUNK)
        except GZIP_ERRORS:
            raise NotPlain("gzip") from None
        eof = not data
        if carry:
            data, carry = carry + data, b""
        if not data:
            return
        end = len(data)
        if not eof:
            tail = data.rfind(b"\n") + 1
            if tail < end and data[tail] == _GT and (tail > 0 or at_line_start):
                carry, end = data[tail:], tail
        if end:
            yield data, end, at_line_start
            at_line_start = data[end - 1] == _NEWLINE
        if eof:
            return


def _record_ids(mv: memoryview, starts: np.ndarray, ends: np.ndarray) -> list[str]:
    """First word of each header line (after its '>'), as `readers` names records."""
    text = b"\n".join([mv[g + 1:h] for g, h in zip(starts.tolist(), ends.tolist())])
    try:
        if any(c in text for c in _STR_ONLY_SPACE):
            return [line.split(None, 1)[0].decode("ascii", errors="replace") for line in text.split(b"\n")]
        # one decode for all; str.split then splits exactly where bytes.split would
        return [line.split(None, 1)[0] for line in text.decode("ascii", errors="replace").split("\n")]
    except IndexError:
        raise NotPlain("header without a name") from None


def scan_fasta(path: str | Path, out: BinaryIO, progress=None) -> ScanResult:
    """Write the clean upper-case bases of every record of `path` to `out`; see the module doc."""
    ids: list[str] = []
    lengths: list[int] = []
    n_runs: list[tuple[np.ndarray, np.ndarray]] = []
    iupac: list[np.ndarray] = []
    written = 0        # bases written so far (.seq offset)
    current = -1       # index of the record whose body is being read
    current_start = 0  # its .seq offset
    with open_binary(path) as fh:
        for chunk, end, at_line_start in _chunks(fh):
            if current < 0:
                chunk = chunk[:end].lstrip(b"\r\n\t ")
                end, at_line_start = len(chunk), True
                if not chunk:
                    continue
                if not chunk.startswith(b">"):
                    raise NotPlain("no header first")
            arr = np.frombuffer(chunk, dtype=np.uint8, count=end)
            starts_here: list[int] = []  # .seq offsets of records starting in this chunk
            gt = nl = None
            if chunk.find(b">", 0, end) >= 0:
                # header lines: '>' at a line start. A '>' inside a sequence line stays in the
                # bases and is refused below as no nucleotide code.
                nl = np.flatnonzero(arr == _NEWLINE)
                line_starts = nl[:-1] + 1 if nl.size and nl[-1] == end - 1 else nl + 1
                gt = line_starts[arr[line_starts] == _GT]
                if at_line_start and arr[0] == _GT:
                    gt = np.concatenate(([0], gt))
            if gt is not None and gt.size:
                at = np.searchsorted(nl, gt)
                if at[-1] >= nl.size:
                    raise NotPlain("header without a sequence at the end")
                he = nl[at]  # each header line's newline
                bodies = np.empty(gt.size + 1, dtype=np.int64)  # body starts; [0]: before the 1st header
                ends = np.empty(gt.size + 1, dtype=np.int64)
                bodies[0], bodies[1:] = 0, he + 1
                ends[:-1], ends[-1] = gt, end
                # bases per body = its bytes minus its newlines
                nls = np.searchsorted(nl, ends) - np.searchsorted(nl, bodies)
                sizes = (ends - bodies) - nls
                mv = memoryview(chunk)
                body = b"".join([mv[a:b] for a, b in zip(bodies.tolist(), ends.tolist()) if b > a])
                ids.extend(_record_ids(mv, gt, he))
                if current >= 0:
                    lengths.append(written - current_start + int(sizes[0]))
                offs = written + np.cumsum(sizes)[:-1]
                lengths.extend(sizes[1:-1].tolist())
                starts_here = offs.tolist()
                current += gt.size
                current_start = starts_here[-1]
            else:
                body = chunk if end == len(chunk) else chunk[:end]
            seq = body.translate(SCAN_TABLE, b"\n")
            bases = np.frombuffer(seq, dtype=np.uint8)
            if bases.size and bases.max() > _T:
                if b"\xff" in seq:
                    raise NotPlain("not a nucleotide code")
                iupac.append(np.flatnonzero(bases > _T) + written)
            if b"N" in seq:
                breaks = np.asarray(starts_here, dtype=np.int64) - written
                s, e = _runs(np.flatnonzero(bases == ord("N")), breaks)
                n_runs.append((s + written, e + written))
            out.write(seq)
            written += len(seq)
            if progress is not None:
                progress.update(len(seq))
    if current < 0:
        raise NotPlain("no records")
    lengths.append(written - current_start)
    record_lengths = np.asarray(lengths, dtype=np.int64)
    if not record_lengths.all():
        raise NotPlain("empty record")
    rec_starts = np.concatenate(([0], np.cumsum(record_lengths)[:-1]))
    n_starts, n_ends = _merge_runs(n_runs, rec_starts)
    iupac_pos = np.concatenate(iupac) if iupac else np.zeros(0, dtype=np.int64)
    return ScanResult(ids, record_lengths, n_starts, n_ends, iupac_pos.astype(np.int64), written)


def _merge_runs(runs: list[tuple[np.ndarray, np.ndarray]], rec_starts: np.ndarray):
    """Join N runs that a chunk boundary cut in two (not those that meet at a record start)."""
    if not runs:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    starts = np.concatenate([r[0] for r in runs]).astype(np.int64)
    ends = np.concatenate([r[1] for r in runs]).astype(np.int64)
    touching = ends[:-1] == starts[1:]
    if touching.any():
        at = np.searchsorted(rec_starts, starts[1:])
        is_record_start = (at < rec_starts.size) & (rec_starts[np.minimum(at, rec_starts.size - 1)] == starts[1:])
        join = touching & ~is_record_start
        keep_start = np.concatenate(([True], ~join))
        keep_end = np.concatenate((~join, [True]))
        starts, ends = starts[keep_start], ends[keep_end]
    return starts, ends
