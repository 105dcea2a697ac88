"""`vqdna tokenize`: encode every shard of one split with a frozen tokenizer into a token file.

Large batches on the GPU when there is one (CPU otherwise); the next shard is read while the
current one is encoded. Under `torchrun` the shards are split into contiguous blocks, one per
rank; every rank writes its rows straight into the shared temporary file at its offset, and
rank 0 renames it when all are done. Output layout: `vqdna.tokens` package docstring.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, write_json
from ..distributed import barrier
from ..errors import ConfigError, InputError
from ..dna import to_codes
from .encode import BatchEncoder, first_invalid_codes, tokens_per_window
from .format import TokenMeta, directory_sha256, id_dtype, token_paths

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--tokenizer", required=True, help="trained tokenizer directory (results/tokenizers/{tok})")
    parser.add_argument("--shards", default="results/shards", help="shards root holding {split}/*.arrow")
    parser.add_argument("--split", required=True, help="split to encode (a folder under --shards)")
    parser.add_argument("--out", required=True, help="output directory (results/tokens/{tok})")
    parser.add_argument("--name", default=None, help="tokenizer name recorded in the metadata (default: folder name)")


def run(args, cfg) -> int:
    from ..tracking import start_run

    tcfg = cfg.get("tokens", {})
    rank, world = _dist_env()
    name = args.name or Path(args.tokenizer).name
    params = {"tokenizer": name, "split": args.split, "batch_nt": tcfg.get("batch_nt"),
              "compile": tcfg.get("compile"), "fast": tcfg.get("fast"), "world_size": world}
    if rank != 0:
        tokenize_split(args.tokenizer, args.shards, args.split, args.out, cfg, name=name)
        return 0
    with start_run(cfg, stage="tokenize", name=f"tokenize/{name}/{args.split}", params=params) as mlrun:
        meta, stats = tokenize_split(args.tokenizer, args.shards, args.split, args.out, cfg, name=name)
        mlrun.log_params({"dtype": meta.dtype, "levels": meta.levels, "tokens_per_window": meta.tokens_per_window,
                          "tokenizer_sha256": meta.tokenizer_sha256, "device": stats["device"]})
        mlrun.log_metrics({k: v for k, v in stats.items() if isinstance(v, (int, float))})
        mlrun.log_artifact(token_paths(args.out, args.split)["meta"])
    return 0


def resolve_device(cfg: dict, local_rank: int = 0) -> str:
    import torch

    want = cfg.get("device", "auto")
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda, but no CUDA device is visible")
    if want == "cpu" or not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{local_rank}"


def tokenize_split(tokenizer_dir, shards_root, split: str, out_dir, cfg: dict, *, name: str | None = None):
    """Encode `shards_root/split/*.arrow` into `out_dir/{split}.bin` (+ lengths, meta). Returns (meta, stats)."""
    from tqdm import tqdm

    from ..genomes.shards_io import list_shards, open_shard
    from ..tokenizers import load_tokenizer

    tcfg = cfg.get("tokens", {})
    batch_nt = int(tcfg.get("batch_nt", 1 << 18))
    rank, world = _dist_env()
    device = resolve_device(cfg, int(os.environ.get("LOCAL_RANK", 0)))
    tokenizer_dir = Path(tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir)

    shards = list_shards(shards_root, split)
    rows_per_shard, window = _shard_sizes(shards)
    count = int(sum(rows_per_shard))
    if count == 0:
        raise InputError(Path(shards_root, split), "the split holds no windows")
    dtype = id_dtype(tokenizer.vocab_sizes)
    width = tokens_per_window(tokenizer, window)
    meta = TokenMeta(
        split=split, tokenizer=name or tokenizer_dir.name, tokenizer_kind=getattr(tokenizer, "kind", ""),
        tokenizer_sha256=directory_sha256(tokenizer_dir), dtype=dtype.name, levels=tokenizer.levels,
        vocab_sizes=list(tokenizer.vocab_sizes), pad_ids=list(tokenizer.vocab_sizes), window_nt=window,
        tokens_per_window=width, fixed_rate=bool(tokenizer.fixed_rate), count=count,
        shards=[p.name for p in shards],
    )
    paths = token_paths(out_dir, split)
    paths["bin"].parent.mkdir(parents=True, exist_ok=True)
    tmp_bin = _shared_tmp(paths["bin"], world)
    nbytes = count * width * tokenizer.levels * dtype.itemsize
    if rank == 0:
        with open(tmp_bin, "wb") as fh:
            fh.truncate(nbytes)
    barrier(world)

    # Contiguous block of shards for this rank, and where its rows start in the file.
    first, last = _block(len(shards), rank, world)
    row_start = int(sum(rows_per_shard[:first]))
    my_rows = int(sum(rows_per_shard[first:last]))
    fast = dict(tcfg.get("fast") or {})
    fast = fast if fast.pop("enabled", False) else None
    encoder = BatchEncoder(tokenizer, width, dtype, device, compile=bool(tcfg.get("compile", False)), fast=fast)
    ids_out = np.memmap(tmp_bin, dtype=dtype, mode="r+", shape=meta.shape)
    lengths = np.full(my_rows, width, dtype=np.uint32)
    rows_per_batch = max(1, batch_nt // window)
    t0 = time.perf_counter()

    def load(path):
        # in the reader thread: pages in, ASCII -> codes and the validity check off the main thread
        ascii_rows = np.ascontiguousarray(_ascii(open_shard(path)))
        codes = to_codes(ascii_rows.reshape(-1)).reshape(ascii_rows.shape)
        return ascii_rows, codes, first_invalid_codes(codes)

    try:
        with ThreadPoolExecutor(max_workers=1) as pool, tqdm(
            total=my_rows * window, unit="nt", unit_scale=True, disable=rank != 0,
            desc=f"tokenize {meta.tokenizer}/{split}",
        ) as bar:
            pending = pool.submit(load, shards[first]) if first < last else None
            in_flight = None  # (handle, row, rows, shard, first row in shard): one batch stays queued
            row = 0

            def finish(job, dest) -> None:
                handle, at, n, shard, i = job
                try:
                    ids, real = encoder.result(handle)
                except ValueError as exc:
                    raise InputError(shard, str(exc), record=f"rows {i}..{i + n - 1}") from None
                dest[row_start + at: row_start + at + n] = ids
                lengths[at: at + n] = real
                bar.update(n * window)

            for s in range(first, last):
                ascii_rows, codes, bad = pending.result()
                pending = pool.submit(load, shards[s + 1]) if s + 1 < last else None
                if bad is not None:
                    raise InputError(shards[s], "window holds a symbol other than A/C/G/T", record=str(bad))
                for i in range(0, len(ascii_rows), rows_per_batch):
                    n = len(ascii_rows[i:i + rows_per_batch])
                    try:
                        handle = encoder.submit(ascii_rows[i:i + n], codes=codes[i:i + n])
                    except ValueError as exc:
                        raise InputError(shards[s], str(exc), record=f"rows {i}..{i + n - 1}") from None
                    if in_flight is not None:
                        finish(in_flight, ids_out)
                    in_flight = (handle, row, n, shards[s], i)
                    row += n
            if in_flight is not None:
                finish(in_flight, ids_out)
        ids_out.flush()
        del ids_out
        elapsed = time.perf_counter() - t0
        if not meta.fixed_rate:
            _write_lengths(paths["lengths"], lengths, row_start, count, rank, world)
        barrier(world)
        if rank == 0:
            os.replace(tmp_bin, paths["bin"])
            write_json(paths["meta"], meta.to_dict())  # last: marks the split complete
    finally:
        if rank == 0 and tmp_bin.exists():
            tmp_bin.unlink()
    stats = {"seconds": elapsed, "nt": my_rows * window, "nt_per_s": my_rows * window / max(elapsed, 1e-9),
             "windows": count, "device": device}
    log.info("%s/%s: %d windows, %.3g nt/s on %s", meta.tokenizer, split, count, stats["nt_per_s"], device)
    return meta, stats


def _ascii(table):
    from ..genomes.shards_io import ascii_matrix

    return ascii_matrix(table)


def _shard_sizes(shards: list[Path]) -> tuple[list[int], int]:
    import pyarrow as pa

    rows, windows = [], set()
    for p in shards:
        try:
            with pa.memory_map(str(p), "r") as source:
                reader = pa.ipc.open_file(source)
                windows.add(reader.schema.field("sequence").type.byte_width)
                rows.append(sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches)))
        except (pa.ArrowInvalid, KeyError) as exc:
            raise InputError(p, f"not a readable shard: {exc}") from None
    if len(windows) != 1:
        raise InputError(shards[0].parent, f"shards of one split must share one window length, found {sorted(windows)}")
    return rows, windows.pop()


def _write_lengths(path: Path, lengths: np.ndarray, row_start: int, count: int, rank: int, world: int) -> None:
    if world == 1:
        with atomic_path(path) as tmp:
            lengths.astype(np.uint32).tofile(tmp)
        return
    tmp = _shared_tmp(path, world)
    if rank == 0:
        with open(tmp, "wb") as fh:
            fh.truncate(count * 4)
    barrier(world)
    out = np.memmap(tmp, dtype=np.uint32, mode="r+", shape=(count,))
    out[row_start: row_start + len(lengths)] = lengths
    out.flush()
    del out
    barrier(world)
    if rank == 0:
        os.replace(tmp, path)


def _block(n: int, rank: int, world: int) -> tuple[int, int]:
    per, extra = divmod(n, world)
    first = rank * per + min(rank, extra)
    return first, first + per + (1 if rank < extra else 0)


def _shared_tmp(final: Path, world: int) -> Path:
    # One name all ranks agree on (torchrun gives them one run id); single process: the pid.
    tag = os.environ.get("TORCHELASTIC_RUN_ID", "dist") if world > 1 else str(os.getpid())
    return final.with_name(f".{final.name}.tmp-{tag}")


def _dist_env() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            # gloo: barriers only; the GPUs never talk to each other here
            dist.init_process_group(backend="gloo")
    return rank, world

