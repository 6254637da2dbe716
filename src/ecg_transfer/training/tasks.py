"""What differs between training tasks, as one small strategy object per task.

The loop in :mod:`ecg_transfer.training.engine` never asks which task it runs. It asks the task:

- ``check_labels(y, n_rows)``: validate and normalise a split's labels (None when unused);
- ``loss(output, inputs, labels, reduction)``: the batch loss ("mean" to train, "sum" to score);
- ``keeps_outputs``: whether the loop collects each batch's outputs for the epoch's metrics;
- ``train_row``/``eval_row``: an epoch's history row from the loss sum and collected outputs;
- ``probabilities(outputs)``: class probabilities kept as predictions (None: the task has none);
- ``metric_columns``, ``default_monitor`` and ``lower_is_better(metric)``: what may be monitored;
- ``supports_records`` and ``record_labels``: whether a split may be scored per record;
- ``validation_monitor``: whether the kept epoch must be chosen on a validation split
  (never on test: classification), else the held-out split is monitored (reconstruction);
- ``headline_metric``: the test metric that picks the "best_test" predictions (None: none kept);
- ``distributable``: whether its epoch rows come from loss sums alone, so that replicas can
  each score a shard of a split and add up (distributed training);
- ``complete_rows(rows, probabilities, targets, threshold_split)``: after every split of an
  epoch is scored, add the columns that need another split's outputs (multi-label: F1 at
  thresholds fitted on the validation split); a no-op for the other tasks.

:func:`task_from_description` rebuilds a task from ``describe()`` (a distributed worker does).

A new task is one subclass of :class:`Task` (docs/models_and_training.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from ecg_transfer.training.metrics import classification_metrics, fit_thresholds, multilabel_metrics


@dataclass(frozen=True)
class RecordIndex:
    """Which record each window of a split belongs to: ``ids`` (unique, in order of first
    appearance) and ``inverse`` (N,), the position in ``ids`` of every window."""

    ids: np.ndarray
    inverse: np.ndarray
    counts: np.ndarray

    @classmethod
    def build(cls, record_ids, n_rows: int) -> RecordIndex:
        values = np.asarray(record_ids)
        if values.shape != (n_rows,):
            raise ValueError(f"has {n_rows} windows but record ids of shape {values.shape}")
        inverse, ids = pd.factorize(values, sort=False)
        if (inverse < 0).any():
            raise ValueError(f"has a missing record id at window {int(np.flatnonzero(inverse < 0)[0])}")
        return cls(np.asarray(ids), inverse.astype(np.int64), np.bincount(inverse, minlength=len(ids)))

    @property
    def size(self) -> int:
        return int(self.ids.size)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Per-record mean of the rows of ``values`` (N, C), summed in float64, as float32."""
        sums = np.zeros((self.size, values.shape[1]), dtype=np.float64)
        np.add.at(sums, self.inverse, values.numpy().astype(np.float64))
        return torch.from_numpy((sums / self.counts[:, None]).astype(np.float32))


class Task:
    """Base class of the task strategies; see the module docstring for the contract."""

    name: str = "task"
    metric_columns: tuple[str, ...] = ()
    default_monitor: str = "loss"
    keeps_outputs: bool = False
    supports_records: bool = False
    validation_monitor: bool = False
    headline_metric: str | None = None
    distributable: bool = False

    def describe(self) -> dict[str, Any]:
        """Plain description stored in checkpoints: a run resumes only under the same task."""
        return {"name": self.name}

    def lower_is_better(self, metric: str) -> bool:
        return metric == "loss"

    def check_labels(self, y, n_rows: int) -> np.ndarray | None:
        return None

    def loss(self, output: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor | None,
             reduction: str = "mean") -> torch.Tensor:
        raise NotImplementedError

    def train_row(self, loss_sum: float, n: int, length: int, outputs: torch.Tensor | None, labels) -> dict:
        """``loss_sum``: the sum over batches of (batch-mean loss x batch size)."""
        raise NotImplementedError

    def eval_row(self, loss_sum: float, n: int, length: int, outputs: torch.Tensor | None, labels) -> dict:
        """``loss_sum``: the loss summed over the split (reduction="sum")."""
        raise NotImplementedError

    def probabilities(self, outputs: torch.Tensor | None) -> torch.Tensor | None:
        return None

    def record_labels(self, y: np.ndarray, records: RecordIndex) -> np.ndarray:
        """One label per record (only for tasks with ``supports_records``)."""
        raise NotImplementedError

    def complete_rows(self, rows: list[dict], probabilities: dict, targets: dict, threshold_split: str) -> None:
        """Add cross-split columns to an epoch's ``rows`` in place (see the module docstring);
        ``targets``: split row name -> its labels (windows, or records for ``<split>_record``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _loss_weights(weights, names: Sequence[str], what: str, kind: str) -> torch.Tensor | None:
    """One finite positive loss weight per name (a class or a label) as a float32 tensor, None
    for None; ``what`` and ``kind`` name them in the error."""
    if weights is None:
        return None
    values = np.asarray(weights, dtype=np.float64)
    if values.shape != (len(names),) or not np.all(np.isfinite(values)) or (values <= 0).any():
        raise ValueError(
            f"{what} must be {len(names)} finite positive numbers (one per {kind} of {list(names)}), "
            f"got {values.tolist()}"
        )
    return torch.tensor(values, dtype=torch.float32)


def balanced_class_weights(labels, n_classes: int) -> np.ndarray:
    """``n / (n_classes * n_c)`` per class c (scikit-learn's "balanced"): every class weighs
    as much in the loss as the others, and the mean weight over ``labels`` is 1."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    if counts.size != n_classes or (counts == 0).any():
        missing = np.flatnonzero(counts[:n_classes] == 0).tolist()
        raise ValueError(
            f"balanced class weights need every class in the training labels; class indices "
            f"{missing or list(range(n_classes, counts.size))} have no rows (or lie outside 0..{n_classes - 1})"
        )
    return counts.sum() / (n_classes * counts.astype(np.float64))


def balanced_label_weights(targets, labels: Sequence[str] | None = None) -> np.ndarray:
    """``n_negative / n_positive`` per label of (N, K) 0/1 ``targets``: the positive weight of a
    binary cross-entropy (torch's ``pos_weight``) under which a label's positive windows weigh
    as much in the loss as its negative ones, so a rare label is not learnt as "always absent".
    A label without positive or without negative rows has no such weight: an error naming it
    (``labels``: the names of the K columns)."""
    targets = np.asarray(targets)
    if targets.ndim != 2:
        raise ValueError(f"balanced label weights need (windows, labels) 0/1 targets, got shape {targets.shape}")
    positives = targets.sum(axis=0).astype(np.float64)
    negatives = targets.shape[0] - positives
    names = list(labels) if labels is not None else list(range(targets.shape[1]))
    for count, kind in ((positives, "positive"), (negatives, "negative")):
        if (count == 0).any():
            raise ValueError(
                f"balanced label weights need positive and negative training rows for every label; "
                f"labels {[names[i] for i in np.flatnonzero(count == 0)]} have no {kind} rows"
            )
    return negatives / positives


class ClassificationTask(Task):
    """Cross-entropy on integer labels indexing ``classes``; F1s, accuracy and macro AUROC.

    ``class_weights`` (one per class, e.g. :func:`balanced_class_weights`; None = plain
    cross-entropy, the paper's) weigh each window's loss by its class, as torch's
    ``cross_entropy(weight=...)``: the training loss is the weighted mean of a batch, a
    split's loss column the weighted sum over the split divided by its windows.
    """

    name = "classification"
    default_monitor = "f1_weighted"
    keeps_outputs = True
    supports_records = True
    validation_monitor = True
    headline_metric = "f1_weighted"

    def __init__(self, classes: Sequence[str], class_weights: Sequence[float] | None = None):
        if isinstance(classes, str):
            raise TypeError(f"ClassificationTask: classes must be a sequence of names, got the string {classes!r}")
        self.classes = tuple(str(name) for name in classes)
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"ClassificationTask needs at least 2 distinct class names, got {list(self.classes)}")
        self.metric_columns = (
            "f1_weighted", "f1_macro", "accuracy", *(f"f1_{name}" for name in self.classes), "auroc_macro",
        )
        self.class_weights = _loss_weights(class_weights, self.classes, "ClassificationTask: class_weights", "class")

    def describe(self) -> dict[str, Any]:
        description = {"name": self.name, "classes": list(self.classes)}
        if self.class_weights is not None:  # a run resumes only under the same loss
            description["class_weights"] = self.class_weights.tolist()
        return description

    def __repr__(self) -> str:
        return f"ClassificationTask({list(self.classes)})"

    def check_labels(self, y, n_rows: int) -> np.ndarray:
        if y is None:
            raise ValueError("has no labels for a classification task")
        y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
        if y.shape != (n_rows,):
            raise ValueError(f"has {n_rows} windows but labels of shape {y.shape}")
        if y.min() < 0 or y.max() >= len(self.classes):
            raise ValueError(f"labels fall outside 0..{len(self.classes) - 1} (classes {list(self.classes)})")
        return y.astype(np.int64)

    def loss(self, output, inputs, labels, reduction="mean"):
        weight = None if self.class_weights is None else self.class_weights.to(output.device)
        return F.cross_entropy(output, labels, weight=weight, reduction=reduction)

    def _row(self, loss: float, outputs: torch.Tensor, labels) -> dict:
        predicted = outputs.argmax(dim=1).numpy()
        probabilities = self.probabilities(outputs).numpy()
        return {"loss": loss, **classification_metrics(labels, predicted, self.classes, probabilities)}

    def train_row(self, loss_sum, n, length, outputs, labels):
        return self._row(loss_sum / n, outputs, labels)

    def eval_row(self, loss_sum, n, length, outputs, labels):
        return self._row(loss_sum / n, outputs, labels)

    def probabilities(self, outputs):
        return torch.softmax(outputs.float(), dim=1)

    def record_labels(self, y: np.ndarray, records: RecordIndex) -> np.ndarray:
        """One label per record; every window of a record must carry it."""
        labels = np.empty(records.size, dtype=np.int64)
        labels[records.inverse[::-1]] = y[::-1]  # the first window's label
        clash = np.flatnonzero(labels[records.inverse] != y)
        if clash.size:
            record = records.inverse[clash[0]]
            found = sorted({self.classes[c] for c in y[records.inverse == record]})
            raise ValueError(f"record {records.ids[record : record + 1].tolist()[0]!r} has windows labelled {found}; a record has one label")
        return labels


class ReconstructionTask(Task):
    """MSE between a window and its reconstruction; history adds mse and sse_per_window."""

    name = "reconstruction"
    metric_columns = ("mse", "sse_per_window")
    default_monitor = "loss"
    distributable = True

    def lower_is_better(self, metric: str) -> bool:
        return metric in ("loss", "mse", "sse_per_window")

    def loss(self, output, inputs, labels, reduction="mean"):
        return F.mse_loss(output, inputs, reduction=reduction)

    def train_row(self, loss_sum, n, length, outputs, labels):
        return {"loss": loss_sum / n, "mse": loss_sum / n, "sse_per_window": loss_sum / n * length}

    def eval_row(self, loss_sum, n, length, outputs, labels):
        return {"loss": loss_sum / (n * length), "mse": loss_sum / (n * length), "sse_per_window": loss_sum / n}


class MultiLabelTask(Task):
    """Several labels per window: binary cross-entropy with logits on (N, K) 0/1 targets.

    Columns: ``auroc_macro`` (the headline and the default monitor, on the validation split),
    ``auroc_<label>``, and ``f1_macro`` / ``f1_<label>`` at per-label thresholds fitted on the
    monitored validation split (:func:`~ecg_transfer.training.metrics.fit_thresholds`) and applied
    unchanged to every other split of the same epoch (never fitted on test). The train row has
    no F1 (its thresholds would come from a later pass); the validation row's F1 is at its own
    thresholds, so optimistic by construction. Probabilities are the sigmoids of the logits, one
    column per label. The loss is the mean over windows *and* labels (torch's default), and a
    split's loss column the same mean; ``positive_weights`` (one per label, e.g.
    :func:`balanced_label_weights`; None = plain binary cross-entropy) multiply the loss of each
    label's positive targets, as torch's ``pos_weight``. Per record: the windows' mean logits, and every window of
    a record must carry the record's label set; record rows take their thresholds from the
    validation split's record row (no F1 when the validation split has no record ids).
    """

    name = "multilabel"
    default_monitor = "auroc_macro"
    keeps_outputs = True
    supports_records = True
    validation_monitor = True
    headline_metric = "auroc_macro"

    def __init__(self, labels: Sequence[str], positive_weights: Sequence[float] | None = None):
        if isinstance(labels, str):
            raise TypeError(f"MultiLabelTask: labels must be a sequence of names, got the string {labels!r}")
        self.labels = tuple(str(name) for name in labels)
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"MultiLabelTask needs at least 1 label and distinct names, got {list(self.labels)}")
        self.metric_columns = (
            "auroc_macro", *(f"auroc_{name}" for name in self.labels),
            "f1_macro", *(f"f1_{name}" for name in self.labels),
        )
        self.positive_weights = _loss_weights(positive_weights, self.labels, "MultiLabelTask: positive_weights", "label")

    def describe(self) -> dict[str, Any]:
        description = {"name": self.name, "labels": list(self.labels)}
        if self.positive_weights is not None:  # a run resumes only under the same loss
            description["positive_weights"] = self.positive_weights.tolist()
        return description

    def __repr__(self) -> str:
        return f"MultiLabelTask({list(self.labels)})"

    def check_labels(self, y, n_rows: int) -> np.ndarray:
        if y is None:
            raise ValueError("has no labels for a multi-label task")
        y = np.asarray(y)
        if y.shape != (n_rows, len(self.labels)):
            raise ValueError(f"has {n_rows} windows but targets of shape {y.shape}; a multi-label task needs "
                             f"({n_rows}, {len(self.labels)}), one 0/1 column per label of {list(self.labels)}")
        if not np.isin(y, (0, 1)).all():
            raise ValueError(f"targets must be 0/1, got values {np.unique(y)[:5].tolist()}")
        return y.astype(np.float32)

    def loss(self, output, inputs, labels, reduction="mean"):
        weight = None if self.positive_weights is None else self.positive_weights.to(output.device)
        return F.binary_cross_entropy_with_logits(output, labels.float(), reduction=reduction, pos_weight=weight)

    def train_row(self, loss_sum, n, length, outputs, labels):
        return {"loss": loss_sum / n, **multilabel_metrics(labels, self.probabilities(outputs).numpy(), self.labels)}

    def eval_row(self, loss_sum, n, length, outputs, labels):
        scores = self.probabilities(outputs).numpy()
        return {"loss": loss_sum / (n * len(self.labels)), **multilabel_metrics(labels, scores, self.labels)}

    def probabilities(self, outputs):
        return torch.sigmoid(outputs.float())

    def record_labels(self, y: np.ndarray, records: RecordIndex) -> np.ndarray:
        """The label set of each record (R, K); every window of a record must carry it."""
        first = np.empty(records.size, dtype=np.int64)
        first[records.inverse[::-1]] = np.arange(y.shape[0])[::-1]
        labels = y[first]
        clash = np.flatnonzero((labels[records.inverse] != y).any(axis=1))
        if clash.size:
            record = records.inverse[clash[0]]
            raise ValueError(f"record {records.ids[record : record + 1].tolist()[0]!r} has windows with different "
                             "label sets; a record has one set of labels")
        return labels

    def complete_rows(self, rows, probabilities, targets, threshold_split):
        """F1 columns of every eval row at the thresholds fitted on ``threshold_split`` (windows
        for window rows, records for ``_record`` rows)."""
        for level in ("", "_record"):
            fitted_on = f"{threshold_split}{level}"
            if fitted_on not in probabilities or fitted_on not in targets:
                continue
            thresholds = fit_thresholds(targets[fitted_on], np.asarray(probabilities[fitted_on]))
            for row in rows:
                name = row["split"]
                if name in probabilities and name in targets and name.endswith("_record") == bool(level):
                    scored = multilabel_metrics(targets[name], np.asarray(probabilities[name]), self.labels, thresholds)
                    row.update({k: v for k, v in scored.items() if k.startswith("f1_")})


def task_from_description(description: dict[str, Any]) -> Task:
    """The task that ``describe()`` gave ``description``."""
    name = description.get("name")
    if name == ReconstructionTask.name:
        return ReconstructionTask()
    if name == ClassificationTask.name:
        return ClassificationTask(description["classes"], description.get("class_weights"))
    if name == MultiLabelTask.name:
        return MultiLabelTask(description["labels"], description.get("positive_weights"))
    raise ValueError(f"unknown task description {dict(description)}")
