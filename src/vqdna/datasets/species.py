"""Species classification (the paper's Table 6, after HyenaDNA): windows of L nt drawn from the
genomes of N species; label = species index in `datasets.species.genomes`.

Splits are by chromosome: every record (chromosome/contig) of a genome goes wholly to train, dev
or test, greedily by length towards `split_fractions`, so no test window shares a chromosome with
training. A genome with fewer than `min_records_for_chromosome_split` records (a plasmid, an
organelle, a single-chromosome excerpt) is cut into three contiguous regions by the same
fractions instead; `meta.json` records which genome used which rule.

Windows are deterministic: starts are drawn with `numpy.random.default_rng(seed, species, split,
length)`, uniform over the usable bases of the split; windows with more than `max_n_fraction` N
(or other non-ACGT) are skipped in draw order. Two passes over each file (lengths, then windows)
keep memory at one record, so mammalian genomes fit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dna import INVALID, to_codes
from ..errors import ConfigError, InputError
from .registry import DatasetSpec
from .splits import SPLITS, Split

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """A stretch of one record that belongs to one split."""
    file: str
    record: str
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def _records(files: list[str]):
    from ..genomes.readers import iter_records  # the genome stage's FASTA/GenBank reader

    for f in files:
        if not Path(f).exists():
            raise InputError(f, "species genome file not found (download it first: vqdna download)")
        for rid, seq in iter_records(f):
            yield f, rid, seq


def valid_profile(seq: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Block edges and cumulative ACGT counts at them (blocks of ~1/10000 of the record), so a
    region split can follow the sequenced bases instead of raw coordinates: an assembly gap
    (a long N run) then cannot swallow a whole split."""
    n = len(seq)
    block = max(64, n // 10000)
    edges = np.arange(0, n + block, block).clip(max=n)
    valid = np.add.reduceat((to_codes(seq) != INVALID).astype(np.int64), edges[:-1]) if n else np.zeros(0, np.int64)
    return edges, np.concatenate([[0], np.cumsum(valid)])


def _quantile_position(profile: tuple[np.ndarray, np.ndarray], q: float) -> int:
    edges, cum = profile
    target = q * cum[-1]
    k = int(np.searchsorted(cum, target, side="left"))
    if k == 0:
        return 0
    k = min(k, len(edges) - 1)
    # interpolate inside the block (valid bases assumed even there)
    span = cum[k] - cum[k - 1]
    frac = (target - cum[k - 1]) / span if span else 1.0
    return int(round(edges[k - 1] + frac * (edges[k] - edges[k - 1])))


def assign_units(lengths: list[tuple[str, str, int]], fractions: dict[str, float], min_records: int,
                 profiles: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] | None = None) -> tuple[dict[str, list[Unit]], str]:
    """Records -> units per split. Returns (units, rule) with rule 'chromosome' or 'region'."""
    total = sum(n for _, _, n in lengths)
    if total == 0:
        raise InputError(lengths[0][0] if lengths else "<genome>", "genome has no sequence")
    if len(lengths) >= min_records:
        units: dict[str, list[Unit]] = {s: [] for s in SPLITS}
        assigned = {s: 0 for s in SPLITS}
        # largest first, ties by name: the split furthest below its share takes the record
        for f, rid, n in sorted(lengths, key=lambda t: (-t[2], t[1])):
            split = max(SPLITS, key=lambda s: (fractions[s] * total - assigned[s], -SPLITS.index(s)))
            units[split].append(Unit(f, rid, 0, n))
            assigned[split] += n
        if all(units[s] for s in SPLITS):
            return units, "chromosome"
    units = {s: [] for s in SPLITS}
    for f, rid, n in lengths:
        edge = 0
        cum = 0.0
        prof = (profiles or {}).get((f, rid))
        for s in SPLITS:
            cum += fractions[s]
            if s == SPLITS[-1]:
                stop = n
            elif prof is not None and prof[1][-1] > 0:
                stop = _quantile_position(prof, cum)
            else:
                stop = int(round(n * cum))
            units[s].append(Unit(f, rid, edge, stop))
            edge = stop
    return units, "region"


def draw_windows(units: list[Unit], length: int, count: int, rng: np.random.Generator, oversample: int) -> list[tuple[Unit, int]]:
    usable = [u for u in units if u.length >= length]
    if not usable:
        return []
    weights = np.array([u.length - length + 1 for u in usable], dtype=np.float64)
    picks = rng.choice(len(usable), size=count * oversample, p=weights / weights.sum())
    out = []
    for k in picks:
        u = usable[int(k)]
        out.append((u, int(u.start + rng.integers(0, u.length - length + 1))))
    return out


def build_species(spec: DatasetSpec, species_cfg: dict, *, seed: int) -> tuple[dict[str, Split], dict]:
    genomes = species_cfg["genomes"]
    if len(genomes) != spec.num_labels:
        raise ConfigError(f"{spec.name}: registry says {spec.num_labels} classes, datasets.species.genomes lists {len(genomes)}")
    length = spec.length
    fractions = species_cfg["split_fractions"]
    if abs(sum(fractions[s] for s in SPLITS) - 1.0) > 1e-6:
        raise ConfigError("datasets.species.split_fractions must sum to 1")
    max_bad = species_cfg["max_n_fraction"]
    oversample = species_cfg["oversample"]
    per_split: dict[str, tuple[list[str], list[int]]] = {s: ([], []) for s in SPLITS}
    meta: dict = {"length": length, "genomes": {}}
    for label, g in enumerate(genomes):
        files = [str(f) for f in g["files"]]
        lengths, profiles = [], {}
        few = species_cfg["min_records_for_chromosome_split"]
        for f, rid, seq in _records(files):
            lengths.append((f, rid, len(seq)))
            if len(profiles) < few:  # only region-split genomes (few records) need the profile
                profiles[(f, rid)] = valid_profile(seq)
        units, rule = assign_units(lengths, fractions, few, profiles)
        # Windows with too many N are skipped in draw order; if a split still lacks windows
        # (a region that is mostly assembly gap), draw again with 4x the oversampling.
        for factor in (1, 4, 16, 64):
            got = _collect(files, units, length, species_cfg["windows"], seed, label, oversample * factor, max_bad, rule, g["name"])
            if all(len(got[s]) >= species_cfg["windows"][s] for s in SPLITS):
                break
        counts = {}
        for split in SPLITS:
            n = species_cfg["windows"][split]
            chosen = [w for _, w in sorted(got[split])[:n]]
            if len(chosen) < n:
                raise InputError(files[0], f"{g['name']}: only {len(chosen)} of {n} {split} windows of {length} nt "
                                 f"pass max_n_fraction={max_bad}; raise datasets.species.oversample or lower windows")
            if max_bad > 0:  # remaining N/IUPAC symbols become seeded random bases
                chosen = [_fill(w, np.random.default_rng([seed, label, 99])) for w in chosen]
            per_split[split][0].extend(chosen)
            per_split[split][1].extend([label] * n)
            counts[split] = n
        meta["genomes"][g["name"]] = {
            "label": label, "files": files, "split_rule": rule, "windows": counts,
            "records": {s: sorted({u.record for u in units[s]}) for s in SPLITS} if rule == "chromosome" else
                       {s: [f"{u.record}:{u.start}-{u.end}" for u in units[s]] for s in SPLITS},
        }
    out = {s: Split(seqs, np.asarray(labels, dtype=np.int64)) for s, (seqs, labels) in per_split.items()}
    return out, meta


def _collect(files, units, length, windows, seed, label, oversample, max_bad, rule, name) -> dict[str, list[tuple[int, str]]]:
    wanted: dict[tuple[str, str], list[tuple[str, int, int]]] = {}
    for k, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, label, k, length, oversample])
        draws = draw_windows(units[split], length, windows[split], rng, oversample)
        if not draws:
            raise InputError(files[0], f"{name}: no {split} record of at least {length} nt "
                             f"(split rule: {rule}); use shorter datasets.species.lengths")
        for order, (u, start) in enumerate(draws):
            wanted.setdefault((u.file, u.record), []).append((split, start, order))
    got: dict[str, list[tuple[int, str]]] = {s: [] for s in SPLITS}
    for f, rid, seq in _records(files):
        for split, start, order in wanted.get((f, rid), []):
            window = seq[start:start + length]
            if float((to_codes(window) == INVALID).mean()) <= max_bad:
                got[split].append((order, bytes(window).decode("ascii").upper()))
    return got


def _fill(window: str, rng: np.random.Generator) -> str:
    arr = np.frombuffer(window.encode("ascii"), dtype=np.uint8).copy()
    bad = to_codes(arr) == INVALID
    if bad.any():
        arr[bad] = rng.choice(np.frombuffer(b"ACGT", dtype=np.uint8), size=int(bad.sum()))
    return arr.tobytes().decode("ascii")
