"""Statistics: from the per-epoch histories and predictions of every run to the paper's tables,
the figures, the comparisons the paper did not make, and a report that says what data and runs
the numbers come from.

Per-arm inputs arrive as positional lists in the arm registry's order (``study.arms``); the
first node checks that every arm ran under one study configuration before anything is combined,
and builds the arm registry once (``arm_registry``) for every node after it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ecg_transfer.study import figures, tables
from ecg_transfer.study.arms import ArmRegistry, arm_registry
from ecg_transfer.study.bootstrap import sample_sizes
from ecg_transfer.study.floor import floor_for, floor_scores, multilabel_floor_scores
from ecg_transfer.study.report import PaperReference, labelled_split_text, study_report
from ecg_transfer.study.run_settings import check_arm_settings, check_histories_match, describe_run
from ecg_transfer.study.statistics import (
    compare_arms,
    multilabel_bootstrap_comparisons,
    record_bootstrap_comparisons,
)
from ecg_transfer.study.summaries import (
    MULTILABEL,
    check_histories_complete,
    headline_metric,
    still_improving,
    summarise_runs,
)
from ecg_transfer.typed_config import config_from_params

# The Table-2 variants: the paper's optimistic protocol (best test score over epochs) and the
# honest one (test score at the best-validation epoch), for weighted F1, macro F1, macro AUROC.
# A multi-label study has no weighted F1: its two weighted-F1 tables say so in a note, and its
# headline tables are the macro-AUROC ones.
TABLE2_METRICS = {
    "table2_f1_weighted": "best_test_f1_weighted",
    "table2_f1_weighted_honest": "honest_test_f1_weighted",
    "table2_f1_macro": "best_test_f1_macro",
    "table2_f1_macro_honest": "honest_test_f1_macro",
    "table2_auroc_macro": "best_test_auroc_macro",
    "table2_auroc_macro_honest": "honest_test_auroc_macro",
}
# Table 3: the paper's LCI and the bounded variant that survives curves without a drop.
TABLE3_METRICS = {"table3_lci": "lci", "table3_lci_bounded": "lci_bounded"}
COMPARED_METRICS = (*TABLE2_METRICS.values(), *TABLE3_METRICS.values())
REPORT_TABLES = {
    "Table 2 (weighted F1, optimistic: the paper's protocol)": "table2_f1_weighted",
    "Table 2 (weighted F1, honest)": "table2_f1_weighted_honest",
    "Table 3 (LCI, the paper's formula)": "table3_lci",
    "Table 3 (bounded LCI)": "table3_lci_bounded",
}
# The report's tables of a multi-label study: Table 2 on its headline, Table 3 on the LCI of
# the test macro-AUROC curve.
MULTILABEL_REPORT_TABLES = {
    "Table 2 (macro AUROC, optimistic: the paper's protocol)": "table2_auroc_macro",
    "Table 2 (macro AUROC, honest)": "table2_auroc_macro_honest",
    "Table 3 (LCI of the test macro-AUROC curve, the paper's formula)": "table3_lci",
    "Table 3 (bounded LCI of the test macro-AUROC curve)": "table3_lci_bounded",
}


@dataclass(frozen=True)
class StatisticsConfig:
    """The ``statistics`` parameter group, typed once where a node receives it
    (:func:`~ecg_transfer.typed_config.config_from_params`: wrong types and unknown keys are
    errors naming ``statistics.<key>``). ``comparisons``: pairs of arm names, checked against
    the arm registry (:meth:`~ecg_transfer.study.arms.ArmRegistry.check_comparisons`)."""

    comparisons: Any
    confidence: float
    equivalence_margin: float
    detectable_power: float
    seed: int
    lci_eps: float
    record_n_boot: int = 2000

    @classmethod
    def from_params(cls, statistics: Mapping[str, Any]) -> StatisticsConfig:
        return config_from_params(cls, statistics, "statistics")


def check_study_runs(study: dict[str, Any], *arm_settings: dict[str, Any]) -> tuple[dict[str, Any], ArmRegistry]:
    """The run settings all arms share (an error naming the arms and settings if they differ),
    and the arm registry, built here once for the whole pipeline."""
    registry = arm_registry(study["arms"])
    specs = {arm.name: arm.result_spec() for arm in registry}
    return check_arm_settings(list(arm_settings), registry.names, specs), registry


def combine_histories(study_runs: dict[str, Any], *arm_histories: pd.DataFrame) -> pd.DataFrame:
    """All runs' per-epoch histories in one long table, checked against the run settings."""
    if len(arm_histories) != len(study_runs["arms"]):
        raise ValueError(
            f"combine_histories: {len(arm_histories)} histories for the arms {study_runs['arms']}"
        )
    histories = pd.concat(arm_histories, ignore_index=True)
    check_histories_match(histories, study_runs)
    training = dict(study_runs["training"])
    for arm, history in zip(study_runs["arms"], arm_histories):
        check_histories_complete(
            history, int(training["epochs"]), training.get("patience"), source=f"{arm}.training_histories"
        )
    return histories


def summarise_study_runs(training_histories: pd.DataFrame, statistics: dict[str, Any]) -> pd.DataFrame:
    """One row per (fraction, arm, trial): best and honest test scores, LCI, per-class F1."""
    return summarise_runs(training_histories, lci_eps=StatisticsConfig.from_params(statistics).lci_eps)


def compare_study_arms(
    run_summary: pd.DataFrame, registry: ArmRegistry, statistics: dict[str, Any]
) -> pd.DataFrame:
    """Welch and paired tests, Hedges' g, paired t-intervals, the detectable difference, TOST and
    Holm-adjusted p for every metric of Tables 2 and 3 (macro AUROC when the histories hold it).
    The equivalence margin is in the units of the study's headline metric (weighted F1, or
    macro AUROC for a multi-label study), so only the headline's comparisons (optimistic and
    honest) get a reading against it; the raw LCI's tests are n/a where a curve never drops."""
    config = StatisticsConfig.from_params(statistics)
    comparisons = registry.check_comparisons(config.comparisons)
    margin = config.equivalence_margin
    headline = headline_metric(run_summary)
    frames = [
        compare_arms(
            run_summary,
            metric=metric,
            comparisons=comparisons,
            confidence=config.confidence,
            margin=margin if metric.endswith(f"_test_{headline}") else None,
            power=config.detectable_power,
            undefined="lci_never_drops" if metric == "lci" and "lci_never_drops" in run_summary.columns else None,
        ).assign(metric=metric)
        # The headline's comparisons first (single-label: already so), then the others in order.
        for metric in sorted(COMPARED_METRICS, key=lambda name: not name.endswith(f"_test_{headline}"))
        if metric in run_summary.columns and run_summary[metric].notna().any()
    ]
    return pd.concat(frames, ignore_index=True)


def compare_on_test_records(
    registry: ArmRegistry, statistics: dict[str, Any], study_runs: dict[str, Any], labelled_windows,
    *arm_predictions: pd.DataFrame,
) -> pd.DataFrame:
    """Per comparison and fraction, a paired bootstrap over test patients (a drawn patient brings
    all their records) of the honest headline difference, pooled over trials: weighted F1, or
    macro AUROC for a multi-label store (docs/statistics.md, section 4). The patient of each
    record comes from the labelled windows' index, the same place the patient-level splits
    read it."""
    if len(arm_predictions) != len(study_runs["arms"]):
        raise ValueError(
            f"compare_on_test_records: {len(arm_predictions)} prediction tables for the arms {study_runs['arms']}"
        )
    config = StatisticsConfig.from_params(statistics)
    index = _labelled_index(labelled_windows)
    if "patient_id" not in index.columns:
        raise ValueError("labelled_windows: the index lacks patient_id; re-run preprocessing")
    test = index[index["split"] == "test"]
    compare = multilabel_bootstrap_comparisons if _multilabel(labelled_windows) else record_bootstrap_comparisons
    return compare(
        pd.concat(arm_predictions, ignore_index=True),
        study_runs["classes"],
        comparisons=registry.check_comparisons(config.comparisons),
        patients=dict(zip(test["record_id"].astype(str), test["patient_id"])),
        selection="honest",
        split="test",
        n_boot=config.record_n_boot,
        confidence=config.confidence,
        seed=config.seed,
    )


def _multilabel(labelled_windows) -> bool:
    """Whether the labelled windows hold label sets (``preprocessing.task: multilabel``)."""
    return getattr(labelled_windows, "task", "single") == "multilabel"


def _labelled_index(labelled_windows) -> pd.DataFrame:
    index = labelled_windows.index
    missing = {"record_id", "label", "split"} - set(index.columns)
    if missing:
        raise ValueError(f"labelled_windows: the index lacks columns {sorted(missing)}")
    return index


def size_bootstrap_samples(bootstrap_samples: pd.DataFrame, labelled_windows) -> pd.DataFrame:
    """Per fraction: patients and records drawn, and unique ones, a bootstrap sample holds."""
    index = _labelled_index(labelled_windows)
    train = index[index["split"] == "train"]
    patients = train["patient_id"].to_numpy(dtype=object) if "patient_id" in train.columns else None
    return sample_sizes(bootstrap_samples, train["record_id"].to_numpy(dtype=object), patients)


def score_floor(labelled_windows) -> pd.DataFrame:
    """Test scores of the majority-class classifier and of a stratified random guess; for a
    multi-label store, the prevalence-only scores (macro AUROC 0.5; F1 of a prevalence guess and
    of always positive), on the windows of each split as the single-label floor."""
    index = _labelled_index(labelled_windows)
    if _multilabel(labelled_windows):
        labels = list(labelled_windows.classes)
        targets = labelled_windows.label_targets(labels)
        split = index["split"].to_numpy(dtype=object)
        return multilabel_floor_scores(targets[split == "train"], targets[split == "test"], labels)
    return floor_scores(
        index.loc[index["split"] == "train", "label"].to_numpy(dtype=object),
        index.loc[index["split"] == "test", "label"].to_numpy(dtype=object),
    )


def make_tables(
    run_summary: pd.DataFrame,
    arm_comparisons: pd.DataFrame,
    registry: ArmRegistry,
    score_floor: pd.DataFrame,
    bootstrap_sample_sizes: pd.DataFrame,
    study_meta: dict[str, Any],
    paper_reference: dict[str, Any],
) -> dict[str, Any]:
    """Tables 2 (six variants) and 3 (two), each as CSV and Markdown, laid out like the paper, with
    every arm in registry order and, per declared comparison, the Welch p read from the
    comparisons (unadjusted and Holm-adjusted)."""
    comparisons = arm_comparisons
    split = labelled_split_text(study_meta.get("labelled_split"), PaperReference.from_params(paper_reference))
    outputs: dict[str, Any] = {}
    for name, metric in TABLE2_METRICS.items():
        if metric in run_summary.columns and run_summary[metric].notna().any():
            table = tables.table2(
                run_summary, metric=metric, arms=registry, comparisons=comparisons,
                floor=floor_for(metric, score_floor), sample_sizes=bootstrap_sample_sizes, labelled_split=split,
            )
        else:
            table = _note_table(metric, "the training histories hold no scores for this metric")
        outputs[f"{name}_table_csv"] = table
        outputs[f"{name}_table_markdown"] = tables.to_markdown(table)
    for name, metric in TABLE3_METRICS.items():
        table = tables.table3(run_summary, metric=metric, arms=registry, comparisons=comparisons)
        outputs[f"{name}_table_csv"] = table
        outputs[f"{name}_table_markdown"] = tables.to_markdown(table)
    return outputs


def _note_table(metric: str, note: str) -> pd.DataFrame:
    table = pd.DataFrame({"note": [note]}, index=["-"])
    table.index.name = metric
    return table


def plot_study(
    run_summary: pd.DataFrame, training_histories: pd.DataFrame, registry: ArmRegistry, score_floor: pd.DataFrame
) -> tuple[Figure, Figure, Figure, Figure]:
    """The headline metric (weighted F1, or macro AUROC for multi-label) against training
    fraction per arm (with the floor), learning curves on it (the paper's Fig. 5), and the
    per-class F1 (multi-label: per-label AUROC) heatmap."""
    headline = headline_metric(run_summary)
    per_label = "honest_test_auroc_" if headline == MULTILABEL.headline else "honest_test_f1_"
    return (
        figures.f1_vs_fraction(run_summary, f"best_test_{headline}", registry, floor_for(headline, score_floor)),
        figures.f1_vs_fraction(run_summary, f"honest_test_{headline}", registry, floor_for(headline, score_floor)),
        figures.learning_curves(training_histories, split="test", metric=headline, arms=registry),
        figures.per_class_f1(run_summary, prefix=per_label, arms=registry),
    )


def describe_study(
    study_runs: dict[str, Any],
    labelled_windows,
    unlabelled_windows,
    labelled_manifest: pd.DataFrame,
    unlabelled_manifest: pd.DataFrame,
    preprocessing: dict[str, Any],
    pretraining: dict[str, Any],
    image_transfer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the numbers came from, for the report and the MLflow parent run: the data (source,
    size, classes, simulated or real, from the manifests), the backbone, the labelled split, and
    the run settings the arms share."""
    index = _labelled_index(labelled_windows)
    labelled = {
        "source": _source(labelled_manifest),
        "records": int(len(labelled_manifest)),
        "windows": int(len(index)),
        "split_sizes": {str(k): int(v) for k, v in index["split"].value_counts().sort_index().items()},
        "class_counts": {str(k): int(v) for k, v in index["label"].value_counts().items()},
        "simulated": _simulated(labelled_manifest),
    }
    unlabelled = {
        "source": _source(unlabelled_manifest),
        "records": int(len(unlabelled_manifest)),
        "windows": int(len(unlabelled_windows)),
        "simulated": _simulated(unlabelled_manifest),
    }
    if _multilabel(labelled_windows):  # label sets: count each label's windows, say the task
        targets = labelled_windows.label_targets(list(labelled_windows.classes))
        labelled["label_counts"] = {str(k): int(n) for k, n in zip(labelled_windows.classes, targets.sum(axis=0))}
    flags = {labelled["simulated"], unlabelled["simulated"]}
    synthetic = True if True in flags else (False if flags == {False} else None)
    run = describe_run(study_runs)
    cae = pretraining.get("cae", {})
    # Multi-label only, so a single-label study's meta (and its MLflow record) stays as it was.
    task = {"task": "multilabel", "headline_metric": MULTILABEL.headline} if _multilabel(labelled_windows) else {}
    return {
        **task,
        "labelled": labelled,
        "unlabelled": unlabelled,
        "classes": run["classes"],
        "n_classes": len(run["classes"]),
        "synthetic": synthetic,
        "backbone": (
            f"CAE encoder, {cae.get('n_blocks')} residual blocks, kernel {cae.get('kernel_size')}, "
            f"channels {list(cae.get('channels', []))}, {cae.get('bottleneck')} features"
        ),
        "image_backbone": (
            str(image_transfer.get("backbone", {}).get("name", "not recorded")) if image_transfer is not None
            else "no image arm"
        ),
        "labelled_split": _labelled_split(preprocessing),
        "run": run,
        "arms": {arm: spec for arm, spec in study_runs["specs"].items()},
        "fractions": run["fractions"],
        "n_trials": run["n_trials"],
        "epochs": run["epochs"],
    }


def _source(manifest: pd.DataFrame) -> str:
    """The folder the records came from (common path of their sources), or 'not recorded'."""
    if "source" not in manifest.columns or manifest.empty:
        return "not recorded"
    paths = [str(p) for p in manifest["source"].dropna().unique()]
    if not paths:
        return "not recorded"
    try:
        common = os.path.commonpath(paths)
    except ValueError:  # mixed absolute and relative paths
        return f"{len(paths)} sources"
    return common if len(paths) > 1 else os.path.dirname(common) or common


def _simulated(manifest: pd.DataFrame) -> bool | None:
    """True if any record is simulated, False if none is, None if the manifest does not say."""
    if "simulated" not in manifest.columns:
        return None
    values = manifest["simulated"].dropna()
    if values.empty:
        return None
    return bool(values.astype(bool).any())


def _labelled_split(preprocessing: dict[str, Any]) -> dict[str, float] | None:
    splits = (preprocessing or {}).get("labelled_splits")
    if not splits or "test_fraction" not in splits:
        return None
    test = float(splits["test_fraction"])
    val = float(splits.get("val_fraction", 0.0))
    return {"train": round(1.0 - test - val, 6), "val": val, "test": test}


def write_study_report(
    run_summary: pd.DataFrame,
    arm_comparisons: pd.DataFrame,
    record_comparisons: pd.DataFrame,
    table2: pd.DataFrame,
    table2_honest: pd.DataFrame,
    table3: pd.DataFrame,
    table3_bounded: pd.DataFrame,
    score_floor: pd.DataFrame,
    bootstrap_sample_sizes: pd.DataFrame,
    study_meta: dict[str, Any],
    registry: ArmRegistry,
    paper_reference: dict[str, Any],
    cae_history: pd.DataFrame | None = None,
    statistics: dict[str, Any] | None = None,
    table2_auroc: pd.DataFrame | None = None,
    table2_auroc_honest: pd.DataFrame | None = None,
) -> str:
    """A Markdown report: the data and runs, the floor, the arms still improving at the end of
    their budget, our numbers (beside the paper's on its task), Tables 2-3 on the headline
    metric (weighted F1; macro AUROC, ``table2_auroc*``, for a multi-label study), and the
    comparisons with what each interval covers."""
    meta = dict(study_meta)
    # The CAE early-stops on its held-out ("test") split, so the minimum there is the paper's
    # optimistic protocol; the report labels it so.
    heldout = cae_history.loc[cae_history["split"] == "test"] if cae_history is not None else pd.DataFrame()
    if not heldout.empty:
        meta["cae_heldout_mse_min"] = float(np.min(heldout["loss"]))
    if headline_metric(run_summary) == MULTILABEL.headline:
        if table2_auroc is None or table2_auroc_honest is None:
            raise ValueError("write_study_report: a multi-label study needs the macro-AUROC Tables 2 "
                             "(table2_auroc_macro[_honest]_table_csv)")
        report_tables = dict(zip(MULTILABEL_REPORT_TABLES, (table2_auroc, table2_auroc_honest, table3, table3_bounded)))
    else:
        report_tables = dict(zip(REPORT_TABLES, (table2, table2_honest, table3, table3_bounded)))
    epochs = (meta.get("run") or {}).get("epochs")
    late = still_improving(run_summary, int(epochs)) if epochs and "honest_epoch" in run_summary.columns else None
    return study_report(
        run_summary, arm_comparisons, report_tables, meta, registry=registry,
        record_comparisons=record_comparisons, floor=score_floor, sample_sizes=bootstrap_sample_sizes,
        paper=PaperReference.from_params(paper_reference), still_improving=late,
        confidence=float((statistics or {}).get("confidence", 0.95)),
    )
