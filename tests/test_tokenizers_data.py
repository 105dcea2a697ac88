"""Streaming shards (order, borders, exact continuation from a saved state) and the schedules."""

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from vqdna.genomes.shards_io import shard_schema
from vqdna.tokenizers.data import ShardStream, random_crops
from vqdna.tokenizers.trainer import TrainSettings, lr_at, seq_len_at


def write_shard(path: Path, first_row: int, rows: int, width: int = 8) -> None:
    """Row i holds the base-4 digits of its global index, so every row is identifiable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    seqs = []
    for i in range(first_row, first_row + rows):
        digits = [(i >> (2 * j)) & 3 for j in range(width)]
        seqs.append(bytes(b"ACGT"[d] for d in digits))
    table = pa.table({"sequence": pa.array(seqs, pa.binary(width)), "accession": ["a"] * rows,
                      "species": ["s"] * rows, "record_id": ["r"] * rows, "start": list(range(rows))},
                     schema=shard_schema(width))
    with pa.OSFile(str(path), "wb") as fh, pa.ipc.new_file(fh, table.schema) as writer:
        writer.write_table(table)


def row_ids(rows: np.ndarray) -> list[int]:
    return [int(sum(int(d) << (2 * j) for j, d in enumerate(r))) for r in rows]


@pytest.fixture()
def shard_paths(tmp_path) -> list[Path]:
    sizes = [5, 3, 7]
    paths, first = [], 0
    for i, n in enumerate(sizes):
        paths.append(tmp_path / f"{i:05d}.arrow")
        write_shard(paths[-1], first, n)
        first += n
    return paths


def test_one_epoch_visits_every_row_once_then_reshuffles(shard_paths):
    stream = ShardStream(shard_paths, seed=0)
    epoch0 = row_ids(stream.next_rows(15))
    assert sorted(epoch0) == list(range(15))
    assert stream.epoch == 1
    epoch1 = row_ids(stream.next_rows(15))
    assert sorted(epoch1) == list(range(15)) and epoch1 != epoch0


def test_saved_state_continues_exactly(shard_paths):
    a = ShardStream(shard_paths, seed=7)
    a.next_rows(4)
    a.next_rows(6)  # crosses a shard border
    state = a.state_dict()
    expected = row_ids(a.next_rows(9))  # crosses the epoch border
    b = ShardStream(shard_paths, seed=7)
    b.load_state_dict(state)
    assert row_ids(b.next_rows(9)) == expected


def test_unshuffled_order_is_file_order(shard_paths):
    assert row_ids(ShardStream(shard_paths, seed=0, shuffle=False).next_rows(15)) == list(range(15))


def test_random_crops_are_sub_windows():
    rng = np.random.default_rng(0)
    windows = np.tile(np.arange(10, dtype=np.uint8), (6, 1))
    crops = random_crops(windows, 4, rng)
    assert crops.shape == (6, 4)
    assert (np.diff(crops.astype(int), axis=1) == 1).all()  # contiguous
    assert random_crops(windows, 20, rng) is windows


def test_lr_warmup_then_cosine_and_length_switch():
    base = dict(batch_size=1, max_steps=110, lr=1.0, min_lr=0.1, betas=[0.9, 0.98], weight_decay=0.0,
                warmup_steps=10, seq_len_warmup=128, seq_len=256, grad_clip=0.0, init_kmeans_iters=0,
                kmeans_after_warmup=False, kmeans_iters=1, kmeans_max_samples=1, restart_every=0,
                checkpoint_every=0, log_every=1, valid_windows=1, valid_length=None, eval_batch_rows=1)
    s = TrainSettings.from_dict(base)
    assert lr_at(0, s) == pytest.approx(0.1) and lr_at(9, s) == pytest.approx(1.0)
    assert lr_at(10, s) == pytest.approx(1.0)
    assert lr_at(60, s) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, s) == pytest.approx(0.1)
    assert [seq_len_at(i, s) for i in (0, 9, 10, 100)] == [128, 128, 256, 256]
    with pytest.raises(KeyError, match="lr"):
        TrainSettings.from_dict({k: v for k, v in base.items() if k != "lr"})
