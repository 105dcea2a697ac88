"""Whole-chunk FASTA scan for the shard prepare step: clean bases out, sparse facts back.

Reads a (gzipped) FASTA file in chunks of whole lines and, per chunk, with a handful of passes
over the buffer instead of one Python object per record:
  * header lines found with `bytes.find` (`>` at a line start), record ids cut from them (one
    decode per chunk);
  * each record body through `bytes.translate`, which drops the newlines (what comes out is
    the body's base count), upper-cases A/C/G/T/N, and maps other IUPAC codes to lower case and
    every other byte to 0xFF; the bodies joined, one `max()` tells whether anything but
    A/C/G/T/N is there at all;
  * N and IUPAC positions (numpy) only in chunks that hold any; the bases go straight to the
    `.seq` file (IUPAC codes in lower case until the caller settles them: `settle_iupac`).
It returns what the window step needs: record ids and lengths, N runs and IUPAC positions in
`.seq` coordinates. With `threads` >= 2 (`shards.threads`) a second thread decompresses the
next blocks while this one scans; the blocks, and so the result, are the same. (Writing the
`.seq` from a third thread was tried and dropped: +0.02 s CPU for about as much wall time saved,
and a loss whenever no core is free.)

Anything unusual - a byte that is no nucleotide code, whitespace other than `\\n` (CRLF files),
an empty record or header, a corrupt gzip - raises `NotPlain`, and the caller runs the general
record-by-record path (`readers.iter_records` + `windows.batch_windows`), which gives the same
result or the error naming file and record. `tests/test_genomes_fasta_scan.py` checks that both
paths write identical prepared files and shards.
"""

from __future__ import annotations

import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Sequence

import numpy as np

from .readers import GZIP_ERRORS, open_binary
from .windows import _COMPATIBLE, _runs

# Decompressed bytes per read: big enough that per-chunk Python work vanishes, small enough that
# the buffers stay in cache and their memory is reused (fresh 50 MB buffers cost more in page
# faults than the passes over them). 512 KiB was the fastest of 128 KiB-2 MiB on the bench
# input, by a few per cent.
SCAN_CHUNK = 1 << 19
_NEWLINE, _GT, _T, _BAD = 10, 62, ord("T"), 0xFF
# Blocks the read-ahead thread may hold decoded before the scan takes them (memory: 2 MiB)
READ_AHEAD = 4
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


def _read_blocks(fh: BinaryIO) -> Iterator[bytes]:
    """`fh.read(SCAN_CHUNK)` until (and including) the empty read at the end."""
    while True:
        try:
            data = fh.read(SCAN_CHUNK)
        except GZIP_ERRORS:
            raise NotPlain("gzip") from None
        yield data
        if not data:
            return


class _ReadAhead:
    """The same blocks as `_read_blocks`, read by a background thread up to `depth` blocks ahead.

    Inflating (ISA-L, zlib) and file reads release the GIL, so on a second core the next blocks
    are decompressed while the caller scans this one. A read error reaches the caller at the
    block where it happened, as in `_read_blocks`. `close()` stops the thread; call it before
    closing `fh` (the `with` in `scan_fasta` does)."""

    def __init__(self, fh: BinaryIO, depth: int):
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fh,), name="vqdna-read-ahead", daemon=True)
        self._thread.start()

    def _run(self, fh: BinaryIO) -> None:
        try:
            while not self._stop.is_set():
                data = fh.read(SCAN_CHUNK)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the caller, raised there
            self._put(exc)

    def _put(self, item) -> None:
        while not self._stop.is_set():  # the caller may stop reading at any block (NotPlain)
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                pass

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if isinstance(item, GZIP_ERRORS):
                raise NotPlain("gzip") from None
            if isinstance(item, BaseException):
                raise item
            yield item
            if not item:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def _blocks(fh: BinaryIO, threads: int):
    if threads <= 1:
        yield _read_blocks(fh)
        return
    ahead = _ReadAhead(fh, READ_AHEAD)
    try:
        yield iter(ahead)
    finally:
        ahead.close()


def _chunks(blocks: Iterable[bytes]):
    """(buffer, end, at_line_start): process buffer[:end]; a header line is never cut in two (an
    unfinished last line that starts with '>' waits for the next read)."""
    carry = b""
    at_line_start = True
    for data in blocks:
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


def _record_ids(mv: memoryview, starts: Sequence[int], ends: Sequence[int]) -> list[str]:
    """First word of each header line (after its '>' at `starts`, up to its newline at `ends`),
    as `readers` names records."""
    text = b"\n".join([mv[g + 1:h] for g, h in zip(starts, ends)])
    try:
        if any(c in text for c in _STR_ONLY_SPACE):
            return [line.split(None, 1)[0].decode("ascii", errors="replace") for line in text.split(b"\n")]
        # one decode for all; str.split then splits exactly where bytes.split would
        return [line.split(None, 1)[0] for line in text.decode("ascii", errors="replace").split("\n")]
    except IndexError:
        raise NotPlain("header without a name") from None


def scan_fasta(path: str | Path, out: BinaryIO, progress=None, threads: int = 1) -> ScanResult:
    """Write the clean upper-case bases of every record of `path` to `out`; see the module doc.
    `threads` >= 2: decompress ahead in a second thread (`_ReadAhead`); the result is the same."""
    ids: list[str] = []
    lengths: list[int] = []
    n_runs: list[tuple[np.ndarray, np.ndarray]] = []
    iupac: list[np.ndarray] = []
    written = 0        # bases written so far (.seq offset)
    current = -1       # index of the record whose body is being read
    current_start = 0  # its .seq offset
    with open_binary(path) as fh, _blocks(fh, threads) as blocks:
        for chunk, end, at_line_start in _chunks(blocks):
            if current < 0:
                chunk = chunk[:end].lstrip(b"\r\n\t ")
                end, at_line_start = len(chunk), True
                if not chunk:
                    continue
                if not chunk.startswith(b">"):
                    raise NotPlain("no header first")
            starts_here: list[int] = []  # .seq offsets of records starting in this chunk
            # header lines: '>' at a line start, and the newline that ends each, with bytes.find
            # (memchr: no pass over the chunk for its newlines). A '>' inside a sequence line
            # stays in the bases and is refused below as no nucleotide code.
            heads: list[int] = []       # each header's '>'
            head_ends: list[int] = []   # its newline
            body_starts = [0]           # the bodies: [body_starts[i], (heads + [end])[i])
            find = chunk.find
            g = find(b">", 0, end)
            while g >= 0:
                if (chunk[g - 1] == _NEWLINE) if g else at_line_start:
                    h = find(b"\n", g, end)
                    if h < 0:
                        raise NotPlain("header without a sequence at the end")
                    heads.append(g)
                    head_ends.append(h)
                    body_starts.append(h + 1)
                    g = find(b">", h, end)
                else:
                    g = find(b">", g + 1, end)
            if heads:
                # each body through the translate on its own: the length of what comes out is
                # its base count (the newlines dropped), so no newline is ever located or counted
                table = SCAN_TABLE
                pieces = [chunk[a:b].translate(table, b"\n") for a, b in zip(body_starts, heads + [end])]
                sizes = list(map(len, pieces))
                seq = b"".join(pieces)
                ids.extend(_record_ids(memoryview(chunk), heads, head_ends))
                if current >= 0:
                    lengths.append(written - current_start + sizes[0])
                starts_here = list(accumulate(sizes[:-1], initial=written))[1:]
                lengths.extend(sizes[1:-1])
                current += len(heads)
                current_start = starts_here[-1]
            else:
                seq = (chunk if end == len(chunk) else chunk[:end]).translate(SCAN_TABLE, b"\n")
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
