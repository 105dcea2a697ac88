"""`vqdna shard`: genomes -> fixed-length windows -> Arrow IPC shards (+ manifest.json).

Four steps, each one Snakemake job family (workflow/rules/genomes.smk), or all in one process
(`--step all`, the default, for runs by hand and for bench/shard_throughput.py):

    prepare   one genome:  resources/genomes/{acc}.fna.gz -> results/shards/prep/{acc}.{seq,windows.npz}
    plan      all genomes: -> results/shards/plan.json (which windows go into which shard)
    write     one shard:   -> results/shards/{split}/{index:05d}.arrow
    manifest  all shards:  -> results/shards/manifest.json (counts, bases, sha256 per shard)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..atomic import sha256_file, write_json
from ..config import section
from ..errors import InputError
from .plan import build_plan, shard_names, split_order
from .prepare import SPLITS, prep_paths, prepare_genome
from .table import PRETRAIN, genome_with_role, read_genome_table, rows_with_role
from .windows import WindowParams
from .writer import fill_cache, shard_path, write_shard

log = logging.getLogger(__name__)
MANIFEST_FORMAT = "vqdna-shards-v1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--step", choices=["prepare", "plan", "write", "manifest", "all"], default="all")
    parser.add_argument("--accession", help="prepare: the genome (a row of genomes.table)")
    parser.add_argument("--genome", help="prepare: genome file (default GENOMES_DIR/{accession}.fna.gz)")
    parser.add_argument("--split", choices=list(SPLITS), help="write: the split")
    parser.add_argument("--index", type=int, help="write: the shard index")
    parser.add_argument("--genomes-dir", default="resources/genomes", help="downloaded genomes (default %(default)s)")
    parser.add_argument("--shards-dir", default="results/shards", help="output folder (default %(default)s)")


def _genome_file(args, accession: str) -> Path:
    return Path(args.genome) if args.genome else Path(args.genomes_dir) / f"{accession}.fna.gz"


def run(args, cfg) -> int:
    from ..tracking import start_run

    scfg = section(cfg, "shards")
    table = section(cfg, "genomes", "table")
    shards_dir = Path(args.shards_dir)
    prep_dir = shards_dir / "prep"
    plan_path = shards_dir / "plan.json"
    # species-task-only genomes are downloaded but never enter the pre-training corpus
    included = read_genome_table(table)
    rows = rows_with_role(included, PRETRAIN)
    params = WindowParams.from_config(scfg)
    # argument errors before anything is opened or logged
    if not rows and args.step in ("plan", "all"):
        raise InputError(table, f"no included genome has role {PRETRAIN!r}: nothing to shard")
    if args.step == "prepare" and not args.accession:
        raise InputError(table, "--step prepare needs --accession")
    if args.step == "prepare":
        genome_with_role(included, args.accession, PRETRAIN, table)
    if args.step == "write" and (args.split is None or args.index is None):
        raise InputError(plan_path, "--step write needs --split and --index")
    name = {"prepare": f"shard/prepare/{args.accession}", "write": f"shard/{args.split}/{args.index}"}.get(
        args.step, f"shard/{args.step}")
    with start_run(cfg, stage="shard", name=name, params={"shards": scfg, "step": args.step}) as mlrun:
        t0 = time.perf_counter()
        checksums = None  # shard sha256s, when this process wrote the shards
        if args.step in ("prepare", "all"):
            todo = [genome_with_role(included, args.accession, PRETRAIN, table)] if args.step == "prepare" else rows
            for row in todo:
                meta = prepare_one(args, row, params, scfg, prep_dir)
                mlrun.log_metrics({f"{row.accession}.{k}": v for k, v in meta.items()
                                   if isinstance(v, (int, float))})
        if args.step in ("plan", "all"):
            plan = build_plan(rows, prep_dir, scfg)
            write_json(plan_path, plan)
            mlrun.log_metrics({f"{s}.shards": plan["splits"][s]["shards"] for s in SPLITS})
        if args.step in ("write", "all"):
            plan = load_plan(plan_path)
            if args.step == "write":
                n = write_shard(plan, args.split, args.index, shard_path(shards_dir, args.split, args.index))
                mlrun.log_metrics({"rows": n})
            else:
                checksums = write_all(plan, shards_dir, threads=scfg["threads"])
        if args.step in ("manifest", "all"):
            manifest = build_manifest(load_plan(plan_path), shards_dir, scfg, checksums, threads=scfg["threads"])
            write_json(shards_dir / "manifest.json", manifest)
            mlrun.log_metrics({f"{s}.windows": manifest["splits"][s]["windows"] for s in SPLITS})
            mlrun.log_artifact(shards_dir / "manifest.json")
        mlrun.log_metrics({"seconds": time.perf_counter() - t0})
    return 0


def prepare_one(args, row, params: WindowParams, scfg: dict, prep_dir: Path) -> dict:
    from tqdm import tqdm

    seq_out, index_out = prep_paths(prep_dir, row.accession)
    with tqdm(desc=f"prepare {row.accession}", unit="bp", unit_scale=True, leave=False) as bar:
        prepared = prepare_genome(
            _genome_file(args, row.accession), row.accession, params, seq_out=seq_out, index_out=index_out,
            fasta_reader=scfg["fasta_reader"], genbank_warnings=scfg["genbank_warnings"],
            batch_bases=int(scfg["batch_mbases"] * 1_000_000), progress=bar, threads=scfg["threads"])
    log.info("%s: %d records, %d bases, %d windows %s", row.accession, prepared.meta["records"],
             prepared.meta["bases"], prepared.meta["windows"], prepared.meta["windows_per_split"])
    return prepared.meta


def load_plan(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(path, "shard plan not found; run `vqdna shard --step plan` first") from None


def write_all(plan: dict, shards_dir: Path, threads: int = 1) -> dict[str, str]:
    """Write every shard of `plan`; return {path relative to `shards_dir`: sha256}, hashed while
    writing (`build_manifest` takes it instead of reading the files back). `threads` >= 2 writes
    that many shards at once: the gather, Arrow's write, sha256 and the file writes release the
    GIL. Every shard is the same file for any `threads`."""
    from tqdm import tqdm

    cache: dict = {}  # genome -> (prepared index, memory-mapped .seq, record ids); (genome, split) -> windows
    orders = {split: split_order(plan, split) for split in SPLITS}

    def one(name: tuple[str, int]) -> str:
        split, index = name
        hasher = hashlib.sha256()
        write_shard(plan, split, index, shard_path(shards_dir, split, index), orders[split], cache, hasher)
        return hasher.hexdigest()

    names = shard_names(plan)
    with tqdm(total=len(names), desc="write shards", unit="shard", leave=False) as bar:
        if threads <= 1:
            digests = []
            for name in names:
                digests.append(one(name))
                bar.update()
        else:
            fill_cache(plan, cache)  # the threads then only read it
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vqdna-shard") as pool:
                digests = []
                for digest in pool.map(one, names):
                    digests.append(digest)
                    bar.update()
    return {str(shard_path(shards_dir, split, index).relative_to(shards_dir)): digest
            for (split, index), digest in zip(names, digests)}


def build_manifest(plan: dict, shards_dir: Path, scfg: dict, checksums: dict[str, str] | None = None,
                   threads: int = 1) -> dict:
    """The manifest of the shards under `shards_dir`. `checksums` ({relative path: sha256}, from
    `write_all` in the same process) saves reading the shards back; without it the files are
    hashed, `threads` at a time (sha256 releases the GIL)."""
    from .shards_io import open_shard

    names = shard_names(plan)
    paths = [shard_path(shards_dir, split, index) for split, index in names]
    rel = [str(path.relative_to(shards_dir)) for path in paths]
    if checksums is None and threads <= 1:
        checksums = dict(zip(rel, map(sha256_file, paths)))
    elif checksums is None:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vqdna-sha256") as pool:
            checksums = dict(zip(rel, pool.map(sha256_file, paths)))
    shards = []
    splits = {s: {"shards": 0, "windows": 0, "bases": 0} for s in SPLITS}
    for (split, index), path, name in zip(names, paths, rel):
        n = open_shard(path).num_rows
        shards.append({"path": name, "split": split, "index": index,
                       "rows": n, "bases": n * plan["window"], "sha256": checksums[name]})
        splits[split]["shards"] += 1
        splits[split]["windows"] += n
        splits[split]["bases"] += n * plan["window"]
    for s in SPLITS:
        if splits[s]["windows"] != plan["splits"][s]["windows"]:
            raise InputError(shards_dir / s, f"shards hold {splits[s]['windows']} windows, plan says "
                             f"{plan['splits'][s]['windows']}; re-run the shard step")
    return {
        "format": MANIFEST_FORMAT, "window": plan["window"], "stride": plan["stride"],
        "shuffle": plan["shuffle"], "splits": splits,
        "genomes": [{k: g[k] for k in ("accession", "species", "category", "records", "bases", "windows")}
                    for g in plan["genomes"]],
        # the thread count changes no byte of the shards: left out, manifests compare across machines
        "shards": shards, "config": {k: v for k, v in scfg.items() if k != "threads"},
    }
