"""The multi-label paired bootstrap of macro AUROC over test patients, and its weighted AUROC."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ecg_transfer.study.statistics import multilabel_bootstrap_comparison
from ecg_transfer.training.metrics import weighted_macro_auroc


def _task(n=60, k=3, trials=4, seed=0):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, k)) < 0.4).astype(np.int8)
    targets[:2] = [[1, 0, 1], [0, 1, 0]]
    good = np.clip(targets + rng.normal(0, 0.6, (trials, n, k)), 0, 1)
    poor = np.clip(targets + rng.normal(0, 2.0, (trials, n, k)), 0, 1)
    return targets, good, poor


def test_weighted_macro_auroc_equals_sklearn_with_sample_weights():
    targets, good, _ = _task()
    weights = np.random.default_rng(1).integers(0, 3, len(targets))
    expected = np.mean([roc_auc_score(targets[:, k], good[0][:, k], sample_weight=weights) for k in range(3)])
    assert weighted_macro_auroc(targets, good[0], weights) == pytest.approx(expected)
    # integer weights are repeated rows
    repeated = np.repeat(np.arange(len(targets)), weights)
    assert weighted_macro_auroc(targets, good[0], weights) == pytest.approx(
        roc_auc_score(targets[repeated], good[0][repeated], average="macro"))


def test_comparison_point_estimate_intervals_and_pairing():
    targets, good, poor = _task()
    result = multilabel_bootstrap_comparison(targets, good, poor, n_boot=200, seed=3)
    per_trial = [roc_auc_score(targets, g, average="macro") - roc_auc_score(targets, p, average="macro")
                 for g, p in zip(good, poor)]
    assert result["mean_diff"] == pytest.approx(np.mean(per_trial))
    assert result["ci_low_records"] <= result["mean_diff"] <= result["ci_high_records"]
    assert result["ci_low_records"] > 0 and result["unit"] == "record"
    same = multilabel_bootstrap_comparison(targets, good, good, n_boot=50, seed=3)
    assert same["mean_diff"] == same["ci_low_records"] == same["ci_high_records_trials"] == 0.0
    assert multilabel_bootstrap_comparison(targets, good, poor, n_boot=200, seed=3) == result


def test_patients_are_the_unit_and_one_record_each_is_the_record_level_draw():
    targets, good, poor = _task()
    by_record = multilabel_bootstrap_comparison(targets, good, poor, n_boot=100, seed=4)
    one_each = multilabel_bootstrap_comparison(targets, good, poor, n_boot=100, seed=4,
                                               patients=[f"p{i}" for i in range(len(targets))])
    assert {k: v for k, v in one_each.items() if k != "unit"} == {k: v for k, v in by_record.items() if k != "unit"}
    pairs = multilabel_bootstrap_comparison(targets, good, poor, n_boot=100, seed=4,
                                            patients=[f"p{i // 2}" for i in range(len(targets))])
    assert pairs["n_patients"] == len(targets) // 2 and pairs["mean_diff"] == by_record["mean_diff"]
    with pytest.raises(ValueError, match="scores must be"):
        multilabel_bootstrap_comparison(targets, good[:, :, :2], poor)


def test_the_table_of_comparisons_pairs_records_and_trials_from_the_saved_predictions():
    from ecg_transfer.study.statistics import (
        MULTILABEL_RECORD_COLUMNS,
        multilabel_bootstrap_comparisons,
    )
    from tests.study.histories import LABELS, make_multilabel_predictions, multilabel_targets

    predictions = make_multilabel_predictions(fractions=(1.0, 0.5), arms=("random", "transfer"), n_trials=3)
    patients = {f"r{i:03d}": f"p{i // 2}" for i in range(30)}
    table = multilabel_bootstrap_comparisons(predictions.sample(frac=1.0, random_state=1), LABELS,
                                             [("transfer", "random")], n_boot=50, seed=5, patients=patients)
    assert list(table.columns) == MULTILABEL_RECORD_COLUMNS
    assert table["fraction"].tolist() == [1.0, 0.5] and (table["metric"] == "auroc_macro").all()
    assert (table["unit"] == "patient").all() and (table["n_patients"] == 15).all() and (table["n_records"] == 30).all()
    # the first row is the library comparison on the honest test scores, records sorted, trials by number
    honest = predictions[(predictions["selection"] == "honest") & (predictions["split"] == "test")
                         & (predictions["fraction"] == 1.0)]

    def scores(arm):
        own = honest[honest["arm"] == arm].sort_values(["trial", "record_id"])
        return own[[f"prob_{n}" for n in LABELS]].to_numpy().reshape(3, 30, len(LABELS))

    expected = multilabel_bootstrap_comparison(
        multilabel_targets(30), scores("transfer"), scores("random"), n_boot=50, seed=[5, 1_000_000],
        patients=[f"p{i // 2}" for i in range(30)])
    assert table.iloc[0][list(expected)].to_dict() == expected
    assert table.iloc[0]["mean_diff"] > 0  # transfer separates the labels better
    # another test split for one arm is an error, not a silent mismatch
    other = predictions.copy()
    other.loc[(other["arm"] == "random") & (other["record_id"] == "r000"), "target_AF"] = 0
    with pytest.raises(ValueError, match="predicted different test records"):
        multilabel_bootstrap_comparisons(other, LABELS, [("transfer", "random")], n_boot=5)
    with pytest.raises(ValueError, match=r"lack columns \['target_STach', 'prob_STach'\]"):
        multilabel_bootstrap_comparisons(predictions.drop(columns=["target_STach", "prob_STach"]), LABELS,
                                         [("transfer", "random")], n_boot=5)


def test_ranked_scores_give_weighted_macro_auroc_to_the_last_bit():
    from ecg_transfer.study.statistics import _label_ranks, _ranked_macro_auroc

    targets, good, _ = _task(n=80, k=3)
    scores = np.round(good[0], 1)  # many ties
    targets[:, 2] = 0  # a label without positives is skipped
    rng = np.random.default_rng(2)
    for _ in range(20):
        weights = rng.integers(0, 3, len(targets)).astype(float)
        assert _ranked_macro_auroc(targets.astype(bool), _label_ranks(scores), weights) == \
            weighted_macro_auroc(targets, scores, weights)
    assert np.isnan(_ranked_macro_auroc(np.zeros((4, 2), bool), _label_ranks(np.ones((4, 2))), np.ones(4)))


def test_the_comparison_is_the_resampled_weighted_macro_auroc_of_both_arms():
    """The bootstrap as its docstring states it, written out with weighted_macro_auroc."""
    targets, good, poor = _task(n=40, trials=3)
    good, poor = np.round(good, 1), np.round(poor, 1)
    patients = [f"p{i // 2}" for i in range(40)]
    result = multilabel_bootstrap_comparison(targets, good, poor, n_boot=30, seed=9, patients=patients)
    record_rng, trial_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(9).spawn(2))
    unit = np.arange(40) // 2
    records_only, with_trials = [], []
    for _ in range(30):
        weights = np.bincount(record_rng.integers(0, 20, size=20), minlength=20)[unit]
        diff = np.array([weighted_macro_auroc(targets, a, weights) - weighted_macro_auroc(targets, b, weights)
                         for a, b in zip(good, poor)])
        records_only.append(np.nanmean(diff))
        with_trials.append(np.nanmean(diff[trial_rng.integers(0, 3, size=3)]))
    low, high = np.nanquantile(records_only, [0.025, 0.975])
    assert (result["ci_low_records"], result["ci_high_records"]) == (low, high)
    assert (result["ci_low_records_trials"], result["ci_high_records_trials"]) == tuple(
        np.nanquantile(with_trials, [0.025, 0.975]))
