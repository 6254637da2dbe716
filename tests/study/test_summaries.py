import numpy as np
import pandas as pd
import pytest

from ecg_transfer.study.lci import bounded_learning_curve_index, learning_curve_index
from ecg_transfer.study.summaries import summarise_runs
from tests.study.histories import make_histories

TEST_F1 = [0.50, 0.70, 0.65, 0.80, 0.75]
VAL_F1 = [0.40, 0.60, 0.62, 0.62, 0.55]  # best val at epoch 3 (tie with 4 -> earliest)
TEST_MACRO = [0.30, 0.35, 0.45, 0.40, 0.42]


def _one_run(fraction=1.0, arm="transfer", trial=1, with_val=True) -> pd.DataFrame:
    rows = []
    for epoch in range(1, 6):
        i = epoch - 1
        splits = {"train": 0.9, "test": TEST_F1[i]}
        if with_val:
            splits["val"] = VAL_F1[i]
        for split, f1 in splits.items():
            rows.append({
                "fraction": fraction, "arm": arm, "trial": trial, "epoch": epoch, "split": split,
                "loss": 1.0, "f1_weighted": f1,
                "f1_macro": TEST_MACRO[i] if split == "test" else 0.1,
                "accuracy": f1 + 0.01, "f1_SB": f1 + 0.1, "f1_AVRT": 0.1 * epoch,
                "auroc_macro": 0.5 + 0.05 * epoch if split == "test" else 0.6,
            })
    return pd.DataFrame(rows)


def test_hand_built_run():
    row = summarise_runs(_one_run()).iloc[0]
    assert (row["fraction"], row["arm"], row["trial"], row["n_epochs"]) == (1.0, "transfer", 1, 5)
    assert row["best_test_f1_weighted"] == 0.80 and row["best_epoch_f1_weighted"] == 4
    assert row["best_test_f1_macro"] == 0.45 and row["best_epoch_f1_macro"] == 3
    assert row["honest_epoch"] == 3
    assert row["honest_test_f1_weighted"] == 0.65
    assert row["honest_test_f1_macro"] == 0.45
    assert row["honest_test_accuracy"] == pytest.approx(0.66)
    assert row["honest_test_f1_SB"] == pytest.approx(0.75)
    assert row["honest_test_f1_AVRT"] == pytest.approx(0.3)
    assert row["final_epoch"] == 5 and row["final_test_f1_weighted"] == 0.75
    assert row["lci"] == pytest.approx(learning_curve_index(TEST_F1))
    assert row["lci_bounded"] == pytest.approx(bounded_learning_curve_index(TEST_F1))
    assert not row["lci_never_drops"]
    # macro AUROC: best over epochs and at the honest epoch
    assert row["best_test_auroc_macro"] == pytest.approx(0.75) and row["best_epoch_auroc_macro"] == 5
    assert row["honest_test_auroc_macro"] == pytest.approx(0.65)
    assert row["final_test_auroc_macro"] == pytest.approx(0.75)


def test_class_names_come_from_the_columns_in_their_order():
    from ecg_transfer.study.summaries import class_names

    run = _one_run().rename(columns={"f1_SB": "f1_Normal", "f1_AVRT": "f1_AF"})
    assert class_names(run) == ["Normal", "AF"]
    assert class_names(summarise_runs(run), prefix="honest_test_f1_") == ["Normal", "AF"]


def test_record_level_rows_give_honest_record_columns():
    run = _one_run()
    record = run[run["split"] == "test"].assign(split="test_record", f1_weighted=lambda f: f["f1_weighted"] + 0.05)
    val_record = run[run["split"] == "val"].assign(split="val_record")
    row = summarise_runs(pd.concat([run, record, val_record])).iloc[0]
    assert row["honest_epoch"] == 3  # chosen on the window-level validation split
    assert row["honest_test_record_f1_weighted"] == pytest.approx(0.70)
    assert row["honest_test_f1_weighted"] == 0.65
    assert "honest_test_record_f1_weighted" not in summarise_runs(run).columns


def test_histories_without_auroc_are_summarised_without_it():
    row = summarise_runs(_one_run().drop(columns="auroc_macro")).iloc[0]
    assert "best_test_auroc_macro" not in row.index and row["best_test_f1_weighted"] == 0.80


def test_curve_without_drops_is_flagged():
    run = _one_run()
    run.loc[run["split"] == "test", "f1_weighted"] = [0.5, 0.6, 0.6, 0.7, 0.8]
    row = summarise_runs(run).iloc[0]
    assert row["lci_never_drops"] and row["lci"] > 1e6


def test_one_row_per_run_and_epoch_order_does_not_matter(histories):
    summary = summarise_runs(histories)
    assert len(summary) == 2 * 3 * 3
    assert not summary.duplicated(["fraction", "arm", "trial"]).any()
    shuffled = histories.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(summary, summarise_runs(shuffled))


def test_optimistic_is_never_below_honest(histories):
    summary = summarise_runs(histories)
    assert (summary["best_test_f1_weighted"] >= summary["honest_test_f1_weighted"]).all()
    assert (summary["best_test_f1_weighted"] >= summary["final_test_f1_weighted"]).all()


def test_missing_validation_gives_nan_honest_columns():
    row = summarise_runs(_one_run(with_val=False)).iloc[0]
    assert np.isnan(row["honest_test_f1_weighted"]) and np.isnan(row["honest_test_f1_SB"])
    assert row["best_test_f1_weighted"] == 0.80


def test_bad_histories_raise():
    run = _one_run()
    with pytest.raises(ValueError, match="lack columns"):
        summarise_runs(run.drop(columns="f1_macro"))
    with pytest.raises(ValueError, match="duplicate"):
        summarise_runs(pd.concat([run, run.iloc[:1]]))
    with pytest.raises(ValueError, match="unknown split"):
        summarise_runs(run.assign(split="holdout"))
    with pytest.raises(ValueError, match="no test rows"):
        summarise_runs(run[run["split"] != "test"])
    broken = run.copy()
    broken.loc[broken["split"] == "test", "f1_weighted"] = np.nan
    with pytest.raises(ValueError, match="NaN test f1_weighted"):
        summarise_runs(broken)


def test_histories_cut_short_are_refused_naming_the_run_and_file():
    # Issue 20 item 7: cutting the last rows of a history gave "n_epochs 1" and another honest F1.
    from ecg_transfer.study.summaries import check_histories_complete

    histories = make_histories(fractions=(1.0,), arms=("random",), n_trials=2, n_epochs=4)
    check_histories_complete(histories, 4)  # complete: nothing to say
    cut = histories.iloc[:-5]  # the last run loses its last epoch and two splits of the one before
    with pytest.raises(ValueError, match=r"(?s)random.training_histories holds incomplete runs.*random \(fraction 1, trial 2\)"):
        check_histories_complete(cut, 4, source="random.training_histories")
    one_epoch = histories[histories["epoch"] == 1]
    with pytest.raises(ValueError, match="1 of the planned 4 epochs and no recorded early stop"):
        check_histories_complete(one_epoch, 4)
    with pytest.raises(ValueError, match="more than the planned 3"):
        check_histories_complete(histories, 3)
    gap = histories[~((histories["epoch"] == 2) & (histories["split"] == "val"))]
    with pytest.raises(ValueError, match=r"epochs missing or out of 1..n on split\(s\) \['val'\]"):
        check_histories_complete(gap, 4)


def test_an_early_stopped_run_is_complete_when_its_stop_is_recorded():
    from ecg_transfer.study.summaries import check_histories_complete

    histories = make_histories(fractions=(1.0,), arms=("random",), n_trials=1, n_epochs=6)
    short = histories[histories["epoch"] <= 4]
    check_histories_complete(short.assign(stopped_early=True), 10)  # the engine's record of the stop
    with pytest.raises(ValueError, match="no recorded early stop"):
        check_histories_complete(short.assign(stopped_early=False), 10)
    # without the column, the stop rule read from the history: no better validation F1 for `patience` epochs
    flat = short.copy()
    flat.loc[flat["split"] == "val", "f1_weighted"] = [0.5, 0.7, 0.6, 0.65]  # best at epoch 2, then 2 bad
    check_histories_complete(flat, 10, patience=2)
    with pytest.raises(ValueError, match="4 of the planned 10 epochs"):
        check_histories_complete(flat, 10, patience=3)
