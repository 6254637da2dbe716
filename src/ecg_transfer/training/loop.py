"""The one epoch loop, for a group of K runs trained together (K = 1: ``engine.fit``).

A *stepper* owns the models and their optimisers and knows how to run a training epoch
and score a split for every run of its group: :class:`ecg_transfer.training.engine.PlainStepper`
trains one model (locally or as one DDP replica), :class:`ecg_transfer.training.batched.StackedStepper`
trains K models stacked under ``torch.func.vmap``. Everything else is here, once: the input
checks, the monitor, resuming from a checkpoint, the epoch loop with its progress bar,
early stopping and per-epoch checkpoints (one payload layout, so a run interrupted in one
stepper resumes in the other), and finishing a run (best weights, ``result.pt``, the
:class:`FitResult`). Checkpoints hold only tensors and plain types (``torch.load(...,
weights_only=True)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from ecg_transfer.models.cae import with_channel_axis
from ecg_transfer.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere
from ecg_transfer.runs import cosmetic_fields
from ecg_transfer.training.tasks import RecordIndex, Task

if TYPE_CHECKING:
    from ecg_transfer.training.engine import TrainConfig


@dataclass
class FitResult:
    """What a run produced; ``history`` has one row per (epoch, split).

    ``predictions`` (classification): ``{"honest": {"epoch": e, <split>: probs (N, C), ...},
    "best_test": {...}}``, the float32 class probabilities of every eval split at the epoch
    kept by the monitor ("honest") and at the epoch with the best test headline metric
    (``task.headline_metric``, f1_weighted; "best_test", earliest on ties; only with a "test"
    split). A split scored per record also has ``<split>_record`` (R, C), one row per record
    (softmax of the mean window logits), and ``<split>_record_ids`` (R,), in order of first
    appearance.
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

    def targets(self) -> dict[str, np.ndarray]:
        """Row name -> its labels (windows; records for ``<name>_record``), for ``Task.complete_rows``."""
        found = {} if self.y is None else {self.name: self.y}
        if self.records is not None:
            found[f"{self.name}_record"] = self.record_labels
        return found


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

    def end_epoch(self, epoch, rows, probabilities, monitor: Monitor, patience, model,
                  headline: str | None = None) -> float:
        """Add the epoch's rows, keep the best weights/predictions, count bad epochs.
        ``headline``: the task's test metric that picks the "best_test" predictions."""
        self.history.extend(rows)
        value = next(r[monitor.metric] for r in rows if r["split"] == monitor.split)
        if monitor.improves(value, self.best_value):
            self.best_value, self.best_epoch, self.best_state, self.bad_epochs = (
                float(value), epoch, cpu_state(model), 0
            )
            if probabilities:
                self.predictions["honest"] = {"epoch": epoch, **probabilities}
        else:
            self.bad_epochs += 1
            if patience is not None and self.bad_epochs >= patience:
                self.stopped_early = True
        test = (next((r.get(headline) for r in rows if r["split"] == "test"), None)
                if probabilities and headline else None)
        if test is not None and (self.best_test_value is None or test > self.best_test_value):
            self.best_test_value = float(test)
            self.predictions["best_test"] = {"epoch": epoch, **probabilities}
        self.epoch = epoch
        return value


# ---------------------------------------------------------------- devices and batches


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"TrainConfig.device is {device!r} but CUDA is not available here")
    return resolved


def prepare_device(cfg: TrainConfig) -> torch.device:
    """The training device, with cuBLAS made deterministic (before its first use) on CUDA."""
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return device


def values_per_row(x) -> int:
    """Values in one row of ``x``: a window's samples over all its leads (C x L; L for one
    lead, so per-sample losses of one-lead windows are as they were), or a row's features."""
    return int(np.prod(x.shape[1:]))


def to_batch(x, rows, length: int | None, device: torch.device) -> torch.Tensor:
    """Rows of ``x`` as a float32 batch on ``device``; window models take (B, C, L)."""
    # Fancy indexing on a memmap reads only these rows: the corpus is never materialised.
    batch = torch.from_numpy(np.array(x[rows], dtype=np.float32))  # a fresh, writable copy
    if length is not None:
        batch = with_channel_axis(batch)  # one-lead (B, L) -> (B, 1, L); feature heads (B, F)
    return batch.to(device, non_blocking=True)


def autocast(device: torch.device, cfg: TrainConfig):
    enabled = cfg.bf16 if device.type == "cuda" else cfg.bf16_cpu
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def cpu_state(model) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def adam(parameters, cfg: TrainConfig) -> torch.optim.Adam:
    """The optimiser of every run: Adam over the trainable tensors."""
    return torch.optim.Adam(list(parameters), lr=cfg.lr, weight_decay=cfg.weight_decay)


def split_rows(task: Task, split: EvalSplit, epoch: int, loss_sum: float, outputs, elapsed: float,
               probabilities: dict) -> list[dict]:
    """The rows of a scored split (and its per-record row) from its summed loss and outputs;
    its class probabilities go to ``probabilities``."""
    n = split.x.shape[0]
    speed = {"samples_per_s": n / max(elapsed, 1e-9)}
    rows = [{"epoch": epoch, "split": split.name, **task.eval_row(loss_sum, n, values_per_row(split.x), outputs, split.y),
             **speed}]
    _keep_probabilities(task, split.name, outputs, probabilities)
    if split.records is not None:
        logits = split.records.mean(outputs)
        labels = torch.from_numpy(split.record_labels)
        record_loss = task.loss(logits, None, labels, reduction="sum").double().item()
        row = task.eval_row(record_loss, split.records.size, values_per_row(split.x), logits, split.record_labels)
        rows.append({"epoch": epoch, "split": f"{split.name}_record", **row, **speed})
        if _keep_probabilities(task, f"{split.name}_record", logits, probabilities):
            probabilities[f"{split.name}_record_ids"] = split.records.ids.tolist()
    return rows


def _keep_probabilities(task: Task, name: str, outputs, probabilities: dict) -> bool:
    scores = task.probabilities(outputs)
    if scores is not None:
        probabilities[name] = scores
    return scores is not None


def training_error(where: str, value: float, epoch: int, batch_index: int) -> FloatingPointError:
    return FloatingPointError(
        f"{where}: training loss became {value} at epoch {epoch}, batch {batch_index}; "
        "check the inputs for NaN/inf or lower the learning rate"
    )


# ---------------------------------------------------------------- the rows of an epoch


@dataclass(frozen=True)
class RowGroups:
    """Training rows in groups (e.g. the windows of one drawn copy of a record), of which each
    epoch trains one row per group: ``members`` holds the rows sorted by group, group g's
    rows are ``members[starts[g] : starts[g] + counts[g]]``."""

    members: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    @classmethod
    def build(cls, group_ids, n: int, where: str) -> RowGroups:
        """From one group id per training row (any sortable ids; groups in sorted id order)."""
        ids = np.asarray(group_ids)
        if ids.shape != (n,):
            raise ValueError(f"{where}: train_groups must hold one group id per training row ({n}), got shape {ids.shape}")
        _, codes, counts = np.unique(ids, return_inverse=True, return_counts=True)
        members = np.argsort(codes.reshape(-1), kind="stable")
        return cls(members, np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)

    @property
    def size(self) -> int:
        return int(self.counts.size)

    def pick(self, rng: np.random.Generator) -> np.ndarray:
        """One row of every group, uniformly at random, in group order."""
        return self.members[self.starts + rng.integers(0, self.counts)]


def epoch_rows(seed: int, epoch: int, n: int, groups: RowGroups | None = None) -> np.ndarray:
    """The training rows of ``epoch`` in the order they train, from ``(seed, epoch)`` alone (so
    every arm sees the same batches and a resumed run the same rows). Without ``groups``: a
    permutation of all ``n`` rows. With them: one row per group drawn at random, then shuffled;
    the same generator draws both, and without groups it draws exactly the permutation alone."""
    rng = np.random.default_rng([seed, epoch])
    if groups is None:
        return rng.permutation(n)
    chosen = groups.pick(rng)
    return chosen[rng.permutation(chosen.size)]


# ---------------------------------------------------------------- input checks


def check_task(task: Task, caller: str) -> None:
    if not isinstance(task, Task):
        raise TypeError(f"{caller}: task must be a Task (ClassificationTask(classes), ReconstructionTask()), got {task!r}")


def check_split(name: str, x, y, task: Task, length: int | None, where: str):
    windows_of_leads = length is not None and hasattr(x, "shape") and len(x.shape) == 3
    if not hasattr(x, "shape") or (len(x.shape) != 2 and not windows_of_leads):
        raise ValueError(
            f"{where}: {name} x must be a 2-D array (windows x samples; windows x leads x samples for "
            f"several leads), got {getattr(x, 'shape', type(x))}"
        )
    if length is not None and x.shape[-1] != length:
        raise ValueError(f"{where}: {name} windows have {x.shape[-1]} samples, the model expects {length}")
    if x.shape[0] == 0:
        raise ValueError(f"{where}: split {name} is empty")
    try:
        return task.check_labels(y, x.shape[0])
    except ValueError as error:
        raise ValueError(f"{where}: split {name} {error}") from None


def eval_splits(evals: Mapping[str, Any] | None, task: Task, length, where: str) -> dict[str, EvalSplit]:
    splits = {}
    for name, value in dict(evals or {}).items():
        if name == "train":
            raise ValueError(f"{where}: 'train' is reserved for the loop's running training row; name the split otherwise")
        x, y, record_ids = (tuple(value) + (None, None))[:3] if isinstance(value, tuple) else (value, None, None)
        split = EvalSplit(name, x, check_split(name, x, y, task, length, where))
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


def is_test_split(name: str) -> bool:
    return name == "test" or name.startswith("test_")


def choose_monitor(cfg: TrainConfig, task: Task, splits: Mapping[str, EvalSplit], where: str) -> Monitor:
    """The monitored (split, metric). A task with ``validation_monitor`` (classification) picks
    its kept ("honest") epoch on a validation split only, "val" unless ``monitor_split`` names
    another; other tasks default to their held-out "test" split, else the first split."""
    names = [row for s in splits.values() for row in s.row_names]
    if task.validation_monitor:
        split = cfg.monitor_split or "val"
        if split == "train" or is_test_split(split):
            raise ValueError(
                f"{where}: monitor_split {split!r} would select the kept ('honest') epoch on the "
                f"{'training' if split == 'train' else 'test'} data; a {task.name} run must monitor a "
                "validation split (TrainConfig.monitor_split, e.g. 'val')"
            )
    else:
        split = cfg.monitor_split or ("test" if "test" in splits else next(iter(splits), "train"))
    if split != "train" and split not in names:
        raise ValueError(
            f"{where}: monitor split {split!r} is not among the eval splits {sorted(names)}"
            + ("; a classifier needs a validation split in evals to pick its kept epoch" if task.validation_monitor else "")
        )
    metric = cfg.monitor_metric or task.default_monitor
    if metric not in ("loss", *task.metric_columns):
        raise ValueError(f"{where}: unknown monitor metric {metric!r} for task {task.name}")
    return Monitor(split, metric, task.lower_is_better(metric))


@dataclass
class LoopContext:
    """What every run of a group shares: the task, the settings (but the seed), the scored
    splits and monitor, where checkpoints go, the device and whether to show progress."""

    task: Task
    cfg: TrainConfig
    splits: dict[str, EvalSplit]
    monitor: Monitor
    checkpoints: Any = None
    device: torch.device | None = None
    progress: bool = True


def prepare(task: Task, length: int | None, train_x, train_y, evals, cfg: TrainConfig, checkpoints,
            keys: Sequence[str | None], where: str) -> tuple[np.ndarray | None, LoopContext]:
    """The checks every entry point makes before training: checked labels and the loop's context."""
    if checkpoints is not None and not all(keys):
        raise ValueError(f"{where}: a run key {'per trial ' if len(keys) > 1 else ''}is needed to checkpoint")
    train_y = check_split("train", train_x, train_y, task, length, where)
    splits = eval_splits(evals, task, length, where)
    return train_y, LoopContext(task, cfg, splits, choose_monitor(cfg, task, splits, where), checkpoints)


# ---------------------------------------------------------------- determinism and resume


@contextmanager
def deterministic(cfg: TrainConfig, device: torch.device, payload: Mapping[str, Any] | None) -> Iterator[None]:
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


def resume(model, optimizer, task: Task, cfg: TrainConfig, checkpoints, run_key, where):
    """The run's state: fresh, or the checkpoint's (weights and optimiser loaded in place). A
    field the config marks cosmetic (speed, not numbers; ecg_transfer.runs) may differ."""
    payload = checkpoints.load(run_key) if checkpoints is not None else None
    if payload is None:
        return RunState(), None
    differing = [f"task: checkpoint {payload['task']!r} vs now {task.describe()!r}"] if payload["task"] != task.describe() else []
    # A field added after the checkpoint was written counts as its default there.
    stored = {**asdict(type(cfg)()), **payload["config"]}
    differing += [
        f"{key}: checkpoint {stored.get(key)!r} vs now {value!r}"
        for key, value in asdict(cfg).items()
        if key not in cosmetic_fields(type(cfg)) and stored.get(key) != value
    ]
    if differing:
        raise ValueError(
            f"{where}: the checkpoint in {checkpoints.run_dir(run_key)} was written with another "
            f"config/task ({'; '.join(differing)}); clear it with CheckpointStore.clear to retrain"
        )
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    return RunState.from_payload(payload), payload


def checkpoint_payload(task: Task, cfg: TrainConfig, parts: Mapping[str, Any], state: RunState) -> dict[str, Any]:
    """``checkpoint.pt``: task, config, the stepper's ``parts`` (model, optimizer, torch_rng,
    cuda_rng) and the run state; the one layout every stepper writes and resumes from."""
    return {"task": task.describe(), "config": asdict(cfg), **parts, **state.as_payload()}


def done_payload(state: RunState, monitor: Monitor, device, resumed_from, model) -> dict[str, Any]:
    """``result.pt``: the final run state and weights."""
    return {
        **state.as_payload(), "monitor": [monitor.split, monitor.metric], "device": str(device),
        "resumed_from_epoch": resumed_from, "model_state": cpu_state(model),
    }


def result(state: RunState, monitor: Monitor, device: str, resumed_from: int | None) -> FitResult:
    fitted = FitResult(
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
    if "honest" in fitted.predictions:
        check_honest_epoch(fitted.history, fitted.predictions, monitor)
    return fitted


def finished_result(model: nn.Module, done: Mapping[str, Any], task: Task) -> FitResult:
    """A finished run's stored result, its final weights loaded into ``model``."""
    model.load_state_dict(done["model_state"])
    split, metric = done["monitor"]
    return result(RunState.from_payload(done), Monitor(split, metric, task.lower_is_better(metric)), done["device"],
                  done.get("resumed_from_epoch"))


def check_honest_epoch(history: pd.DataFrame, predictions: Mapping[str, Any], monitor: Monitor | Sequence,
                       task: Task | None = None) -> int:
    """The epoch of the saved "honest" predictions, checked against ``history``: it must be the
    monitor's best epoch (earliest on ties), e.g. the best validation f1_weighted (single-label)
    or auroc_macro (multi-label). ``monitor``: a :class:`Monitor` or ``(split, metric)``, whose
    direction is then the ``task``'s (``lower_is_better``; without a task lower is better for
    "loss" only). ValueError naming both epochs otherwise (predictions selected on another split)."""
    if not isinstance(monitor, Monitor):
        split, metric = monitor
        monitor = Monitor(split, metric, task.lower_is_better(metric) if task is not None else metric == "loss")
    rows = history[history["split"] == monitor.split]
    if rows.empty or monitor.metric not in rows:
        raise ValueError(f"check_honest_epoch: the history has no {monitor.split!r} {monitor.metric} rows")
    best, best_value = None, None
    for epoch, value in zip(rows["epoch"], rows[monitor.metric]):  # the loop's own rule: earliest best
        if monitor.improves(float(value), best_value):
            best, best_value = int(epoch), float(value)
    saved = int(predictions["honest"]["epoch"])
    if saved != best:
        raise ValueError(
            f"the saved 'honest' predictions are from epoch {saved}, but the best {monitor.split} "
            f"{monitor.metric} in the history is at epoch {best}: the predictions were not selected on "
            f"{monitor.split!r} (retrain the run with a validation monitor)"
        )
    return saved


# ---------------------------------------------------------------- the loop


class Stepper(Protocol):
    """What the loop asks of the models of a group; ``position`` counts the active runs."""

    rng_payload: Mapping[str, Any] | None  # checkpoint whose global RNG state the loop restores

    def train_epoch(self, epoch: int) -> list[list[dict]]: ...  # one train row per active run
    def score(self, split: EvalSplit, epoch: int, probabilities: list[dict]) -> list[list[dict]]: ...
    def view(self, position: int) -> Any: ...  # has .state_dict(): the run's current weights
    def parts(self, position: int) -> dict[str, Any]: ...  # model, optimizer, torch_rng, cuda_rng
    def keep(self, positions: list[int]) -> None: ...  # go on with these runs only
    def load_final(self, position: int, model: nn.Module) -> None: ...


@dataclass
class Run:
    """One run of a group: its key, settings, state, the checkpoint it resumed from and the
    model that receives its final weights."""

    key: str | None
    config: TrainConfig
    state: RunState
    payload: Mapping[str, Any] | None
    model: nn.Module
    optimizer_state: dict[str, Any] | None = None  # resumed Adam state, for a stepper that builds its own


RunEpochEnd = Callable[[int, int, pd.DataFrame], None]


def train_group(stepper: Stepper, runs: Sequence[Run], ctx: LoopContext, on_run_epoch_end: RunEpochEnd | None = None,
                on_epoch_end: Callable[[int], None] | None = None) -> list[FitResult]:
    """Train the runs (all at the same epoch) to the end; one :class:`FitResult` per run.

    After each epoch every run's checkpoint is written, then ``on_run_epoch_end(i, epoch,
    history_so_far)`` runs for every run i still training, then ``on_epoch_end(epoch)``. A run
    that stops early is finished at once and dropped from the group; the others go on.
    """
    results: list[FitResult | None] = [None] * len(runs)
    active = list(range(len(runs)))

    def finish(positions: list[int]) -> None:
        nonlocal active
        for position in positions:
            results[active[position]] = _finish(stepper, position, runs[active[position]], ctx)
        remaining = [p for p in range(len(active)) if p not in positions]
        if positions and remaining:
            stepper.keep(remaining)
        active = [active[p] for p in remaining]

    finish([p for p, i in enumerate(active) if runs[i].state.stopped_early])  # stopped: only finish
    first, label = runs[0].state.epoch, runs[0].key or ctx.task.name
    with deterministic(runs[0].config, ctx.device, stepper.rng_payload), tqdm(
        range(first + 1, ctx.cfg.epochs + 1), total=ctx.cfg.epochs, initial=first, unit="epoch", leave=False,
        desc=label if len(runs) == 1 else f"{label} (+{len(runs) - 1} trials)", disable=not ctx.progress,
    ) as epochs:
        for epoch in epochs:
            if not active:
                break
            _epoch(stepper, [runs[i] for i in active], ctx, epoch, epochs)
            if on_run_epoch_end is not None:
                for i in active:
                    on_run_epoch_end(i, epoch, pd.DataFrame(runs[i].state.history))
            if on_epoch_end is not None:
                on_epoch_end(epoch)
            finish([p for p, i in enumerate(active) if runs[i].state.stopped_early])
    finish(list(range(len(active))))
    return results


def _epoch(stepper: Stepper, active: Sequence[Run], ctx: LoopContext, epoch: int, bar) -> None:
    """Train, score every split, update each run's state and write its checkpoint."""
    rows = stepper.train_epoch(epoch)
    probabilities: list[dict[str, Any]] = [{} for _ in active]
    for split in ctx.splits.values():
        for position, split_rows in enumerate(stepper.score(split, epoch, probabilities)):
            rows[position] += split_rows
    targets = {name: labels for split in ctx.splits.values() for name, labels in split.targets().items()}
    values = []
    for position, run in enumerate(active):
        ctx.task.complete_rows(rows[position], probabilities[position], targets, ctx.monitor.split)
        values.append(run.state.end_epoch(epoch, rows[position], probabilities[position], ctx.monitor,
                                          ctx.cfg.patience, stepper.view(position), ctx.task.headline_metric))
        if ctx.checkpoints is not None:
            ctx.checkpoints.save(run.key, checkpoint_payload(ctx.task, run.config, stepper.parts(position), run.state))
    postfix = {"loss": f"{np.mean([r[0]['loss'] for r in rows]):.4g}",
               f"{ctx.monitor.split}_{ctx.monitor.metric}": f"{np.mean(values):.4g}"}
    bar.set_postfix(**postfix, **({"trials": len(active)} if len(active) > 1 else {}))


def _finish(stepper: Stepper, position: int, run: Run, ctx: LoopContext) -> FitResult:
    stepper.load_final(position, run.model)
    if ctx.cfg.restore_best and run.state.best_state is not None:
        run.model.load_state_dict(run.state.best_state)
    resumed_from = run.payload["epoch"] if run.payload is not None else None
    if ctx.checkpoints is not None:
        ctx.checkpoints.mark_done(run.key, done_payload(run.state, ctx.monitor, ctx.device, resumed_from, run.model))
    return result(run.state, ctx.monitor, str(ctx.device), resumed_from)
