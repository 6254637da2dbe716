"""One arm of the starvation experiment: for every training fraction and trial, train on that
trial's bootstrap sample and evaluate every epoch on the fixed validation and test splits.

Every arm goes through this one function and the one training engine, so arms differ only in
the model a factory builds: same samples, same seeds, same optimiser, same evaluation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from ecg_transfer.study.arms import ArmSpec
from ecg_transfer.study.summaries import summarise_runs
from ecg_transfer.tracking import NullTracker, epoch_logger
from ecg_transfer.training.batched import (
    auto_batch_trials,
    fit_trials,
    parse_batch_trials,
    run_groups_once,
    unsupported_reason,
)
from ecg_transfer.training.checkpoints import CheckpointStore, run_once
from ecg_transfer.training.engine import FitResult, TrainConfig, fit
from ecg_transfer.training.tasks import ClassificationTask, balanced_class_weights

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PREDICTION_SELECTIONS = ("honest", "best_test")
CLASS_WEIGHTINGS = ("none", "balanced")


@dataclass(frozen=True)
class ArmData:
    """Inputs of one arm: the training split (indexed by the bootstrap positions), and the fixed
    validation and test splits. x are windows (N, L) or feature vectors (N, F); ``*_records``
    hold each row's record id (a record may give several windows)."""

    train_x: Any
    train_y: np.ndarray
    val_x: Any
    val_y: np.ndarray
    test_x: Any
    test_y: np.ndarray
    val_records: np.ndarray | None = None
    test_records: np.ndarray | None = None

    def eval_split(self, split: str) -> tuple:
        """``(x, y)``, or ``(x, y, record_ids)`` when some record gives several windows, so the
        engine also scores that split per record (mean of the window logits)."""
        x, y, records = getattr(self, f"{split}_x"), getattr(self, f"{split}_y"), getattr(self, f"{split}_records")
        if records is not None and len(np.unique(records)) < len(records):
            return x, y, records
        return x, y


def labelled_arm_data(labelled_windows, classes: Sequence[str], inputs: np.ndarray | None = None) -> ArmData:
    """The labelled set by split, in memory. ``inputs``, rows aligned with the window store (e.g.
    image features), replaces the windows."""
    codes = labelled_windows.label_codes(list(classes))
    record_ids = labelled_windows.index["record_id"].to_numpy(dtype=object)
    parts: dict[str, Any] = {}
    for split in SPLITS:
        rows = labelled_windows.split_indices(split)
        parts[f"{split}_x"] = labelled_windows.take(rows) if inputs is None else inputs[rows]
        parts[f"{split}_y"] = codes[rows]
        if split != "train":
            parts[f"{split}_records"] = record_ids[rows]
    return ArmData(**parts)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of configuration and data, so a finished run is reused only when
    nothing it depends on changed."""
    digest = hashlib.sha1()
    for part in parts:
        if isinstance(part, np.ndarray) and part.dtype != object:
            digest.update(str((part.dtype.str, part.shape)).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, np.ndarray):  # strings: their bytes, never the object pointers
            digest.update(json.dumps(part.tolist(), default=str).encode())
        elif isinstance(part, Mapping) and part and all(hasattr(v, "numpy") for v in part.values()):
            for key in sorted(part):
                digest.update(key.encode())
                digest.update(part[key].detach().cpu().numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:12]


def labelled_fingerprint(labelled_windows) -> str:
    """What every arm shares on the labelled side: records, labels, splits and the windows."""
    return fingerprint(labelled_windows.index[["record_id", "label", "split"]].to_numpy(), labelled_windows.meta)


def bootstrap_fingerprint(bootstrap_samples: pd.DataFrame) -> str:
    return fingerprint(bootstrap_samples[["fraction", "trial", "seed", "position"]].to_numpy())


def run_key(arm: str, fraction: float, trial: int, data_fingerprint: str) -> str:
    return f"finetuning/{arm}/fraction={fraction:g}/trial={trial:02d}/{data_fingerprint}"


@dataclass
class ArmRuns:
    """What an arm produced: the long per-epoch history, the saved class probabilities and one
    MLflow run record per (fraction, trial)."""

    histories: pd.DataFrame
    predictions: pd.DataFrame
    records: list[dict[str, Any]] = field(default_factory=list)


def run_arm(
    arm: str,
    make_model: Callable[[int], nn.Module],
    data: ArmData,
    bootstrap_samples: pd.DataFrame,
    train_config: TrainConfig,
    classes: Sequence[str],
    checkpoints: CheckpointStore | None,
    data_fingerprint: str,
    progress: bool = True,
    batch_trials: int | str = 1,
    tracker: Any = None,
    class_weights: Sequence[float] | None = None,
) -> ArmRuns:
    """Train `arm` on every (fraction, trial) sample. Finished runs found in `checkpoints` are
    not trained again, and an interrupted one continues from its last epoch.

    ``batch_trials`` (``study.batch_trials``): 1 trains the runs one after another with
    :func:`~ecg_transfer.training.engine.fit`; K trains the trials of a fraction in groups of K
    as one stacked model (:func:`~ecg_transfer.training.batched.fit_trials`, same results to
    float rounding, same checkpoints); "auto" picks K from the training device's free memory.

    ``tracker`` (ecg_transfer.tracking; None = nothing logged): a run trained here gets its
    MLflow child run when its training starts, fed every epoch as it ends; a run finished
    earlier is logged whole; a run another worker trained is left to that worker's log.

    ``class_weights`` (one per class; None = plain cross-entropy): the loss of every run
    (``FinetuningConfig.class_weighting``).
    """
    tracker = tracker if tracker is not None else NullTracker()
    task = ClassificationTask(tuple(classes), class_weights)
    evals = {split: data.eval_split(split) for split in ("val", "test")}
    groups = bootstrap_samples.groupby(["fraction", "trial"], sort=False)
    plan = []
    for (fraction, trial), sample in sorted(groups, key=lambda item: (-item[0][0], item[0][1])):
        seed = int(sample["seed"].iloc[0])
        plan.append((float(fraction), int(trial), seed, np.sort(sample["position"].to_numpy())))
    keys = [run_key(arm, fraction, trial, data_fingerprint) for fraction, trial, _, _ in plan]
    outcome: dict[int, str] = {}
    done_at_start = {key for key in keys if checkpoints is not None and checkpoints.is_done(key)}

    def note(index: int, result: FitResult, done_before: bool) -> None:
        if done_before:
            outcome[index] = "reused" if keys[index] in done_at_start else "collected"
        elif result.resumed_from_epoch is not None:
            outcome[index] = f"resumed:{result.resumed_from_epoch}"
        else:
            outcome[index] = "trained"

    def config_of(index: int) -> TrainConfig:
        return TrainConfig(**{**asdict(train_config), "seed": plan[index][2]})

    def model_for(index: int) -> nn.Module:
        """The run's model; one that scales its inputs learns the scaling from the run's own
        bootstrap sample (models/classifier.py, ScaledFeatureClassifier)."""
        _, _, seed, positions = plan[index]
        model = make_model(seed)
        if hasattr(model, "fit_input_scaling"):
            model.fit_input_scaling(_take(data.train_x, positions))
        return model

    def start_run(index: int):
        fraction, trial, seed, positions = plan[index]
        return tracker.start(*_run_identity(arm, fraction, trial, seed, positions, data))

    def finish_run(run, index: int, result: FitResult) -> None:
        fraction, trial, seed, positions = plan[index]
        history = result.history.assign(fraction=fraction, arm=arm, trial=trial)
        record = _run_record(arm, fraction, trial, seed, positions, data, config_of(index), result, history)
        run.finish(record["metrics"], params=record["params"])

    def train(index: int) -> tuple[FitResult, TrainConfig]:
        fraction, trial, seed, positions = plan[index]
        config = config_of(index)
        done_before = checkpoints is not None and checkpoints.is_done(keys[index])
        logger.debug("%s: fraction %g, trial %d (%d training windows)", arm, fraction, trial, positions.size)
        with contextlib.ExitStack() as stack:
            run = None if done_before else stack.enter_context(start_run(index))
            result = fit(
                model_for(index), task, _take(data.train_x, positions), data.train_y[positions], evals, config,
                checkpoints=checkpoints, run_key=keys[index], progress=progress,
                on_epoch_end=None if run is None else epoch_logger(run),
            )
            if run is not None:
                finish_run(run, index, result)
        note(index, result, done_before)
        return result, config

    def train_group(indices: list[int]) -> list[tuple[FitResult, TrainConfig]]:
        done_before = [checkpoints is not None and checkpoints.is_done(keys[i]) for i in indices]
        seeds = [plan[i][2] for i in indices]
        logger.debug("%s: fraction %g, trials %s together", arm, plan[indices[0]][0], [plan[i][1] for i in indices])
        with contextlib.ExitStack() as stack:  # K child runs open at once, one per trial
            runs = [None if before else stack.enter_context(start_run(i)) for i, before in zip(indices, done_before)]

            def log_epoch(k: int, epoch: int, history_so_far: pd.DataFrame) -> None:
                if runs[k] is not None:
                    runs[k].on_epoch_end(epoch, history_so_far)

            results = fit_trials(
                [model_for(i) for i in indices], task, data.train_x, data.train_y, [plan[i][3] for i in indices],
                evals, train_config, seeds, checkpoints=checkpoints, run_keys=[keys[i] for i in indices],
                progress=progress, on_trial_epoch_end=log_epoch,
            )
            for index, result, run in zip(indices, results, runs):
                if run is not None:
                    finish_run(run, index, result)
        for index, result, before in zip(indices, results, done_before):
            note(index, result, before)
        return [(result, config_of(index)) for index, result in zip(indices, results)]

    # Parallel workers on one folder split the runs (a claim per run key); this worker still
    # returns every run, collecting those trained elsewhere.
    at_once = _trials_at_once(batch_trials, arm, make_model, plan, data, train_config)
    if at_once == 1:
        results = run_once(checkpoints, keys, train)
    else:
        results = run_groups_once(checkpoints, keys, trial_groups(plan, at_once), train_group)
    histories, predictions, records = [], [], []
    for (fraction, trial, seed, positions), (result, config) in zip(plan, results):
        history = result.history.assign(fraction=fraction, arm=arm, trial=trial)
        histories.append(history)
        predictions.append(prediction_table(result, data, classes, fraction=fraction, arm=arm, trial=trial))
        records.append(_run_record(arm, fraction, trial, seed, positions, data, config, result, history))
    for index, record in enumerate(records):
        if outcome.get(index) == "reused":
            tracker.log_record(record)
    logger.info("%s: %s", arm, describe_outcomes(list(outcome.values())))
    columns = ["fraction", "arm", "trial"]
    history = pd.concat(histories, ignore_index=True)
    return ArmRuns(
        histories=history[columns + [c for c in history.columns if c not in columns]],
        predictions=pd.concat(predictions, ignore_index=True),
        records=records,
    )


def trial_groups(plan: Sequence[tuple], size: int) -> list[list[int]]:
    """Plan indices in groups of at most ``size`` that can train together: the trials of one
    fraction with the same number of training windows (a record-drawn bootstrap may give
    trials of one fraction different sizes), in plan order."""
    same = {}
    for index, (fraction, _trial, _seed, positions) in enumerate(plan):
        same.setdefault((fraction, positions.size), []).append(index)
    return [indices[i : i + size] for indices in same.values() for i in range(0, len(indices), size)]


def _trials_at_once(batch_trials, arm, make_model, plan, data: ArmData, train_config: TrainConfig) -> int:
    setting = parse_batch_trials(batch_trials)
    if setting == 1 or not plan:
        return 1
    largest = max(len(group) for group in trial_groups(plan, len(plan)))
    if setting != "auto":
        return min(setting, largest)
    probe = make_model(plan[0][2])
    reason = unsupported_reason(probe)
    if reason:
        logger.info("%s: trials train one at a time (%s)", arm, reason)
        return 1
    at_once = auto_batch_trials(probe, data.train_x.shape[1], train_config, largest)
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
    paper's best-test epoch, one row per (selection, split, record), with the true label."""
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


def run_record(
    run_name: str, params: Mapping[str, Any], tags: Mapping[str, Any], history: pd.DataFrame,
    metrics: Mapping[str, float],
) -> dict[str, Any]:
    """The one shape of an MLflow run record (datasets/mlflow_runs.py): tags as strings, the
    per-epoch history without the columns that identify the run."""
    return {
        "run_name": run_name,
        "params": dict(params),
        "tags": {str(k): str(v) for k, v in tags.items()},
        "history": history[["epoch", "split"] + [c for c in history.columns
                                                 if c not in ("epoch", "split", "fraction", "arm", "trial")]],
        "metrics": dict(metrics),
    }


def _run_identity(arm, fraction, trial, seed, positions, data) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The MLflow run name, the params known before training, and the tags of one run."""
    fraction_text = f"{fraction:g}"
    params = {
        "arm": arm, "fraction": fraction_text, "trial": trial, "seed": seed,
        "n_train": int(positions.size), "n_train_unique": int(np.unique(positions).size),
        "n_val": int(len(data.val_y)), "n_test": int(len(data.test_y)),
    }
    tags = {"arm": arm, "fraction": fraction_text, "trial": trial, "stage": "finetuning"}
    return f"{arm}-f{fraction_text}-t{trial}", params, tags


def _run_record(arm, fraction, trial, seed, positions, data, config, result, history) -> dict[str, Any]:
    summary = summarise_runs(history).iloc[0]
    final = {
        name: float(summary[name])
        for name in ("best_test_f1_weighted", "honest_test_f1_weighted", "best_test_f1_macro",
                     "honest_test_f1_macro", "lci")
        if name in summary and pd.notna(summary[name])
    }
    name, params, tags = _run_identity(arm, fraction, trial, seed, positions, data)
    params.update({"device": result.device, **{f"train.{k}": v for k, v in asdict(config).items() if k != "seed"}})
    return run_record(name, params, tags, history, final)


def arm_settings(
    spec: ArmSpec,
    study: Mapping[str, Any],
    train_config: TrainConfig,
    classes: Sequence[str],
    bootstrap_samples: pd.DataFrame,
    labelled_windows,
    encoder_fingerprint: str | None,
    run_fingerprint: str,
) -> dict[str, Any]:
    """What an arm's runs were made under; the statistics combine only arms that agree on every
    setting but the arm's own (docs/statistics.md)."""
    return {
        "arm": spec.name,
        "spec": {"init": spec.init, "freeze": spec.freeze, "input": spec.input},
        "fractions": sorted({float(f) for f in bootstrap_samples["fraction"]}, reverse=True),
        "n_trials": int(bootstrap_samples["trial"].nunique()),
        "training": {k: v for k, v in asdict(train_config).items() if k != "seed"},
        "classes": list(classes),
        "bootstrap_fingerprint": bootstrap_fingerprint(bootstrap_samples),
        "labelled_fingerprint": labelled_fingerprint(labelled_windows),
        "encoder_fingerprint": encoder_fingerprint,
        "run_fingerprint": run_fingerprint,
        "base_seed": int(study.get("base_seed", 0)),
    }


@dataclass(frozen=True)
class HeadConfig:
    """The classification head: a hidden layer of ``hidden`` units (0 = linear) and dropout."""

    hidden: int = 64
    dropout: float = 0.2

    @classmethod
    def from_params(cls, head: Mapping[str, Any]) -> HeadConfig:
        return cls(hidden=int(head["hidden"]), dropout=float(head["dropout"]))


@dataclass(frozen=True)
class FinetuningConfig:
    """The ``finetuning`` parameter group: every arm trains with ``training``; window arms put
    ``head`` on the encoder (spectrogram arms take their head from ``image_transfer.head``)."""

    head: HeadConfig
    training: TrainConfig
    progress: bool = True
    class_weighting: str = "none"

    def __post_init__(self) -> None:
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise ValueError(
                f"finetuning.class_weighting must be one of {CLASS_WEIGHTINGS}, got {self.class_weighting!r}"
            )

    def class_weights(self, train_y: np.ndarray, n_classes: int) -> np.ndarray | None:
        """The loss's class weights: None ("none", the paper's plain cross-entropy) or, for
        "balanced", ``n / (n_classes * n_c)`` from the training split's labels (every bootstrap
        sample is drawn from it stratified, so each has its class shares up to rounding)."""
        return balanced_class_weights(train_y, n_classes) if self.class_weighting == "balanced" else None

    @classmethod
    def from_params(cls, finetuning: Mapping[str, Any]) -> FinetuningConfig:
        return cls(
            head=HeadConfig.from_params(finetuning["head"]),
            training=TrainConfig(**finetuning["training"]),
            progress=bool(finetuning.get("progress", True)),
            class_weighting=str(finetuning.get("class_weighting", "none")),
        )
