"""What the DDP stages (train-tokenizer, tokenize, pretrain) share under torchrun: a barrier and
the sum of small tensors over the ranks. Both do nothing in a single process."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where used: importing this module costs torch-free stages nothing
    import torch


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def sum_over_ranks(tensors: list[torch.Tensor], world: int) -> None:
    """In place: each tensor becomes its sum over the ranks, with one all-reduce for all of them,
    summed in fp64 (code counts stay exact)."""
    if world == 1:
        return
    import torch
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1).double() for t in tensors])
    dist.all_reduce(flat)
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
        t.copy_(part.view_as(t))
