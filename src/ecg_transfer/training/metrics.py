"""Classification and reconstruction metrics, computed the same way for every arm."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from ecg_transfer.signals.records import RHYTHMS


def class_names(n_classes: int) -> tuple[str, ...]:
    """Rhythm acronyms for the 11 Chapman classes; ``c<i>`` for other class counts."""
    if n_classes == len(RHYTHMS):
        return RHYTHMS
    return tuple(f"c{i}" for i in range(n_classes))


def classification_metrics(y_true, y_pred, n_classes: int = 11) -> dict[str, float]:
    """Weighted F1 (the paper's metric), macro F1, accuracy and one F1 per class.

    - ``f1_weighted``: sklearn, average="weighted" over labels 0..n_classes-1,
      zero_division=0; support-weighting makes absent classes count 0 anyway.
    - ``f1_macro``: unweighted mean over the classes *present in y_true*. A rare
      rhythm missing from a small test split has no defined recall; counting it
      as 0 would move macro F1 with the split's luck rather than the model.
    - ``f1_<RHYTHM>``: that class's F1, NaN when the class is absent from y_true
      (undefined recall), so averages over trials can skip it with nanmean.
    """
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
    for index, name in enumerate(class_names(n_classes)):
        result[f"f1_{name}"] = float(per_class[index]) if index in present else float("nan")
    return result


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
