"""Turn whatever a source delivered into the pipeline's genome file: gzipped FASTA, checked.

Accepted: gzipped FASTA (kept byte for byte after a full read), plain FASTA, GenBank (plain or
gzip; converted through Biopython), or an NCBI Datasets zip (its `.fna` members, concatenated).
The check reads every record, so a truncated gzip, an empty record or non-FASTA bytes fail here
with the file and record named, before anything looks finished.
"""

from __future__ import annotations

import gzip
import shutil
import zipfile
from pathlib import Path

from ..atomic import atomic_path
from ..errors import InputError
from .readers import is_gzip, iter_records, sniff_format

FASTA_SUFFIXES = (".fna", ".fa", ".fasta", ".fas", ".ffn")


def check_fasta(path: Path, *, genbank_warnings: str = "log") -> dict:
    records = bases = 0
    for _rid, seq in iter_records(path, genbank_warnings=genbank_warnings):
        records += 1
        bases += len(seq)
    return {"records": records, "bases": bases}


def write_gzip_fasta(records, out: Path) -> dict:
    n = bases = 0
    with atomic_path(out) as tmp:
        # mtime=0: the same records give the same bytes (stable sha256)
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
            for rid, seq in records:
                gz.write(b">" + rid.encode() + b"\n")
                for i in range(0, len(seq), 80):
                    gz.write(seq[i:i + 80] + b"\n")
                n += 1
                bases += len(seq)
    return {"records": n, "bases": bases}


def normalize(src: Path, out: Path, *, link: bool = False, genbank_warnings: str = "log") -> dict:
    """Make `out` (…fna.gz) from `src`; return {'records', 'bases', 'converted'}."""
    if zipfile.is_zipfile(src):
        return _from_datasets_zip(src, out, genbank_warnings)
    fmt = sniff_format(src)
    if fmt == "fasta" and is_gzip(src):
        stats = check_fasta(src, genbank_warnings=genbank_warnings)
        if link:
            with atomic_path(out) as tmp:
                tmp.symlink_to(src.resolve())
        else:
            with atomic_path(out) as tmp:
                shutil.copyfile(src, tmp)
        return {**stats, "converted": False}
    stats = write_gzip_fasta(iter_records(src, genbank_warnings=genbank_warnings), out)
    return {**stats, "converted": True}


def _from_datasets_zip(src: Path, out: Path, genbank_warnings: str) -> dict:
    try:
        with zipfile.ZipFile(src) as zf:
            members = sorted(n for n in zf.namelist() if n.lower().endswith(FASTA_SUFFIXES))
            if not members:
                raise InputError(src, f"NCBI Datasets zip holds no FASTA (.fna) file; members: {zf.namelist()[:10]}")
            tmp_dir = out.parent / f".{out.name}.unzip"
            tmp_dir.mkdir(parents=True, exist_ok=True)
            try:
                paths = []
                for m in members:
                    target = tmp_dir / Path(m).name
                    with zf.open(m) as fin, open(target, "wb") as fout:
                        shutil.copyfileobj(fin, fout, 1 << 20)
                    paths.append(target)

                def records():
                    for p in paths:
                        yield from iter_records(p, genbank_warnings=genbank_warnings)

                stats = write_gzip_fasta(records(), out)
            finally:
                shutil.rmtree(tmp_dir, ignore_errors=True)
    except zipfile.BadZipFile as exc:
        raise InputError(src, f"corrupt zip from NCBI Datasets: {exc}") from None
    return {**stats, "converted": True}
