"""The one training loop, shared by the CAE and every classifier arm.

Arms must differ only in their initialisation, so they share this loop: the
data order of an epoch comes from ``(seed, epoch)`` alone (not from the model),
the optimiser is Adam over the trainable parameters, and every split in
``evals`` is scored after every epoch. What differs between tasks (loss,
metrics, monitor) lives in a strategy object from
:mod:`ecg_transfer.training.tasks`. With a :class:`CheckpointStore` the loop
saves weights, optimiser and RNG state after each epoch, so an interrupted run
continues at the next epoch and ends with the same history as an uninterrupted
one. Checkpoints hold only tensors and plain types (``torch.load(...,
weights_only=True)``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from ecg_transfer.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere

from ecg_transfer.training.checkpoints import CheckpointStore
from ecg_transfer.training.tasks import RecordIndex, Task

if TYPE_CHECKING:
    from ecg_transfer.training.distributed import DistributedContext

LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Optimisation settings; identical across arms by construction of the study.

    ``lr=0.005`` with Adam and a constant rate is the paper's recipe; plain
    (unweighted) cross-entropy too. ``bf16`` turns on bfloat16 autocast on CUDA;
    ``bf16_cpu`` does the same on CPU and is off by default because it did not
    pay on the measured 2-core CPU (docs/models_and_training.md).
    ``monitor_split``/``monitor_metric`` choose the epoch kept as best and
    drive early stopping; None picks "test" (as the paper) or else the first
    eval split, and the task's default metric ("loss" for reconstruction,
    "f1_weighted" for classification). The class count comes from the task.

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
    num_threads: int | None = None
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


@dataclass
class FitResult:
    """What a run produced; ``history`` has one row per (epoch, split).

    ``predictions`` (classification): ``{"honest": {"epoch": e, <split>: probs (N, C), ...},
    "best_test": {...}}``, the float32 class probabilities of every eval split at the epoch
    kept by the monitor ("honest") and at the epoch with the best test f1_weighted
    ("best_test", earliest on ties; only with a "test" split). A split scored per record
    also has ``<split>_record`` (R, C), one row per record (softmax of the mean window
    logits), and ``<split>_record_ids`` (R,), in order of first appearance.
    """

    history: pd.DataFrame
    best_state: dict[str, torch.Tensor] | None
    best_epoch: int | None
    best_value: float | None
    monitor: tuple[str, str]
    stopped_early: bool
    epochs_run: int
    device: str
    resumed_from_epoch: int | None = None
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Monitor:
    """The history value that picks the kept epoch and drives early stopping."""

    split: str
    metric: str
    lower_is_better: bool

    def improves(self, value: float, best: float | None) -> bool:
        return best is None or (value < best if self.lower_is_better else value > best)


@dataclass
class EvalSplit:
    """One scored split; with ``records`` it is also scored per record (``<name>_record``)."""

    name: str
    x: Any
    y: np.ndarray | None
    records: RecordIndex | None = None
    record_labels: np.ndarray | None = None

    @property
    def row_names(self) -> list[str]:
        return [self.name] + ([f"{self.name}_record"] if self.records is not None else [])


@dataclass
class RunState:
    """Everything a resumed run needs besides weights, optimiser and RNG; plain types and
    tensors only. ``predictions`` holds tensors and lists (see :class:`FitResult`)."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    best_test_value: float | None = None
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_payload(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> RunState:
        return cls(**{f.name: payload[f.name] for f in fields(cls) if f.name in payload})

    def end_epoch(self, epoch, rows, probabilities, monitor: Monitor, patience, model) -> float:
        """Add the epoch's rows, keep the best weights/predictions, count bad epochs."""
        self.history.extend(rows)
        value = next(r[monitor.metric] for r in rows if r["split"] == monitor.split)
        if monitor.improves(value, self.best_value):
            self.best_value, self.best_epoch, self.best_state, self.bad_epochs = (
                float(value), epoch, _cpu_state(model), 0
            )
            if probabilities:
                self.predictions["honest"] = {"epoch": epoch, **probabilities}
        else:
            self.bad_epochs += 1
            if patience is not None and self.bad_epochs >= patience:
                self.stopped_early = True
        test = next((r.get("f1_weighted") for r in rows if r["split"] == "test"), None) if probabilities else None
        if test is not None and (self.best_test_value is None or test > self.best_test_value):
            self.best_test_value = float(test)
            self.predictions["best_test"] = {"epoch": epoch, **probabilities}
        self.epoch = epoch
        return value


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"TrainConfig.device is {device!r} but CUDA is not available here")
    return resolved


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
    distributed: DistributedContext | None = None,
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
    weights loaded into ``model``. ``distributed``: this rank's
    :class:`~ecg_transfer.training.distributed.DistributedContext` (DDP; None: one process).
    """
    if not isinstance(task, Task):
        raise TypeError(f"fit: task must be a Task (ClassificationTask(classes), ReconstructionTask()), got {task!r}")
    where = f"fit[{run_key or task.name}]"
    if checkpoints is not None and not run_key:
        raise ValueError(f"{where}: a run_key is needed to checkpoint")
    if distributed is not None and checkpoints is not None:
        checkpoints = distributed.checkpoints(checkpoints)  # rank 0 reads and writes; the others get its reads
    length = getattr(model, "input_length", None)
    train_y = _check_split("train", train_x, train_y, task, length, where)
    splits = _eval_splits(evals, task, length, where)
    monitor = _monitor(cfg, task, splits, where)
    if checkpoints is not None and checkpoints.is_done(run_key):
        return _finished_result(model, checkpoints.load_result(run_key))

    device = _prepare_device(cfg) if distributed is None else distributed.device
    model.to(device)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    state, payload = _resume(model, optimizer, task, cfg, checkpoints, run_key, where)
    trained = model if distributed is None else distributed.wrap(model, task, where)
    with _deterministic(cfg, device, payload), tqdm(
        range(state.epoch + 1, cfg.epochs + 1), total=cfg.epochs, initial=state.epoch,
        desc=run_key or task.name, disable=not progress, unit="epoch", leave=False,
    ) as epochs:
        for epoch in epochs:
            if state.stopped_early:
                break
            rows = [_train_epoch(trained, task, train_x, train_y, cfg, device, optimizer, epoch, length, where,
                                 distributed)]
            probabilities: dict[str, Any] = {}
            for split in splits.values():
                rows += _score_split(model, task, split, cfg, device, epoch, probabilities, distributed)
            value = state.end_epoch(epoch, rows, probabilities, monitor, cfg.patience, model)
            epochs.set_postfix(loss=f"{rows[0]['loss']:.4g}", **{f"{monitor.split}_{monitor.metric}": f"{value:.4g}"})
            if checkpoints is not None:
                checkpoints.save(run_key, _checkpoint(task, cfg, model, optimizer, device, state))
            if on_epoch_end is not None:
                on_epoch_end(epoch, pd.DataFrame(state.history))

    if cfg.restore_best and state.best_state is not None:
        model.load_state_dict(state.best_state)
    resumed_from = payload["epoch"] if payload is not None else None
    if checkpoints is not None:
        checkpoints.mark_done(run_key, _done_payload(state, monitor, device, resumed_from, model))
    return _result(state, monitor, str(device), resumed_from)


def _train_epoch(model, task: Task, x, y, cfg: TrainConfig, device, optimizer, epoch: int, length, where,
                 distributed: DistributedContext | None = None) -> dict:
    """One pass over the training windows in the (seed, epoch) order; the epoch's train row."""
    model.train()
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    scheduled = cfg.lr_schedule != "constant" or cfg.warmup_epochs > 0
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    # The order depends on (seed, epoch) only: every arm sees the same batches.
    order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
    loss_sum, outputs, labels = 0.0, [], []
    start = time.perf_counter()
    for batch_index, begin in enumerate(range(0, n, cfg.batch_size)):
        rows = np.sort(order[begin : begin + cfg.batch_size])  # sorted rows read a memmap faster
        # Distributed: this rank's part of the global batch ("share" of its rows count).
        mine, share = (rows, len(rows)) if distributed is None else distributed.shard(rows)
        xb = _batch(x, mine, length, device)
        yb = None if y is None else torch.from_numpy(y[mine]).to(device)
        with _autocast(device, cfg):
            out = model(xb)
        out = out.float()
        loss = task.loss(out, xb, yb)
        if distributed is None:
            loss_value = loss.item()
        else:  # the global batch's mean loss on every rank; the local loss scaled for DDP's average
            loss, loss_value = distributed.global_loss(loss, share, len(rows))
        if not np.isfinite(loss_value):
            raise FloatingPointError(
                f"{where}: training loss became {loss_value} at epoch {epoch}, batch {batch_index}; "
                "check the inputs for NaN/inf or lower the learning rate"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        if scheduled:
            rate = learning_rate(cfg, (epoch - 1) * steps_per_epoch + batch_index, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = rate
        optimizer.step()
        loss_sum += loss_value * len(rows)
        if task.keeps_outputs:
            outputs.append(out.detach().cpu())
        if y is not None:
            labels.append(y[rows])
    if distributed is not None:
        distributed.end_epoch(model)  # every rank evaluates and saves the same BatchNorm statistics
    elapsed = time.perf_counter() - start
    row = task.train_row(
        loss_sum, n, x.shape[1], torch.cat(outputs) if outputs else None, np.concatenate(labels) if labels else None
    )
    return {"epoch": epoch, "split": "train", **row, "samples_per_s": n / max(elapsed, 1e-9)}


def _score_split(model, task: Task, split: EvalSplit, cfg, device, epoch: int, probabilities: dict,
                 distributed: DistributedContext | None = None) -> list[dict]:
    """The split's row (and its per-record row); its class probabilities go to ``probabilities``."""
    loss_sum, outputs, elapsed = _forward(model, task, split.x, split.y, cfg, device, distributed)
    return _split_rows(task, split, epoch, loss_sum, outputs, elapsed, probabilities)


def _split_rows(task: Task, split: EvalSplit, epoch: int, loss_sum: float, outputs, elapsed: float,
                probabilities: dict) -> list[dict]:
    """The rows of a scored split from its summed loss and outputs (also used by training/batched.py)."""
    n = split.x.shape[0]
    speed = {"samples_per_s": n / max(elapsed, 1e-9)}
    rows = [{"epoch": epoch, "split": split.name, **task.eval_row(loss_sum, n, split.x.shape[1], outputs, split.y),
             **speed}]
    _keep_probabilities(task, split.name, outputs, probabilities)
    if split.records is not None:
        logits = split.records.mean(outputs)
        labels = torch.from_numpy(split.record_labels)
        record_loss = task.loss(logits, None, labels, reduction="sum").double().item()
        row = task.eval_row(record_loss, split.records.size, split.x.shape[1], logits, split.record_labels)
        rows.append({"epoch": epoch, "split": f"{split.name}_record", **row, **speed})
        if _keep_probabilities(task, f"{split.name}_record", logits, probabilities):
            probabilities[f"{split.name}_record_ids"] = split.records.ids.tolist()
    return rows


def _keep_probabilities(task: Task, name: str, outputs, probabilities: dict) -> bool:
    scores = task.probabilities(outputs)
    if scores is not None:
        probabilities[name] = scores
    return scores is not None


@torch.no_grad()
def _forward(model, task: Task, x, y, cfg: TrainConfig, device,
             distributed: DistributedContext | None = None) -> tuple[float, torch.Tensor | None, float]:
    """Summed loss, collected outputs (if the task keeps them) and seconds, in eval mode.
    Distributed: each rank scores its contiguous part and the loss sums are added up."""
    length = getattr(model, "input_length", None)
    was_training = model.training
    model.eval()
    n = x.shape[0]
    loss_sum, outputs = 0.0, []
    start = time.perf_counter()
    first, end = (0, n) if distributed is None else distributed.eval_range(n)
    for begin in range(first, end, cfg.eval_batch_size):
        rows = slice(begin, min(begin + cfg.eval_batch_size, end))
        xb = _batch(x, rows, length, device)
        with _autocast(device, cfg):
            out = model(xb)
        out = out.float()
        yb = None if y is None else torch.from_numpy(np.asarray(y[rows])).to(device)
        loss_sum += task.loss(out, xb, yb, reduction="sum").double().item()
        if task.keeps_outputs:
            outputs.append(out.cpu())
    if distributed is not None:
        loss_sum = distributed.sum(loss_sum)
    elapsed = time.perf_counter() - start
    model.train(was_training)
    return loss_sum, (torch.cat(outputs) if task.keeps_outputs else None), elapsed


def evaluate(model: nn.Module, task: Task, x, y, cfg: TrainConfig, device: torch.device | None = None) -> dict[str, float]:
    """Loss and metrics of one split in eval mode, streamed in ``eval_batch_size`` slices."""
    device = device or resolve_device(cfg.device)
    y = task.check_labels(y, x.shape[0])
    loss_sum, outputs, elapsed = _forward(model, task, x, y, cfg, device)
    row = task.eval_row(loss_sum, x.shape[0], x.shape[1], outputs, y)
    return {**row, "samples_per_s": x.shape[0] / max(elapsed, 1e-9)}


@torch.no_grad()
def predict(model: nn.Module, x, batch_size: int = 256, device: str = "auto") -> np.ndarray:
    """Model outputs (logits, reconstructions or codes) for every row of ``x``, in eval mode."""
    resolved = resolve_device(device)
    length = getattr(model, "input_length", None)
    was_training = model.training
    model.eval().to(resolved)
    outputs = [
        model(_batch(x, slice(begin, min(begin + batch_size, x.shape[0])), length, resolved)).float().cpu().numpy()
        for begin in range(0, x.shape[0], batch_size)
    ]
    model.train(was_training)
    return np.concatenate(outputs)


def _batch(x, rows, length: int | None, device: torch.device) -> torch.Tensor:
    # Fancy indexing on a memmap reads only these rows: the corpus is never materialised.
    batch = torch.from_numpy(np.array(x[rows], dtype=np.float32))  # a fresh, writable copy
    if length is not None:
        batch = batch.unsqueeze(1)  # window models take (B, 1, L); feature heads (B, F)
    return batch.to(device, non_blocking=True)


def _autocast(device: torch.device, cfg: TrainConfig):
    enabled = cfg.bf16 if device.type == "cuda" else cfg.bf16_cpu
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


# ---------------------------------------------------------------- input checks


def _check_split(name: str, x, y, task: Task, length: int | None, where: str):
    if not hasattr(x, "shape") or len(x.shape) != 2:
        raise ValueError(f"{where}: {name} x must be a 2-D array (windows x samples), got {getattr(x, 'shape', type(x))}")
    if length is not None and x.shape[1] != length:
        raise ValueError(f"{where}: {name} windows have {x.shape[1]} samples, the model expects {length}")
    if x.shape[0] == 0:
        raise ValueError(f"{where}: split {name} is empty")
    try:
        return task.check_labels(y, x.shape[0])
    except ValueError as error:
        raise ValueError(f"{where}: split {name} {error}") from None


def _eval_splits(evals: Mapping[str, Any] | None, task: Task, length, where: str) -> dict[str, EvalSplit]:
    splits = {}
    for name, value in dict(evals or {}).items():
        if name == "train":
            raise ValueError(f"{where}: 'train' is reserved for the loop's running training row; name the split otherwise")
        x, y, record_ids = (tuple(value) + (None, None))[:3] if isinstance(value, tuple) else (value, None, None)
        split = EvalSplit(name, x, _check_split(name, x, y, task, length, where))
        if record_ids is not None:
            try:
                if not task.supports_records:
                    raise ValueError(f"has record ids, but a {task.name} task is not scored per record")
                split.records = RecordIndex.build(record_ids, x.shape[0])
                split.record_labels = task.record_labels(split.y, split.records)
            except ValueError as error:
                raise ValueError(f"{where}: split {name} {error}") from None
        splits[name] = split
    return splits


def _monitor(cfg: TrainConfig, task: Task, splits: Mapping[str, EvalSplit], where: str) -> Monitor:
    split = cfg.monitor_split or ("test" if "test" in splits else next(iter(splits), "train"))
    names = [row for s in splits.values() for row in s.row_names]
    if split != "train" and split not in names:
        raise ValueError(f"{where}: monitor split {split!r} is not among the eval splits {sorted(names)}")
    metric = cfg.monitor_metric or task.default_monitor
    if metric not in ("loss", *task.metric_columns):
        raise ValueError(f"{where}: unknown monitor metric {metric!r} for task {task.name}")
    return Monitor(split, metric, task.lower_is_better(metric))


# ---------------------------------------------------------------- determinism and resume


def _prepare_device(cfg: TrainConfig) -> torch.device:
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        # cuBLAS is only deterministic with a fixed workspace; must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return device


@contextmanager
def _deterministic(cfg: TrainConfig, device: torch.device, payload: Mapping[str, Any] | None) -> Iterator[None]:
    """Deterministic kernels, the run's thread count and its own seeded RNG (restored from a
    checkpoint when resuming); the caller's settings and global RNG state come back after."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    try:
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Filling every new buffer with NaN (deterministic mode's default) cost ~4x on CPU and
        # adds nothing: the CPU kernels used here never read uninitialised memory.
        torch.utils.deterministic.fill_uninitialized_memory = False
        # fork_rng keeps dropout's RNG use inside this run: the caller's global state is untouched.
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(cfg.seed)
            if payload is not None:
                torch.set_rng_state(payload["torch_rng"])
                if cuda_devices and payload.get("cuda_rng") is not None:
                    torch.cuda.set_rng_state(payload["cuda_rng"], device)
            yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill


# Fields that change speed but not the numbers; a run may resume with other values.
_RESUME_IGNORED_FIELDS = {"num_threads"}


def _resume(model, optimizer, task: Task, cfg: TrainConfig, checkpoints, run_key, where):
    """The run's state: fresh, or the checkpoint's (weights and optimiser loaded in place)."""
    payload = checkpoints.load(run_key) if checkpoints is not None else None
    if payload is None:
        return RunState(), None
    differing = [f"task: checkpoint {payload['task']!r} vs now {task.describe()!r}"] if payload["task"] != task.describe() else []
    # A field added after the checkpoint was written counts as its default there.
    stored = {**asdict(TrainConfig()), **payload["config"]}
    differing += [
        f"{key}: checkpoint {stored.get(key)!r} vs now {value!r}"
        for key, value in asdict(cfg).items()
        if key not in _RESUME_IGNORED_FIELDS and stored.get(key) != value
    ]
    if differing:
        raise ValueError(
            f"{where}: the checkpoint in {checkpoints.run_dir(run_key)} was written with another "
            f"config/task ({'; '.join(differing)}); clear it with CheckpointStore.clear to retrain"
        )
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    return RunState.from_payload(payload), payload


def _checkpoint(task: Task, cfg: TrainConfig, model, optimizer, device, state: RunState) -> dict[str, Any]:
    return {
        "task": task.describe(), "config": asdict(cfg), "model": _cpu_state(model),
        "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        **state.as_payload(),
    }


def _done_payload(state: RunState, monitor: Monitor, device, resumed_from, model) -> dict[str, Any]:
    return {
        **state.as_payload(), "monitor": [monitor.split, monitor.metric], "device": str(device),
        "resumed_from_epoch": resumed_from, "model_state": _cpu_state(model),
    }


def _result(state: RunState, monitor: Monitor, device: str, resumed_from: int | None) -> FitResult:
    return FitResult(
        history=pd.DataFrame(state.history),
        best_state=state.best_state,
        best_epoch=state.best_epoch,
        best_value=state.best_value,
        monitor=(monitor.split, monitor.metric),
        stopped_early=state.stopped_early,
        epochs_run=state.epoch,
        device=device,
        resumed_from_epoch=resumed_from,
        predictions={
            selection: {key: value.numpy() if isinstance(value, torch.Tensor) else
                        np.asarray(value) if isinstance(value, list) else value
                        for key, value in kept.items()}
            for selection, kept in state.predictions.items()
        },
    )


def _finished_result(model: nn.Module, done: Mapping[str, Any]) -> FitResult:
    model.load_state_dict(done["model_state"])
    return _result(RunState.from_payload(done), Monitor(*done["monitor"], False), done["device"],
                   done.get("resumed_from_epoch"))
