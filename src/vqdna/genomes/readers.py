"""Read genome files: FASTA or GenBank, plain or gzip-compressed, as `(record_id, sequence bytes)`.

The format is sniffed from the content (gzip magic, then `>` or `LOCUS`), not trusted from the
file name. GenBank goes through Biopython's `SeqIO`. FASTA has two readers that yield the same
records: `biopython` (`SeqIO.parse`) and `fast` (the default), a chunked bytes parser that keeps
up with gzip decompression (`bench/shard_throughput.py`); `tests/test_genomes_readers.py` checks
that they agree. Every failure is an `InputError` naming the file and the record.
"""

from __future__ import annotations

import gzip
import io
import logging
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import InputError

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
# Decompressed bytes per read: large enough that per-chunk overhead vanishes, small enough
# that a truncated gzip is reported near the record where it breaks.
READ_CHUNK = 1 << 20
_WHITESPACE = b"\r\n\t "


def is_gzip(path: str | Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


try:  # ISA-L inflate: same gzip format, about 3x faster than zlib (bench/shard_throughput.py)
    from isal import igzip as _gzip_impl
    from isal.igzip_lib import IsalError as _InflateError
except ImportError:  # pragma: no cover - isal is a dependency; keep working without it
    _gzip_impl = gzip
    _InflateError = zlib.error

# what a corrupt or truncated gzip raises, from either implementation
GZIP_ERRORS = (EOFError, OSError, zlib.error, _InflateError)


def open_binary(path: str | Path) -> BinaryIO:
    return _gzip_impl.open(path, "rb") if is_gzip(path) else open(path, "rb")


def sniff_format(path: str | Path) -> str:
    """'fasta' or 'genbank' from the first non-blank bytes; InputError otherwise."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "genome file not found")
    try:
        with open_binary(path) as fh:
            head = fh.read(4096)
    except GZIP_ERRORS as exc:
        raise InputError(path, f"corrupt or truncated gzip: {exc}") from None
    stripped = head.lstrip(_WHITESPACE)
    if not stripped:
        raise InputError(path, "file is empty")
    if stripped.startswith(b">"):
        return "fasta"
    if stripped.startswith(b"LOCUS"):
        return "genbank"
    if path.suffix in (".gz", ".bgz") and not head.startswith(GZIP_MAGIC) and not is_gzip(path):
        raise InputError(path, "named .gz but not gzip-compressed, and not FASTA/GenBank either")
    preview = stripped[:20]
    raise InputError(path, f"neither FASTA (starts with '>') nor GenBank (starts with 'LOCUS'); starts with {preview!r}", line=1)


def iter_records(path: str | Path, *, fasta_reader: str = "fast",
                 genbank_warnings: str = "log") -> Iterator[tuple[str, bytes]]:
    """Yield `(record_id, sequence)` for every record; sequence bytes as stored (case kept)."""
    fmt = sniff_format(path)
    if fmt == "genbank":
        yield from _iter_genbank(Path(path), genbank_warnings)
    elif fasta_reader == "fast":
        yield from _iter_fasta_fast(Path(path))
    elif fasta_reader == "biopython":
        yield from _iter_biopython(Path(path), "fasta", genbank_warnings)
    else:
        raise ValueError(f"unknown fasta_reader {fasta_reader!r}")


def _gzip_error(path: Path, exc: BaseException, last: str | None) -> InputError:
    where = f" after record {last!r}" if last else " before the first record"
    return InputError(path, f"corrupt or truncated gzip{where}: {exc}")


def _iter_fasta_fast(path: Path) -> Iterator[tuple[str, bytes]]:
    last: str | None = None
    parts: list[bytes] = []  # the unfinished last record, in chunks
    started = False
    started_records = False
    with open_binary(path) as fh:
        while True:
            try:
                # whole lines only, so a record boundary is always b"\n>" inside `chunk` or a
                # chunk that starts with b">"
                chunk = fh.read(READ_CHUNK)
                if chunk and not chunk.endswith(b"\n"):
                    chunk += fh.readline()
            except GZIP_ERRORS as exc:
                raise _gzip_error(path, exc, last) from None
            eof = not chunk
            if not started and not eof:
                chunk = chunk.lstrip(_WHITESPACE)
                if not chunk:
                    continue
                chunk = b"\n" + chunk  # so the first '>' reads as a boundary like the others
                started = True
            if eof:
                pieces = b"".join(parts).split(b"\n>") if parts else []
                parts = []
            else:
                cut = chunk.rfind(b"\n>")
                if cut < 0 and chunk.startswith(b">"):
                    cut = -1  # the previous chunk ended with its newline
                if cut < 0:
                    parts.append(chunk)
                    continue
                parts.append(chunk[:max(cut, 0)])
                pieces = b"".join(parts).split(b"\n>")
                parts = [chunk[cut + 2:]]
            if pieces and not started_records:
                pieces = pieces[1:]  # whatever preceded the first '>' (only the added newline)
                started_records = True
            for piece in pieces:
                nl = piece.find(b"\n")
                header = (piece[:nl] if nl >= 0 else piece).strip()
                seq = _strip_whitespace(piece[nl + 1:]) if nl >= 0 else b""
                record_id = _record_id(path, header, last)
                if not seq:
                    raise InputError(path, "empty sequence", record=record_id)
                last = record_id
                yield record_id, seq
            if eof:
                break
    if last is None:
        raise InputError(path, "no FASTA records")


def _strip_whitespace(body: bytes) -> bytes:
    # replace() runs on memchr and is far faster than translate(None, ...); the rarer CR, tab and
    # space only cost a check
    seq = body.replace(b"\n", b"")
    if b"\r" in seq or b" " in seq or b"\t" in seq:
        seq = seq.translate(None, _WHITESPACE)
    return seq


def _record_id(path: Path, header: bytes, last: str | None) -> str:
    words = header.split()
    if not words:
        after = f" after record {last!r}" if last else ""
        raise InputError(path, f"FASTA header line '>' without a name{after}")
    return words[0].decode("ascii", errors="replace")


def _iter_genbank(path: Path, genbank_warnings: str) -> Iterator[tuple[str, bytes]]:
    yield from _iter_biopython(path, "genbank", genbank_warnings)


def _iter_biopython(path: Path, fmt: str, genbank_warnings: str) -> Iterator[tuple[str, bytes]]:
    from Bio import BiopythonParserWarning, SeqIO
    from Bio.Seq import UndefinedSequenceError

    last: str | None = None
    n = 0
    raw = open_binary(path)
    with io.TextIOWrapper(raw, encoding="ascii", errors="strict") as handle:
        records = SeqIO.parse(handle, fmt)
        while True:
            where = f"record #{n + 1}" + (f" (after {last!r})" if last else "")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", BiopythonParserWarning)
                try:
                    rec = next(records)
                except StopIteration:
                    break
                except GZIP_ERRORS as exc:
                    raise _gzip_error(path, exc, last) from None
                except UnicodeDecodeError as exc:
                    raise InputError(path, f"non-text bytes in a {fmt} file: {exc}", record=where) from None
                except (ValueError, AssertionError) as exc:
                    raise InputError(path, f"malformed {fmt}: {exc}", record=where) from None
            n += 1
            rid = rec.id if rec.id and rec.id != "<unknown id>" else rec.name
            for w in caught:
                if not issubclass(w.category, BiopythonParserWarning):
                    continue
                text = str(w.message).strip().replace("\n", " ")
                # a missing '//' or cut-off ORIGIN means the sequence itself may be incomplete
                if "Premature end of file" in text or genbank_warnings == "error":
                    raise InputError(path, f"malformed {fmt} (truncated?): {text}", record=rid)
                log.warning("%s (record %r): %s", path, rid, text)
            molecule = rec.annotations.get("molecule_type", "DNA")
            if "protein" in str(molecule).lower():
                raise InputError(path, f"record is a protein (molecule_type {molecule!r}), not DNA", record=rid)
            try:
                seq = bytes(rec.seq)
            except UndefinedSequenceError:
                raise InputError(path, "record has no sequence (ORIGIN missing or undefined)", record=rid) from None
            if not seq:
                raise InputError(path, "empty sequence", record=rid)
            last = rid
            yield rid, seq
    if n == 0:
        raise InputError(path, f"no {fmt} records")
