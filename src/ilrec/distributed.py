"""The process group as the rest of the code sees it (PyTorch distributed, started by the
Trainer under ``torchrun`` / ``accelerate launch``); a single process otherwise."""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["any_rank", "barrier", "in_lockstep", "is_main_process", "rank_and_world"]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def in_lockstep() -> bool:
    """Whether several processes run together: they must make the same forward passes
    (engines that shard parameters, FSDP and ZeRO-3, need every rank in every forward)."""
    return rank_and_world()[1] > 1


def is_main_process() -> bool:
    return rank_and_world()[0] == 0


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is set on any process (all ranks must call this together)."""
    if rank_and_world()[1] == 1:
        return flag
    votes = torch.tensor([float(flag)], device=device)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return bool(votes.item())
