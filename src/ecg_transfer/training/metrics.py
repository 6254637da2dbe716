"""Classification and reconstruction metrics, computed the same way for every arm.

Class names come from the caller (the study's ``label_classes``): index ``i`` of a label or of
a probability column is ``classes[i]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import accuracy_score, f1_score


def classification_metrics(
    y_true, y_pred, classes: Sequence[str], probabilities=None
) -> dict[str, float]:
    """Weighted F1 (the paper's metric), macro F1, accuracy, one F1 per class and macro AUROC.

    - ``f1_weighted``: sklearn, average="weighted" over labels 0..len(classes)-1,
      zero_division=0; support-weighting makes absent classes count 0 anyway.
    - ``f1_macro``: unweighted mean over the classes *present in y_true*. A rare rhythm
      missing from a small test split has no defined recall; counting it as 0 would move
      macro F1 with the split's luck rather than the model.
    - ``f1_<class>``: that class's F1, NaN when the class is absent from y_true (undefined
      recall), so averages over trials can skip it with nanmean.
    - ``auroc_macro``: from ``probabilities`` (N, len(classes)), see :func:`auroc_macro`;
      NaN when no probabilities are given.
    """
    classes = tuple(classes)
    n_classes = len(classes)
    y_true = np.asarray(y_true).astype(np.int64, copy=False).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64, copy=False).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"classification_metrics: y_true has {y_true.size} labels, y_pred {y_pred.size}")
    if y_true.size == 0:
        raise ValueError("classification_metrics: no samples")
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.min() < 0 or values.max() >= n_classes:
            raise ValueError(
                f"classification_metrics: {name} holds labels outside 0..{n_classes - 1} "
                f"(min {values.min()}, max {values.max()})"
            )
    all_labels = list(range(n_classes))
    present = sorted(set(y_true.tolist()))
    per_class = f1_score(y_true, y_pred, labels=all_labels, average=None, zero_division=0)
    result = {
        "f1_weighted": float(f1_score(y_true, y_pred, labels=all_labels, average="weighted", zero_division=0)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
    }
    for index, name in enumerate(classes):
        result[f"f1_{name}"] = float(per_class[index]) if index in present else float("nan")
    if probabilities is not None and np.shape(probabilities)[-1] != n_classes:
        raise ValueError(
            f"classification_metrics: probabilities have {np.shape(probabilities)[-1]} columns for {n_classes} classes"
        )
    result["auroc_macro"] = float("nan") if probabilities is None else auroc_macro(y_true, probabilities)
    return result


def auroc_macro(y_true, probabilities) -> float:
    """Macro one-vs-rest AUROC over the classes present in ``y_true``.

    With two classes it is the plain AUROC of the positive class (column 1). NaN when fewer
    than two classes are present. Ties count one half (the Mann-Whitney statistic, equal to
    ``sklearn.metrics.roc_auc_score``).
    """
    y_true = np.asarray(y_true).astype(np.int64, copy=False).ravel()
    scores = np.asarray(probabilities, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != y_true.size:
        raise ValueError(
            f"auroc_macro: probabilities must be (N, C) with N = {y_true.size} labels, got {scores.shape}"
        )
    present = np.unique(y_true)
    if present.size < 2:
        return float("nan")
    columns = [1] if scores.shape[1] == 2 else present.tolist()
    values = [_binary_auroc(y_true == c, scores[:, c]) for c in columns]
    return float(np.mean(values))


def _binary_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    ranks = rankdata(score)  # average ranks: ties count one half
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def reconstruction_metrics(x, reconstruction) -> dict[str, float]:
    """MSE per sample and summed squared error per window (the paper's 0.305 and 626.583).

    For windows of L samples, ``sse_per_window == mse * L``.
    """
    x = np.asarray(x, dtype=np.float64)
    reconstruction = np.asarray(reconstruction, dtype=np.float64)
    if x.shape != reconstruction.shape:
        raise ValueError(f"reconstruction_metrics: shapes differ, {x.shape} vs {reconstruction.shape}")
    if x.size == 0:
        raise ValueError("reconstruction_metrics: no samples")
    squared = (x.reshape(x.shape[0], -1) - reconstruction.reshape(x.shape[0], -1)) ** 2
    return {"mse": float(squared.mean()), "sse_per_window": float(squared.sum(axis=1).mean())}
