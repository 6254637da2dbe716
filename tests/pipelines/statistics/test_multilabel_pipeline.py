"""Statistics of a multi-label study (issue 19) through the real pipeline: hand-shaped histories
and predictions in the fine-tuning's multi-label contract and a store of label sets give Tables
2-3 on macro AUROC, the comparisons with the equivalence margin on it, patient-level intervals
of the macro-AUROC difference, a prevalence-only floor of 0.5 and a report that names the
headline metric and the labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ecg_transfer.pipelines.statistics.nodes import TABLE3_METRICS
from ecg_transfer.pipelines.statistics.pipeline import create_pipeline
from ecg_transfer.signals.window_store import WindowStore, WindowStoreWriter
from ecg_transfer.study.arms import arm_registry
from ecg_transfer.study.bootstrap import draw_all_samples
from ecg_transfer.study.tables import format_p
from tests.pipelines.conftest import make_catalog, run, shrunk_parameters
from tests.study.histories import (
    LABELS,
    make_arm_settings,
    make_multilabel_histories,
    make_multilabel_predictions,
    multilabel_targets,
)

PARAMS = shrunk_parameters()
ARMS = list(arm_registry(PARAMS["study"]["arms"]).names)
FRACTIONS = (1.0, 0.5)
N_TRIALS = 3
N_TEST = 30


def _joined(targets: np.ndarray) -> list[str]:
    return [";".join(name for name, t in zip(LABELS, row) if t) for row in targets]


def _store(path) -> WindowStore:
    """24 train and 6 val records (one patient each), and the predictions' 30 test records, two
    per patient; label sets from :func:`multilabel_targets`."""
    index = pd.DataFrame({
        "record_id": [f"t{i}" for i in range(30)] + [f"r{i:03d}" for i in range(N_TEST)],
        "patient_id": [f"p{i}" for i in range(30)] + [f"tp{i // 2}" for i in range(N_TEST)],
        "label": _joined(multilabel_targets(30)) + _joined(multilabel_targets(N_TEST)),
        "split": ["train"] * 24 + ["val"] * 6 + ["test"] * N_TEST,
    })
    with WindowStoreWriter(path, meta={"classes": list(LABELS), "task": "multilabel"}) as writer:
        writer.append(np.zeros((len(index), 64), dtype=np.float32), index)
    return WindowStore(path)


def _unlabelled(path) -> WindowStore:
    index = pd.DataFrame({"record_id": [f"u{i}" for i in range(4)], "patient_id": [f"u{i}" for i in range(4)],
                          "label": [None] * 4, "split": ["train"] * 4})
    with WindowStoreWriter(path) as writer:
        writer.append(np.zeros((4, 64), dtype=np.float32), index)
    return WindowStore(path)


def _manifest(n):
    return pd.DataFrame({"record_id": [f"m{i}" for i in range(n)], "source": [f"data/01_raw/ml/m{i}.hea" for i in range(n)],
                         "simulated": True})


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("multilabel_statistics")
    histories = make_multilabel_histories(fractions=FRACTIONS, arms=ARMS, n_trials=N_TRIALS, n_epochs=6)
    predictions = make_multilabel_predictions(fractions=FRACTIONS, arms=ARMS, n_trials=N_TRIALS, n_records=N_TEST)
    labelled = _store(tmp_path / "labelled")
    train = labelled.split_indices("train")
    index = labelled.index.iloc[train]
    samples = draw_all_samples(labelled.label_targets(LABELS)[train], FRACTIONS, N_TRIALS, 0,
                               records=index["record_id"].to_numpy(dtype=object),
                               patients=index["patient_id"].to_numpy(dtype=object))
    settings = {arm: make_arm_settings(arm, FRACTIONS, N_TRIALS, classes=LABELS) for arm in ARMS}
    inputs = {
        **{f"{arm}.training_histories": histories[histories["arm"] == arm].reset_index(drop=True) for arm in ARMS},
        **{f"{arm}.run_predictions": predictions[predictions["arm"] == arm].reset_index(drop=True) for arm in ARMS},
        **{f"{arm}.arm_settings": settings[arm] for arm in ARMS},
        "labelled_windows": labelled, "unlabelled_windows": _unlabelled(tmp_path / "unlabelled"),
        "labelled_manifest": _manifest(60), "unlabelled_manifest": _manifest(4), "bootstrap_samples": samples,
        "cae_history": pd.DataFrame({"epoch": [1, 1], "split": ["train", "test"], "loss": [0.9, 0.5]}),
    }
    params = {k: PARAMS[k] for k in ("statistics", "study", "preprocessing", "pretraining", "image_transfer",
                                     "paper_reference")}
    return run(create_pipeline(arms=ARMS), make_catalog(tmp_path, params, files=(), **inputs))


def test_tables_2_and_3_are_on_macro_auroc(study):
    summary = study.load("run_summary")
    assert "honest_test_auroc_macro" in summary and "honest_test_f1_weighted" not in summary
    table = study.load("table2_auroc_macro_honest_table_csv")
    assert list(table.columns) == [f"{pct} {arm}" for pct in ("100%", "50%") for arm in ARMS]
    pairs = [tuple(p) for p in PARAMS["statistics"]["comparisons"]]
    assert list(table.index) == [
        *(f"trial {t}" for t in range(1, N_TRIALS + 1)), "mean ± SD",
        *(f"p Welch ({kind}) {a} vs {b}" for a, b in pairs for kind in ("unadjusted", "Holm")),
        "floor: prevalence guess", "floor: always positive",
        "training patients per sample: drawn (unique, mean)", "labelled split train/val/test",
    ]
    assert table.loc["floor: prevalence guess", "100% random"] == "0.500"  # AUROC of a constant score
    row = summary[(summary["arm"] == "transfer") & (summary["fraction"] == 0.5) & (summary["trial"] == 3)].iloc[0]
    assert table.loc["trial 3", "50% transfer"] == f"{row['honest_test_auroc_macro']:.3f}"
    comparisons = study.load("arm_comparisons")
    read = comparisons[(comparisons["metric"] == "honest_test_auroc_macro") & (comparisons["fraction"] == 1.0)
                       & (comparisons["comparison"] == "transfer vs random")].iloc[0]
    assert table.loc["p Welch (Holm) transfer vs random", "100% transfer"] == format_p(read["welch_p_holm"])
    # no weighted F1 in a multi-label study: its tables say so
    assert "no scores for this metric" in study.load("table2_f1_weighted_table_csv").iloc[0, 0]
    macro_f1 = study.load("table2_f1_macro_honest_table_csv")
    floor = study.load("score_floor").set_index("classifier")
    assert macro_f1.loc["floor: always positive", "100% image"] == f"{floor.loc['always positive', 'f1_macro']:.3f}"
    for name in TABLE3_METRICS:
        assert "runs whose curve never drops" in study.load(f"{name}_table_csv").index


def test_comparisons_carry_the_margin_on_the_headline_and_patient_level_intervals(study):
    comparisons = study.load("arm_comparisons")
    assert set(comparisons["metric"]) == {"best_test_auroc_macro", "honest_test_auroc_macro", "best_test_f1_macro",
                                          "honest_test_f1_macro", "lci", "lci_bounded"}
    assert list(dict.fromkeys(comparisons["metric"]))[:2] == ["best_test_auroc_macro", "honest_test_auroc_macro"]
    headline = comparisons["metric"].str.endswith("_test_auroc_macro")
    assert (comparisons.loc[headline, "equivalence_margin"] == PARAMS["statistics"]["equivalence_margin"]).all()
    assert comparisons.loc[headline, "tost_p"].notna().all() and comparisons.loc[~headline, "equivalence_margin"].isna().all()
    honest = comparisons[(comparisons["metric"] == "honest_test_auroc_macro") & (comparisons["arm_b"] == "random")]
    assert (honest["mean_diff"] > 0.03).all() and honest["detectable_diff"].notna().all()
    records = study.load("record_comparisons")
    pairs = [tuple(pair) for pair in PARAMS["statistics"]["comparisons"]]
    assert set(zip(records["arm_a"], records["arm_b"], records["fraction"])) == {(a, b, f) for a, b in pairs for f in FRACTIONS}
    assert (records["metric"] == "auroc_macro").all() and (records["unit"] == "patient").all()
    assert (records["n_patients"] == N_TEST // 2).all() and (records["n_records"] == N_TEST).all()
    assert (records["ci_low_records"] <= records["mean_diff"]).all() and (records["mean_diff"] <= records["ci_high_records"]).all()
    against_random = records[(records["arm_a"] == "transfer") & (records["arm_b"] == "random")]
    assert (against_random["auroc_a"] > against_random["auroc_b"]).all()


def test_the_floor_is_prevalence_only(study):
    floor = study.load("score_floor").set_index("classifier")
    assert list(floor.index) == ["prevalence guess", "always positive"]
    assert (floor["auroc_macro"] == 0.5).all() and {f"f1_{label}" for label in LABELS} <= set(floor.columns)
    test = multilabel_targets(N_TEST)
    support, n = test.sum(axis=0), N_TEST
    assert floor.loc["always positive", "f1_macro"] == pytest.approx(np.mean(2 * support / (support + n)))


def test_figures_and_report_name_the_headline_and_the_labels(study, tmp_path_factory):
    for name in ("f1_vs_fraction", "f1_vs_fraction_honest", "learning_curves", "per_class_f1"):
        assert isinstance(study.load(f"{name}_figure"), Figure)
    assert study.load("f1_vs_fraction_honest_figure").axes[0].get_ylabel() == "honest_test_auroc_macro"
    assert study.load("learning_curves_figure").axes[0].get_ylabel() == "test auroc_macro"
    assert study.load("per_class_f1_figure").axes[0].get_title().startswith("per-label test AUROC (honest)")
    meta = study.load("study_meta")
    assert meta["task"] == "multilabel" and meta["headline_metric"] == "auroc_macro" and meta["classes"] == list(LABELS)
    assert meta["labelled"]["label_counts"] == dict(zip(LABELS, map(int, multilabel_targets(30).sum(axis=0)
                                                                     + multilabel_targets(N_TEST).sum(axis=0))))
    report = study.load("study_report")
    (tmp_path_factory.getbasetemp() / "multilabel_report.md").write_text(report)
    assert "**Headline metric: macro AUROC** over the 3 labels" in report
    assert "3 labels, several per record possible (AF, LBBB, STach)" in report
    assert "## Table 2 (macro AUROC, honest)" in report and "## Table 2 (weighted F1" not in report
    assert "the epoch with the best validation macro AUROC" in report
    assert "## Comparisons over test patients (honest epoch, macro AUROC)" in report
    assert "| honest test auroc_macro | patients (records) | trials | AUROC a | AUROC b |" in report
    assert "| honest_test_auroc_macro |" in report and "paper (weighted F1)" not in report
    assert "prevalence guess" in report and "f1_weighted" not in report.replace("table2_f1_weighted", "")
