"""Shard step 1, one job per genome: read it once, clean it, enumerate and split its windows.

Writes two files per genome under `results/shards/prep/`:
  `{accession}.seq`          the cleaned upper-case sequence of every record, concatenated
                             (raw bytes, memory-mapped by the shard writers: no second parse)
  `{accession}.windows.npz`  per window: offset into .seq, record index, start in the record,
                             split (0 train, 1 valid); per record: length, and the ids as one
                             newline-joined UTF-8 blob (`record_ids_utf8`); `meta` (JSON)

FASTA with `shards.fasta_reader: fast` goes through the whole-chunk scan (`fasta_scan`), which
writes the `.seq` as it decompresses and leaves only sparse facts (N runs, IUPAC positions) for
the window step; anything it does not handle falls back to the record-by-record path below
(Biopython for GenBank and for `fasta_reader: biopython`), which gives identical files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError
from .fasta_scan import NotPlain, scan_fasta
from .readers import iter_records, sniff_format
from .windows import (BadByte, WindowParams, batch_windows, replacement_bases, short_runs_as_iupac,
                      sparse_windows, split_flags, stable_salt)

log = logging.getLogger(__name__)

SPLITS = ("train", "valid")


@dataclass
class PreparedGenome:
    accession: str
    offsets: np.ndarray
    records: np.ndarray
    starts: np.ndarray
    split: np.ndarray
    record_ids: list[str]
    record_lengths: np.ndarray
    meta: dict = field(default_factory=dict)


def prep_paths(prep_dir: str | Path, accession: str) -> tuple[Path, Path]:
    prep_dir = Path(prep_dir)
    return prep_dir / f"{accession}.seq", prep_dir / f"{accession}.windows.npz"


def _batches(path: Path, batch_bases: int, fasta_reader: str, genbank_warnings: str):
    ids: list[str] = []
    seqs: list[bytes] = []
    size = 0
    for rid, seq in iter_records(path, fasta_reader=fasta_reader, genbank_warnings=genbank_warnings):
        ids.append(rid)
        seqs.append(seq)
        size += len(seq)
        if size >= batch_bases:
            yield ids, seqs
            ids, seqs, size = [], [], 0
    if seqs:
        yield ids, seqs


def prepare_genome(path: str | Path, accession: str, params: WindowParams, *, seq_out: str | Path,
                   index_out: str | Path, fasta_reader: str = "fast", genbank_warnings: str = "log",
                   batch_bases: int = 16 << 20, progress=None, threads: int = 1) -> PreparedGenome:
    """`threads` (`shards.threads`): >= 2 lets the FASTA scan decompress ahead in a second thread;
    the files written are the same for any value."""
    path = Path(path)
    if fasta_reader == "fast" and sniff_format(path) == "fasta":
        try:
            return _prepare_scanned(path, accession, params, seq_out=seq_out, index_out=index_out,
                                    progress=progress, threads=threads)
        except NotPlain as why:
            log.info("%s: %s; reading it record by record", path, why)
            if progress is not None:
                progress.reset()
    return _prepare_by_records(path, accession, params, seq_out=seq_out, index_out=index_out,
                               fasta_reader=fasta_reader, genbank_warnings=genbank_warnings,
                               batch_bases=batch_bases, progress=progress)


def _prepare_scanned(path: Path, accession: str, params: WindowParams, *, seq_out: str | Path,
                     index_out: str | Path, progress=None, threads: int = 1) -> PreparedGenome:
    with atomic_path(seq_out) as tmp_seq:
        with open(tmp_seq, "wb") as out:
            scan = scan_fasta(path, out, progress, threads=threads)
        rec_starts = np.concatenate(([0], np.cumsum(scan.record_lengths)[:-1])).astype(np.int64)
        n_starts, n_ends, iupac_pos = short_runs_as_iupac(scan.n_starts, scan.n_ends, scan.iupac_pos,
                                                          params.n_split_min_run)
        n_iupac = int(iupac_pos.size)
        drop_pos = np.zeros(0, dtype=np.int64)
        if n_iupac and params.iupac_policy == "error":
            raise NotPlain("IUPAC code under policy error")  # the general path names record and base
        if n_iupac:
            # the scan leaves IUPAC codes in lower case: settle them as the general path does
            seq = np.memmap(tmp_seq, dtype=np.uint8, mode="r+")
            codes = np.asarray(seq[iupac_pos]) & np.uint8(0xDF)
            if params.iupac_policy == "replace":
                salt = stable_salt("replace", params.seed, accession)
                seq[iupac_pos] = replacement_bases(codes, iupac_pos, salt)
            else:
                seq[iupac_pos] = codes
                drop_pos = iupac_pos
            seq.flush()
            del seq
        sw = sparse_windows(scan.n_bases, rec_starts, scan.record_lengths, n_starts, n_ends, drop_pos, params)
        stats = {"bases": scan.n_bases, "n_bases": int((n_ends - n_starts).sum()), "iupac_bases": n_iupac,
                 "dropped_windows": sw.n_dropped_windows}
    return _write_index(path, accession, params, index_out, sw.starts, sw.records, sw.local_starts, sw.units,
                        scan.record_ids, scan.record_lengths, stats)


def _prepare_by_records(path: Path, accession: str, params: WindowParams, *, seq_out: str | Path,
                        index_out: str | Path, fasta_reader: str, genbank_warnings: str, batch_bases: int,
                        progress=None) -> PreparedGenome:
    salt = stable_salt("replace", params.seed, accession)
    offsets, records, starts, units = [], [], [], []
    record_ids: list[str] = []
    record_lengths: list[int] = []
    stats = {"bases": 0, "n_bases": 0, "iupac_bases": 0, "dropped_windows": 0}
    written = 0
    with atomic_path(seq_out) as tmp_seq, open(tmp_seq, "wb") as out:
        for ids, seqs in _batches(path, batch_bases, fasta_reader, genbank_warnings):
            lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
            raw = b"".join(seqs)
            rec_global = written + np.concatenate(([0], np.cumsum(lengths)[:-1]))
            try:
                bw = batch_windows(raw, lengths, rec_global, params, salt)
            except BadByte as exc:
                ends = np.cumsum(lengths)
                r = int(np.searchsorted(ends, exc.position, side="right"))
                pos_in_record = exc.position - (int(ends[r - 1]) if r else 0)
                raise InputError(path, f"{exc.kind} {bytes([exc.byte])!r} at base {pos_in_record + 1}"
                                 + (" (binary or non-FASTA content?)" if exc.kind.startswith("not") else ""),
                                 record=ids[r]) from None
            out.write(memoryview(bw.clean))
            first_record = len(record_ids)
            offsets.append(written + bw.starts)
            records.append(first_record + bw.records)
            starts.append(bw.local_starts)
            units.append(bw.units)
            record_ids.extend(ids)
            record_lengths.extend(lengths.tolist())
            written += bw.n_bases
            stats["bases"] += bw.n_bases
            stats["n_bases"] += bw.n_n
            stats["iupac_bases"] += bw.n_iupac
            stats["dropped_windows"] += bw.n_dropped_windows
            if progress is not None:
                progress.update(bw.n_bases)
        out.flush()
        # only now can the .seq become final; the index below names it
        cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dtype=dt)  # noqa: E731
        offsets_a = cat(offsets, np.int64)
        records_a = cat(records, np.int64)
        starts_a = cat(starts, np.int64)
        units_a = cat(units, np.int64)
    return _write_index(path, accession, params, index_out, offsets_a, records_a, starts_a, units_a,
                        record_ids, np.asarray(record_lengths, dtype=np.int64), stats)


def _write_index(path: Path, accession: str, params: WindowParams, index_out: str | Path, offsets_a, records_a,
                 starts_a, units_a, record_ids: list[str], record_lengths: np.ndarray, stats: dict) -> PreparedGenome:
    split = _assign_split(accession, record_ids, records_a, units_a, params)
    meta = {
        "accession": accession, "source": str(path), "records": len(record_ids),
        "windows": int(len(offsets_a)),
        "windows_per_split": {name: int((split == i).sum()) for i, name in enumerate(SPLITS)},
        **stats, "params": params.__dict__,
    }
    if not record_ids:
        raise InputError(path, "no records")
    prepared = PreparedGenome(accession, offsets_a, records_a, starts_a, split, record_ids, record_lengths, meta)
    with atomic_path(index_out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, offsets=offsets_a, records=records_a, starts=starts_a, split=split,
                     record_ids_utf8=np.frombuffer("\n".join(record_ids).encode(), dtype=np.uint8),
                     record_lengths=prepared.record_lengths, meta=np.asarray(json.dumps(meta)))
    return prepared


def _assign_split(accession: str, record_ids: list[str], records: np.ndarray, units: np.ndarray,
                  params: WindowParams) -> np.ndarray:
    return split_flags(params.seed, accession, record_ids, records, units, params.valid_fraction)


def load_prepared(index_path: str | Path) -> PreparedGenome:
    try:
        with np.load(index_path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if "record_ids_utf8" in z.files:  # one newline-joined blob: ids never hold whitespace
                record_ids = z["record_ids_utf8"].tobytes().decode().split("\n") if meta["records"] else []
            else:  # written before the blob
                record_ids = z["record_ids"].tolist()
            return PreparedGenome(meta["accession"], z["offsets"], z["records"], z["starts"], z["split"],
                                  record_ids, z["record_lengths"], meta)
    except FileNotFoundError:
        raise InputError(index_path, "prepared window index not found; run the shard prepare step") from None


def load_split_meta(index_path: str | Path) -> tuple[np.ndarray, dict]:
    """Only the per-window split and `meta` of a prepared index (what the plan needs)."""
    try:
        with np.load(index_path, allow_pickle=False) as z:
            return z["split"], json.loads(str(z["meta"]))
    except FileNotFoundError:
        raise InputError(index_path, "prepared window index not found; run the shard prepare step") from None
