import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from ecg_transfer.study.statistics import (
    COMPARISON_COLUMNS,
    compare_arms,
    detectable_difference,
    equivalence_reading,
    hedges_g,
    holm_adjust,
    paired_t_interval,
    paired_ttest,
    record_bootstrap_comparison,
    record_bootstrap_comparisons,
    tost_paired,
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
    assert all(math.isnan(v) for v in paired_t_interval([0.8], [0.7]))


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


def test_paired_t_interval_hand_computed():
    # Issue 16 item 4: with few trials the interval is the paired t-interval, not a percentile
    # bootstrap (too narrow at n = 5).
    a, b = np.array([0.80, 0.82, 0.79, 0.85, 0.81]), np.array([0.78, 0.80, 0.80, 0.81, 0.78])
    diff = a - b  # 0.02, 0.02, -0.01, 0.04, 0.03: mean 0.02, sd sqrt(0.00035)
    half = stats.t.ppf(0.975, 4) * math.sqrt(0.00035) / math.sqrt(5)
    low, high = paired_t_interval(a, b)
    assert (low, high) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    ref = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (low, high) == (pytest.approx(ref.low), pytest.approx(ref.high))
    # wider than the percentile bootstrap of the five differences
    boot = stats.bootstrap((diff,), np.mean, method="percentile", n_resamples=20_000, rng=np.random.default_rng(0))
    assert high - low > 1.3 * (boot.confidence_interval.high - boot.confidence_interval.low)
    assert all(math.isnan(v) for v in paired_t_interval([0.8], [0.7]))


def test_detectable_difference_has_the_asked_power():
    # The power at the returned difference, by simulation (an independent reference), is 80 %.
    n, sd = 5, 0.01
    delta = detectable_difference(sd, n)
    rng = np.random.default_rng(0)
    diffs = rng.normal(delta, sd, size=(200_000, n))
    t = diffs.mean(axis=1) / (diffs.std(axis=1, ddof=1) / math.sqrt(n))
    power = np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1))
    assert power == pytest.approx(0.8, abs=0.005)
    # hand: for large n the t-test is the z-test, d = (z_0.975 + z_0.8) / sqrt(n) = 2.8016 / sqrt(n)
    large = detectable_difference(1.0, 2000)
    assert large == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / math.sqrt(2000), rel=2e-3)
    # the difference scales with the SD; more trials detect less
    assert detectable_difference(0.02, n) == pytest.approx(2 * delta)
    assert detectable_difference(sd, 10) < delta
    assert detectable_difference(0.0, n) == 0.0 and math.isnan(detectable_difference(sd, 1))


def test_tost_hand_computed():
    a, b = np.array([0.80, 0.82, 0.79, 0.85, 0.81]), np.array([0.78, 0.80, 0.80, 0.81, 0.78])
    diff = a - b
    se = diff.std(ddof=1) / math.sqrt(diff.size)
    margin = 0.05
    p_low = stats.t.sf((diff.mean() + margin) / se, diff.size - 1)  # H0: mean <= -margin
    p_high = stats.t.cdf((diff.mean() - margin) / se, diff.size - 1)  # H0: mean >= +margin
    assert tost_paired(a, b, margin) == pytest.approx(max(p_low, p_high))
    assert tost_paired(a, b, margin) < 0.05  # the 90 % interval lies inside +-0.05
    assert tost_paired(a, b, 0.02) == pytest.approx(0.5)  # the mean difference sits on the margin
    assert math.isnan(tost_paired(a, b, None))
    with pytest.raises(ValueError, match="margin must be > 0"):
        tost_paired(a, b, 0.0)


def test_equivalence_reading():
    assert equivalence_reading(0.01, 0.4, 0.02) == "equivalent within ±0.02"
    assert equivalence_reading(0.3, 0.4, 0.02) == "not shown equivalent"
    assert equivalence_reading(0.3, 0.001, 0.02) == "different"
    assert equivalence_reading(0.01, 0.001, 0.02) == "different, but within ±0.02"
    assert equivalence_reading(0.3, 0.001, None) == "different"
    assert equivalence_reading(0.3, 0.4, None) == "no margin for this metric"


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
    table = compare_arms(summary, "best_test_f1_weighted", pairs)
    assert list(table.columns) == COMPARISON_COLUMNS + ["welch_p_holm", "paired_p_holm", "reading"]
    assert table["comparison"].tolist() == ["transfer vs random", "transfer vs image"] * 2
    assert table["fraction"].tolist() == [1.0, 1.0, 0.5, 0.5]
    row = table.iloc[0]
    assert row["welch_p"] == pytest.approx(stats.ttest_ind(A, B, equal_var=False).pvalue)
    assert row["paired_p"] == pytest.approx(stats.ttest_rel(A, B).pvalue)
    assert row["hedges_g"] == pytest.approx(hedges_g(A, B))
    assert row["mean_diff"] == pytest.approx(A.mean() - B.mean())
    assert row["sd_a"] == pytest.approx(A.std(ddof=1))
    assert (row["n_a"], row["n_b"], row["n_paired"]) == (10, 10, 10)
    assert (row["ci_low"], row["ci_high"]) == paired_t_interval(A, B)
    assert row["sd_diff"] == pytest.approx((A - B).std(ddof=1))
    assert row["detectable_diff"] == pytest.approx(detectable_difference((A - B).std(ddof=1), 10))
    assert math.isnan(row["tost_p"]) and row["reading"] == "different"  # no margin given
    np.testing.assert_allclose(table["welch_p_holm"], holm_adjust(table["welch_p"]))
    np.testing.assert_allclose(table["paired_p_holm"], holm_adjust(table["paired_p"]))


def test_compare_arms_pairs_by_trial_not_by_position():
    transfer = _summary({"transfer": [0.9, 0.7, 0.8, 0.85]})
    random = _summary({"random": [0.6, 0.5, 0.45, 0.7]}).iloc[::-1]  # trials in reverse order
    table = compare_arms(pd.concat([transfer, random]), "best_test_f1_weighted", (("transfer", "random"),))
    expected = stats.ttest_rel([0.9, 0.7, 0.8, 0.85], [0.6, 0.5, 0.45, 0.7])
    assert table.loc[0, "paired_t"] == pytest.approx(expected.statistic)
    assert table.loc[0, "paired_p"] == pytest.approx(expected.pvalue)


def test_compare_arms_handles_one_trial_and_missing_trials():
    summary = pd.concat(
        [_summary({"transfer": [0.9]}, 0.25), _summary({"random": [0.5]}, 0.25),
         _summary({"transfer": [0.9, 0.8, 0.85]}, 1.0), _summary({"random": [0.5, 0.6]}, 1.0)]
    )
    table = compare_arms(summary, "best_test_f1_weighted", (("transfer", "random"),))
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
    row = compare_arms(summary, "best_test_f1_weighted", (("transfer", "random"),)).iloc[0]
    assert (row["n_a"], row["n_b"], row["n_paired"]) == (3, 4, 3)
    assert "left out: {'transfer': 1}" in row["note"]
    assert row["welch_p"] == pytest.approx(stats.ttest_ind([0.9, 0.8, 0.85], [0.5, 0.6, 0.55, 0.52], equal_var=False).pvalue)


def _clustered_predictions(per_patient=5, n_patients=40, seed=0):
    """Test records grouped by patient: a patient's records are all right or all wrong for arm
    a (records of one person are alike), arm b is right on a fixed 60 % of records."""
    rng = np.random.default_rng(seed)
    n = per_patient * n_patients
    y = np.arange(n) % 3
    patient_right = rng.random(n_patients) < 0.75
    a = np.where(np.repeat(patient_right, per_patient), y, (y + 1) % 3)
    b = np.where(rng.random(n) < 0.6, y, (y + 1) % 3)
    patients = np.repeat([f"p{i:03d}" for i in range(n_patients)], per_patient).astype(object)
    return y, np.vstack([a, a]), np.vstack([b, b]), patients


def test_record_bootstrap_over_patients_is_wider_with_several_records_per_patient():
    # Issue 16 item 2: five records per patient are not five independent records.
    y, a, b, patients = _clustered_predictions(per_patient=5)
    by_record = record_bootstrap_comparison(y, a, b, 3, n_boot=2000, seed=3)
    by_patient = record_bootstrap_comparison(y, a, b, 3, n_boot=2000, seed=3, patients=patients)
    assert by_patient["mean_diff"] == by_record["mean_diff"]
    width = lambda r: r["ci_high_records"] - r["ci_low_records"]  # noqa: E731
    assert width(by_patient) > 1.5 * width(by_record)
    assert (by_patient["unit"], by_patient["n_patients"], by_patient["n_records"]) == ("patient", 40, 200)
    assert (by_record["unit"], by_record["n_patients"]) == ("record", 200)


def test_record_bootstrap_with_one_record_per_patient_gives_exactly_todays_numbers():
    y, a, b, _ = _clustered_predictions(per_patient=1, n_patients=120)
    patients = np.array([f"patient_{i}" for i in range(y.size)], dtype=object)
    by_record = record_bootstrap_comparison(y, a, b, 3, n_boot=700, seed=[5, 1_000_000])
    by_patient = record_bootstrap_comparison(y, a, b, 3, n_boot=700, seed=[5, 1_000_000], patients=patients)
    differing = {k for k in by_record if by_record[k] != by_patient[k]}
    assert differing == {"unit"}


def test_record_bootstrap_comparisons_resample_patients_from_the_predictions_or_a_map():
    predictions = make_predictions(fractions=(1.0,), arms=("random", "transfer"), n_trials=3)
    records = sorted(predictions["record_id"].unique())
    patient_of = {r: f"pat{i // 4}" for i, r in enumerate(records)}
    plain = record_bootstrap_comparisons(predictions, CLASSES, (("transfer", "random"),), n_boot=300, seed=1)
    mapped = record_bootstrap_comparisons(
        predictions, CLASSES, (("transfer", "random"),), n_boot=300, seed=1, patients=patient_of
    )
    carried = record_bootstrap_comparisons(
        predictions.assign(patient_id=predictions["record_id"].map(patient_of)), CLASSES,
        (("transfer", "random"),), n_boot=300, seed=1,
    )
    pd.testing.assert_frame_equal(mapped, carried)
    assert plain.loc[0, "unit"] == "record" and mapped.loc[0, "unit"] == "patient"
    assert mapped.loc[0, "n_patients"] == 10 and mapped.loc[0, "n_records"] == 40
    assert mapped.loc[0, "ci_low_records"] != plain.loc[0, "ci_low_records"]
    with pytest.raises(ValueError, match="no patient id for the test record"):
        record_bootstrap_comparisons(predictions, CLASSES, (("transfer", "random"),), n_boot=10,
                                     patients={records[0]: "x"})


def test_compare_arms_reads_equivalence_against_the_margin():
    close = _summary({"transfer": A, "random": A - 0.001 + 0.0005 * np.sin(np.arange(10))})
    row = compare_arms(close, "best_test_f1_weighted", (("transfer", "random"),), margin=0.02).iloc[0]
    assert row["equivalence_margin"] == 0.02 and row["tost_p"] < 0.05
    assert row["reading"].endswith("within ±0.02")
    far = _summary({"transfer": A, "random": B})
    assert compare_arms(far, "best_test_f1_weighted", (("transfer", "random"),), margin=0.005).iloc[0]["reading"] == "different"
    noisy = _summary({"transfer": [0.80, 0.85, 0.75, 0.82], "random": [0.79, 0.80, 0.81, 0.76]})
    row = compare_arms(noisy, "best_test_f1_weighted", (("transfer", "random"),), margin=0.02).iloc[0]
    assert row["reading"] == "not shown equivalent" and row["detectable_diff"] > 0.02


def test_raw_lci_tests_are_na_when_a_curve_never_drops():
    summary = _summary({"transfer": [1.2, 1.4, 1.3], "random": [1.0, 1.1, 1.05]}).rename(
        columns={"best_test_f1_weighted": "lci"}
    )
    summary["lci_never_drops"] = False
    fine = compare_arms(summary, "lci", (("transfer", "random"),), undefined="lci_never_drops").iloc[0]
    assert np.isfinite(fine["welch_p"]) and np.isfinite(fine["paired_p"])
    summary.loc[(summary["arm"] == "random") & (summary["trial"] == 2), ["lci", "lci_never_drops"]] = [1e7, True]
    row = compare_arms(summary, "lci", (("transfer", "random"),), undefined="lci_never_drops").iloc[0]
    for column in ("welch_p", "paired_p", "welch_p_holm", "paired_p_holm", "ci_low", "detectable_diff", "hedges_g"):
        assert math.isnan(row[column]), column
    assert "['random'] has runs whose value is undefined" in row["note"] and row["reading"] == "n/a"
