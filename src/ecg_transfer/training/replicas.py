"""Where the copies of one model train: here, or as the replicas of a data-parallel job.

``engine.fit`` asks a :class:`Replicas` object everything that differs between a single
process and one rank of a DDP job, so the loop itself has no distributed branch:
:class:`LocalReplicas` (the default) is one process holding the only copy;
:class:`ecg_transfer.training.distributed.DistributedContext` is one rank of a job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from ecg_transfer.training.loop import prepare_device
from ecg_transfer.training.tasks import Task

if TYPE_CHECKING:
    from ecg_transfer.training.engine import TrainConfig


class Replicas(Protocol):
    def training_device(self, cfg: TrainConfig) -> torch.device:
        """The device this copy trains on."""

    def checkpoints(self, store: Any) -> Any:
        """The checkpoint store as this copy reads and writes it."""

    def wrap(self, model: nn.Module, task: Task, where: str) -> nn.Module:
        """The module the training steps call."""

    def shard(self, rows: np.ndarray) -> tuple[np.ndarray, int]:
        """This copy's rows of a global batch, and how many of them count."""

    def global_loss(self, loss: torch.Tensor, share: int, total: int) -> tuple[torch.Tensor, float]:
        """The loss to back-propagate, and the global batch's mean loss as a float."""

    def end_epoch(self, model: nn.Module) -> None:
        """Bring the copies' buffers into agreement after a training epoch."""

    def eval_range(self, n: int) -> tuple[int, int]:
        """The rows ``[begin, end)`` of an ``n``-row split this copy scores."""

    def sum(self, value: float) -> float:
        """``value`` summed over the copies."""


class LocalReplicas:
    """One process, one copy: every question has the trivial answer."""

    def training_device(self, cfg: TrainConfig) -> torch.device:
        return prepare_device(cfg)

    def checkpoints(self, store: Any) -> Any:
        return store

    def wrap(self, model: nn.Module, task: Task, where: str) -> nn.Module:
        return model

    def shard(self, rows: np.ndarray) -> tuple[np.ndarray, int]:
        return rows, len(rows)

    def global_loss(self, loss: torch.Tensor, share: int, total: int) -> tuple[torch.Tensor, float]:
        return loss, loss.item()

    def end_epoch(self, model: nn.Module) -> None:
        pass

    def eval_range(self, n: int) -> tuple[int, int]:
        return 0, n

    def sum(self, value: float) -> float:
        return value
