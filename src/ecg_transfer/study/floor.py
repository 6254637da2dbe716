"""The floor: what a classifier that never looks at the ECG scores on the test split
(single-label below; multi-label: :func:`multilabel_floor_scores`).

A table of arms means little without it: on an imbalanced two-class task an arm at 0.81
weighted F1 may score what always answering the majority class scores. Two such classifiers,
both fitted on the *training* split's class shares (as sklearn's ``DummyClassifier`` is) and
scored on the test labels, exactly, from class counts alone:

- **majority class**: always the most frequent training class (ties: the alphabetically first,
  as DummyClassifier's ``most_frequent``). On the test split of N records with n_m of that class:
  F1 of that class 2 n_m / (n_m + N), every other class 0.
- **stratified guess**: a random class drawn with the training shares p_c, independent of the
  ECG (DummyClassifier's ``stratified``). Scored on its *expected* confusion matrix (tp_c = n_c p_c,
  predicted_c = N p_c), so F1_c = 2 n_c p_c / (n_c + N p_c); with p = the test shares q this is
  F1_c = q_c, weighted F1 = sum q_c^2. One random guess scatters around this by O(1/sqrt(N)).

Both score macro AUROC 0.5 (their scores carry no information about the class). Macro F1
averages over the classes present in the test labels, as the training metrics do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FLOOR_COLUMNS = ["classifier", "predicts", "f1_weighted", "f1_macro", "accuracy", "auroc_macro"]


def floor_scores(train_labels, test_labels) -> pd.DataFrame:
    """One row per trivial classifier (majority class, stratified guess) with its test scores."""
    train = pd.Series(np.asarray(train_labels, dtype=object)).astype(str)
    test = pd.Series(np.asarray(test_labels, dtype=object)).astype(str)
    if train.empty or test.empty:
        raise ValueError(f"floor_scores: need training and test labels, got {train.size} and {test.size}")
    classes = sorted(set(train) | set(test))
    prior = train.value_counts(normalize=True).reindex(classes, fill_value=0.0).to_numpy(dtype=float)
    counts = test.value_counts().reindex(classes, fill_value=0).to_numpy(dtype=float)
    n = counts.sum()
    present = counts > 0

    majority = int(np.argmax(prior))  # first maximum in sorted class order, as DummyClassifier
    hits = np.zeros(len(classes))
    hits[majority] = counts[majority]
    predicted = np.zeros(len(classes))
    predicted[majority] = n
    rows = [_row("majority class", classes[majority], counts, hits, predicted, present)]

    rows.append(_row("stratified guess", "training class shares", counts, counts * prior, n * prior, present))
    return pd.DataFrame(rows, columns=FLOOR_COLUMNS)


def _row(name: str, predicts: str, support, hits, predicted, present) -> dict:
    denominator = support + predicted
    f1 = np.divide(2.0 * hits, denominator, out=np.zeros_like(hits), where=denominator > 0)
    n = support.sum()
    return {
        "classifier": name,
        "predicts": predicts,
        "f1_weighted": float((support * f1).sum() / n),
        "f1_macro": float(f1[present].mean()),
        "accuracy": float(hits.sum() / n),
        "auroc_macro": 0.5,
    }


def floor_for(metric: str, floor: pd.DataFrame) -> dict[str, float]:
    """{classifier: score} of the floor for a summary column such as ``honest_test_f1_macro``;
    empty when the floor has no such score (e.g. LCI)."""
    for column in ("f1_weighted", "f1_macro", "accuracy", "auroc_macro"):
        if metric.endswith(column):
            return {str(name): float(value) for name, value in zip(floor["classifier"], floor[column])}
    return {}


def multilabel_floor_scores(train_targets, test_targets, labels) -> pd.DataFrame:
    """The multi-label floor (``task: multilabel``): prevalence-only scores on the test split.

    Every record gets each label's *training* prevalence p_k as its score: no information, so
    every label's AUROC, and macro AUROC, is 0.5. Two F1s of that score, exactly, from counts
    (a test split of N records, n_k positives of label k):

    - **prevalence guess**: label k answered positive at random with probability p_k (the
      multi-label stratified guess), scored on its expected confusion counts:
      F1_k = 2 n_k p_k / (n_k + N p_k);
    - **always positive**: what a constant score gives at the study's validation-fitted threshold
      (:func:`~ecg_transfer.training.metrics.fit_thresholds` puts the threshold at the constant,
      so every record is positive): F1_k = 2 n_k / (n_k + N).

    ``f1_<label>`` is NaN for a label without test positives and ``f1_macro`` averages over the
    labels with test positives, as the multi-label metrics do.
    """
    labels = [str(name) for name in labels]
    train, test = np.asarray(train_targets, dtype=float), np.asarray(test_targets, dtype=float)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != len(labels) or test.shape[1] != len(labels) \
            or not train.size or not test.size:
        raise ValueError(f"multilabel_floor_scores: need non-empty (N, {len(labels)}) training and test targets, "
                         f"got {train.shape} and {test.shape}")
    prevalence, support, n = train.mean(axis=0), test.sum(axis=0), test.shape[0]
    present = support > 0
    rows = []
    for name, predicts, f1 in (
        ("prevalence guess", "each label at its training prevalence",
         np.divide(2 * support * prevalence, support + n * prevalence, out=np.zeros(len(labels)),
                   where=support + n * prevalence > 0)),
        ("always positive", "every label on every record", 2 * support / (support + n)),
    ):
        f1 = np.where(present, f1, np.nan)
        rows.append({"classifier": name, "predicts": predicts,
                     "f1_macro": float(np.nanmean(f1)) if present.any() else float("nan"), "auroc_macro": 0.5,
                     **{f"f1_{label}": float(value) for label, value in zip(labels, f1)},
                     **{f"auroc_{label}": 0.5 for label in labels}})
    return pd.DataFrame(rows)
