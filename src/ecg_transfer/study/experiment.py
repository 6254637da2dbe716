"""One arm of the starvation experiment: for every training fraction and trial, train on that
trial's bootstrap sample and evaluate every epoch on the fixed validation and test splits.

The labelled data is single-label (one class per window: cross-entropy, the paper's) or
multi-label (a 0/1 target per label, ``preprocessing.task: multilabel``: binary cross-entropy);
:attr:`ArmData.task` says which, and every step below follows it (:func:`arm_task`).

Every arm goes through :func:`run_arm` and the one training engine, so arms differ only in the
model their recipe builds: same samples, same seeds, same optimiser, same evaluation. The runs
are planned as data first (:func:`plan_runs`), then trained alone or in stacked groups
(:class:`_ArmTrainer`), then collected (:func:`collect_runs`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from ecg_transfer.runs import COSMETIC, fingerprint, result_settings, run_record
from ecg_transfer.study.arms import ArmSpec
from ecg_transfer.study.summaries import HONEST_MONITOR, summarise_runs
from ecg_transfer.tracking import NullTracker, Tracker, epoch_logger
from ecg_transfer.training.batched import (
    auto_batch_trials,
    fit_trials,
    parse_batch_trials,
    run_groups_once,
    unsupported_reason,
)
from ecg_transfer.training.checkpoints import CheckpointStore, run_once
from ecg_transfer.training.engine import FitResult, TrainConfig, fit
from ecg_transfer.training.loop import check_honest_epoch
from ecg_transfer.training.tasks import (
    ClassificationTask,
    MultiLabelTask,
    Task,
    balanced_class_weights,
    balanced_label_weights,
)
from ecg_transfer.typed_config import config_from_params

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PREDICTION_SELECTIONS = ("honest", "best_test")
CLASS_WEIGHTINGS = ("none", "balanced")
WINDOWS_PER_EPOCH = ("all", "one_per_record")
# What a label of the labelled data is (preprocessing.task): one class per window, or a label set.
TASK_KINDS = ("single", "multilabel")
# The scores a run's MLflow record carries, per task kind, when its summary row has them.
FINAL_METRICS = {
    "single": ("best_test_f1_weighted", "honest_test_f1_weighted", "best_test_f1_macro", "honest_test_f1_macro", "lci"),
    "multilabel": ("best_test_auroc_macro", "honest_test_auroc_macro", "best_test_f1_macro", "honest_test_f1_macro",
                   "lci"),
}


@dataclass(frozen=True)
class ArmData:
    """Inputs of one arm: the training split (indexed by the bootstrap positions), and the fixed
    validation and test splits. x are windows (N, L) or feature vectors (N, F); ``*_records``
    hold each row's record id (a record may give several windows); ``train_records`` lets an
    epoch train one window per drawn record (``finetuning.windows_per_epoch``). ``task``
    (:data:`TASK_KINDS`): "single", y are class indices (N,); "multilabel", y are 0/1 targets
    (N, K), one column per label."""

    train_x: Any
    train_y: np.ndarray
    val_x: Any
    val_y: np.ndarray
    test_x: Any
    test_y: np.ndarray
    val_records: np.ndarray | None = None
    test_records: np.ndarray | None = None
    train_records: np.ndarray | None = None
    task: str = "single"

    def __post_init__(self) -> None:
        if self.task not in TASK_KINDS:
            raise ValueError(f"ArmData: task must be one of {TASK_KINDS}, got {self.task!r}")
        dims = {split: np.ndim(getattr(self, f"{split}_y")) for split in SPLITS}
        wanted = 2 if self.task == "multilabel" else 1
        if any(ndim != wanted for ndim in dims.values()):
            shape = "(N, K) 0/1 targets" if wanted == 2 else "(N,) class indices"
            raise ValueError(f"ArmData: a {self.task} task needs {shape} in every split; the y have {dims} dimensions")

    def eval_split(self, split: str) -> tuple:
        """``(x, y)``, or ``(x, y, record_ids)`` when some record gives several windows, so the
        engine also scores that split per record (mean of the window logits)."""
        x, y, records = getattr(self, f"{split}_x"), getattr(self, f"{split}_y"), getattr(self, f"{split}_records")
        if records is not None and len(np.unique(records)) < len(records):
            return x, y, records
        return x, y


def labelled_arm_data(labelled_windows, classes: Sequence[str], inputs: np.ndarray | None = None) -> ArmData:
    """The labelled set by split, in memory. ``inputs``, rows aligned with the window store (e.g.
    image features), replaces the windows. A multi-label store (``task: multilabel``) gives
    (N, K) targets over ``classes`` (its labels with enough positives), else class indices."""
    task = "multilabel" if labelled_windows.task == "multilabel" else "single"
    codes = (labelled_windows.label_targets(list(classes)) if task == "multilabel"
             else labelled_windows.label_codes(list(classes)))
    record_ids = labelled_windows.index["record_id"].to_numpy(dtype=object)
    parts: dict[str, Any] = {}
    for split in SPLITS:
        rows = labelled_windows.split_indices(split)
        parts[f"{split}_x"] = labelled_windows.take(rows) if inputs is None else inputs[rows]
        parts[f"{split}_y"] = codes[rows]
        parts[f"{split}_records"] = record_ids[rows]
    return ArmData(**parts, task=task)


def arm_task(kind: str, classes: Sequence[str], class_weights: Sequence[float] | None = None) -> Task:
    """The training task of labelled data of ``kind`` (:data:`TASK_KINDS`): cross-entropy over
    ``classes`` (weighted by ``class_weights``), or for "multilabel" binary cross-entropy per
    label of ``classes`` (``class_weights`` then weigh each label's positive targets)."""
    if kind not in TASK_KINDS:
        raise ValueError(f"task must be one of {TASK_KINDS}, got {kind!r}")
    if kind == "single":
        return ClassificationTask(classes, class_weights)
    return MultiLabelTask(classes, class_weights)


def honest_monitor(task: Task) -> tuple[str, str]:
    """The study's honest rule for ``task``: its headline metric on the validation split, the
    best epoch (earliest on ties). Single-label: :data:`HONEST_MONITOR` (val f1_weighted);
    multi-label: val auroc_macro."""
    return HONEST_MONITOR[0], task.headline_metric


def check_monitor_metric(task: Task, train_config: TrainConfig) -> None:
    """Refuse a ``monitor_metric`` the task does not score before anything trains: e.g.
    f1_weighted (single-label) under a multi-label task. Unset, a run keeps the epoch of the
    task's headline metric, as the study's honest scores do."""
    metric = train_config.monitor_metric
    if metric is not None and metric not in ("loss", *task.metric_columns):
        raise ValueError(
            f"finetuning.training.monitor_metric: {metric!r} is not scored by the {task.name} task (it scores loss, "
            f"{', '.join(task.metric_columns)}); leave it unset so that each run keeps its best validation "
            f"{task.headline_metric} epoch, the study's honest rule"
        )


def labelled_fingerprint(labelled_windows) -> str:
    """What every arm shares on the labelled side: records, labels, splits and the windows."""
    return fingerprint(labelled_windows.index[["record_id", "label", "split"]].to_numpy(), labelled_windows.meta)


def bootstrap_fingerprint(bootstrap_samples: pd.DataFrame) -> str:
    return fingerprint(bootstrap_samples[["fraction", "trial", "seed", "position"]].to_numpy())


def run_key(arm: str, fraction: float, trial: int, data_fingerprint: str) -> str:
    return f"finetuning/{arm}/fraction={fraction:g}/trial={trial:02d}/{data_fingerprint}"


@dataclass(frozen=True)
class PlannedRun:
    """One run of an arm, planned before anything trains: its bootstrap sample (``positions``
    into the training split), its seed and its key in the checkpoint store; ``groups``: the drawn
    record copy of each position when an epoch trains one window per drawn record (None: every
    window, every epoch)."""

    fraction: float
    trial: int
    seed: int
    positions: np.ndarray
    key: str
    groups: np.ndarray | None = None

    @property
    def epoch_size(self) -> int:
        """Windows trained per epoch: one per drawn record copy, or every position."""
        return int(self.positions.size if self.groups is None else np.unique(self.groups).size)


def record_copies(train_records: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """One group id per position: the drawn copy of its record. A record drawn c times brings
    each of its windows c times; the k-th occurrence of a window belongs to copy k, so every
    copy holds each of the record's windows once, and an epoch that trains one window per
    group trains one (independently drawn) window per drawn copy."""
    order = np.argsort(positions, kind="stable")
    ranked = positions[order]
    copy = np.empty(positions.size, dtype=np.int64)
    copy[order] = np.arange(positions.size) - np.searchsorted(ranked, ranked, side="left")
    _, record_codes = np.unique(np.asarray(train_records, dtype=object)[positions].astype(str), return_inverse=True)
    _, groups = np.unique(np.stack([record_codes.reshape(-1), copy], axis=1), axis=0, return_inverse=True)
    return groups.reshape(-1)


def plan_runs(arm: str, bootstrap_samples: pd.DataFrame, data_fingerprint: str,
              train_records: np.ndarray | None = None) -> list[PlannedRun]:
    """Every (fraction, trial) run of ``arm``: largest fraction first, trials in order. With
    ``train_records`` (the record of every training window) each run's epochs train one window
    per drawn record copy (:func:`record_copies`)."""
    samples = bootstrap_samples.groupby(["fraction", "trial"], sort=False)
    plan = []
    for (fraction, trial), sample in sorted(samples, key=lambda item: (-item[0][0], item[0][1])):
        positions = np.sort(sample["position"].to_numpy())
        plan.append(PlannedRun(
            fraction=float(fraction), trial=int(trial), seed=int(sample["seed"].iloc[0]), positions=positions,
            key=run_key(arm, float(fraction), int(trial), data_fingerprint),
            groups=None if train_records is None else record_copies(train_records, positions),
        ))
    return plan


@dataclass(frozen=True)
class ModelRecipe:
    """How an arm's models are made: ``build(seed)``, and, for a model that learns something
    from its run's own training rows before training (the spectrogram heads' input scaling),
    ``fit_to_sample(model, rows)``. A plain ``seed -> model`` callable is a recipe without it."""

    build: Callable[[int], nn.Module]
    fit_to_sample: Callable[[nn.Module, np.ndarray], None] | None = None

    def model(self, seed: int, train_rows: Callable[[], np.ndarray]) -> nn.Module:
        model = self.build(seed)
        if self.fit_to_sample is not None:
            self.fit_to_sample(model, train_rows())
        return model


@dataclass
class ArmRuns:
    """What an arm produced: the long per-epoch history, the saved class probabilities and one
    MLflow run record per (fraction, trial)."""

    histories: pd.DataFrame
    predictions: pd.DataFrame
    records: list[dict[str, Any]] = field(default_factory=list)


def run_arm(
    arm: str,
    make_model: ModelRecipe | Callable[[int], nn.Module],
    data: ArmData,
    bootstrap_samples: pd.DataFrame,
    train_config: TrainConfig,
    classes: Sequence[str],
    checkpoints: CheckpointStore | None,
    data_fingerprint: str,
    progress: bool = True,
    batch_trials: int | str = 1,
    tracker: Tracker | None = None,
    class_weights: Sequence[float] | None = None,
    windows_per_epoch: str = "all",
) -> ArmRuns:
    """Train `arm` on every (fraction, trial) sample: plan the runs, train them (alone or in
    groups), collect. Finished runs found in `checkpoints` are not trained again, and an
    interrupted one continues from its last epoch.

    ``batch_trials`` (``study.batch_trials``): 1 trains the runs one after another with
    :func:`~ecg_transfer.training.engine.fit`; K trains the trials of a fraction in groups of K
    as one stacked model (:func:`~ecg_transfer.training.batched.fit_trials`, same results to
    float rounding, same checkpoints); "auto" picks K from the training device's free memory.

    ``tracker`` (ecg_transfer.tracking; None = nothing logged): a run trained here gets its
    MLflow child run when its training starts, fed every epoch as it ends; a run finished
    earlier is logged whole; a run another worker trained is left to that worker's log.

    ``class_weights`` (one per class; None = the plain loss): the loss of every run
    (``FinetuningConfig.class_weighting``); for a multi-label ``data`` (``data.task``) the
    weight of each label's positive targets.

    ``windows_per_epoch`` (``FinetuningConfig.windows_per_epoch``): "all" trains every window of
    a run's sample every epoch; "one_per_record" one random window per drawn record copy
    (needs ``data.train_records``).
    """
    recipe = make_model if isinstance(make_model, ModelRecipe) else ModelRecipe(make_model)
    task = arm_task(data.task, tuple(classes), class_weights)
    check_monitor_metric(task, train_config)
    plan = plan_runs(arm, bootstrap_samples, data_fingerprint, _epoch_records(windows_per_epoch, data))
    trainer = _ArmTrainer(arm, recipe, data, task, plan, train_config, checkpoints, progress,
                          tracker if tracker is not None else NullTracker())
    # Parallel workers on one folder split the runs (a claim per run key); this worker still
    # returns every run, collecting those trained elsewhere.
    at_once = _trials_at_once(batch_trials, arm, recipe, plan, data, train_config)
    keys = [run.key for run in plan]
    if at_once == 1:
        results = run_once(checkpoints, keys, trainer.train_one)
    else:
        results = run_groups_once(checkpoints, keys, trial_groups(plan, at_once), trainer.train_group)
    runs = collect_runs(arm, plan, results, data, classes, train_config, task)
    for index, record in enumerate(runs.records):
        if trainer.outcome.get(index) == "reused":
            trainer.tracker.log_record(record)
    logger.info("%s: %s", arm, describe_outcomes(list(trainer.outcome.values())))
    return runs


class _ArmTrainer:
    """Trains planned runs of one arm, alone (:meth:`train_one`) or stacked (:meth:`train_group`),
    with one MLflow child run each, and notes what resume did with each."""

    def __init__(self, arm: str, recipe: ModelRecipe, data: ArmData, task: Task, plan: list[PlannedRun],
                 train_config: TrainConfig, checkpoints: CheckpointStore | None, progress: bool,
                 tracker: Tracker) -> None:
        self.arm, self.recipe, self.data, self.plan, self.task = arm, recipe, data, plan, task
        self.train_config, self.checkpoints, self.progress, self.tracker = train_config, checkpoints, progress, tracker
        self.evals = {split: data.eval_split(split) for split in ("val", "test")}
        self.outcome: dict[int, str] = {}
        self.done_at_start = {run.key for run in plan if self._done(run)}

    def _done(self, run: PlannedRun) -> bool:
        return self.checkpoints is not None and self.checkpoints.is_done(run.key)

    def config_of(self, index: int) -> TrainConfig:
        return replace(self.train_config, seed=self.plan[index].seed)

    def model_for(self, index: int) -> nn.Module:
        run = self.plan[index]
        return self.recipe.model(run.seed, lambda: _take(self.data.train_x, run.positions))

    def note(self, index: int, result: FitResult, done_before: bool) -> None:
        if done_before:
            self.outcome[index] = "reused" if self.plan[index].key in self.done_at_start else "collected"
        elif result.resumed_from_epoch is not None:
            self.outcome[index] = f"resumed:{result.resumed_from_epoch}"
        else:
            self.outcome[index] = "trained"

    def start_run(self, index: int):
        return self.tracker.start(*_run_identity(self.arm, self.plan[index], self.data))

    def finish_run(self, run, index: int, result: FitResult) -> None:
        planned = self.plan[index]
        history = result.history.assign(fraction=planned.fraction, arm=self.arm, trial=planned.trial)
        record = _run_record(self.arm, planned, self.data, self.config_of(index), result, history)
        run.finish(record["metrics"], params=record["params"])

    def train_one(self, index: int) -> FitResult:
        planned = self.plan[index]
        done_before = self._done(planned)
        logger.debug("%s: fraction %g, trial %d (%d training windows)", self.arm, planned.fraction, planned.trial,
                     planned.positions.size)
        with contextlib.ExitStack() as stack:
            run = None if done_before else stack.enter_context(self.start_run(index))
            result = fit(
                self.model_for(index), self.task, _take(self.data.train_x, planned.positions),
                self.data.train_y[planned.positions], self.evals, self.config_of(index),
                checkpoints=self.checkpoints, run_key=planned.key, progress=self.progress,
                on_epoch_end=None if run is None else epoch_logger(run), train_groups=planned.groups,
            )
            if run is not None:
                self.finish_run(run, index, result)
        self.note(index, result, done_before)
        return result

    def train_group(self, indices: list[int]) -> list[FitResult]:
        done_before = [self._done(self.plan[i]) for i in indices]
        logger.debug("%s: fraction %g, trials %s together", self.arm, self.plan[indices[0]].fraction,
                     [self.plan[i].trial for i in indices])
        with contextlib.ExitStack() as stack:  # K child runs open at once, one per trial
            runs = [None if before else stack.enter_context(self.start_run(i)) for i, before in zip(indices, done_before)]

            def log_epoch(k: int, epoch: int, history_so_far: pd.DataFrame) -> None:
                if runs[k] is not None:
                    runs[k].on_epoch_end(epoch, history_so_far)

            results = fit_trials(
                [self.model_for(i) for i in indices], self.task, self.data.train_x, self.data.train_y,
                [self.plan[i].positions for i in indices], self.evals, self.train_config,
                [self.plan[i].seed for i in indices], checkpoints=self.checkpoints,
                run_keys=[self.plan[i].key for i in indices], progress=self.progress, on_trial_epoch_end=log_epoch,
                train_groups=None if self.plan[indices[0]].groups is None else [self.plan[i].groups for i in indices],
            )
            for index, result, run in zip(indices, results, runs):
                if run is not None:
                    self.finish_run(run, index, result)
        for index, result, before in zip(indices, results, done_before):
            self.note(index, result, before)
        return results


def collect_runs(arm: str, plan: Sequence[PlannedRun], results: Sequence[FitResult], data: ArmData,
                 classes: Sequence[str], train_config: TrainConfig, task: Task | None = None) -> ArmRuns:
    """The arm's histories, predictions and run records, in plan order. A run's saved "honest"
    predictions must come from the epoch the summaries call honest (:func:`honest_monitor`):
    ValueError naming the run otherwise (e.g. trained with ``monitor_metric: loss``). ``task``:
    the runs' (None: :func:`arm_task` of ``data.task``)."""
    task = task if task is not None else arm_task(data.task, classes)
    histories, predictions, records = [], [], []
    for planned, result in zip(plan, results):
        _check_honest_predictions(arm, planned, result, task)
        history = result.history.assign(fraction=planned.fraction, arm=arm, trial=planned.trial)
        histories.append(history)
        predictions.append(prediction_table(result, data, classes, fraction=planned.fraction, arm=arm,
                                            trial=planned.trial))
        # The config as the run was made: the arm's, with the run's own seed.
        records.append(_run_record(arm, planned, data, replace(train_config, seed=planned.seed), result, history))
    columns = ["fraction", "arm", "trial"]
    history = pd.concat(histories, ignore_index=True)
    return ArmRuns(
        histories=history[columns + [c for c in history.columns if c not in columns]],
        predictions=pd.concat(predictions, ignore_index=True),
        records=records,
    )


def _check_honest_predictions(arm: str, planned: PlannedRun, result: FitResult, task: Task) -> None:
    if "honest" not in (result.predictions or {}):
        return
    monitor = honest_monitor(task)
    try:
        check_honest_epoch(result.history, result.predictions, monitor, task)
    except ValueError as error:
        raise ValueError(
            f"{arm}: run fraction={planned.fraction:g}, trial={planned.trial} ({planned.key}): {error}; the "
            f"study's honest scores select on {monitor[0]} {monitor[1]} (monitor_split: "
            f"{monitor[0]}, monitor_metric: {monitor[1]} or unset)"
        ) from error


def _epoch_records(windows_per_epoch: str, data: ArmData) -> np.ndarray | None:
    """The training windows' records when an epoch trains one window per record, else None."""
    if windows_per_epoch not in WINDOWS_PER_EPOCH:
        raise ValueError(f"finetuning.windows_per_epoch must be one of {WINDOWS_PER_EPOCH}, got {windows_per_epoch!r}")
    if windows_per_epoch == "all":
        return None
    if data.train_records is None or len(data.train_records) != len(data.train_y):
        raise ValueError(
            "finetuning.windows_per_epoch: one_per_record needs the record id of every training window "
            "(ArmData.train_records)"
        )
    return data.train_records


def trial_groups(plan: Sequence[PlannedRun], size: int) -> list[list[int]]:
    """Plan indices in groups of at most ``size`` that can train together: the trials of one
    fraction with the same number of training windows and of windows per epoch (a record-drawn
    bootstrap may give trials of one fraction different sizes), in plan order."""
    same = {}
    for index, run in enumerate(plan):
        same.setdefault((run.fraction, run.positions.size, run.epoch_size), []).append(index)
    return [indices[i : i + size] for indices in same.values() for i in range(0, len(indices), size)]


def _trials_at_once(batch_trials, arm, recipe: ModelRecipe, plan, data: ArmData, train_config: TrainConfig) -> int:
    setting = parse_batch_trials(batch_trials)
    if setting == 1 or not plan:
        return 1
    largest = max(len(group) for group in trial_groups(plan, len(plan)))
    if setting != "auto":
        return min(setting, largest)
    probe = recipe.build(plan[0].seed)
    reason = unsupported_reason(probe)
    if reason:
        logger.info("%s: trials train one at a time (%s)", arm, reason)
        return 1
    at_once = auto_batch_trials(probe, tuple(data.train_x.shape[1:]), train_config, largest)
    logger.info("%s: %d trials of a fraction train at once (batch_trials: auto)", arm, at_once)
    return at_once

def describe_outcomes(outcomes: Sequence[str]) -> str:
    """One line on what resume did: "reused N finished runs, resumed M (from epoch E), trained K"
    (plus "collected C" for runs another worker trained)."""
    resumed = [outcome.split(":", 1)[1] for outcome in outcomes if outcome.startswith("resumed:")]
    line = (
        f"reused {outcomes.count('reused')} finished runs, resumed {len(resumed)}"
        + (f" (from epoch {', '.join(resumed)})" if resumed else "")
        + f", trained {outcomes.count('trained')}"
    )
    collected = outcomes.count("collected")
    return line + (f", collected {collected} trained by another worker" if collected else "")


def _take(x, positions: np.ndarray):
    """Rows of x, read once in sorted order (a memmap reads only those pages)."""
    return np.asarray(x[positions])


def prediction_table(
    result: FitResult, data: ArmData, classes: Sequence[str], **keys: Any
) -> pd.DataFrame:
    """The class probabilities a run gave at its honest (best-validation) epoch and at the
    paper's best-test epoch, one row per (selection, split, record), with the true label.

    Columns: ``keys`` (fraction, arm, trial), selection, epoch, split, record_id, label, then
    ``prob_<class>`` per class (softmax). A multi-label ``data`` (``data.task``): ``label`` is
    the record's labels joined by ";" in class order ("" for none), then ``target_<label>``
    (0/1) per label, then ``prob_<label>`` per label (sigmoid), all in class order."""
    frames = []
    for selection in PREDICTION_SELECTIONS:
        chosen = (result.predictions or {}).get(selection)
        if not chosen:
            continue
        for split in ("val", "test"):
            if f"{split}_record" in chosen:
                probabilities = np.asarray(chosen[f"{split}_record"])
                record_ids = np.asarray(chosen[f"{split}_record_ids"], dtype=object)
                label_of = dict(zip(getattr(data, f"{split}_records"), getattr(data, f"{split}_y")))
                labels = np.array([label_of[record] for record in record_ids])
            elif split in chosen:
                probabilities = np.asarray(chosen[split])
                record_ids = getattr(data, f"{split}_records")
                record_ids = np.arange(len(probabilities)).astype(object) if record_ids is None else record_ids
                labels = getattr(data, f"{split}_y")
            else:
                continue
            frame = pd.DataFrame(probabilities, columns=[f"prob_{name}" for name in classes])
            if data.task == "multilabel":
                frame = _with_targets(frame, labels, classes)
            else:
                frame.insert(0, "label", np.asarray(classes, dtype=object)[labels])
            frame.insert(0, "record_id", [str(record) for record in record_ids])
            frame.insert(0, "split", split)
            frame.insert(0, "epoch", int(chosen["epoch"]))
            frame.insert(0, "selection", selection)
            frames.append(frame)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    for position, (name, value) in enumerate(keys.items()):
        table.insert(position, name, value)
    return table


def _with_targets(probabilities: pd.DataFrame, targets: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """``label`` (the row's labels joined by ";" in class order), ``target_<label>`` per label,
    then the ``prob_<label>`` columns: a multi-label prediction table's columns."""
    targets = np.asarray(targets, dtype=np.int64).reshape(len(probabilities), len(classes))
    names = np.asarray(classes, dtype=object)
    label = [";".join(names[row.astype(bool)]) for row in targets]
    target_columns = pd.DataFrame(targets, columns=[f"target_{name}" for name in classes])
    return pd.concat([pd.DataFrame({"label": label}), target_columns, probabilities], axis=1)


def _run_identity(arm: str, planned: PlannedRun, data: ArmData) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The MLflow run name, the params known before training, and the tags of one run."""
    fraction_text = f"{planned.fraction:g}"
    params = {
        "arm": arm, "fraction": fraction_text, "trial": planned.trial, "seed": planned.seed,
        "n_train": int(planned.positions.size), "n_train_unique": int(np.unique(planned.positions).size),
        "n_val": int(len(data.val_y)), "n_test": int(len(data.test_y)),
    }
    tags = {"arm": arm, "fraction": fraction_text, "trial": planned.trial, "stage": "finetuning"}
    return f"{arm}-f{fraction_text}-t{planned.trial}", params, tags


def _run_record(arm: str, planned: PlannedRun, data: ArmData, config: TrainConfig, result: FitResult,
                history: pd.DataFrame) -> dict[str, Any]:
    summary = summarise_runs(history).iloc[0]
    final = {
        name: float(summary[name])
        for name in FINAL_METRICS[data.task]
        if name in summary and pd.notna(summary[name])
    }
    name, params, tags = _run_identity(arm, planned, data)
    params.update({"device": result.device, **{f"train.{k}": v for k, v in asdict(config).items() if k != "seed"}})
    return run_record(name, params, tags, history, final)


def training_settings(train_config: TrainConfig) -> dict[str, Any]:
    """The training settings that change an arm's results (the per-run seed aside)."""
    return {k: v for k, v in result_settings(train_config).items() if k != "seed"}


def arm_settings(
    spec: ArmSpec,
    study: StudyConfig,
    train_config: TrainConfig,
    classes: Sequence[str],
    bootstrap_samples: pd.DataFrame,
    labelled_windows,
    encoder_fingerprint: str | None,
    run_fingerprint: str,
    parameters: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """What an arm's runs were made under; the statistics combine only arms that agree on every
    setting but the arm's own (docs/statistics.md). ``parameters``: the result-changing settings
    of each parameter group the arm read (e.g. ``finetuning.head``), compared across the arms
    that read the same group."""
    return {
        "arm": spec.name,
        "spec": spec.result_spec(),
        "fractions": sorted({float(f) for f in bootstrap_samples["fraction"]}, reverse=True),
        "n_trials": int(bootstrap_samples["trial"].nunique()),
        "training": training_settings(train_config),
        "classes": list(classes),
        "bootstrap_fingerprint": bootstrap_fingerprint(bootstrap_samples),
        "labelled_fingerprint": labelled_fingerprint(labelled_windows),
        "parameters": {name: dict(values) for name, values in parameters.items()},
        "encoder_fingerprint": encoder_fingerprint,
        "run_fingerprint": run_fingerprint,
        "base_seed": study.base_seed,
    }


@dataclass(frozen=True)
class StudyConfig:
    """The ``study`` parameter group: the design (fractions, trials, the seed every trial's seed
    derives from), how many trials train at once, and the arms (read by
    :func:`~ecg_transfer.study.arms.arm_registry`)."""

    fractions: tuple[float, ...]
    n_trials: int
    base_seed: int
    arms: Any = None
    batch_trials: int | str = "auto"

    @classmethod
    def from_params(cls, study: Mapping[str, Any]) -> StudyConfig:
        return config_from_params(cls, study, "study")


@dataclass(frozen=True)
class HeadConfig:
    """A classification head's settings (``finetuning.head``, ``image_transfer.head``): a hidden
    layer of ``hidden`` units (0 = linear) and dropout. An arm with ``head: linear`` uses no
    hidden layer whatever ``hidden`` says (:meth:`for_arm`)."""

    hidden: int = 64
    dropout: float = 0.2

    def for_arm(self, spec: ArmSpec) -> HeadConfig:
        return replace(self, hidden=0) if spec.head == "linear" else self


@dataclass(frozen=True)
class FinetuningConfig:
    """The ``finetuning`` parameter group: every arm trains with ``training``; window arms put
    ``head`` on the encoder (spectrogram arms take their head from ``image_transfer.head``).
    ``progress`` only draws a bar, so it is no part of a run's key. ``windows_per_epoch``: "all"
    (every window of a drawn record trains every epoch) or "one_per_record" (each epoch, one
    random window per drawn record copy; docs/models_and_training.md)."""

    head: HeadConfig = field(default_factory=HeadConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    progress: bool = field(default=True, metadata=COSMETIC)
    class_weighting: str = "none"
    windows_per_epoch: str = "all"

    def __post_init__(self) -> None:
        if self.windows_per_epoch not in WINDOWS_PER_EPOCH:
            raise ValueError(
                f"finetuning.windows_per_epoch must be one of {WINDOWS_PER_EPOCH}, got {self.windows_per_epoch!r}"
            )
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise ValueError(
                f"finetuning.class_weighting must be one of {CLASS_WEIGHTINGS}, got {self.class_weighting!r}"
            )

    def class_weights(self, train_y: np.ndarray, classes: Sequence[str], task: str = "single") -> np.ndarray | None:
        """The loss's weights: None ("none", the paper's plain loss) or, for "balanced", from the
        training split's labels (every bootstrap sample is drawn from it stratified, so each has
        its shares up to rounding): ``n / (n_classes * n_c)`` per class of a single-label
        cross-entropy, ``n_negative / n_positive`` per label (the positive targets' weight) of a
        multi-label ``task``'s binary cross-entropy. ``classes``: the class (label) names."""
        if self.class_weighting != "balanced":
            return None
        try:
            if task == "multilabel":
                return balanced_label_weights(train_y, classes)
            return balanced_class_weights(train_y, len(classes))
        except ValueError as error:
            raise ValueError(f"finetuning.class_weighting: balanced: {error}") from error

    @classmethod
    def from_params(cls, finetuning: Mapping[str, Any]) -> FinetuningConfig:
        return config_from_params(cls, finetuning, "finetuning")
