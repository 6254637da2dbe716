"""Training one model: :func:`fit`, and the single-model stepper of the shared loop.

Arms must differ only in their initialisation, so they share one loop
(:mod:`ecg_transfer.training.loop`): the data order of an epoch comes from ``(seed,
epoch)`` alone (not from the model), the optimiser is Adam over the trainable
parameters, and every split in ``evals`` is scored after every epoch. What differs
between tasks (loss, metrics, monitor) lives in a strategy object from
:mod:`ecg_transfer.training.tasks`; what differs between one process and one rank of a
DDP job in a :class:`~ecg_transfer.training.replicas.Replicas` object. With a
:class:`CheckpointStore` the loop saves weights, optimiser and RNG state after each
epoch, so an interrupted run continues at the next epoch and ends with the same history
as an uninterrupted one. Checkpoints hold only tensors and plain types
(``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ecg_transfer.training.checkpoints import CheckpointStore
from ecg_transfer.training.loop import (
    EvalSplit,
    FitResult,
    Monitor,
    RowGroups,
    Run,
    RunState,
    adam,
    autocast,
    check_task,
    cpu_state,
    epoch_rows,
    finished_result,
    prepare,
    resolve_device,
    resume,
    split_rows,
    to_batch,
    train_group,
    training_error,
    values_per_row,
)
from ecg_transfer.training.replicas import LocalReplicas, Replicas
from ecg_transfer.training.tasks import Task

LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Optimisation settings; identical across arms by construction of the study.

    ``lr=0.005`` with Adam and a constant rate is the paper's recipe; plain
    (unweighted) cross-entropy too. ``bf16`` turns on bfloat16 autocast on CUDA;
    ``bf16_cpu`` does the same on CPU and is off by default because it did not
    pay on the measured 2-core CPU (docs/models_and_training.md).
    ``monitor_split``/``monitor_metric`` choose the epoch kept as best and
    drive early stopping. A classifier must monitor a validation split (None
    picks "val"; test or train is an error: the kept epoch may not be selected
    on test data); reconstruction's None picks its held-out "test" split, else
    the first eval split. The metric defaults to the task's ("loss" for
    reconstruction, "f1_weighted" for classification). The class count comes
    from the task.

    ``lr_schedule``/``warmup_epochs``/``grad_clip`` exist for the CAE, whose
    pretraining stalled at a constant 0.005 (docs/models_and_training.md): the
    rate rises linearly from lr/steps to ``lr`` over the first ``warmup_epochs``
    (may be fractional) and then stays ("constant") or follows a half cosine to
    0 at the last of ``epochs`` ("cosine"). It is a function of the global step
    only, so a resumed run follows the same curve. ``grad_clip`` > 0 clips the
    global gradient norm. The defaults (constant, no warmup, no clipping) are
    the paper's plain Adam, used by every classifier arm.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.005
    device: str = "auto"
    bf16: bool = True
    bf16_cpu: bool = False
    seed: int = 0
    patience: int | None = None
    monitor_split: str | None = None
    monitor_metric: str | None = None
    num_threads: int | None = field(default=None, metadata={"affects_results": False})  # speed only
    eval_batch_size: int = 256
    weight_decay: float = 0.0
    restore_best: bool = True
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(
                f"TrainConfig: epochs, batch_size and eval_batch_size must be >= 1, got "
                f"{self.epochs}, {self.batch_size}, {self.eval_batch_size}"
            )
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"TrainConfig: patience must be >= 1 or None, got {self.patience}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig: lr must be > 0, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig: lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"TrainConfig: warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        if self.grad_clip < 0:
            raise ValueError(f"TrainConfig: grad_clip must be >= 0 (0 = off), got {self.grad_clip}")


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The rate for 0-based global optimiser ``step`` (see :class:`TrainConfig`)."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.lr_schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr


def fit(
    model: nn.Module,
    task: Task,
    train_x,
    train_y,
    evals: Mapping[str, Any] | None,
    cfg: TrainConfig,
    checkpoints: CheckpointStore | None = None,
    run_key: str | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, pd.DataFrame], None] | None = None,
    distributed: Replicas | None = None,
    train_groups=None,
) -> FitResult:
    """Train ``model`` in place and return its per-epoch history.

    ``task``: a :class:`~ecg_transfer.training.tasks.Task` such as
    ``ClassificationTask(classes)`` or ``ReconstructionTask()``. ``train_x``/eval x:
    (N, L) float32 arrays or memmaps for window models (``model.input_length == L``),
    (N, F) for feature heads; labels are integer class indices. ``evals`` maps split
    names (not "train": that row is the loop's own running average over the epoch, in
    train mode) to ``(x, y)`` or ``(x, y, record_ids)``; y is ignored for reconstruction.
    ``on_epoch_end(epoch, history_so_far)`` runs after the epoch's checkpoint is written
    (tests raise from it to simulate an interruption). A finished run found in
    ``checkpoints`` is not retrained: its stored result is returned and its final
    weights loaded into ``model``. ``distributed``: this copy's
    :class:`~ecg_transfer.training.replicas.Replicas`, e.g. one DDP rank's
    :class:`~ecg_transfer.training.distributed.DistributedContext` (None: one process).
    ``train_groups``: one group id per training row (e.g. per drawn copy of a record); each
    epoch then trains one row of every group, drawn at random, instead of every row
    (:func:`~ecg_transfer.training.loop.epoch_rows`). None: every row, every epoch.
    """
    check_task(task, "fit")
    where = f"fit[{run_key or task.name}]"
    replicas = distributed if distributed is not None else LocalReplicas()
    if checkpoints is not None and run_key:
        checkpoints = replicas.checkpoints(checkpoints)  # DDP: rank 0 reads and writes, the others get its reads
    length = getattr(model, "input_length", None)
    train_y, ctx = prepare(task, length, train_x, train_y, evals, cfg, checkpoints, [run_key], where)
    groups = None if train_groups is None else RowGroups.build(train_groups, train_x.shape[0], where)
    if checkpoints is not None and checkpoints.is_done(run_key):
        return finished_result(model, checkpoints.load_result(run_key), task)

    device = ctx.device = replicas.training_device(cfg)
    model.to(device)
    optimizer = adam((p for p in model.parameters() if p.requires_grad), cfg)
    state, payload = resume(model, optimizer, task, cfg, checkpoints, run_key, where)
    trained = replicas.wrap(model, task, where)
    stepper = PlainStepper(model, trained, optimizer, task, cfg, device, (train_x, train_y, length), replicas,
                           payload, where, groups)
    ctx.progress = progress
    callback = None if on_epoch_end is None else (lambda _run, epoch, history: on_epoch_end(epoch, history))
    return train_group(stepper, [Run(run_key, cfg, state, payload, model)], ctx, callback)[0]


class PlainStepper:
    """The loop's stepper for one model (a group of K = 1): plain autograd steps, the
    global batch sharded over the replicas (one process: all of it)."""

    def __init__(self, model: nn.Module, trained: nn.Module, optimizer, task: Task, cfg: TrainConfig, device,
                 data: tuple, replicas: Replicas, payload: Mapping[str, Any] | None, where: str,
                 groups: RowGroups | None = None):
        self.model, self.trained, self.optimizer, self.task, self.cfg = model, trained, optimizer, task, cfg
        self.device, self.replicas, self.rng_payload, self.where = device, replicas, payload, where
        self.x, self.y, self.length = data
        self.groups = groups  # None: every row trains every epoch

    def train_epoch(self, epoch: int) -> list[list[dict]]:
        """One pass over the epoch's training rows in the (seed, epoch) order (every row, or one
        per group); the epoch's train row."""
        x, y, cfg = self.x, self.y, self.cfg
        self.trained.train()
        # The rows and their order depend on (seed, epoch) only: every arm sees the same batches.
        order = epoch_rows(cfg.seed, epoch, x.shape[0], self.groups)
        n = order.size
        loss_sum, outputs, labels = 0.0, [], []
        start = time.perf_counter()
        for batch_index, begin in enumerate(range(0, n, cfg.batch_size)):
            rows = np.sort(order[begin : begin + cfg.batch_size])  # sorted rows read a memmap faster
            loss_value, out = self._step(rows, epoch, batch_index, math.ceil(n / cfg.batch_size))
            loss_sum += loss_value * len(rows)
            if self.task.keeps_outputs:
                outputs.append(out.detach().cpu())
            if y is not None:
                labels.append(y[rows])
        self.replicas.end_epoch(self.trained)  # DDP: every rank evaluates and saves the same BatchNorm statistics
        elapsed = time.perf_counter() - start
        row = self.task.train_row(
            loss_sum, n, values_per_row(x), torch.cat(outputs) if outputs else None, np.concatenate(labels) if labels else None
        )
        return [[{"epoch": epoch, "split": "train", **row, "samples_per_s": n / max(elapsed, 1e-9)}]]

    def _step(self, rows: np.ndarray, epoch: int, batch_index: int, steps_per_epoch: int) -> tuple[float, torch.Tensor]:
        """One optimiser step on this copy's share of the global batch ``rows``."""
        cfg, optimizer = self.cfg, self.optimizer
        mine, share = self.replicas.shard(rows)
        xb = to_batch(self.x, mine, self.length, self.device)
        yb = None if self.y is None else torch.from_numpy(self.y[mine]).to(self.device)
        with autocast(self.device, cfg):
            out = self.trained(xb)
        out = out.float()
        loss, loss_value = self.replicas.global_loss(self.task.loss(out, xb, yb), share, len(rows))
        if not np.isfinite(loss_value):
            raise training_error(self.where, loss_value, epoch, batch_index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], cfg.grad_clip)
        if cfg.lr_schedule != "constant" or cfg.warmup_epochs > 0:
            rate = learning_rate(cfg, (epoch - 1) * steps_per_epoch + batch_index, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = rate
        optimizer.step()
        return loss_value, out

    def score(self, split: EvalSplit, epoch: int, probabilities: list[dict]) -> list[list[dict]]:
        loss_sum, outputs, elapsed = _forward(self.model, self.task, split.x, split.y, self.cfg, self.device,
                                              self.replicas)
        return [split_rows(self.task, split, epoch, loss_sum, outputs, elapsed, probabilities[0])]

    def view(self, position: int) -> nn.Module:
        return self.model

    def parts(self, position: int) -> dict[str, Any]:
        return {
            "model": cpu_state(self.model), "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def keep(self, positions: list[int]) -> None:
        pass  # one run: it finishes, nothing goes on

    def load_final(self, position: int, model: nn.Module) -> None:
        pass  # the model trained in place


@torch.no_grad()
def _forward(model, task: Task, x, y, cfg: TrainConfig, device,
             replicas: Replicas | None = None) -> tuple[float, torch.Tensor | None, float]:
    """Summed loss, collected outputs (if the task keeps them) and seconds, in eval mode.
    Replicas: each scores its contiguous part and the loss sums are added up."""
    replicas = replicas or LocalReplicas()
    length = getattr(model, "input_length", None)
    was_training = model.training
    model.eval()
    loss_sum, outputs = 0.0, []
    start = time.perf_counter()
    first, end = replicas.eval_range(x.shape[0])
    for begin in range(first, end, cfg.eval_batch_size):
        rows = slice(begin, min(begin + cfg.eval_batch_size, end))
        xb = to_batch(x, rows, length, device)
        with autocast(device, cfg):
            out = model(xb)
        out = out.float()
        yb = None if y is None else torch.from_numpy(np.asarray(y[rows])).to(device)
        loss_sum += task.loss(out, xb, yb, reduction="sum").double().item()
        if task.keeps_outputs:
            outputs.append(out.cpu())
    loss_sum = replicas.sum(loss_sum)
    elapsed = time.perf_counter() - start
    model.train(was_training)
    return loss_sum, (torch.cat(outputs) if task.keeps_outputs else None), elapsed


def evaluate(model: nn.Module, task: Task, x, y, cfg: TrainConfig, device: torch.device | None = None) -> dict[str, float]:
    """Loss and metrics of one split in eval mode, streamed in ``eval_batch_size`` slices."""
    device = device or resolve_device(cfg.device)
    y = task.check_labels(y, x.shape[0])
    loss_sum, outputs, elapsed = _forward(model, task, x, y, cfg, device)
    row = task.eval_row(loss_sum, x.shape[0], values_per_row(x), outputs, y)
    return {**row, "samples_per_s": x.shape[0] / max(elapsed, 1e-9)}


@torch.no_grad()
def predict(model: nn.Module, x, batch_size: int = 256, device: str = "auto") -> np.ndarray:
    """Model outputs (logits, reconstructions or codes) for every row of ``x``, in eval mode."""
    resolved = resolve_device(device)
    length = getattr(model, "input_length", None)
    was_training = model.training
    model.eval().to(resolved)
    outputs = [
        model(to_batch(x, slice(begin, min(begin + batch_size, x.shape[0])), length, resolved)).float().cpu().numpy()
        for begin in range(0, x.shape[0], batch_size)
    ]
    model.train(was_training)
    return np.concatenate(outputs)


__all__ = [
    "EvalSplit", "FitResult", "LR_SCHEDULES", "Monitor", "PlainStepper", "RunState", "TrainConfig", "evaluate",
    "fit", "learning_rate", "predict", "resolve_device",
]
