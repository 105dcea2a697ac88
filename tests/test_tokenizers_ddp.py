"""Codebook statistics under DDP (2 CPU processes, gloo): every rank ends with the codebook a single
process gets from the whole batch, and dead-code restarts agree across ranks."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vqdna.tokenizers.quantizer import EMACodebook


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _codebook() -> EMACodebook:
    torch.manual_seed(0)
    cb = EMACodebook(size=6, dim=3, decay=0.8, eps=1e-5, dead_threshold=0.5)
    cb.cluster_size.fill_(1.0)
    cb.embed_sum.copy_(cb.embed)
    return cb


def _data() -> torch.Tensor:
    return torch.randn(40, 3, generator=torch.Generator().manual_seed(1))


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cb = _codebook()
        x = _data().chunk(world)[rank]  # each rank sees only its half of the batch
        for _ in range(3):
            cb.ema_update(x, cb.assign(x))
        cb.cluster_size[:2] = 0.0  # two codes dead on every rank
        cb.restart_dead(x, torch.Generator().manual_seed(rank))  # different RNG per rank on purpose
        torch.save({k: v.clone() for k, v in cb.state_dict().items()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ema_statistics_are_all_reduced_and_restarts_broadcast(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key  # identical codebooks on both ranks

    single = _codebook()  # one process, whole batch
    x = _data()
    for _ in range(3):
        single.ema_update(x, single.assign(x))
    # live codes match the single-process EMA (sums reduced in another order: allclose)
    assert torch.allclose(r0["embed"][2:], single.embed[2:], atol=1e-5)
    assert torch.allclose(r0["cluster_size"][2:], single.cluster_size[2:], atol=1e-5)
    # the restarted codes are rank 0's picks from rank 0's latents
    half = x.chunk(2)[0]
    for k in range(2):
        assert (r0["embed"][k] == half).all(1).any()
