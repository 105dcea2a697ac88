#!/usr/bin/env python
"""Build the shipped demo stand-ins of the paper's 32 downstream datasets (deterministic).

    python scripts/build_demo_datasets.py [--genomes ../shared/data/genomes] [--out data/demo/datasets]

No GUE/EEP file can be fetched offline, so every demo dataset is a *stand-in*: real DNA from the
genomes in `../shared/data/genomes/` (Drosophila dm3 2-kb upstream regions, human GRCh37 chr1
excerpt, phage lambda, Yersinia pestis plasmid pPCP1, Arabidopsis chloroplast with GenBank
features), each with a real biological label, written in the real dataset's format (GUE CSV
`sequence,label` with train/dev/test; EEP tab-separated train/test without dev) and length.
What each stand-in's label means is in `data/demo/datasets/README.md` (written here) and in the
registry `config/datasets.demo.tsv` (also written here, with each directory's tree digest).

Splits never share a source region: dm3 records are split by chromosome arm (dev chr2L, test
chr3L, train the rest), single-record genomes by contiguous region (80/10/10 %), chloroplast
splice sites by intron.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vqdna.datasets.fetch import tree_digest  # noqa: E402

SEED = 20240722  # fixed: the shipped files must not change between builds
SIZES = {"train": 160, "dev": 40, "test": 40}  # rows per split (binary: half per class)
SPLITS = ("train", "dev", "test")
DM3_SPLIT = {"chr2L": "dev", "chr3L": "test"}  # every other arm trains
REGION = {"train": (0.0, 0.8), "dev": (0.8, 0.9), "test": (0.9, 1.0)}
TATA = ("TATAAAA", "TATAAAT", "TATATAA", "TATATAT", "TATAAA", "TATATA")  # TATAWAW core, W=A/T


def rng_for(*parts) -> np.random.Generator:
    h = hashlib.sha256(("/".join(map(str, parts)) + f"/{SEED}").encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


# ---------------------------------------------------------------- sources
def read_fasta(path: Path) -> list[tuple[str, str]]:
    out, name, buf = [], None, []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                if name is not None:
                    out.append((name, "".join(buf)))
                name, buf = line[1:].strip(), []
            else:
                buf.append(line.strip())
    if name is not None:
        out.append((name, "".join(buf)))
    return out


class Sources:
    def __init__(self, gdir: Path):
        from Bio import SeqIO

        # dm3 upstream: "<NM>_up_2000_<chr>_<start>_<f|r> chr:start-end", sequence in gene orientation
        # ending at the TSS; duplicated coordinates (alternative transcripts) are kept once.
        self.dm3 = {s: [] for s in SPLITS}
        seen = set()
        for header, seq in read_fasta(gdir / "dm3_upstream2000.fa.gz"):
            ident, coords = header.split()[:2]
            key = (coords, ident[-1])
            chrom = coords.split(":")[0]
            if key in seen or len(seq) != 2000 or "Het" in chrom or chrom in ("chrU", "chrUextra", "chrYHet"):
                continue
            seen.add(key)
            self.dm3[DM3_SPLIT.get(chrom, "train")].append((chrom, seq))
        self._acgt: dict[str, np.ndarray] = {}
        self.genomes = {
            "lambda": read_fasta(gdir / "NC_001416_lambda_phage.fa.gz")[0][1],
            "yersinia": read_fasta(gdir / "NC_005816_yersinia_pestis_plasmid.fna.gz")[0][1],
            "human": read_fasta(gdir / "human_GRCh37_chr1_first240kb.fasta.gz")[0][1],
        }
        with gzip.open(gdir / "NC_000932_arabidopsis_chloroplast.gb.gz", "rt") as fh:
            self.cp_record = SeqIO.read(fh, "genbank")
        self.genomes["chloroplast"] = str(self.cp_record.seq)
        n = len(self.genomes["chloroplast"])
        self.cp_coding = np.zeros(n, bool)   # inside a CDS exon
        self.cp_genic = np.zeros(n, bool)    # inside any gene feature (incl. introns)
        for f in self.cp_record.features:
            if f.type == "gene":
                for p in f.location.parts:
                    self.cp_genic[int(p.start):int(p.end)] = True
            if f.type == "CDS":
                for p in f.location.parts:
                    self.cp_coding[int(p.start):int(p.end)] = True

    def region(self, genome: str, split: str) -> tuple[int, int]:
        """Contiguous split region, placed by quantiles of the ACGT (non-N) positions so that
        assembly gaps (human chr1 has two N runs) do not leave a split empty."""
        seq = self.genomes[genome]
        if genome not in self._acgt:
            self._acgt[genome] = np.flatnonzero(np.frombuffer(seq.upper().encode(), np.uint8) != ord("N"))
        pos = self._acgt[genome]
        a, b = REGION[split]
        lo = int(pos[int(a * (len(pos) - 1))])
        hi = int(pos[int(b * (len(pos) - 1))]) + 1
        return lo, hi


def clean(seq: str) -> bool:
    return len(seq) > 0 and set(seq.upper()) <= set("ACGT")


def genome_windows(src: Sources, genome: str, split: str, length: int, count: int, tag: str, accept=None) -> list[str]:
    """`count` random windows of one genome's split region (no N; optional accept(start))."""
    lo, hi = src.region(genome, split)
    seq = src.genomes[genome]
    rng = rng_for(tag, genome, split, length)
    out, tries = [], 0
    while len(out) < count:
        tries += 1
        if tries > 200 * count:
            raise SystemExit(f"{tag}: only {len(out)}/{count} windows of {length} nt in {genome}/{split}")
        start = int(rng.integers(lo, hi - length + 1))
        w = seq[start:start + length]
        if clean(w) and (accept is None or accept(start)):
            out.append(w.upper())
    return out


def dm3_windows(src: Sources, split: str, length: int, count: int, tag: str, where: str = "any", accept=None) -> list[str]:
    """dm3 upstream windows: where = 'proximal' (last `length` nt before the TSS), 'distal'
    (first `length` nt, 2 kb upstream), 'upto:K' (ending K nt before the TSS) or 'any'."""
    recs = src.dm3[split]
    rng = rng_for(tag, "dm3", split, length, where)
    out, seen, tries = [], set(), 0
    while len(out) < count:
        tries += 1
        if tries > 500 * count:
            raise SystemExit(f"{tag}: only {len(out)}/{count} dm3 {where} windows in {split}")
        i = int(rng.integers(len(recs)))
        seq = recs[i][1]
        start = {"proximal": len(seq) - length, "distal": 0}.get(where)
        if where.startswith("upto:"):
            start = len(seq) - length - int(where[5:])
        if start is None:
            start = int(rng.integers(0, len(seq) - length + 1))
        if (i, start) in seen:
            continue
        w = seq[start:start + length]
        if clean(w) and (accept is None or accept(w)):
            seen.add((i, start))
            out.append(w)
    return [w.upper() for w in out]


def cpg_obs_exp(u: str) -> float:
    c, g = u.count("C"), u.count("G")
    return 0.0 if c == 0 or g == 0 else u.count("CG") * len(u) / (c * g)


def has_tata_box(w: str) -> bool:
    """TATA box: TATAWAW within -40..-20 of the TSS (the window ends at the TSS)."""
    core = w.upper()[-40:-18]
    return any(m in core for m in TATA)


def has_tata(w: str) -> bool:
    return any(m in w.upper() for m in TATA)


def dinucleotide_shuffle(seq: str, rng: np.random.Generator) -> str:
    """Altschul-Erickson shuffle: a random sequence with exactly the same dinucleotide counts
    (the construction of GUE's mouse TF negatives)."""
    if len(seq) < 3:
        return seq
    edges: dict[str, list[str]] = {}
    for a, b in zip(seq, seq[1:]):
        edges.setdefault(a, []).append(b)
    last = seq[-1]
    # random spanning arborescence towards `last`: each other vertex keeps one reserved last edge
    while True:
        reserved = {v: edges[v][int(rng.integers(len(edges[v])))] for v in edges if v != last}
        ok = True
        for v in reserved:
            seen, u = set(), v
            while u != last:
                if u in seen:
                    ok = False
                    break
                seen.add(u)
                u = reserved[u]
            if not ok:
                break
        if ok:
            break
    lists = {}
    for v, targets in edges.items():
        rest = list(targets)
        if v in reserved:
            rest.remove(reserved[v])
        rng.shuffle(rest)
        lists[v] = rest + ([reserved[v]] if v in reserved else [])
    out, u = [seq[0]], seq[0]
    pos = {v: 0 for v in lists}
    for _ in range(len(seq) - 1):
        nxt = lists[u][pos[u]]
        pos[u] += 1
        out.append(nxt)
        u = nxt
    return "".join(out)


# ---------------------------------------------------------------- task recipes
def binary(pos_fn, neg_fn) -> dict[str, tuple[list[str], list[int]]]:
    """Balanced binary splits from two samplers fn(split, count) -> sequences; label 1 = pos."""
    out = {}
    for split in SPLITS:
        half = SIZES[split] // 2
        seqs = neg_fn(split, half) + pos_fn(split, half)
        out[split] = (seqs, [0] * half + [1] * half)
    return out


def genome_fn(src, genome, length, tag, accept=None):
    return lambda split, n: genome_windows(src, genome, split, length, n, tag, accept)


def dm3_fn(src, length, tag, where="any", accept=None):
    return lambda split, n: dm3_windows(src, split, length, n, tag, where, accept)


def origin_task(src, length, tag, pos, neg):
    def fn(spec):
        if spec == "dm3":
            return dm3_fn(src, length, tag)
        if spec == "dm3_proximal":
            return dm3_fn(src, length, tag, "proximal")
        return genome_fn(src, spec, length, tag)
    return binary(fn(pos), fn(neg)), f"origin: 1 = {pos}, 0 = {neg} ({length}-nt windows)"


def promoter_task(src, length, tag, variant):
    """1 = promoter-proximal (last `length` nt before a dm3 TSS), 0 = distal (2 kb upstream).
    tata: promoters with a TATA box at -40..-20 vs distal windows containing a TATA motif (GUE's
    'TATA non-promoters'); notata: promoters without one vs distal windows without the motif."""
    if variant == "all":
        pos, neg = dm3_fn(src, length, tag, "proximal"), dm3_fn(src, length, tag, "distal")
    elif variant == "tata":
        pos = dm3_fn(src, length, tag, "proximal", has_tata_box)
        neg = dm3_fn(src, length, tag, "distal", has_tata)
    else:
        pos = dm3_fn(src, length, tag, "proximal", lambda w: not has_tata_box(w))
        neg = dm3_fn(src, length, tag, "distal", lambda w: not has_tata(w))
    return binary(pos, neg), f"promoter-{variant}: 1 = dm3 promoter-proximal (-{length}..-1 of the TSS), 0 = distal (-2000..)"


def shuffled_task(src, length, tag, source):
    """1 = real window, 0 = its dinucleotide-shuffled copy from a different draw (GUE mouse TFs)."""
    real = (dm3_fn(src, length, tag, "proximal") if source == "dm3_proximal"
            else genome_fn(src, source, length, tag))

    def neg(split, n):
        rng = rng_for(tag, "shuffle", split)
        return [dinucleotide_shuffle(w, rng) for w in real(split, 2 * n)[n:]]
    return binary(lambda split, n: real(split, 2 * n)[:n], neg), \
        f"real {source} window (1) vs dinucleotide-shuffled window (0), as GUE builds mouse TF negatives"


def chloroplast_coding_task(src, length, tag):
    pos = genome_fn(src, "chloroplast", length, tag + "c", lambda s: src.cp_coding[s:s + length].mean() >= 0.8)
    neg = genome_fn(src, "chloroplast", length, tag + "n", lambda s: not src.cp_genic[s:s + length].any())
    return binary(pos, neg), "1 = >=80% inside chloroplast CDS exons, 0 = no gene feature (intergenic)"


def distance_task(src, length, tag, gap):
    """1 = dm3 window ending `gap` nt before the TSS (mid-upstream), 0 = distal (-2000..)."""
    pos = dm3_fn(src, length, tag, f"upto:{gap}")
    neg = dm3_fn(src, length, tag, "distal")
    return binary(pos, neg), f"promoter distance: 1 = dm3 window ending {gap} nt upstream of the TSS, 0 = 2 kb upstream"


def splice_task(src, length):
    """0 = no splice site, 1 = donor (exon|intron), 2 = acceptor (intron|exon) of a chloroplast
    intron (GenBank CDS/tRNA joins on one strand), site near the centre (shifts -40..40 nt)."""
    seq = src.genomes["chloroplast"]
    sites = []  # (intron id, position of the boundary in + coordinates, class)
    for f in src.cp_record.features:
        if f.type not in ("CDS", "tRNA") or len(f.location.parts) < 2:
            continue
        parts = sorted(f.location.parts, key=lambda p: int(p.start))
        if len({p.strand for p in parts}) != 1:
            continue
        strand = parts[0].strand
        for a, b in zip(parts, parts[1:]):
            if not 0 < int(b.start) - int(a.end) < 5000:
                continue  # trans-spliced (rps12) or not an intron
            left, right = int(a.end), int(b.start)  # intron = [left, right)
            iid = f"{f.qualifiers.get('gene', ['?'])[0]}:{left}"
            # on the - strand the transcript runs right to left: donor at `right`, acceptor at `left`
            sites.append((iid, left, 1 if strand == 1 else 2))
            sites.append((iid, right, 2 if strand == 1 else 1))
    introns = sorted({s[0] for s in sites})
    order = rng_for("splice", "introns").permutation(len(introns))
    n = len(introns)
    split_of = {}
    for rank, k in enumerate(order):
        split_of[introns[k]] = "test" if rank < max(2, n // 7) else "dev" if rank < 2 * max(2, n // 7) else "train"
    boundaries = np.array([s[1] for s in sites])
    out = {s: ([], []) for s in SPLITS}
    for iid, pos, cls in sites:
        for shift in range(-40, 41, 10):
            start = pos - length // 2 + shift
            w = seq[start:start + length]
            if clean(w):
                out[split_of[iid]][0].append(w.upper())
                out[split_of[iid]][1].append(cls)
    for split in SPLITS:
        lo, hi = src.region("chloroplast", split)
        n_site = len(out[split][0])
        rng = rng_for("splice", "neg", split)
        added = 0
        while added < max(n_site // 2, 10):
            start = int(rng.integers(lo, hi - length))
            if np.abs(boundaries - (start + length // 2)).min() < length:
                continue
            w = seq[start:start + length]
            if clean(w):
                out[split][0].append(w.upper())
                out[split][1].append(0)
                added += 1
    return out, "chloroplast introns: 1 = donor, 2 = acceptor (site at the centre +-40 nt), 0 = no site within the window"


def covid_task(src, length):
    """9-way origin: lambda, chloroplast, human chr1 and six dm3 chromosome arms (hard, like CVC)."""
    classes = ["lambda", "chloroplast", "human", "chr2L", "chr2R", "chr3L", "chr3R", "chrX", "chr4"]
    per = {s: SIZES[s] // 8 for s in SPLITS}  # 20/5/5 per class
    all_dm3 = [r for s in SPLITS for r in src.dm3[s]]
    out = {s: ([], []) for s in SPLITS}
    for label, name in enumerate(classes):
        for split in SPLITS:
            if name in src.genomes:
                seqs = genome_windows(src, name, split, length, per[split], "covid")
            else:
                # dm3 arms are the labels here, so split their records by a hash of the coordinate
                recs = [seq for chrom, seq in all_dm3 if chrom == name]
                pick = [r for j, r in enumerate(recs) if ("train", "train", "train", "train", "train", "train", "train", "train", "dev", "test")[j % 10] == split]
                rng = rng_for("covid", name, split)
                seqs = []
                for i in rng.permutation(len(pick)):
                    start = int(rng.integers(0, 2000 - length + 1))
                    w = pick[i][start:start + length]
                    if clean(w):
                        seqs.append(w.upper())
                    if len(seqs) == per[split]:
                        break
            out[split][0].extend(seqs)
            out[split][1].extend([label] * len(seqs))
    return out, "9-way origin: 0 lambda, 1 chloroplast, 2 human chr1, 3-8 dm3 arms 2L,2R,3L,3R,X,4"


def eep_task(src, length, target):
    """63-nt windows of dm3 upstream regions with a real property as the regression target."""
    out = {}
    sizes = {"train": 200, "test": 50}
    for split, n in sizes.items():
        rng = rng_for("eep", target, split)
        recs = src.dm3["test" if split == "test" else "train"]
        seqs, ys = [], []
        while len(seqs) < n:
            seq = recs[int(rng.integers(len(recs)))][1]
            start = int(rng.integers(0, len(seq) - length + 1))
            w = seq[start:start + length]
            if not clean(w):
                continue
            u = w.upper()
            if target == "gc":
                y = (u.count("G") + u.count("C")) / length
            elif target == "cpg":
                y = cpg_obs_exp(u)
            else:  # tss: 1 at the TSS, 0 two kb upstream
                y = (start + length) / len(seq)
            seqs.append(u)
            ys.append(round(y, 6))
        out[split] = (seqs, ys)
    what = {"gc": "GC fraction of the 63-mer", "cpg": "CpG observed/expected ratio of the 63-mer (Gardiner-Garden & Frommer 1987; 0 when C or G is absent)",
            "tss": "relative position of the 63-mer's end within the 2-kb region upstream of the TSS (1 = at the TSS)"}[target]
    return out, f"regression target = {what}"


# ---------------------------------------------------------------- writing
REGISTRY_HEADER = ("name", "family", "task", "metric", "num_labels", "length", "format", "source",
                   "sha256", "paper_table", "demo_stand_in", "description")


def write_gue(directory: Path, data) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for split, (seqs, labels) in data.items():
        order = rng_for(directory.name, split, "order").permutation(len(seqs))
        with open(directory / f"{split}.csv", "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["sequence", "label"])
            for i in order:
                w.writerow([seqs[i], labels[i]])


def write_eep(directory: Path, data) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for split, (seqs, ys) in data.items():
        with open(directory / f"{split}.tsv", "w", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", lineterminator="\n")
            w.writerow(["sequence", "efficiency"])
            for s, y in zip(seqs, ys):
                w.writerow([s, y])


def recipes(src: Sources):
    emp_names = ["H3", "H3K14ac", "H3K36me3", "H3K4me1", "H3K4me2", "H3K4me3", "H3K79me3", "H3K9ac", "H4", "H4ac"]
    emp = [
        lambda t: promoter_task(src, 500, t, "all"),
        lambda t: distance_task(src, 500, t, 500),
        lambda t: chloroplast_coding_task(src, 500, t),
        lambda t: origin_task(src, 500, t, "human", "dm3"),
        lambda t: origin_task(src, 500, t, "lambda", "human"),
        lambda t: origin_task(src, 500, t, "chloroplast", "dm3"),
        lambda t: origin_task(src, 500, t, "lambda", "yersinia"),
        lambda t: origin_task(src, 500, t, "chloroplast", "lambda"),
        lambda t: origin_task(src, 500, t, "dm3_proximal", "human"),
        lambda t: origin_task(src, 500, t, "yersinia", "chloroplast"),
    ]
    for name, fn in zip(emp_names, emp):
        yield f"emp_{name}", "EMP", "5", 500, 2, "gue", lambda fn=fn, name=name: fn(f"emp_{name}")
    mouse_sources = ["dm3_proximal", "human", "chloroplast", "lambda", "yersinia"]
    for k, source in enumerate(mouse_sources):
        yield f"mouse_{k}", "TFP-M", "4", 100, 2, "gue", lambda k=k, s=source: shuffled_task(src, 100, f"mouse_{k}", s)
    tf = [
        lambda t: promoter_task(src, 100, t, "all"),
        lambda t: distance_task(src, 100, t, 100),
        lambda t: chloroplast_coding_task(src, 100, t),
        lambda t: origin_task(src, 100, t, "lambda", "dm3"),
        lambda t: origin_task(src, 100, t, "human", "dm3"),
    ]
    for k, fn in enumerate(tf):
        yield f"tf_{k}", "TFP-H", "3", 100, 2, "gue", lambda fn=fn, k=k: fn(f"tf_{k}")
    for variant in ("all", "notata", "tata"):
        yield f"prom_300_{variant}", "PD", "3", 300, 2, "gue", lambda v=variant: promoter_task(src, 300, f"prom_300_{v}", v)
    for variant in ("all", "notata", "tata"):
        yield f"prom_core_{variant}", "CPD", "3", 70, 2, "gue", lambda v=variant: promoter_task(src, 70, f"prom_core_{v}", v)
    yield "splice_reconstructed", "SSP", "4", 400, 3, "gue", lambda: splice_task(src, 400)
    yield "covid", "CVC", "4", 1000, 9, "gue", lambda: covid_task(src, 1000)
    for name, target in (("eep_k562", "gc"), ("eep_jurkat", "cpg"), ("eep_h1", "tss")):
        yield name, "EEP", "4", 63, 1, "eep", lambda t=target: eep_task(src, 63, t)


METRIC = {"CVC": "f1_macro", "EEP": "spearman", "SC": "accuracy"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genomes", default=str(ROOT.parent / "shared" / "data" / "genomes"))
    ap.add_argument("--out", default=str(ROOT / "data" / "demo" / "datasets"))
    ap.add_argument("--registry", default=str(ROOT / "config" / "datasets.demo.tsv"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    src = Sources(Path(args.genomes))
    rows, readme = [], []
    for name, family, table, length, num_labels, kind, build in recipes(src):
        data, what = build()
        d = out / name
        (write_gue if kind == "gue" else write_eep)(d, data)
        counts = {s: len(data[s][0]) for s in data}
        rel = d.relative_to(ROOT).as_posix() if d.is_relative_to(ROOT) else str(d)
        rows.append([name, family, "regression" if num_labels == 1 else "classification", METRIC.get(family, "mcc"),
                     str(num_labels), str(length), "gue_csv" if kind == "gue" else "eep_tsv", rel,
                     tree_digest(d), table, "true", f"DEMO STAND-IN: {what}"])
        readme.append(f"| `{name}` | {family} | {length} | {counts} | {what} |")
        print(f"{name:22s} {counts} {what}")
    rows.append(["species", "SC", "classification", "accuracy", "5", "config", "species", "config", "", "6", "true",
                 "DEMO STAND-IN: 5-way origin of windows from the five shipped demo genomes (datasets.species.genomes)"])
    with open(args.registry, "w", newline="") as fh:
        fh.write("# Demo stand-ins of the paper's 32 downstream datasets, built by scripts/build_demo_datasets.py\n"
                 "# from real DNA (data/demo/datasets/README.md says which real label each carries). Not GUE/EEP data.\n")
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(REGISTRY_HEADER)
        w.writerows(rows)
    (out / "README.md").write_text(
        "# Demo stand-ins of the 32 downstream datasets\n\n"
        "Built by `scripts/build_demo_datasets.py` (deterministic) from the real genomes in\n"
        "`../shared/data/genomes/` (Biostrings dm3 upstream2000, lambda, Yersinia pestis pPCP1,\n"
        "Arabidopsis chloroplast NC_000932 GenBank, human GRCh37 chr1 first 240 kb; see\n"
        "`../shared/data/MANIFEST.md`). **None of these is the GUE/EEP dataset of the same name**: each has\n"
        "the real dataset's file format, sequence length and number of classes, and a real biological\n"
        "label of other DNA. Metrics on them are demo numbers, never the paper's.\n\n"
        "Splits share no source region: dm3 records split by chromosome arm (dev chr2L, test chr3L),\n"
        "single-record genomes by contiguous region (80/10/10 %), splice sites by intron.\n"
        "The species stand-in is built at run time from `data/demo/genomes/` (config `datasets.species`).\n\n"
        "| dataset | family | nt | rows | label |\n|---|---|---|---|---|\n" + "\n".join(readme) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
