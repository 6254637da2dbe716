"""Comparisons between arms: over bootstrap trials, and over the records of the test split.

The paper used Welch's t-test only. All arms of one trial share the bootstrap sample and seed, so
trials pair across arms and a paired t-test is valid and usually sharper; both are reported. Many
comparisons are made (fractions x comparisons), so Holm-adjusted p-values come with them.

Two sources of variance, two kinds of interval:
- across trials (``compare_arms``): what changes from one training sample and seed to the next,
  on the one fixed test split;
- across test records (``record_bootstrap_comparison``): which records happen to be in the test
  split, with the trained models fixed; optionally with the trials resampled too (both sources).

Degenerate inputs never crash: fewer than 2 values per arm gives NaN statistics; zero variance
is passed through as scipy gives it (t = +-inf and p = 0 when the means differ, NaN when the
data are identical); Hedges' g with zero spread is NaN.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from scipy import stats

logger = logging.getLogger(__name__)


def _clean(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sample, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name}: the sample holds NaN; drop or fix the failed trials first")
    return array


def _scipy_quiet(test, *args, **kwargs):
    # scipy warns about precision loss on (near-)constant samples; the result is still the
    # documented inf/nan, so the warning is noise in a results table.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = test(*args, **kwargs)
    return float(result.statistic), float(result.pvalue)


def welch_ttest(a, b) -> tuple[float, float]:
    """Welch's unequal-variance t-test, two-sided: the paper's test. (t, p); NaN if n < 2."""
    a, b = _clean(a, "welch_ttest a"), _clean(b, "welch_ttest b")
    if a.size < 2 or b.size < 2:
        return float("nan"), float("nan")
    return _scipy_quiet(stats.ttest_ind, a, b, equal_var=False)


def paired_ttest(a, b) -> tuple[float, float]:
    """Paired t-test on a[i] vs b[i] (same trial), two-sided. (t, p); NaN if fewer than 2 pairs."""
    a, b = _clean(a, "paired_ttest a"), _clean(b, "paired_ttest b")
    if a.size != b.size:
        raise ValueError(f"paired_ttest: samples differ in length ({a.size} vs {b.size})")
    if a.size < 2:
        return float("nan"), float("nan")
    return _scipy_quiet(stats.ttest_rel, a, b)


def hedges_g(a, b, paired: bool = False) -> float:
    """Standardised mean difference a - b with the small-sample correction.

    Independent: g = J x (mean_a - mean_b) / s_pooled, J = 1 - 3 / (4 (n1 + n2) - 9).
    Paired: g_z = J x mean(a - b) / sd(a - b), J = 1 - 3 / (4 (n - 1) - 1), the same
    correction with df = n - 1. g_z measures the difference against trial-to-trial noise of the
    difference, so it is larger than g when arms move together across trials.
    NaN with fewer than 2 values per arm (pairs) or zero spread.
    """
    a, b = _clean(a, "hedges_g a"), _clean(b, "hedges_g b")
    if paired:
        if a.size != b.size:
            raise ValueError(f"hedges_g: paired samples differ in length ({a.size} vs {b.size})")
        n = a.size
        if n < 3:  # J needs df = n - 1 >= 2 to be positive
            return float("nan")
        diff = a - b
        spread = float(diff.std(ddof=1))
        if spread == 0.0:
            return float("nan")
        correction = 1.0 - 3.0 / (4.0 * (n - 1) - 1.0)
        return correction * float(diff.mean()) / spread
    n1, n2 = a.size, b.size
    if n1 < 2 or n2 < 2:
        return float("nan")
    pooled_var = ((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2)
    if pooled_var == 0.0:
        return float("nan")
    correction = 1.0 - 3.0 / (4.0 * (n1 + n2) - 9.0)
    return correction * float(a.mean() - b.mean()) / float(np.sqrt(pooled_var))


def bootstrap_ci_difference(
    a,
    b,
    paired: bool = True,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b) over trials.

    Paired resamples whole trials (the differences); unpaired resamples each arm on its own.
    With ten trials the interval is rough and tends to be a little narrow; it is reported as a
    sense of scale next to the tests, not as a replacement for them. NaN if n < 2.
    """
    a, b = _clean(a, "bootstrap_ci_difference a"), _clean(b, "bootstrap_ci_difference b")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_ci_difference: confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"bootstrap_ci_difference: n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    if paired:
        if a.size != b.size:
            raise ValueError(
                f"bootstrap_ci_difference: paired samples differ in length ({a.size} vs {b.size})"
            )
        if a.size < 2:
            return float("nan"), float("nan")
        diff = a - b
        means = diff[rng.integers(0, diff.size, size=(n_boot, diff.size))].mean(axis=1)
    else:
        if a.size < 2 or b.size < 2:
            return float("nan"), float("nan")
        means = (
            a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
            - b[rng.integers(0, b.size, size=(n_boot, b.size))].mean(axis=1)
        )
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def holm_adjust(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values, in the input order.

    adj_(i) = min(1, max_{j <= i} (m - j + 1) p_(j)) over the ascending p_(j). NaN p-values
    (comparisons that could not be tested) stay NaN and are not counted in the family size m.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"holm_adjust: expected a 1-D array of p-values, got shape {p.shape}")
    valid = ~np.isnan(p)
    if ((p[valid] < 0) | (p[valid] > 1)).any():
        raise ValueError("holm_adjust: p-values must lie in [0, 1]")
    adjusted = np.full(p.shape, np.nan)
    tested = p[valid]
    m = tested.size
    if m == 0:
        return adjusted
    order = np.argsort(tested, kind="stable")
    scaled = (m - np.arange(m)) * tested[order]
    stepped = np.minimum(np.maximum.accumulate(scaled), 1.0)
    result = np.empty(m)
    result[order] = stepped
    adjusted[valid] = result
    return adjusted


def compare_arms(
    summary: pd.DataFrame,
    metric: str,
    comparisons,
    fractions=None,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (fraction, comparison a vs b) of `metric` over trials.

    Welch statistics use every trial of each arm; paired statistics, g_z and the CI use the trials
    both arms have. Trials whose value is NaN are left out, with a note. Holm adjustment runs over the whole table (all fractions and comparisons),
    separately for the Welch and the paired p-values. ``comparisons`` are (a, b) pairs, a minus b
    (validate them against the arm registry first); a comparison naming an arm without any run in
    the summary is an error, an arm missing at one fraction gives a row of NaN with a note.
    """
    required = {"fraction", "arm", "trial", metric}
    missing = required - set(summary.columns)
    if missing:
        raise ValueError(f"compare_arms: summary lacks columns {sorted(missing)}")
    duplicated = summary.duplicated(["fraction", "arm", "trial"])
    if duplicated.any():
        raise ValueError(
            f"compare_arms: {int(duplicated.sum())} duplicate (fraction, arm, trial) rows in summary"
        )
    arms_present = set(summary["arm"])
    kept = [(str(a), str(b)) for a, b in comparisons]
    for arm_a, arm_b in kept:
        absent = [arm for arm in (arm_a, arm_b) if arm not in arms_present]
        if absent:
            raise ValueError(
                f"compare_arms: comparison {arm_a} vs {arm_b} names {absent}, which have no runs; "
                f"the summary holds the arms {sorted(arms_present)}"
            )
    if fractions is None:
        fractions = sorted(summary["fraction"].unique(), reverse=True)

    rows = []
    for fraction in fractions:
        at_fraction = summary[np.isclose(summary["fraction"], float(fraction))]
        for arm_a, arm_b in kept:
            series_a = at_fraction.loc[at_fraction["arm"] == arm_a].set_index("trial")[metric]
            series_b = at_fraction.loc[at_fraction["arm"] == arm_b].set_index("trial")[metric]
            rows.append(
                _compare_one(
                    float(fraction), arm_a, arm_b, series_a, series_b, n_boot, confidence, seed
                )
            )
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    table["welch_p_holm"] = holm_adjust(table["welch_p"].to_numpy(dtype=float))
    table["paired_p_holm"] = holm_adjust(table["paired_p"].to_numpy(dtype=float))
    return table


COMPARISON_COLUMNS = [
    "fraction",
    "comparison",
    "arm_a",
    "arm_b",
    "metric",
    "n_a",
    "n_b",
    "n_paired",
    "mean_a",
    "sd_a",
    "mean_b",
    "sd_b",
    "mean_diff",
    "welch_t",
    "welch_p",
    "paired_t",
    "paired_p",
    "hedges_g",
    "hedges_gz",
    "ci_low",
    "ci_high",
    "note",
]


def _compare_one(fraction, arm_a, arm_b, series_a, series_b, n_boot, confidence, seed) -> list:
    # A trial without a value (e.g. no validation split, so no honest score) is left out, said.
    dropped = {arm: int(s.isna().sum()) for arm, s in ((arm_a, series_a), (arm_b, series_b)) if s.isna().any()}
    series_a, series_b = series_a.dropna(), series_b.dropna()
    a = series_a.to_numpy(dtype=float)
    b = series_b.to_numpy(dtype=float)
    shared = series_a.index.intersection(series_b.index).sort_values()
    pa = series_a.loc[shared].to_numpy(dtype=float)
    pb = series_b.loc[shared].to_numpy(dtype=float)
    notes = [f"trials without a value left out: {dropped}"] if dropped else []
    if a.size < 2 or b.size < 2:
        notes.append(f"fewer than 2 trials ({arm_a}: {a.size}, {arm_b}: {b.size}); no test")
    elif shared.size < 2:
        notes.append(f"fewer than 2 shared trials ({shared.size}); no paired test")
    elif shared.size < max(a.size, b.size):
        notes.append(f"paired statistics on the {shared.size} shared trials only")
    if a.size >= 2 and b.size >= 2 and (a.std(ddof=1) == 0 or b.std(ddof=1) == 0):
        notes.append("zero variance in an arm: t may be inf or NaN")
    welch_t, welch_p = welch_ttest(a, b)
    paired_t, paired_p = paired_ttest(pa, pb)
    ci_low, ci_high = bootstrap_ci_difference(
        pa, pb, paired=True, n_boot=n_boot, confidence=confidence, seed=seed
    )
    return [
        fraction,
        f"{arm_a} vs {arm_b}",
        arm_a,
        arm_b,
        series_a.name,
        int(a.size),
        int(b.size),
        int(shared.size),
        _mean(a),
        _sd(a),
        _mean(b),
        _sd(b),
        _mean(a) - _mean(b),
        welch_t,
        welch_p,
        paired_t,
        paired_p,
        hedges_g(a, b),
        hedges_g(pa, pb, paired=True),
        ci_low,
        ci_high,
        "; ".join(notes),
    ]


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def _sd(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if values.size >= 2 else float("nan")


# ------------------------------------------------------------------ over test records


def weighted_f1_resampled(y_true, y_pred, n_classes: int, weights) -> np.ndarray:
    """Support-weighted F1 under record weights, one value per row of ``weights``.

    ``weights`` (n_resamples, n_records) says how often each record is in a resample (a row of
    ones is the test split itself). Per class c: tp, support and predicted count are weighted
    sums, F1_c = 2 tp / (support + predicted) (0 when both are 0), and the result is
    sum_c support_c F1_c / sum_c support_c: sklearn's ``f1_score(average="weighted",
    labels=range(n_classes), sample_weight=w, zero_division=0)`` row by row, as one matrix
    product per quantity instead of one sklearn call per resample.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"weighted_f1_resampled: y_true {y_true.shape} and y_pred {y_pred.shape} must be equal 1-D")
    if weights.shape[1] != y_true.size:
        raise ValueError(f"weighted_f1_resampled: weights have {weights.shape[1]} columns for {y_true.size} records")
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"weighted_f1_resampled: {name} holds classes outside 0..{n_classes - 1}")
    identity = np.eye(n_classes)
    true_hot, pred_hot = identity[y_true], identity[y_pred]
    support = weights @ true_hot
    predicted = weights @ pred_hot
    hits = weights @ (true_hot * pred_hot)
    denominator = support + predicted
    f1 = np.divide(2.0 * hits, denominator, out=np.zeros_like(hits), where=denominator > 0)
    total = support.sum(axis=1)
    return np.divide((support * f1).sum(axis=1), total, out=np.full(total.shape, np.nan), where=total > 0)


def record_bootstrap_comparison(
    y_true,
    pred_a,
    pred_b,
    n_classes: int,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed=0,
    chunk: int = 250,
) -> dict[str, float]:
    """Paired bootstrap over test records of the weighted-F1 difference a - b, pooled over trials.

    ``pred_a``/``pred_b`` (n_trials, n_records): each trial's predicted class per test record,
    trials paired by row (same bootstrap sample and seed) and records by column. One resample
    draws n_records records with replacement; the *same* records score both arms in every
    trial, and the statistic is the mean over trials of F1_a - F1_b (so its point estimate is
    the across-trial mean difference). Two percentile intervals:

    - ``records``: trials fixed, test records resampled: the test split's sampling variance
      given these trained models;
    - ``records_trials``: each resample also redraws the trials with replacement, so the
      interval covers training variance (sample and seed) and the test split's.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    pred_a = np.atleast_2d(np.asarray(pred_a, dtype=np.int64))
    pred_b = np.atleast_2d(np.asarray(pred_b, dtype=np.int64))
    if pred_a.shape != pred_b.shape or pred_a.shape[1] != y_true.size:
        raise ValueError(
            f"record_bootstrap_comparison: predictions {pred_a.shape} and {pred_b.shape} must both be "
            f"(n_trials, {y_true.size})"
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"record_bootstrap_comparison: confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"record_bootstrap_comparison: n_boot must be >= 1, got {n_boot}")
    n_trials, n_records = pred_a.shape
    if n_records == 0:
        raise ValueError("record_bootstrap_comparison: no test records")
    ones = np.ones((1, n_records))
    f1_a = np.array([weighted_f1_resampled(y_true, p, n_classes, ones)[0] for p in pred_a])
    f1_b = np.array([weighted_f1_resampled(y_true, p, n_classes, ones)[0] for p in pred_b])
    record_rng, trial_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    records_only, with_trials = [], []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        drawn = record_rng.integers(0, n_records, size=(size, n_records))
        rows = np.repeat(np.arange(size), n_records)
        weights = np.bincount(rows * n_records + drawn.ravel(), minlength=size * n_records)
        weights = weights.reshape(size, n_records).astype(np.float64)
        diff = np.column_stack(
            [
                weighted_f1_resampled(y_true, a, n_classes, weights) - weighted_f1_resampled(y_true, b, n_classes, weights)
                for a, b in zip(pred_a, pred_b)
            ]
        )  # (size, n_trials)
        records_only.append(diff.mean(axis=1))
        trials = trial_rng.integers(0, n_trials, size=(size, n_trials))
        with_trials.append(np.take_along_axis(diff, trials, axis=1).mean(axis=1))
    tail = (1.0 - confidence) / 2.0
    low_r, high_r = np.quantile(np.concatenate(records_only), [tail, 1.0 - tail])
    low_b, high_b = np.quantile(np.concatenate(with_trials), [tail, 1.0 - tail])
    return {
        "n_records": int(n_records),
        "n_trials": int(n_trials),
        "f1_a": float(f1_a.mean()),
        "f1_b": float(f1_b.mean()),
        "mean_diff": float((f1_a - f1_b).mean()),
        "ci_low_records": float(low_r),
        "ci_high_records": float(high_r),
        "ci_low_records_trials": float(low_b),
        "ci_high_records_trials": float(high_b),
    }


RECORD_COMPARISON_COLUMNS = [
    "fraction", "comparison", "arm_a", "arm_b", "metric", "selection", "split", "n_records",
    "n_trials", "f1_a", "f1_b", "mean_diff", "ci_low_records", "ci_high_records",
    "ci_low_records_trials", "ci_high_records_trials", "note",
]
PREDICTION_COLUMNS = ("fraction", "arm", "trial", "selection", "split", "record_id", "label")


def record_bootstrap_comparisons(
    predictions: pd.DataFrame,
    classes,
    comparisons,
    selection: str = "honest",
    split: str = "test",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """``record_bootstrap_comparison`` for every fraction and (a, b) pair of saved predictions.

    ``predictions`` is the long table of the runs' predictions (columns fraction, arm, trial,
    selection, split, record_id, label, prob_<class> for every class of ``classes``). The
    predicted class is the argmax of the probabilities (first class on ties). Trials pair by
    number (the ones both arms have), records by record_id (both arms must hold the same test
    records). At one fraction every comparison uses the same record resamples.
    """
    classes = [str(c) for c in classes]
    missing = [c for c in (*PREDICTION_COLUMNS, *(f"prob_{c}" for c in classes)) if c not in predictions.columns]
    if missing:
        raise ValueError(f"record_bootstrap_comparisons: predictions lack columns {missing}")
    rows = predictions[(predictions["selection"] == selection) & (predictions["split"] == split)]
    if rows.empty:
        raise ValueError(f"record_bootstrap_comparisons: no predictions with selection={selection!r}, split={split!r}")
    unknown = sorted(set(rows["label"].astype(str)) - set(classes))
    if unknown:
        raise ValueError(f"record_bootstrap_comparisons: labels {unknown} are not among the classes {classes}")
    code = {name: i for i, name in enumerate(classes)}
    probabilities = rows[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)
    rows = rows.assign(_pred=probabilities.argmax(axis=1), _true=rows["label"].astype(str).map(code))
    out = []
    for fraction in sorted(rows["fraction"].unique(), reverse=True):
        at_fraction = rows[np.isclose(rows["fraction"], float(fraction))]
        for arm_a, arm_b in comparisons:
            a = _prediction_matrix(at_fraction, arm_a, float(fraction))
            b = _prediction_matrix(at_fraction, arm_b, float(fraction))
            base = {"fraction": float(fraction), "comparison": f"{arm_a} vs {arm_b}", "arm_a": arm_a,
                    "arm_b": arm_b, "metric": "f1_weighted", "selection": selection, "split": split}
            if a is None or b is None:
                absent = [arm for arm, m in ((arm_a, a), (arm_b, b)) if m is None]
                out.append({**base, "note": f"no predictions of {absent} at this fraction"})
                continue
            (y_a, pa), (y_b, pb) = a, b
            if not (y_a.index.equals(y_b.index) and y_a.equals(y_b)):
                raise ValueError(
                    f"record_bootstrap_comparisons: {arm_a} and {arm_b} predicted different {split} records "
                    f"(or labels) at fraction {fraction:g}; the test split must be the same for every arm"
                )
            shared = pa.index.intersection(pb.index).sort_values()
            note = "" if len(shared) == max(len(pa), len(pb)) else f"the {len(shared)} shared trials only"
            if len(shared) == 0:
                out.append({**base, "note": "no shared trials"})
                continue
            result = record_bootstrap_comparison(
                y_a.to_numpy(), pa.loc[shared].to_numpy(), pb.loc[shared].to_numpy(), len(classes),
                n_boot=n_boot, confidence=confidence, seed=[int(seed), int(round(float(fraction) * 1_000_000))],
            )
            out.append({**base, **result, "note": note})
    return pd.DataFrame(out, columns=RECORD_COMPARISON_COLUMNS)


def _prediction_matrix(rows: pd.DataFrame, arm: str, fraction: float):
    """(true class per record, predicted class per trial x record) of one arm, records sorted."""
    own = rows[rows["arm"] == arm]
    if own.empty:
        return None
    duplicated = own.duplicated(["trial", "record_id"])
    if duplicated.any():
        first = own.loc[duplicated, ["trial", "record_id"]].iloc[0].tolist()
        raise ValueError(
            f"record_bootstrap_comparisons: {arm} at fraction {fraction:g} predicts (trial, record) "
            f"{first} twice"
        )
    truth = own.groupby("record_id")["_true"].agg(["first", "nunique"]).sort_index()
    if (truth["nunique"] > 1).any():
        raise ValueError(
            f"record_bootstrap_comparisons: {arm} gives record {truth.index[truth['nunique'] > 1][0]!r} "
            "several labels"
        )
    matrix = own.pivot(index="trial", columns="record_id", values="_pred").sort_index().reindex(columns=truth.index)
    if matrix.isna().any().any():
        raise ValueError(
            f"record_bootstrap_comparisons: not every trial of {arm} at fraction {fraction:g} predicted "
            "every test record"
        )
    return truth["first"], matrix.astype(np.int64)
