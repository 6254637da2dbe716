"""What the two-rank tests share (gloo on the loopback, spawned with ``torch.multiprocessing``):
joining as one rank of two, and a run interrupted after its second epoch (to resume it)."""

from __future__ import annotations

import os

import torch

from ecg_transfer.training.distributed import DistributedContext


class Interrupt(Exception):
    pass


def stop_at_epoch_2(epoch, history):
    if epoch == 2:
        raise Interrupt


def join_as_rank(rank: int, port: int) -> DistributedContext:
    """This process as rank ``rank`` of two, meeting on 127.0.0.1:``port``, one thread each (two
    ranks share this machine's cores), as torchrun's environment would describe it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    return DistributedContext.from_env("cpu", timeout_s=60)
