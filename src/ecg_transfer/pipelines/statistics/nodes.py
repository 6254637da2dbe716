"""Statistics: from the per-epoch histories of every run to the paper's tables, the figures,
the comparisons the paper did not make, and a report that sets our numbers beside the paper's."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ecg_transfer.study import figures, tables
from ecg_transfer.study.report import study_report
from ecg_transfer.study.statistics import compare_arms
from ecg_transfer.study.summaries import summarise_runs
from ecg_transfer.training.engine import resolve_device

# The Table-2 variants: the paper's optimistic protocol (best test F1 over epochs) and the
# honest one (test F1 at the best-validation epoch), for weighted and macro F1.
TABLE2_METRICS = {
    "table2_f1_weighted": "best_test_f1_weighted",
    "table2_f1_weighted_honest": "honest_test_f1_weighted",
    "table2_f1_macro": "best_test_f1_macro",
    "table2_f1_macro_honest": "honest_test_f1_macro",
}


def combine_histories(*arm_histories: pd.DataFrame) -> pd.DataFrame:
    """All runs' per-epoch histories in one long table."""
    return pd.concat(arm_histories, ignore_index=True)


def summarise_study_runs(training_histories: pd.DataFrame, statistics: dict[str, Any]) -> pd.DataFrame:
    """One row per (fraction, arm, trial): best and honest test F1, LCI, per-class F1."""
    return summarise_runs(training_histories, lci_eps=float(statistics["lci_eps"]))


def compare_study_arms(run_summary: pd.DataFrame, statistics: dict[str, Any]) -> pd.DataFrame:
    """Welch and paired tests, Hedges' g, bootstrap CIs and Holm-adjusted p for every metric."""
    comparisons = [tuple(pair) for pair in statistics["comparisons"]]
    frames = [
        compare_arms(
            run_summary,
            metric=metric,
            comparisons=comparisons,
            n_boot=int(statistics["n_boot"]),
            confidence=float(statistics["confidence"]),
            seed=int(statistics["seed"]),
        ).assign(metric=metric)
        for metric in [*TABLE2_METRICS.values(), "lci"]
    ]
    return pd.concat(frames, ignore_index=True)


def make_tables(run_summary: pd.DataFrame) -> dict[str, Any]:
    """Table 2 (four variants) and Table 3 (LCI), each as CSV and Markdown, laid out like the paper."""
    outputs: dict[str, Any] = {}
    for name, metric in TABLE2_METRICS.items():
        table = tables.table2(run_summary, metric=metric)
        outputs[f"{name}_table_csv"] = table
        outputs[f"{name}_table_markdown"] = tables.to_markdown(table)
    table = tables.table3(run_summary)
    outputs["table3_lci_table_csv"] = table
    outputs["table3_lci_table_markdown"] = tables.to_markdown(table)
    return outputs


def plot_study(run_summary: pd.DataFrame, training_histories: pd.DataFrame) -> tuple[Figure, Figure, Figure, Figure]:
    """F1 against training fraction per arm, learning curves (the paper's Fig. 5), per-class F1."""
    return (
        figures.f1_vs_fraction(run_summary, metric="best_test_f1_weighted"),
        figures.f1_vs_fraction(run_summary, metric="honest_test_f1_weighted"),
        figures.learning_curves(training_histories, split="test"),
        figures.per_class_f1(run_summary),
    )


def write_study_report(
    run_summary: pd.DataFrame,
    arm_comparisons: pd.DataFrame,
    table2: pd.DataFrame,
    table3: pd.DataFrame,
    cae_history: pd.DataFrame,
    study_meta: dict[str, Any],
) -> str:
    """A Markdown report with our numbers beside the paper's, and what they do and do not show."""
    meta = dict(study_meta)
    test_mse = cae_history.loc[cae_history["split"] == "test"]
    if not test_mse.empty:
        meta["cae_test_mse_per_sample"] = float(test_mse["loss"].min())
    return study_report(run_summary, arm_comparisons, table2, table3, meta)


def describe_study(
    labelled_windows, pretraining_windows, study: dict[str, Any], finetuning: dict[str, Any],
    image_transfer: dict[str, Any],
) -> dict[str, Any]:
    """What the numbers came from, for the report and the MLflow parent run."""
    labelled = labelled_windows.index
    return {
        "labelled_windows": int(len(labelled)),
        "labelled_split_sizes": {k: int(v) for k, v in labelled["split"].value_counts().items()},
        "labelled_class_counts": {str(k): int(v) for k, v in labelled["label"].value_counts().items()},
        "pretraining_windows": int(len(pretraining_windows)),
        "fractions": [float(f) for f in study["fractions"]],
        "n_trials": int(study["n_trials"]),
        "epochs": int(finetuning["training"]["epochs"]),
        "device": str(resolve_device(str(finetuning["training"].get("device", "auto")))),
        "image_backbone": str(image_transfer["backbone"]["name"]),
        "synthetic": bool(study.get("synthetic", True)),
    }
