"""Per-run summaries of a multi-label study (issue 19): the headline is macro AUROC, the honest
epoch the best validation macro AUROC, the LCI on the test macro-AUROC curve."""

import numpy as np
import pandas as pd
import pytest

from ecg_transfer.study.lci import bounded_learning_curve_index, learning_curve_index
from ecg_transfer.study.summaries import (
    check_histories_complete,
    headline_metric,
    honest_monitor,
    per_class_columns,
    still_improving,
    summarise_runs,
)
from tests.study.histories import LABELS, make_histories, make_multilabel_histories

TEST_AUROC = [0.60, 0.72, 0.70, 0.81, 0.78]
VAL_AUROC = [0.55, 0.66, 0.69, 0.69, 0.64]  # best at epoch 3 (tie with 4 -> the earliest)
TEST_F1 = [np.nan, 0.40, 0.52, 0.50, 0.47]  # epoch 1: no F1 (say, no validation positives yet)


def _one_run(with_val=True) -> pd.DataFrame:
    """The contract's columns: no f1_weighted, no accuracy; train rows without F1."""
    rows = []
    for epoch in range(1, 6):
        i = epoch - 1
        splits = {"train": 0.9, "test": TEST_AUROC[i], **({"val": VAL_AUROC[i]} if with_val else {})}
        for split, auroc in splits.items():
            row = {"fraction": 1.0, "arm": "transfer", "trial": 1, "epoch": epoch, "split": split, "loss": 0.5,
                   "auroc_macro": auroc, "auroc_AF": auroc + 0.05, "auroc_LBBB": auroc - 0.05}
            if split != "train":
                f1 = TEST_F1[i] if split == "test" else 0.6
                row.update({"f1_macro": f1, "f1_AF": f1 + 0.1, "f1_LBBB": f1 - 0.1})
            rows.append(row)
    return pd.DataFrame(rows)


def test_the_headline_comes_from_the_histories_or_the_summary():
    assert headline_metric(_one_run()) == "auroc_macro" and honest_monitor(_one_run()) == ("val", "auroc_macro")
    single = make_histories(fractions=(1.0,), arms=("random",), n_trials=1, n_epochs=2)
    assert headline_metric(single) == "f1_weighted" and honest_monitor(single) == ("val", "f1_weighted")
    # single-label histories that lost f1_weighted are still single-label (accuracy): the summary names it
    assert headline_metric(single.drop(columns="f1_weighted")) == "f1_weighted"
    assert headline_metric(summarise_runs(_one_run())) == "auroc_macro"
    assert headline_metric(summarise_runs(single)) == "f1_weighted"
    with pytest.raises(ValueError, match="neither f1_weighted .* nor auroc_macro"):
        headline_metric(pd.DataFrame(columns=["fraction", "loss"]))


def test_hand_built_multilabel_run():
    row = summarise_runs(_one_run()).iloc[0]
    assert row["honest_epoch"] == 3
    assert row["best_test_auroc_macro"] == 0.81 and row["best_epoch_auroc_macro"] == 4
    assert row["best_test_f1_macro"] == 0.52 and row["best_epoch_f1_macro"] == 3  # NaN epoch skipped
    assert row["honest_test_auroc_macro"] == 0.70 and row["honest_test_f1_macro"] == 0.52
    assert row["honest_test_auroc_AF"] == pytest.approx(0.75) and row["honest_test_auroc_LBBB"] == pytest.approx(0.65)
    assert row["honest_test_f1_AF"] == pytest.approx(0.62) and row["honest_test_f1_LBBB"] == pytest.approx(0.42)
    assert row["final_epoch"] == 5 and row["final_test_auroc_macro"] == 0.78 and row["final_test_f1_macro"] == 0.47
    assert row["lci"] == pytest.approx(learning_curve_index(TEST_AUROC))
    assert row["lci_bounded"] == pytest.approx(bounded_learning_curve_index(TEST_AUROC))
    assert not row["lci_never_drops"]
    assert not {"best_test_f1_weighted", "honest_test_accuracy", "honest_test_f1_weighted"} & set(row.index)
    assert list(row.index) == [
        "fraction", "arm", "trial", "n_epochs", "best_test_auroc_macro", "best_epoch_auroc_macro",
        "best_test_f1_macro", "best_epoch_f1_macro", "honest_epoch", "honest_test_auroc_macro",
        "honest_test_f1_macro", "honest_test_auroc_AF", "honest_test_auroc_LBBB", "honest_test_f1_AF",
        "honest_test_f1_LBBB", "final_epoch", "final_test_auroc_macro", "final_test_f1_macro",
        "lci", "lci_bounded", "lci_never_drops",
    ]
    assert per_class_columns(_one_run()) == ["auroc_AF", "auroc_LBBB", "f1_AF", "f1_LBBB"]


def test_record_rows_and_missing_validation():
    run = _one_run()
    record = run[run["split"] == "test"].assign(split="test_record", auroc_macro=lambda f: f["auroc_macro"] + 0.02)
    row = summarise_runs(pd.concat([run, record, run[run["split"] == "val"].assign(split="val_record")])).iloc[0]
    assert row["honest_epoch"] == 3 and row["honest_test_record_auroc_macro"] == pytest.approx(0.72)
    no_val = summarise_runs(_one_run(with_val=False)).iloc[0]
    assert np.isnan(no_val["honest_test_auroc_macro"]) and no_val["best_test_auroc_macro"] == 0.81


def test_bad_multilabel_histories_raise():
    run = _one_run()
    broken = run.copy()
    broken.loc[broken["split"] == "test", "auroc_macro"] = np.nan
    with pytest.raises(ValueError, match="NaN test auroc_macro"):
        summarise_runs(broken)
    no_val_score = run.copy()
    no_val_score.loc[no_val_score["split"] == "val", "auroc_macro"] = np.nan
    with pytest.raises(ValueError, match="only NaN validation auroc_macro"):
        summarise_runs(no_val_score)


def test_completeness_and_the_budget_flag_read_the_validation_auroc():
    histories = make_multilabel_histories(fractions=(1.0,), arms=("random",), n_trials=1, n_epochs=6)
    check_histories_complete(histories, 6)
    short = histories[histories["epoch"] <= 4].copy()
    short.loc[short["split"] == "val", "auroc_macro"] = [0.6, 0.8, 0.7, 0.75]  # best at 2, then 2 without gain
    check_histories_complete(short, 10, patience=2)
    with pytest.raises(ValueError, match="4 of the planned 10 epochs"):
        check_histories_complete(short, 10, patience=3)
    flags = still_improving(summarise_runs(histories), 6)
    assert flags["runs"].tolist() == [1]


def test_the_shared_multilabel_histories_summarise():
    histories = make_multilabel_histories()
    summary = summarise_runs(histories)
    assert len(summary) == 2 * 3 * 3 and summary["honest_test_auroc_macro"].notna().all()
    assert {f"honest_test_auroc_{label}" for label in LABELS} <= set(summary.columns)
    assert (summary["best_test_auroc_macro"] >= summary["honest_test_auroc_macro"]).all()
