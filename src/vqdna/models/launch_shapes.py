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
