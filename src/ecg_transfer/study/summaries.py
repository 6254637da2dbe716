"""From per-epoch histories to one row per run (fraction, arm, trial).

Two protocols side by side:
- optimistic (the paper's): the best *test* F1 over all epochs, i.e. model selection on the
  test split. Each best_* column takes its own best epoch.
- honest: one epoch per run is chosen by the best *validation* F1_weighted (ties -> earliest
  epoch), and every honest_* column (weighted, macro, accuracy, per-class F1) is the test value
  at that one epoch, as if that checkpoint were the model shipped.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ecg_transfer.study.lci import bounded_learning_curve_index, learning_curve_index

logger = logging.getLogger(__name__)

RUN_KEYS = ["fraction", "arm", "trial"]
HISTORY_COLUMNS = ("fraction", "arm", "trial", "epoch", "split", "f1_weighted", "f1_macro", "accuracy")
AGGREGATE_METRICS = ("f1_weighted", "f1_macro", "accuracy")


def per_class_columns(histories: pd.DataFrame) -> list[str]:
    """The f1_<RHYTHM> columns, in the histories' own order (the RHYTHMS order upstream)."""
    return [c for c in histories.columns if c.startswith("f1_") and c not in ("f1_weighted", "f1_macro")]


def summarise_runs(histories: pd.DataFrame, lci_eps: float = 1e-8) -> pd.DataFrame:
    """One row per (fraction, arm, trial): optimistic, honest and final-epoch scores, and LCI.

    The LCI columns are computed on the per-epoch *test* f1_weighted curve, as in the paper.
    Runs without a validation split get NaN honest columns (and a warning), not an error, so a
    paper-faithful run without validation can still be summarised.
    """
    _validate_histories(histories)
    class_columns = per_class_columns(histories)
    rows = []
    for (fraction, arm, trial), run in histories.groupby(RUN_KEYS, sort=True):
        rows.append(_summarise_one(float(fraction), arm, int(trial), run, class_columns, lci_eps))
    return pd.DataFrame(rows)


def _summarise_one(fraction, arm, trial, run, class_columns, lci_eps) -> dict:
    where = f"run (fraction={fraction}, arm={arm}, trial={trial})"
    test = run[run["split"] == "test"].sort_values("epoch")
    val = run[run["split"] == "val"].sort_values("epoch")
    if test.empty:
        raise ValueError(f"summarise_runs: {where} has no test rows")
    test_by_epoch = test.set_index("epoch")
    row = {"fraction": fraction, "arm": arm, "trial": trial, "n_epochs": int(test.shape[0])}

    for metric in ("f1_weighted", "f1_macro"):
        curve = test_by_epoch[metric]
        if curve.isna().any():
            raise ValueError(f"summarise_runs: {where} has NaN test {metric}")
        best_epoch = int(curve.idxmax())  # idxmax returns the first (earliest) maximum
        row[f"best_test_{metric}"] = float(curve.loc[best_epoch])
        row[f"best_epoch_{metric}"] = best_epoch

    honest_epoch = _honest_epoch(val, test_by_epoch.index, where)
    row["honest_epoch"] = honest_epoch
    for metric in (*AGGREGATE_METRICS, *class_columns):
        row[f"honest_test_{metric}"] = (
            float(test_by_epoch.loc[honest_epoch, metric]) if honest_epoch is not None else np.nan
        )
    final_epoch = int(test_by_epoch.index.max())
    row["final_epoch"] = final_epoch
    for metric in AGGREGATE_METRICS:
        row[f"final_test_{metric}"] = float(test_by_epoch.loc[final_epoch, metric])

    curve = test_by_epoch["f1_weighted"].to_numpy(dtype=float)
    if curve.size >= 2:
        row["lci"] = learning_curve_index(curve, eps=lci_eps)
        row["lci_bounded"] = bounded_learning_curve_index(curve)
    else:
        logger.warning("summarise_runs: %s has a single epoch; LCI is NaN", where)
        row["lci"] = row["lci_bounded"] = np.nan
    return row


def _honest_epoch(val: pd.DataFrame, test_epochs: pd.Index, where: str) -> int | None:
    if val.empty:
        logger.warning("summarise_runs: %s has no validation rows; honest columns are NaN", where)
        return None
    scores = val.set_index("epoch")["f1_weighted"]
    if scores.isna().all():
        raise ValueError(f"summarise_runs: {where} has only NaN validation f1_weighted")
    epoch = int(scores.idxmax())  # NaN-skipping, first maximum on ties
    if epoch not in test_epochs:
        raise ValueError(
            f"summarise_runs: {where} selects epoch {epoch} on validation but has no test row for it"
        )
    return epoch


def _validate_histories(histories: pd.DataFrame) -> None:
    if not isinstance(histories, pd.DataFrame):
        raise TypeError(f"summarise_runs: histories must be a DataFrame, got {type(histories).__name__}")
    missing = [c for c in HISTORY_COLUMNS if c not in histories.columns]
    if missing:
        raise ValueError(f"summarise_runs: histories lack columns {missing}")
    if histories.empty:
        raise ValueError("summarise_runs: histories is empty")
    unknown = sorted(set(histories["split"]) - {"train", "val", "test"})
    if unknown:
        raise ValueError(f"summarise_runs: unknown split values {unknown}")
    duplicated = histories.duplicated([*RUN_KEYS, "epoch", "split"])
    if duplicated.any():
        first = histories.loc[duplicated, [*RUN_KEYS, "epoch", "split"]].iloc[0].to_dict()
        raise ValueError(
            f"summarise_runs: {int(duplicated.sum())} duplicate (fraction, arm, trial, epoch, split) "
            f"rows, first {first}"
        )
