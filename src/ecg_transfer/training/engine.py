"""The one training loop, shared by the CAE and every classifier arm.

Arms must differ only in their initialisation, so they share this loop: the
data order of an epoch comes from ``(seed, epoch)`` alone (not from the model),
the optimiser is Adam over the trainable parameters, and every split in
``evals`` is scored after every epoch. With a :class:`CheckpointStore` the loop
saves weights, optimiser and RNG state after each epoch, so an interrupted run
continues at the next epoch and ends with the same history as an uninterrupted
one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ecg_transfer.models.cae import CaeConfig
from ecg_transfer.training.checkpoints import CheckpointStore
from ecg_transfer.training.metrics import class_names, classification_metrics

TASKS = ("reconstruction", "classification")
LR_SCHEDULES = ("constant", "cosine")
_LOWER_IS_BETTER = {"loss", "mse", "sse_per_window"}


@dataclass
class TrainConfig:
    """Optimisation settings; identical across arms by construction of the study.

    ``lr=0.005`` with Adam and a constant rate is the paper's recipe; plain
    (unweighted) cross-entropy too. ``bf16`` turns on bfloat16 autocast on CUDA;
    ``bf16_cpu`` does the same on CPU and is off by default because it did not
    pay on the measured 2-core CPU (docs/models_and_training.md).
    ``monitor_split``/``monitor_metric`` choose the epoch kept as best and
    drive early stopping; None picks "test" (as the paper) or else the first
    eval split, and "loss" for reconstruction, "f1_weighted" for classification.

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
    n_classes: int = 11
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
    """What a run produced; ``history`` has one row per (epoch, split)."""

    history: pd.DataFrame
    best_state: dict[str, torch.Tensor] | None
    best_epoch: int | None
    best_value: float | None
    monitor: tuple[str, str]
    stopped_early: bool
    epochs_run: int
    device: str
    resumed_from_epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"TrainConfig.device is {device!r} but CUDA is not available here")
    return resolved


def _window_length(model: nn.Module) -> int | None:
    """Window models (CAE, RhythmClassifier) take (B, 1, L); feature heads take (B, F)."""
    cfg = getattr(model, "cfg", None)
    return cfg.window_length if isinstance(cfg, CaeConfig) else None


def _check_split(name: str, x, y, task: str, n_classes: int, window_length: int | None, where: str):
    if not hasattr(x, "shape") or len(x.shape) != 2:
        raise ValueError(f"{where}: {name} x must be a 2-D array (windows x samples), got {getattr(x, 'shape', type(x))}")
    if window_length is not None and x.shape[1] != window_length:
        raise ValueError(f"{where}: {name} windows have {x.shape[1]} samples, the model expects {window_length}")
    if x.shape[0] == 0:
        raise ValueError(f"{where}: split {name} is empty")
    if task == "classification":
        if y is None:
            raise ValueError(f"{where}: split {name} has no labels for a classification task")
        y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{where}: {name} labels must be integer class indices, got dtype {y.dtype}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"{where}: {name} has {x.shape[0]} windows but labels of shape {y.shape}")
        if y.min() < 0 or y.max() >= n_classes:
            raise ValueError(f"{where}: {name} labels fall outside 0..{n_classes - 1}")
        return y.astype(np.int64)
    return None


def _batch(x, rows, window_length: int | None, device: torch.device) -> torch.Tensor:
    # Fancy indexing on a memmap reads only these rows: the corpus is never materialised.
    batch = torch.from_numpy(np.array(x[rows], dtype=np.float32))  # a fresh, writable copy
    if window_length is not None:
        batch = batch.unsqueeze(1)
    return batch.to(device, non_blocking=True)


def _autocast(device: torch.device, cfg: TrainConfig):
    enabled = cfg.bf16 if device.type == "cuda" else cfg.bf16_cpu
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _metric_columns(task: str, n_classes: int) -> list[str]:
    if task == "classification":
        return ["f1_weighted", "f1_macro", "accuracy"] + [f"f1_{name}" for name in class_names(n_classes)]
    return ["mse", "sse_per_window"]


@torch.no_grad()
def evaluate(model: nn.Module, task: str, x, y, cfg: TrainConfig, device: torch.device | None = None) -> dict[str, float]:
    """Loss and metrics of one split in eval mode, streamed in ``eval_batch_size`` slices."""
    device = device or resolve_device(cfg.device)
    window_length = _window_length(model)
    was_training = model.training
    model.eval()
    n = x.shape[0]
    loss_sum = 0.0
    predictions = []
    start = time.perf_counter()
    for begin in range(0, n, cfg.eval_batch_size):
        rows = slice(begin, min(begin + cfg.eval_batch_size, n))
        xb = _batch(x, rows, window_length, device)
        with _autocast(device, cfg):
            out = model(xb)
        out = out.float()
        if task == "classification":
            yb = torch.from_numpy(np.asarray(y[rows])).to(device)
            loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
            predictions.append(out.argmax(dim=1).cpu().numpy())
        else:
            loss_sum += F.mse_loss(out, xb, reduction="sum").double().item()
    elapsed = time.perf_counter() - start
    model.train(was_training)
    if task == "classification":
        row = {"loss": loss_sum / n, **classification_metrics(y, np.concatenate(predictions), cfg.n_classes)}
    else:
        length = x.shape[1]
        row = {"loss": loss_sum / (n * length), "mse": loss_sum / (n * length), "sse_per_window": loss_sum / n}
    row["samples_per_s"] = n / max(elapsed, 1e-9)
    return row


@torch.no_grad()
def predict(model: nn.Module, x, batch_size: int = 256, device: str = "auto") -> np.ndarray:
    """Model outputs (logits, reconstructions or codes) for every row of ``x``, in eval mode."""
    resolved = resolve_device(device)
    window_length = _window_length(model)
    was_training = model.training
    model.eval().to(resolved)
    outputs = [
        model(_batch(x, slice(begin, min(begin + batch_size, x.shape[0])), window_length, resolved)).float().cpu().numpy()
        for begin in range(0, x.shape[0], batch_size)
    ]
    model.train(was_training)
    return np.concatenate(outputs)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


# Fields that change speed but not the numbers; a run may resume with other values.
_RESUME_IGNORED_FIELDS = {"num_threads"}


def _resume_differences(payload: Mapping[str, Any], task: str, cfg: TrainConfig) -> list[str]:
    differing = [f"task: checkpoint {payload['task']!r} vs now {task!r}"] if payload["task"] != task else []
    current = asdict(cfg)
    # A field added after the checkpoint was written counts as its default there.
    stored = {**asdict(TrainConfig()), **payload["config"]}
    differing += [
        f"{key}: checkpoint {stored.get(key)!r} vs now {value!r}"
        for key, value in current.items()
        if key not in _RESUME_IGNORED_FIELDS and stored.get(key) != value
    ]
    return differing


def _result_from_done(model: nn.Module, done: Mapping[str, Any]) -> FitResult:
    model.load_state_dict(done["model_state"])
    return FitResult(
        history=done["history"],
        best_state=done["best_state"],
        best_epoch=done["best_epoch"],
        best_value=done["best_value"],
        monitor=tuple(done["monitor"]),
        stopped_early=done["stopped_early"],
        epochs_run=done["epochs_run"],
        device=done["device"],
        resumed_from_epoch=done.get("resumed_from_epoch"),
    )


def fit(
    model: nn.Module,
    task: str,
    train_x,
    train_y,
    evals: Mapping[str, tuple] | None,
    cfg: TrainConfig,
    checkpoints: CheckpointStore | None = None,
    run_key: str | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, pd.DataFrame], None] | None = None,
) -> FitResult:
    """Train ``model`` in place and return its per-epoch history.

    ``train_x``/eval x: (N, 2048) float32 arrays or memmaps for window models,
    (N, F) for feature heads; labels are integer class indices. ``evals`` maps
    split names (not "train": that row is the loop's own running average over
    the epoch, in train mode) to ``(x, y)``; y is ignored for reconstruction.
    ``on_epoch_end(epoch, history_so_far)`` runs after the epoch's checkpoint
    is written (tests raise from it to simulate an interruption).
    A finished run found in ``checkpoints`` is not retrained: its stored result
    is returned and its final weights loaded into ``model``.
    """
    where = f"fit[{run_key or task}]"
    if task not in TASKS:
        raise ValueError(f"{where}: task must be one of {TASKS}, got {task!r}")
    if checkpoints is not None and not run_key:
        raise ValueError(f"{where}: a run_key is needed to checkpoint")
    evals = dict(evals or {})
    if "train" in evals:
        raise ValueError(f"{where}: 'train' is reserved for the loop's running training row; name the split otherwise")
    window_length = _window_length(model)
    train_y = _check_split("train", train_x, train_y, task, cfg.n_classes, window_length, where)
    eval_sets = {}
    for name, split in evals.items():
        x, y = split if isinstance(split, tuple) else (split, None)
        eval_sets[name] = (x, _check_split(name, x, y, task, cfg.n_classes, window_length, where))
    monitor_split = cfg.monitor_split or ("test" if "test" in eval_sets else next(iter(eval_sets), "train"))
    if monitor_split != "train" and monitor_split not in eval_sets:
        raise ValueError(f"{where}: monitor split {monitor_split!r} is not among the eval splits {sorted(eval_sets)}")
    monitor_metric = cfg.monitor_metric or ("loss" if task == "reconstruction" else "f1_weighted")
    if monitor_metric not in ["loss"] + _metric_columns(task, cfg.n_classes):
        raise ValueError(f"{where}: unknown monitor metric {monitor_metric!r} for task {task}")
    lower_is_better = monitor_metric in _LOWER_IS_BETTER

    if checkpoints is not None and checkpoints.is_done(run_key):
        return _result_from_done(model, checkpoints.load_result(run_key))

    device = resolve_device(cfg.device)
    if device.type == "cuda":
        # cuBLAS is only deterministic with a fixed workspace; must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    model.to(device)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    state = {
        "epoch": 0, "history": [], "best_state": None, "best_value": None, "best_epoch": None,
        "bad_epochs": 0, "stopped_early": False,
    }
    resumed_from = None
    payload = checkpoints.load(run_key) if checkpoints is not None else None
    if payload is not None:
        differing = _resume_differences(payload, task, cfg)
        if differing:
            raise ValueError(
                f"{where}: the checkpoint in {checkpoints.run_dir(run_key)} was written with another "
                f"config/task ({'; '.join(differing)}); clear it with CheckpointStore.clear to retrain"
            )
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        state.update({key: payload[key] for key in state})
        resumed_from = state["epoch"]

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
            _train_epochs(
                model, task, train_x, train_y, eval_sets, cfg, device, optimizer, state,
                (monitor_split, monitor_metric, lower_is_better), checkpoints, run_key, progress,
                on_epoch_end, where, window_length, cuda_devices,
            )
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill

    if cfg.restore_best and state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    history = pd.DataFrame(state["history"])
    result = FitResult(
        history=history,
        best_state=state["best_state"],
        best_epoch=state["best_epoch"],
        best_value=state["best_value"],
        monitor=(monitor_split, monitor_metric),
        stopped_early=state["stopped_early"],
        epochs_run=state["epoch"],
        device=str(device),
        resumed_from_epoch=resumed_from,
    )
    if checkpoints is not None:
        checkpoints.mark_done(run_key, {**result.__dict__, "model_state": _cpu_state(model)})
    return result


def _train_epochs(
    model, task, train_x, train_y, eval_sets, cfg, device, optimizer, state, monitor, checkpoints,
    run_key, progress, on_epoch_end, where, window_length, cuda_devices,
) -> None:
    monitor_split, monitor_metric, lower_is_better = monitor
    n = train_x.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    scheduled = cfg.lr_schedule != "constant" or cfg.warmup_epochs > 0
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    epochs = tqdm(
        range(state["epoch"] + 1, cfg.epochs + 1), total=cfg.epochs, initial=state["epoch"],
        desc=run_key or task, disable=not progress, unit="epoch", leave=False,
    )
    for epoch in epochs:
        if state["stopped_early"]:
            break
        model.train()
        # The order depends on (seed, epoch) only: every arm sees the same batches.
        order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
        loss_sum, predictions, labels = 0.0, [], []
        start = time.perf_counter()
        for batch_index, begin in enumerate(range(0, n, cfg.batch_size)):
            rows = np.sort(order[begin : begin + cfg.batch_size])  # sorted rows read a memmap faster
            xb = _batch(train_x, rows, window_length, device)
            with _autocast(device, cfg):
                out = model(xb)
            out = out.float()
            if task == "classification":
                yb = torch.from_numpy(train_y[rows]).to(device)
                loss = F.cross_entropy(out, yb)
            else:
                loss = F.mse_loss(out, xb)
            loss_value = loss.item()
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
            if task == "classification":
                predictions.append(out.detach().argmax(dim=1).cpu().numpy())
                labels.append(train_y[rows])
        elapsed = time.perf_counter() - start
        train_row = {"epoch": epoch, "split": "train", "loss": loss_sum / n}
        if task == "classification":
            train_row.update(classification_metrics(np.concatenate(labels), np.concatenate(predictions), cfg.n_classes))
        else:
            train_row.update({"mse": loss_sum / n, "sse_per_window": loss_sum / n * train_x.shape[1]})
        train_row["samples_per_s"] = n / max(elapsed, 1e-9)
        rows_this_epoch = [train_row]
        for name, (x, y) in eval_sets.items():
            rows_this_epoch.append({"epoch": epoch, "split": name, **evaluate(model, task, x, y, cfg, device)})
        state["history"].extend(rows_this_epoch)

        value = next(r[monitor_metric] for r in rows_this_epoch if r["split"] == monitor_split)
        best = state["best_value"]
        improved = best is None or (value < best if lower_is_better else value > best)
        if improved:
            state.update(best_value=float(value), best_epoch=epoch, best_state=_cpu_state(model), bad_epochs=0)
        else:
            state["bad_epochs"] += 1
            if cfg.patience is not None and state["bad_epochs"] >= cfg.patience:
                state["stopped_early"] = True
        state["epoch"] = epoch
        epochs.set_postfix(loss=f"{train_row['loss']:.4g}", **{f"{monitor_split}_{monitor_metric}": f"{value:.4g}"})
        if checkpoints is not None:
            checkpoints.save(run_key, {
                "task": task, "config": asdict(cfg), "model": _cpu_state(model),
                "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if cuda_devices else None,
                **state,
            })
        if on_epoch_end is not None:
            on_epoch_end(epoch, pd.DataFrame(state["history"]))
    epochs.close()
