"""One rank of a data-parallel (DDP) job with ``torch.distributed``, for pretraining (the CAE
and the pretext methods of docs/pretext_tasks.md).

:class:`DistributedContext` is the :class:`~ecg_transfer.training.replicas.Replicas` of a
rank: ``engine.fit(..., distributed=context)`` asks it to shard each global batch over the
ranks (the data order still comes from ``(seed, epoch)``, so the global batch is the
configured one), to wrap the model in ``DistributedDataParallel``, to combine the batch
losses and the eval loss sums of all ranks, and to average the BatchNorm running
statistics after each epoch. Every rank thus scores the same numbers and agrees on the
best epoch and on early stopping. Checkpoint reads are rank 0's, broadcast to the others
(:class:`RankZeroStore`), so all ranks resume from the same checkpoint; only rank 0 writes
checkpoints and the result. Only tasks whose epoch rows come from loss sums
(``task.distributable``: reconstruction, contrastive, masked reconstruction) run distributed.
The pretext models draw each rank's augmentations and masks from a generator of its own
(:func:`ecg_transfer.models.pretext.training_generator`); the contrastive task gathers every
rank's projections for its negatives (``training/pretext_tasks.py``).

The launcher (job file, torchrun worker and :func:`fit_distributed`) is
:mod:`ecg_transfer.training.launcher`. See docs/models_and_training.md ("Distributed pretraining").
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ecg_transfer.training.checkpoints import CheckpointStore
from ecg_transfer.training.loop import resolve_device
from ecg_transfer.training.tasks import Task

if TYPE_CHECKING:
    from ecg_transfer.training.engine import TrainConfig

# ---------------------------------------------------------------- one rank


@dataclass
class DistributedContext:
    """One rank of an initialised process group; what ``engine.fit`` asks in distributed mode."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    sync_batchnorm: bool = False
    owns_group: bool = False

    @classmethod
    def from_env(
        cls, device: str = "auto", backend: str = "auto", sync_batchnorm: bool = False, timeout_s: float = 1800.0
    ) -> DistributedContext:
        """Join the group that torchrun describes in RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
        and MASTER_PORT: gloo on CPU, nccl on CUDA with one GPU per rank (``cuda:LOCAL_RANK``)."""
        missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing and not dist.is_initialized():
            raise RuntimeError(
                f"DistributedContext: environment variables {missing} are not set; start the workers "
                "with torchrun (python -m torch.distributed.run), see docs/models_and_training.md"
            )
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        resolved = resolve_device(device)
        if resolved.type == "cuda":
            resolved = torch.device("cuda", local_rank)
            torch.cuda.set_device(resolved)
            # cuBLAS is only deterministic with a fixed workspace (as in loop.prepare_device).
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if sync_batchnorm and resolved.type != "cuda":
            raise ValueError(
                "DistributedContext: sync_batchnorm needs CUDA (torch's SyncBatchNorm refuses CPU "
                "input); on CPU every rank normalises with its own shard's statistics"
            )
        if backend == "auto":
            backend = "nccl" if resolved.type == "cuda" else "gloo"
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, resolved, sync_batchnorm, owns)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes checkpoints, results and job files."""
        return self.rank == 0

    def training_device(self, cfg: TrainConfig) -> torch.device:
        """This rank's device (chosen when it joined the group)."""
        return self.device

    def wrap(self, model: nn.Module, task: Task, where: str) -> nn.Module:
        """The module the training steps call: ``model`` in DDP (buffers synced by :meth:`end_epoch`)."""
        if not task.distributable:
            raise ValueError(
                f"{where}: distributed training supports tasks scored from loss sums "
                f"(ReconstructionTask, ContrastiveTask, MaskedReconstructionTask), not {task!r}, whose "
                "metrics need every output"
            )
        if self.sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers are averaged by end_epoch, not broadcast from rank 0 before every forward.
        no_buffer_sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else {"broadcast_buffers": False}
        )
        return DistributedDataParallel(model, device_ids=device_ids, **no_buffer_sync)

    def checkpoints(self, store: CheckpointStore) -> RankZeroStore:
        """``store`` as this rank sees it: rank 0 reads and writes, the others get rank 0's reads."""
        return RankZeroStore(store, self)

    def shard(self, rows: np.ndarray) -> tuple[np.ndarray, int]:
        """This rank's contiguous part of one (sorted) global batch, and how many rows count.

        A rank left without rows (a last batch smaller than the world) runs one row with
        weight 0, so that every rank takes part in the gradient all-reduce.
        """
        begin, end = (len(rows) * self.rank) // self.world_size, (len(rows) * (self.rank + 1)) // self.world_size
        return (rows[begin:end], end - begin) if end > begin else (rows[:1], 0)

    def global_loss(self, loss: torch.Tensor, share: int, total: int) -> tuple[torch.Tensor, float]:
        """The loss to back-propagate and the global batch's mean loss (the same on every rank).

        DDP averages gradients over ranks; scaling the local mean by ``share * world / total``
        makes that average the gradient of the global batch mean, also for unequal shards.
        """
        summed = (loss.detach().double() * share).reshape(1)
        dist.all_reduce(summed)
        return loss * (share * self.world_size / total), summed.item() / total

    def eval_range(self, n: int) -> tuple[int, int]:
        """The contiguous rows ``[begin, end)`` of an ``n``-row eval split this rank scores."""
        return (n * self.rank) // self.world_size, (n * (self.rank + 1)) // self.world_size

    def sum(self, value: float) -> float:
        """``value`` summed over the ranks (float64), identical on every rank."""
        total = torch.tensor([value], dtype=torch.float64, device=self._collective_device)
        dist.all_reduce(total)
        return total.item()

    @torch.no_grad()
    def end_epoch(self, model: nn.Module) -> None:
        """Average the floating-point buffers (BatchNorm running mean and variance) over ranks,
        so every rank evaluates and checkpoints the same model. Running means are linear in
        the batch means, so the average equals the running mean of the global batch means."""
        module = model.module if isinstance(model, DistributedDataParallel) else model
        for buffer in module.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer.div_(self.world_size)

    def state_digests(self, model: nn.Module) -> list[str]:
        """The SHA-1 of every rank's state dict, in rank order (a collective)."""
        digest = hashlib.sha1()
        for key, value in model.state_dict().items():
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        gathered: list[str | None] = [None] * self.world_size
        dist.all_gather_object(gathered, digest.hexdigest())
        return [str(value) for value in gathered]

    @property
    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


class RankZeroStore:
    """A :class:`CheckpointStore` shared by the ranks of a job: every read is rank 0's,
    broadcast to the others (so all ranks resume from the same checkpoint even when the
    others would see another file, or none), and only rank 0 writes. Each read is also a
    synchronisation point: no rank reads before rank 0 has finished its last write."""

    def __init__(self, store: CheckpointStore, context: DistributedContext):
        self.store, self.context = store, context

    @property
    def root(self) -> Path:
        return self.store.root

    def run_dir(self, run_key: str) -> Path:
        return self.store.run_dir(run_key)

    def _read(self, read: Callable[[], Any]) -> Any:
        message: list[Any] = [None]
        if self.context.is_writer:
            try:
                message = [("ok", read())]
            except Exception as error:  # every rank must leave the broadcast, then all raise
                message = [("error", f"{type(error).__name__}: {error}")]
        dist.broadcast_object_list(message, src=0)
        status, value = message[0]
        if status == "error":
            raise RuntimeError(f"{self.store}: rank 0 could not read the checkpoint store: {value}")
        return value

    def is_done(self, run_key: str) -> bool:
        return self._read(lambda: self.store.is_done(run_key))

    def load(self, run_key: str) -> dict[str, Any] | None:
        return self._read(lambda: self.store.load(run_key))

    def load_result(self, run_key: str) -> Any:
        return self._read(lambda: self.store.load_result(run_key))

    def save(self, run_key: str, payload: dict[str, Any]) -> None:
        if self.context.is_writer:
            self.store.save(run_key, payload)

    def mark_done(self, run_key: str, result: Any) -> None:
        if self.context.is_writer:
            self.store.mark_done(run_key, result)


if __name__ == "__main__":
    # The torchrun worker used to be this module; a job script that still names it must not
    # exit 0 without training (its launcher would wait for the run forever).
    raise SystemExit(
        "the distributed worker is now `-m ecg_transfer.training.launcher JOB.json`; "
        "change the torchrun command (docs/models_and_training.md, 'Distributed pretraining')"
    )
