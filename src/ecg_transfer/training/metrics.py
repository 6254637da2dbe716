"""Classification (single- and multi-label) and reconstruction metrics, the same for every arm.

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


# ---------------------------------------------------------------- multi-label


def _targets_and_scores(targets, scores, where: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(targets)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or s.shape != y.shape:
        raise ValueError(f"{where}: targets and scores must both be (N, K), got {y.shape} and {s.shape}")
    if y.shape[0] == 0:
        raise ValueError(f"{where}: no samples")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{where}: targets must be 0/1, got values {np.unique(y)[:5].tolist()}")
    return y.astype(bool), s


def multilabel_auroc(targets, scores) -> np.ndarray:
    """AUROC of every label (K,), each its own positives against its own negatives.

    A label whose targets hold only positives or only negatives in this split has no AUROC
    (sklearn's ``roc_auc_score`` raises there): its entry is NaN. On the labels that have both,
    the values equal ``roc_auc_score(targets, scores, average=None)``.
    """
    y, s = _targets_and_scores(targets, scores, "multilabel_auroc")
    values = np.full(y.shape[1], np.nan)
    for k in range(y.shape[1]):
        n_pos = int(y[:, k].sum())
        if 0 < n_pos < y.shape[0]:
            values[k] = _binary_auroc(y[:, k], s[:, k])
    return values


def fit_thresholds(targets, scores) -> np.ndarray:
    """Per-label decision thresholds (K,) that maximise each label's F1 on these rows.

    Meant for the *validation* split only; the thresholds are then applied, unchanged, to the
    test split (:func:`multilabel_metrics` with ``thresholds``). Candidates are the label's own
    scores (a row is positive when its score >= the threshold); ties in F1 go to the highest
    threshold (the fewest positives). A label without positives here has no F1 to maximise:
    its threshold is 0.5, the sigmoid's even odds.
    """
    y, s = _targets_and_scores(targets, scores, "fit_thresholds")
    thresholds = np.full(y.shape[1], 0.5)
    for k in range(y.shape[1]):
        n_pos = int(y[:, k].sum())
        if n_pos == 0:
            continue
        order = np.argsort(-s[:, k], kind="stable")
        ranked, hits = s[order, k], np.cumsum(y[order, k])
        last = np.r_[ranked[1:] != ranked[:-1], True]  # last row of each run of equal scores
        f1 = 2.0 * hits[last] / (n_pos + np.flatnonzero(last) + 1)
        thresholds[k] = ranked[last][int(np.argmax(f1))]  # first maximum = highest threshold
    return thresholds


def multilabel_metrics(targets, scores, labels: Sequence[str], thresholds=None) -> dict[str, float]:
    """Macro AUROC (the headline), one AUROC per label and, given ``thresholds``, F1s.

    - ``auroc_<label>``: :func:`multilabel_auroc`, NaN for a label without positives (or
      without negatives) in this split;
    - ``auroc_macro``: the mean over the labels with a defined AUROC (NaN when none has);
      it equals ``roc_auc_score(targets[:, defined], scores[:, defined], average="macro")``;
    - ``f1_<label>``: F1 of ``scores >= threshold`` per label (sklearn's ``f1_score`` with
      ``average=None``), NaN for a label without positives in this split (no recall);
    - ``f1_macro``: the mean over the labels with positives, as the single-label ``f1_macro``
      averages over the classes present.

    Without ``thresholds`` the F1 columns are left out (their thresholds come from the
    validation split: :func:`fit_thresholds`).
    """
    labels = tuple(str(name) for name in labels)
    y, s = _targets_and_scores(targets, scores, "multilabel_metrics")
    if y.shape[1] != len(labels):
        raise ValueError(f"multilabel_metrics: {y.shape[1]} target columns for {len(labels)} labels {list(labels)}")
    auroc = multilabel_auroc(y, s)
    defined = ~np.isnan(auroc)
    result = {"auroc_macro": float(auroc[defined].mean()) if defined.any() else float("nan")}
    result.update({f"auroc_{name}": float(value) for name, value in zip(labels, auroc)})
    if thresholds is None:
        return result
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (len(labels),):
        raise ValueError(f"multilabel_metrics: {thresholds.shape} thresholds for {len(labels)} labels")
    predicted = s >= thresholds
    tp = (predicted & y).sum(axis=0)
    support = y.sum(axis=0)
    denominator = support + predicted.sum(axis=0)
    f1 = np.where(support > 0, 2.0 * tp / np.maximum(denominator, 1), np.nan)
    result["f1_macro"] = float(np.nanmean(f1)) if (support > 0).any() else float("nan")
    result.update({f"f1_{name}": float(value) for name, value in zip(labels, f1)})
    return result


def weighted_macro_auroc(targets, scores, weights) -> float:
    """Macro AUROC with a weight per row (a bootstrap resample's multiplicities): each label's
    weighted Mann-Whitney statistic (ties one half), equal to ``roc_auc_score(...,
    sample_weight=weights)`` per label; labels without weighted positives or negatives are
    skipped (NaN when none is left), as :func:`multilabel_metrics` does."""
    y, s = _targets_and_scores(targets, scores, "weighted_macro_auroc")
    w = np.asarray(weights, dtype=np.float64)
    values = []
    for k in range(y.shape[1]):
        w_pos, w_neg = w * y[:, k], w * ~y[:, k]
        if w_pos.sum() <= 0 or w_neg.sum() <= 0:
            continue
        levels, at = np.unique(s[:, k], return_inverse=True)
        negatives = np.bincount(at, weights=w_neg, minlength=levels.size)
        below = np.cumsum(negatives) - negatives
        values.append(float((w_pos * (below[at] + 0.5 * negatives[at])).sum() / (w_pos.sum() * w_neg.sum())))
    return float(np.mean(values)) if values else float("nan")
