"""The fused ops' launch shapes: each op module holds a `TILES` table (its defaults: the fastest
shapes a GPU sweep found, see the comment there) and a `set_tiles` bound to it here."""

from __future__ import annotations

import functools


def update_tiles(table: dict, **tiles) -> dict:
    """Change entries of `table` (its keys only, integers); returns the previous table, so a
    caller can put it back with `set_tiles(**old)`."""
    unknown = set(tiles) - set(table)
    if unknown:
        raise KeyError(f"unknown tile keys {sorted(unknown)}")
    old = dict(table)
    table.update({k: int(v) for k, v in tiles.items()})
    return old


def tiles_setter(table: dict):
    """`set_tiles(**tiles) -> previous` for one op's TILES table."""
    return functools.partial(update_tiles, table)


def persistent_grid(n_rows: int, block_rows: int, progs_per_sm: int, device) -> tuple[int, int]:
    """(programs, rows a program walks) of a persistent backward kernel: at most `progs_per_sm`
    programs a multiprocessor (2 "multiprocessors" off CUDA: Triton's CPU interpreter in tests),
    each walking a stripe of whole row blocks."""
    import torch
    import triton

    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 2
    n_prog = max(1, min(triton.cdiv(n_rows, block_rows), progs_per_sm * sms))
    rows_per_prog = triton.cdiv(triton.cdiv(n_rows, n_prog), block_rows) * block_rows
    return triton.cdiv(n_rows, rows_per_prog), rows_per_prog
