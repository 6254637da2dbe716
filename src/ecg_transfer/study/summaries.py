"""From per-epoch histories to one row per run (fraction, arm, trial).

Two protocols side by side:
- optimistic (the paper's): the best *test* score over all epochs, i.e. model selection on the
  test split. Each best_* column takes its own best epoch.
- honest: one epoch per run is chosen by the best *validation* headline metric (ties -> earliest
  epoch), and every honest_* column is the test value at that one epoch, as if that checkpoint
  were the model shipped.

The headline metric comes from the histories (:func:`headline_metric`, the one place that
decides it): weighted F1 for a single-label study (the paper's metric; honest columns for
weighted and macro F1, accuracy, macro AUROC and per-class F1), macro AUROC for a multi-label
one (the PTB-XL benchmark's; honest columns for macro AUROC, macro F1 at validation-fitted
thresholds, and per-label AUROC and F1). The LCI is computed on the headline's test curve.

Histories may hold record-level rows (splits ``val_record``/``test_record``) when a record gives
several windows; their test scores at the honest epoch become ``honest_test_record_*``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecg_transfer.study.lci import (
    bounded_learning_curve_index,
    curve_never_drops,
    learning_curve_index,
)

logger = logging.getLogger(__name__)

RUN_KEYS = ["fraction", "arm", "trial"]
# The honest rule of a single-label study: the epoch with the best validation f1_weighted, the
# earliest on ties. The run's saved "honest" predictions must come from that epoch
# (study/experiment.py checks it); :func:`honest_monitor` gives the rule of any histories.
HONEST_MONITOR = ("val", "f1_weighted")
HISTORY_COLUMNS = ("fraction", "arm", "trial", "epoch", "split", "f1_weighted", "f1_macro", "accuracy")
SPLITS = ("train", "val", "test", "val_record", "test_record")
AGGREGATE_METRICS = ("f1_weighted", "f1_macro", "accuracy")
# Optional: histories from before macro AUROC was logged lack it, and then so does the summary.
OPTIONAL_METRICS = ("auroc_macro",)
SUMMARY_PREFIXES = ("best_test_", "honest_test_record_", "honest_test_", "final_test_")


@dataclass(frozen=True)
class HeadlineMetrics:
    """What a task's histories hold and how they are summarised.

    ``required``: aggregate columns every history must have, with no NaN on test for those in
    ``best``; ``optional``: aggregate columns used when present, NaN allowed (macro AUROC on a
    one-class test split; multi-label F1 without a validation split to fit thresholds on);
    ``best``: the required metrics that get a ``best_test_*`` column (every optional one present
    gets one too); ``per_label``: prefixes of the per-class or per-label columns."""

    headline: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    best: tuple[str, ...]
    per_label: tuple[str, ...]

    def present(self, columns) -> tuple[str, ...]:
        """The aggregate metrics summarised for histories with these columns, in order."""
        return (*self.required, *(m for m in self.optional if m in set(columns)))

    def per_label_columns(self, columns) -> list[str]:
        """The per-class (per-label) columns, in the histories' own order."""
        aggregates = {"f1_weighted", "f1_macro", "auroc_macro"}
        return [c for c in columns if c.startswith(self.per_label) and c not in aggregates]


SINGLE_LABEL = HeadlineMetrics("f1_weighted", AGGREGATE_METRICS, OPTIONAL_METRICS, ("f1_weighted", "f1_macro"), ("f1_",))
# Multi-label: no weighted F1, no accuracy (neither means much with several labels per record).
MULTILABEL = HeadlineMetrics("auroc_macro", ("auroc_macro",), ("f1_macro",), ("auroc_macro",), ("auroc_", "f1_"))
HEADLINES = {metrics.headline: metrics for metrics in (SINGLE_LABEL, MULTILABEL)}


def headline_metric(frame: pd.DataFrame) -> str:
    """The study's headline metric, read from histories or from a run summary: ``f1_weighted``
    (single-label: the columns hold weighted F1 or accuracy, which only the single-label task
    logs), else ``auroc_macro`` (multi-label). The one place that decides it; everything
    downstream (honest epoch, LCI, tables, comparisons, figures, report) asks here."""
    names = set()
    for column in map(str, frame.columns):
        names.add(column)
        names.update(column[len(p):] for p in SUMMARY_PREFIXES if column.startswith(p))
    if names & {"f1_weighted", "accuracy"}:
        return SINGLE_LABEL.headline
    if "auroc_macro" in names:
        return MULTILABEL.headline
    raise ValueError(
        "headline_metric: the columns hold neither f1_weighted (single-label) nor auroc_macro "
        f"(multi-label); got {sorted(names)[:12]}"
    )


def honest_monitor(histories: pd.DataFrame) -> tuple[str, str]:
    """(split, metric) of the honest rule for these histories: the validation headline metric."""
    return HONEST_MONITOR[0], headline_metric(histories)


def per_class_columns(histories: pd.DataFrame) -> list[str]:
    """The f1_<class> columns (multi-label: auroc_<label> and f1_<label>), in the histories' own
    order (the study's class order upstream)."""
    return HEADLINES[headline_metric(histories)].per_label_columns(histories.columns)


def class_names(frame: pd.DataFrame, prefix: str = "f1_") -> list[str]:
    """The class names behind the per-class columns ``<prefix><class>`` of ``frame``."""
    skip = {"weighted", "macro"}
    return [c[len(prefix):] for c in frame.columns if c.startswith(prefix) and c[len(prefix):] not in skip]


def summarise_runs(histories: pd.DataFrame, lci_eps: float = 1e-8) -> pd.DataFrame:
    """One row per (fraction, arm, trial): optimistic, honest and final-epoch scores, and LCI.

    The LCI columns are computed on the per-epoch *test* curve of the headline metric
    (:func:`headline_metric`; weighted F1 as in the paper, macro AUROC for multi-label);
    ``lci_never_drops`` marks the runs whose curve never drops (their LCI is ~best x mean rise
    / eps). Runs without a validation split get NaN honest columns (and a warning), not an
    error, so a paper-faithful run without validation can still be summarised.
    """
    spec = _validate_histories(histories)
    class_columns = spec.per_label_columns(histories.columns)
    metrics = spec.present(histories.columns)
    rows = []
    for (fraction, arm, trial), run in histories.groupby(RUN_KEYS, sort=True):
        rows.append(_summarise_one(float(fraction), arm, int(trial), run, spec, metrics, class_columns, lci_eps))
    return pd.DataFrame(rows)


def _summarise_one(fraction, arm, trial, run, spec, metrics, class_columns, lci_eps) -> dict:
    where = f"run (fraction={fraction}, arm={arm}, trial={trial})"
    test = run[run["split"] == "test"].sort_values("epoch")
    val = run[run["split"] == "val"].sort_values("epoch")
    if test.empty:
        raise ValueError(f"summarise_runs: {where} has no test rows")
    test_by_epoch = test.set_index("epoch")
    row = {"fraction": fraction, "arm": arm, "trial": trial, "n_epochs": int(test.shape[0])}

    for metric in (*spec.best, *(m for m in metrics if m in spec.optional)):
        curve = test_by_epoch[metric]
        if metric in spec.optional:
            if curve.isna().all():  # e.g. AUROC undefined on a one-class test split
                row[f"best_test_{metric}"], row[f"best_epoch_{metric}"] = np.nan, np.nan
                continue
        elif curve.isna().any():
            raise ValueError(f"summarise_runs: {where} has NaN test {metric}")
        best_epoch = int(curve.idxmax())  # idxmax skips NaN and returns the earliest maximum
        row[f"best_test_{metric}"] = float(curve.loc[best_epoch])
        row[f"best_epoch_{metric}"] = best_epoch

    honest_epoch = _honest_epoch(val, test_by_epoch.index, where, spec.headline)
    row["honest_epoch"] = honest_epoch
    for metric in (*metrics, *class_columns):
        row[f"honest_test_{metric}"] = (
            float(test_by_epoch.loc[honest_epoch, metric]) if honest_epoch is not None else np.nan
        )
    test_record = run[run["split"] == "test_record"].set_index("epoch")
    if not test_record.empty:
        for metric in metrics:
            row[f"honest_test_record_{metric}"] = (
                float(test_record.loc[honest_epoch, metric])
                if honest_epoch is not None and honest_epoch in test_record.index
                else np.nan
            )
    final_epoch = int(test_by_epoch.index.max())
    row["final_epoch"] = final_epoch
    for metric in metrics:
        row[f"final_test_{metric}"] = float(test_by_epoch.loc[final_epoch, metric])

    curve = test_by_epoch[spec.headline].to_numpy(dtype=float)
    if curve.size >= 2:
        row["lci"] = learning_curve_index(curve, eps=lci_eps)
        row["lci_bounded"] = bounded_learning_curve_index(curve)
        row["lci_never_drops"] = curve_never_drops(curve)
    else:
        logger.warning("summarise_runs: %s has a single epoch; LCI is NaN", where)
        row["lci"] = row["lci_bounded"] = np.nan
        row["lci_never_drops"] = False
    return row


def _honest_epoch(val: pd.DataFrame, test_epochs: pd.Index, where: str, monitor: str) -> int | None:
    if val.empty:
        logger.warning("summarise_runs: %s has no validation rows; honest columns are NaN", where)
        return None
    scores = val.set_index("epoch")[monitor]
    if scores.isna().all():
        raise ValueError(f"summarise_runs: {where} has only NaN validation {monitor}")
    epoch = int(scores.idxmax())  # NaN-skipping, first maximum on ties
    if epoch not in test_epochs:
        raise ValueError(
            f"summarise_runs: {where} selects epoch {epoch} on validation but has no test row for it"
        )
    return epoch


def _validate_histories(histories: pd.DataFrame) -> HeadlineMetrics:
    if not isinstance(histories, pd.DataFrame):
        raise TypeError(f"summarise_runs: histories must be a DataFrame, got {type(histories).__name__}")
    try:
        spec = HEADLINES[headline_metric(histories)]
    except ValueError:  # neither kind: name the single-label columns, as before
        spec = SINGLE_LABEL
    missing = [c for c in (*HISTORY_COLUMNS[:5], *spec.required) if c not in histories.columns]
    if missing:
        raise ValueError(f"summarise_runs: histories lack columns {missing}")
    if histories.empty:
        raise ValueError("summarise_runs: histories is empty")
    unknown = sorted(set(histories["split"]) - set(SPLITS))
    if unknown:
        raise ValueError(f"summarise_runs: unknown split values {unknown} (known: {list(SPLITS)})")
    duplicated = histories.duplicated([*RUN_KEYS, "epoch", "split"])
    if duplicated.any():
        first = histories.loc[duplicated, [*RUN_KEYS, "epoch", "split"]].iloc[0].to_dict()
        raise ValueError(
            f"summarise_runs: {int(duplicated.sum())} duplicate (fraction, arm, trial, epoch, split) "
            f"rows, first {first}"
        )
    return spec


def check_histories_complete(
    histories: pd.DataFrame, max_epochs: int, patience: int | None = None, source: str = "training_histories"
) -> None:
    """Refuse histories cut short: every run must hold epochs 1..k on each of its splits, the
    same k on all, and k must be the planned maximum ``max_epochs`` unless the run stopped
    early. A stop is recorded by a true ``stopped_early`` column in the run's rows, or, without
    that column and with ``patience`` set, read from the history itself: the last ``patience``
    epochs did not improve the best validation headline metric (the stop rule of the engine:
    weighted F1, or macro AUROC for multi-label).

    A file whose last rows were cut off otherwise summarises without a word, as a run of fewer
    epochs with another honest score; the error names the arm, the run and ``source``.
    """
    problems = []
    monitor = honest_monitor(histories)[1] if patience is not None else None
    for (fraction, arm, trial), run in histories.groupby(RUN_KEYS, sort=True):
        where = f"{arm} (fraction {fraction:g}, trial {trial})"
        counts = {split: sorted(int(e) for e in rows["epoch"]) for split, rows in run.groupby("split")}
        last = {split: epochs[-1] for split, epochs in counts.items()}
        gaps = [split for split, epochs in counts.items() if epochs != list(range(1, len(epochs) + 1))]
        if gaps:
            problems.append(f"{where}: epochs missing or out of 1..n on split(s) {gaps}")
        elif len(set(last.values())) > 1:
            problems.append(f"{where}: the splits end at different epochs {last}")
        elif max(last.values()) > max_epochs:
            problems.append(f"{where}: {max(last.values())} epochs, more than the planned {max_epochs}")
        elif max(last.values()) < max_epochs and not _stopped_early(run, patience, monitor):
            problems.append(
                f"{where}: {max(last.values())} of the planned {max_epochs} epochs and no recorded early stop"
            )
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise ValueError(
            f"statistics: {source} holds incomplete runs (a damaged or cut file, or a run still "
            f"training); retrain those arms or restore the file:\n  {shown}"
        )


def _stopped_early(run: pd.DataFrame, patience: int | None, monitor: str | None) -> bool:
    if "stopped_early" in run.columns:
        return bool(run["stopped_early"].fillna(False).astype(bool).any())
    if patience is None:
        return False
    val = run[run["split"] == "val"].set_index("epoch")[monitor].sort_index()
    if val.empty or val.isna().all():
        return False
    return int(val.index.max()) - int(val.idxmax()) >= int(patience)


def still_improving(summary: pd.DataFrame, max_epochs: int, share: float = 0.2) -> pd.DataFrame:
    """Per (fraction, arm): in how many runs the honest (best-validation) epoch lies in the last
    ``share`` of the planned epochs; ``flagged`` where that is most runs (more than half).

    Such an arm was still improving when the budget ended, so a longer budget may change its
    comparisons: the honest epoch measures how fast an arm converges as much as how good it is.
    """
    missing = {"fraction", "arm", "trial", "honest_epoch"} - set(summary.columns)
    if missing:
        raise ValueError(f"still_improving: summary lacks columns {sorted(missing)}")
    if max_epochs < 1:
        raise ValueError(f"still_improving: max_epochs must be >= 1, got {max_epochs}")
    late_from = max_epochs - share * max_epochs  # epochs after this lie in the last fifth
    rows = []
    for (fraction, arm), runs in summary.groupby(["fraction", "arm"], sort=False):
        epochs = runs["honest_epoch"].dropna().to_numpy(dtype=float)
        late = int((epochs > late_from).sum())
        rows.append({"fraction": float(fraction), "arm": arm, "runs": int(epochs.size), "late_runs": late,
                     "flagged": bool(epochs.size and late > epochs.size / 2)})
    return pd.DataFrame(rows, columns=["fraction", "arm", "runs", "late_runs", "flagged"])
