"""Get a dataset's source files onto local disk, checksummed.

- local directory (the shipped demo): used in place; if the registry pins a digest, the
  directory's tree digest must match.
- URL prefix (`https://.../GUE/emp_H3`): each split file `{prefix}/{split}.csv` is downloaded to
  `datasets.download_dir/{name}/` through a temporary name and checked against the registry's
  `sha256` (`train.csv=<hex>;dev.csv=<hex>;...`); an unpinned file's digest is recorded in
  `SHA256SUMS` next to it and in meta.json, and a later mismatch with that record is an error.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ..atomic import atomic_path, sha256_file
from ..errors import InputError
from .registry import DatasetSpec

log = logging.getLogger(__name__)


def tree_digest(directory: str | Path) -> str:
    """sha256 over the sorted `relative/path\\tsha256` lines of every file below `directory`."""
    directory = Path(directory)
    lines = [f"{p.relative_to(directory).as_posix()}\t{sha256_file(p)}"
             for p in sorted(directory.rglob("*")) if p.is_file()]
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


def parse_pins(text: str) -> dict[str, str]:
    pins = {}
    for item in filter(None, (t.strip() for t in text.split(";"))):
        if "=" not in item:
            raise InputError("<registry>", f"sha256 entry {item!r} is not file=digest")
        k, v = item.split("=", 1)
        pins[k.strip()] = v.strip().lower()
    return pins


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file://"))


def split_files(spec: DatasetSpec) -> list[str]:
    if spec.format == "gue_csv":
        return ["train.csv", "dev.csv", "test.csv"]
    if spec.format == "eep_tsv":
        return ["train.tsv", "test.tsv"]
    return []


def _download(url: str, dest: Path, timeout: float) -> None:
    """The genome stage's resumable, retried streamer into `.part`, renamed when complete."""
    from ..genomes.http_fetch import RetryPolicy, fetch_to_part

    log.info("downloading %s", url)
    part = dest.with_name(f".{dest.name}.part")
    fetch_to_part(url, part, policy=RetryPolicy(timeout_s=timeout))
    part.replace(dest)


def fetch_dataset(spec: DatasetSpec, dcfg: dict) -> tuple[Path, dict[str, str]]:
    """Return (local directory holding the split files, {file: sha256})."""
    if spec.format == "species":
        return Path("."), {}
    if not is_url(spec.source):
        directory = Path(spec.source)
        if not directory.is_dir():
            raise InputError(directory, f"source directory of {spec.name} not found")
        digest = tree_digest(directory)
        if spec.sha256 and spec.sha256 != digest:
            raise InputError(directory, f"tree digest {digest} does not match the registry's {spec.sha256} "
                             f"(files changed since the registry was written; rebuild with scripts/build_demo_datasets.py)")
        return directory, {"<tree>": digest}
    pins = parse_pins(spec.sha256)
    dest_dir = Path(dcfg["download_dir"]) / spec.name
    dest_dir.mkdir(parents=True, exist_ok=True)
    sums_file = dest_dir / "SHA256SUMS"
    recorded = {}
    if sums_file.exists():
        recorded = dict(line.split("  ", 1)[::-1] for line in sums_file.read_text().splitlines() if line.strip())
    digests = {}
    for name in split_files(spec):
        dest = dest_dir / name
        if not dest.exists():
            _download(f"{spec.source.rstrip('/')}/{name}", dest, dcfg["download_timeout_s"])
        digest = sha256_file(dest)
        expected = pins.get(name) or recorded.get(name)
        if expected and digest != expected:
            bad = dest.with_name(dest.name + ".bad")
            dest.replace(bad)  # keep it for inspection; the next run downloads again
            raise InputError(dest, f"sha256 {digest} does not match expected {expected}; moved to {bad.name}")
        if not expected:
            log.warning("%s: sha256 not pinned in the registry; recorded %s", dest, digest)
        digests[name] = digest
    with atomic_path(sums_file) as tmp:
        tmp.write_text("".join(f"{d}  {n}\n" for n, d in sorted(digests.items())))
    return dest_dir, digests
