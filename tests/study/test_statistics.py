import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from ecg_transfer.study.statistics import (
    COMPARISON_COLUMNS,
    bootstrap_ci_difference,
    compare_arms,
    hedges_g,
    holm_adjust,
    paired_ttest,
    record_bootstrap_comparison,
    record_bootstrap_comparisons,
    weighted_f1_resampled,
    welch_ttest,
)
from tests.study.histories import CLASSES, make_predictions

A = np.array([0.857, 0.861, 0.852, 0.855, 0.860, 0.849, 0.858, 0.853, 0.862, 0.856])
B = np.array([0.843, 0.846, 0.839, 0.845, 0.842, 0.838, 0.849, 0.841, 0.844, 0.840])


def test_welch_matches_scipy():
    t, p = welch_ttest(A, B)
    ref = stats.ttest_ind(A, B, equal_var=False)
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue))


def test_welch_hand_computed_t():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([4.0, 6.0, 8.0, 10.0])
    # means 2 and 7, variances 1 and 20/3: t = -5 / sqrt(1/3 + 20/12)
    t, _ = welch_ttest(a, b)
    assert t == pytest.approx(-5 / math.sqrt(1 / 3 + 20 / 12))


def test_paired_matches_scipy_and_differs_from_welch():
    t, p = paired_ttest(A, B)
    ref = stats.ttest_rel(A, B)
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert p != pytest.approx(welch_ttest(A, B)[1])


def test_small_samples_give_nan_not_errors():
    assert all(math.isnan(v) for v in welch_ttest([0.8], [0.7, 0.6]))
    assert all(math.isnan(v) for v in paired_ttest([0.8], [0.7]))
    assert math.isnan(hedges_g([0.8], [0.7, 0.6]))
    assert all(math.isnan(v) for v in bootstrap_ci_difference([0.8], [0.7]))


def test_zero_variance_follows_scipy():
    t, p = welch_ttest([1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    assert t == -math.inf and p == 0.0
    assert all(math.isnan(v) for v in welch_ttest([1.0, 1.0], [1.0, 1.0]))
    assert math.isnan(hedges_g([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]))


def test_paired_length_mismatch_raises():
    with pytest.raises(ValueError, match="differ in length"):
        paired_ttest([1.0, 2.0], [1.0, 2.0, 3.0])


def test_nan_input_raises():
    with pytest.raises(ValueError, match="NaN"):
        welch_ttest([0.8, float("nan")], [0.7, 0.6])


def test_hedges_g_hand_computed():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([4.0, 6.0, 8.0, 10.0])
    # pooled var = (2*1 + 3*20/3) / 5 = 22/5; d = -5 / sqrt(4.4); J = 1 - 3/(4*7 - 9) = 1 - 3/19
    expected = (1 - 3 / 19) * -5 / math.sqrt(4.4)
    assert expected == pytest.approx(-2.00729, abs=1e-5)
    assert hedges_g(a, b) == pytest.approx(expected)
    assert hedges_g(b, a) == pytest.approx(-expected)


def test_hedges_gz_hand_computed():
    a = np.array([3.0, 5.0, 4.0, 6.0])
    b = np.array([1.0, 2.0, 2.0, 2.0])
    # diffs 2, 3, 2, 4: mean 2.75, sd sqrt(0.9166...); J = 1 - 3/(4*3 - 1) = 1 - 3/11
    diff = a - b
    expected = (1 - 3 / 11) * diff.mean() / diff.std(ddof=1)
    assert hedges_g(a, b, paired=True) == pytest.approx(expected)
    assert hedges_g(a, b, paired=True) == pytest.approx((8 / 11) * 2.75 / math.sqrt(11 / 12))


def test_paired_bootstrap_ci_close_to_scipy():
    low, high = bootstrap_ci_difference(A, B, paired=True, n_boot=20_000, seed=1)
    ref = stats.bootstrap(
        (A - B,), np.mean, method="percentile", n_resamples=20_000, rng=np.random.default_rng(2)
    ).confidence_interval
    diff_sd = (A - B).std(ddof=1)
    assert low == pytest.approx(ref.low, abs=0.1 * diff_sd)
    assert high == pytest.approx(ref.high, abs=0.1 * diff_sd)
    assert low < (A - B).mean() < high


def test_unpaired_bootstrap_ci_brackets_difference_and_is_reproducible():
    ci = bootstrap_ci_difference(A, B[:7], paired=False, n_boot=5000, seed=3)
    assert ci == bootstrap_ci_difference(A, B[:7], paired=False, n_boot=5000, seed=3)
    assert ci[0] < A.mean() - B[:7].mean() < ci[1]
    narrow = bootstrap_ci_difference(A, B, paired=True, confidence=0.5, seed=3)
    wide = bootstrap_ci_difference(A, B, paired=True, confidence=0.99, seed=3)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_holm_hand_example():
    # sorted 0.01, 0.02, 0.03, 0.04 -> x4, x3, x2, x1 = 0.04, 0.06, 0.06, 0.04 -> running max
    p = [0.03, 0.01, 0.04, 0.02]
    np.testing.assert_allclose(holm_adjust(p), [0.06, 0.04, 0.06, 0.06])


def test_holm_caps_at_one_and_skips_nan():
    adjusted = holm_adjust([0.5, float("nan"), 0.4])
    # family of 2: 0.4*2 = 0.8, max(0.8, 0.5*1) = 0.8
    np.testing.assert_allclose(adjusted, [0.8, np.nan, 0.8])
    np.testing.assert_allclose(holm_adjust([0.6, 0.7]), [1.0, 1.0])
    assert np.isnan(holm_adjust([float("nan")])).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_adjust([1.2])


def _summary(values_by_arm: dict, fraction=1.0) -> pd.DataFrame:
    rows = []
    for arm, values in values_by_arm.items():
        for trial, value in enumerate(values, start=1):
            rows.append({"fraction": fraction, "arm": arm, "trial": trial, "best_test_f1_weighted": value})
    return pd.DataFrame(rows)


def test_compare_arms_matches_direct_calls_and_holm_over_family():
    summary = pd.concat(
        [
            _summary({"transfer": A, "random": B, "image": B - 0.03}, fraction=1.0),
            _summary({"transfer": A - 0.01, "random": B - 0.02, "image": B - 0.04}, fraction=0.5),
        ]
    )
    pairs = (("transfer", "random"), ("transfer", "image"))
    table = compare_arms(summary, "best_test_f1_weighted", pairs, n_boot=2000)
    assert list(table.columns) == COMPARISON_COLUMNS + ["welch_p_holm", "paired_p_holm"]
    assert table["comparison"].tolist() == ["transfer vs random", "transfer vs image"] * 2
    assert table["fraction"].tolist() == [1.0, 1.0, 0.5, 0.5]
    row = table.iloc[0]
    assert row["welch_p"] == pytest.approx(stats.ttest_ind(A, B, equal_var=False).pvalue)
    assert row["paired_p"] == pytest.approx(stats.ttest_rel(A, B).pvalue)
    assert row["hedges_g"] == pytest.approx(hedges_g(A, B))
    assert row["mean_diff"] == pytest.approx(A.mean() - B.mean())
    assert row["sd_a"] == pytest.approx(A.std(ddof=1))
    assert (row["n_a"], row["n_b"], row["n_paired"]) == (10, 10, 10)
    np.testing.assert_allclose(table["welch_p_holm"], holm_adjust(table["welch_p"]))
    np.testing.assert_allclose(table["paired_p_holm"], holm_adjust(table["paired_p"]))


def test_compare_arms_pairs_by_trial_not_by_position():
    transfer = _summary({"transfer": [0.9, 0.7, 0.8, 0.85]})
    random = _summary({"random": [0.6, 0.5, 0.45, 0.7]}).iloc[::-1]  # trials in reverse order
    table = compare_arms(pd.concat([transfer, random]), "best_test_f1_weighted", (("transfer", "random"),), n_boot=500)
    expected = stats.ttest_rel([0.9, 0.7, 0.8, 0.85], [0.6, 0.5, 0.45, 0.7])
    assert table.loc[0, "paired_t"] == pytest.approx(expected.statistic)
    assert table.loc[0, "paired_p"] == pytest.approx(expected.pvalue)


def test_compare_arms_handles_one_trial_and_missing_trials():
    summary = pd.concat(
        [_summary({"transfer": [0.9]}, 0.25), _summary({"random": [0.5]}, 0.25),
         _summary({"transfer": [0.9, 0.8, 0.85]}, 1.0), _summary({"random": [0.5, 0.6]}, 1.0)]
    )
    table = compare_arms(summary, "best_test_f1_weighted", (("transfer", "random"),), n_boot=500)
    one = table[table["fraction"] == 0.25].iloc[0]
    assert math.isnan(one["welch_p"]) and math.isnan(one["paired_p"]) and math.isnan(one["welch_p_holm"])
    assert "fewer than 2 trials" in one["note"]
    full = table[table["fraction"] == 1.0].iloc[0]
    assert full["n_paired"] == 2 and "shared trials only" in full["note"]
    assert full["paired_p"] == pytest.approx(stats.ttest_rel([0.9, 0.8], [0.5, 0.6]).pvalue)
    # only one testable comparison, so Holm leaves it unchanged
    assert full["welch_p_holm"] == pytest.approx(full["welch_p"])


def test_compare_arms_bad_input():
    pairs = (("transfer", "random"),)
    with pytest.raises(ValueError, match="lacks columns"):
        compare_arms(pd.DataFrame({"fraction": [1.0], "arm": ["random"], "trial": [1]}), "best_test_f1_weighted", pairs)
    dup = pd.concat([_summary({"transfer": [0.9, 0.8]}), _summary({"transfer": [0.9]})])
    with pytest.raises(ValueError, match="duplicate"):
        compare_arms(dup, "best_test_f1_weighted", pairs)


def test_compare_arms_refuses_a_comparison_of_an_arm_without_runs():
    summary = _summary({"transfer": [0.9, 0.8], "random": [0.5, 0.6]})
    with pytest.raises(ValueError, match=r"transfer vs transfer_frozen names \['transfer_frozen'\].*\['random', 'transfer'\]"):
        compare_arms(summary, "best_test_f1_weighted", (("transfer", "transfer_frozen"),))


# ------------------------------------------------------------------ over test records


def test_weighted_f1_resampled_matches_sklearn_with_sample_weights():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 60)
    pred = np.where(rng.random(60) < 0.6, y, rng.integers(0, 4, 60))
    pred[pred == 3] = 2  # class 3 is never predicted: zero_division counts it 0
    weights = rng.integers(0, 3, size=(5, 60)).astype(float)
    got = weighted_f1_resampled(y, pred, 4, weights)
    for row, value in zip(weights, got):
        assert value == pytest.approx(
            f1_score(y, pred, labels=range(4), average="weighted", sample_weight=row, zero_division=0)
        )
    assert weighted_f1_resampled(y, pred, 4, np.ones((1, 60)))[0] == pytest.approx(
        f1_score(y, pred, labels=range(4), average="weighted", zero_division=0)
    )


def test_record_bootstrap_hand_computed_two_records():
    # truth [0, 1]; a is always right, b always says 0. The four equally likely resamples:
    # {0,0}: a 1, b 1 -> 0;  {1,1}: a 1, b 0 -> 1;  {0,1} twice: a 1, b = 1/2 x 2/3 -> 2/3.
    y = np.array([0, 1])
    result = record_bootstrap_comparison(y, [[0, 1]], [[0, 0]], 2, n_boot=8000, confidence=0.9, seed=4)
    assert result["f1_a"] == 1.0 and result["f1_b"] == pytest.approx(1 / 3)
    assert result["mean_diff"] == pytest.approx(2 / 3)
    assert (result["ci_low_records"], result["ci_high_records"]) == (0.0, 1.0)
    # one trial: redrawing trials changes nothing
    assert (result["ci_low_records_trials"], result["ci_high_records_trials"]) == (0.0, 1.0)
    # the resampled differences take exactly the three values, with shares 1/4, 1/2, 1/4
    weights = np.array([[2, 0], [0, 2], [1, 1]], dtype=float)
    diff = weighted_f1_resampled(y, [0, 1], 2, weights) - weighted_f1_resampled(y, [0, 0], 2, weights)
    np.testing.assert_allclose(diff, [0.0, 1.0, 2 / 3])
    narrow = record_bootstrap_comparison(y, [[0, 1]], [[0, 0]], 2, n_boot=8000, confidence=0.4, seed=4)
    assert narrow["ci_low_records"] == pytest.approx(2 / 3) and narrow["ci_high_records"] == pytest.approx(2 / 3)


def test_record_bootstrap_pools_trials_and_pairs_records():
    y = np.arange(30) % 3
    same = np.vstack([y, y])
    result = record_bootstrap_comparison(y, same, same, 3, n_boot=300, seed=0)
    assert result["mean_diff"] == 0.0 and result["ci_low_records"] == result["ci_high_records"] == 0.0
    worse = same.copy()
    worse[0, :6] = (worse[0, :6] + 1) % 3  # trial 1 of b misses 6 records, trial 2 none
    result = record_bootstrap_comparison(y, same, worse, 3, n_boot=2000, seed=0)
    f1_b1 = f1_score(y, worse[0], average="weighted")
    assert result["mean_diff"] == pytest.approx((1.0 - f1_b1) / 2)
    assert 0.0 <= result["ci_low_records"] < result["mean_diff"] < result["ci_high_records"]
    # redrawing trials adds the trial-to-trial spread (0 or 1 - f1_b1): a wider interval
    assert result["ci_low_records_trials"] <= result["ci_low_records"]
    assert result["ci_high_records_trials"] > result["ci_high_records"]
    assert result == record_bootstrap_comparison(y, same, worse, 3, n_boot=2000, seed=0)


def test_record_bootstrap_comparisons_table_from_predictions():
    predictions = make_predictions(fractions=(1.0, 0.5), arms=("random", "transfer"), n_trials=3)
    table = record_bootstrap_comparisons(predictions, CLASSES, (("transfer", "random"),), n_boot=300, seed=1)
    assert table["fraction"].tolist() == [1.0, 0.5]
    assert (table["n_records"] == 40).all() and (table["n_trials"] == 3).all()
    honest = predictions[(predictions["selection"] == "honest") & (predictions["split"] == "test")]
    at_full = honest[honest["fraction"] == 1.0]
    expected = []
    for arm in ("transfer", "random"):
        scores = []
        for _, run in at_full[at_full["arm"] == arm].groupby("trial"):
            pred = run[[f"prob_{c}" for c in CLASSES]].to_numpy().argmax(axis=1)
            scores.append(f1_score(run["label"].map(CLASSES.index), pred, average="weighted"))
        expected.append(np.mean(scores))
    assert table.loc[0, "f1_a"] == pytest.approx(expected[0]) and table.loc[0, "f1_b"] == pytest.approx(expected[1])
    assert table.loc[0, "ci_low_records"] <= table.loc[0, "mean_diff"] <= table.loc[0, "ci_high_records"]
    other = predictions[predictions["arm"] == "random"].assign(record_id=lambda f: f["record_id"] + "x")
    mixed = pd.concat([predictions[predictions["arm"] == "transfer"], other])
    with pytest.raises(ValueError, match="different test records"):
        record_bootstrap_comparisons(mixed, CLASSES, (("transfer", "random"),), n_boot=10)
    with pytest.raises(ValueError, match="lack columns"):
        record_bootstrap_comparisons(predictions.drop(columns="prob_SR"), CLASSES, (("transfer", "random"),))


def test_compare_arms_leaves_out_trials_without_a_value_and_says_so():
    summary = _summary({"transfer": [0.9, 0.8, np.nan, 0.85], "random": [0.5, 0.6, 0.55, 0.52]})
    row = compare_arms(summary, "best_test_f1_weighted", (("transfer", "random"),), n_boot=200).iloc[0]
    assert (row["n_a"], row["n_b"], row["n_paired"]) == (3, 4, 3)
    assert "left out: {'transfer': 1}" in row["note"]
    assert row["welch_p"] == pytest.approx(stats.ttest_ind([0.9, 0.8, 0.85], [0.5, 0.6, 0.55, 0.52], equal_var=False).pvalue)
