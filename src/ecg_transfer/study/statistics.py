"""Comparisons between arms: over bootstrap trials, and over the patients of the test split.

The paper used Welch's t-test only. All arms of one trial share the bootstrap sample and seed, so
trials pair across arms and a paired t-test is valid and usually sharper; both are reported. Many
comparisons are made (fractions x comparisons), so Holm-adjusted p-values come with them, and
every p says whether it is adjusted.

"No significant difference" is what most studies find, and no evidence of no difference: each
comparison also carries the smallest difference it could have detected (80 % power) and an
equivalence reading (TOST against a margin the user sets).

Two sources of variance, two kinds of interval:
- across trials (``compare_arms``): what changes from one training sample and seed to the next,
  on the one fixed test split (a paired t-interval: with 5 or 10 trials a percentile bootstrap
  is too narrow);
- across test patients (``record_bootstrap_comparison``): which patients, with all their
  records, happen to be in the test split, with the trained models fixed; optionally with the
  trials resampled too (both sources).

Degenerate inputs never crash: fewer than 2 values per arm gives NaN statistics; zero variance
is passed through as scipy gives it (t = +-inf and p = 0 when the means differ, NaN when the
data are identical); Hedges' g with zero spread is NaN.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from scipy import optimize, stats

from ecg_transfer.training.metrics import weighted_macro_auroc

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


def paired_t_interval(a, b, confidence: float = 0.95) -> tuple[float, float]:
    """Paired t confidence interval of mean(a - b): mean +- t_{n-1} x sd / sqrt(n).

    With five or ten trials a percentile bootstrap over trials is too narrow (it ignores the
    uncertainty of the SD, which the t quantile carries); this is the interval the paired
    t-test inverts. NaN with fewer than 2 pairs; zero spread gives the point.
    """
    a, b = _clean(a, "paired_t_interval a"), _clean(b, "paired_t_interval b")
    _check_confidence(confidence, "paired_t_interval")
    if a.size != b.size:
        raise ValueError(f"paired_t_interval: paired samples differ in length ({a.size} vs {b.size})")
    if a.size < 2:
        return float("nan"), float("nan")
    diff = a - b
    half = stats.t.ppf(0.5 + confidence / 2.0, diff.size - 1) * diff.std(ddof=1) / np.sqrt(diff.size)
    return float(diff.mean() - half), float(diff.mean() + half)


def detectable_difference(sd_diff: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true paired difference a two-sided paired t-test at ``alpha`` detects with
    probability ``power``, given n pairs whose differences have SD ``sd_diff``.

    Power at a true difference d is P(|T| > t_{1-alpha/2, n-1}) with T noncentral t (df n-1,
    noncentrality d sqrt(n) / sd); the function solves power = ``power`` for d. NaN with fewer
    than 2 pairs or a NaN SD; 0 with zero spread (any difference is detected).
    """
    if n < 2 or not np.isfinite(sd_diff):
        return float("nan")
    if sd_diff == 0.0:
        return 0.0
    return float(_standardised_detectable(int(n), float(alpha), float(power)) * sd_diff)


def _standardised_detectable(n: int, alpha: float, power: float) -> float:
    df, critical = n - 1, stats.t.ppf(1.0 - alpha / 2.0, n - 1)

    def shortfall(d: float) -> float:
        nc = d * np.sqrt(n)
        # The far tail underflows to NaN for large n x d in scipy; it is 0 there.
        far = np.nan_to_num(stats.nct.cdf(-critical, df, nc), nan=0.0)
        return stats.nct.sf(critical, df, nc) + far - power

    high = 1.0
    while shortfall(high) < 0:
        high *= 2.0
    return optimize.brentq(shortfall, 0.0, high, xtol=1e-12)


def tost_paired(a, b, margin: float) -> float:
    """Two one-sided paired t-tests of |mean(a - b)| < margin (equivalence): the larger of the
    p-values of H0 mean <= -margin and H0 mean >= +margin. Below alpha, a and b are shown
    equivalent within +-margin. NaN with fewer than 2 pairs or no margin."""
    a, b = _clean(a, "tost_paired a"), _clean(b, "tost_paired b")
    if a.size != b.size:
        raise ValueError(f"tost_paired: paired samples differ in length ({a.size} vs {b.size})")
    if a.size < 2 or margin is None or not np.isfinite(margin):
        return float("nan")
    if margin <= 0:
        raise ValueError(f"tost_paired: the equivalence margin must be > 0, got {margin}")
    diff = a - b
    _, p_low = _scipy_quiet(stats.ttest_1samp, diff, -margin, alternative="greater")
    _, p_high = _scipy_quiet(stats.ttest_1samp, diff, margin, alternative="less")
    return max(p_low, p_high)


def equivalence_reading(tost_p: float, paired_p_holm: float, margin: float | None, alpha: float = 0.05) -> str:
    """The verdict a reviewer asks for: 'equivalent within +-m' (TOST), 'different' (Holm-adjusted
    paired p), both, or 'not shown equivalent' (neither: the study cannot tell)."""
    different = bool(np.isfinite(paired_p_holm) and paired_p_holm < alpha)
    if margin is None or not np.isfinite(margin):
        return "different" if different else "no margin for this metric"
    if np.isnan(tost_p):
        return "n/a"
    if tost_p < alpha:
        return f"different, but within ±{margin:g}" if different else f"equivalent within ±{margin:g}"
    return "different" if different else "not shown equivalent"


def _check_confidence(confidence: float, where: str) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"{where}: confidence must be in (0, 1), got {confidence}")


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
    confidence: float = 0.95,
    margin: float | None = None,
    power: float = 0.8,
    undefined: str | None = None,
) -> pd.DataFrame:
    """One row per (fraction, comparison a vs b) of `metric` over trials.

    Welch statistics use every trial of each arm; paired statistics, g_z, the paired t-interval
    (``ci_low``/``ci_high``, over the ``n_paired`` shared trials), the detectable difference
    and TOST use the trials both arms have. Trials whose value is NaN are left out, with a note.
    Holm adjustment runs over the whole table (all fractions and comparisons), separately for
    the Welch and the paired p-values. ``comparisons`` are (a, b) pairs, a minus b (validate
    them against the arm registry first); a comparison naming an arm without any run in the
    summary is an error, an arm missing at one fraction gives a row of NaN with a note.

    ``detectable_diff``: the smallest true difference the paired test (alpha = 1 - confidence)
    finds with probability ``power``, from the SD of the paired differences and n. ``margin``
    (in the metric's units; None: no equivalence reading) feeds TOST and ``reading``.
    ``undefined`` names a boolean summary column marking runs whose value is not a usable
    number (``lci_never_drops``: the raw LCI is ~1e7): where either arm has such a run, every
    test of that row is n/a, said in the note.
    """
    _check_confidence(confidence, "compare_arms")
    kept = _checked_comparisons(summary, metric, comparisons, undefined)
    if fractions is None:
        fractions = sorted(summary["fraction"].unique(), reverse=True)
    rows = []
    for fraction in fractions:
        at_fraction = summary[np.isclose(summary["fraction"], float(fraction))]
        for arm_a, arm_b in kept:
            own = [at_fraction.loc[at_fraction["arm"] == arm].set_index("trial") for arm in (arm_a, arm_b)]
            flagged = [arm for arm, rows_ in zip((arm_a, arm_b), own) if undefined and rows_[undefined].astype(bool).any()]
            rows.append(
                _compare_one(float(fraction), arm_a, arm_b, own[0][metric], own[1][metric],
                             confidence, margin, power, flagged)
            )
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    table["welch_p_holm"] = holm_adjust(table["welch_p"].to_numpy(dtype=float))
    table["paired_p_holm"] = holm_adjust(table["paired_p"].to_numpy(dtype=float))
    alpha = 1.0 - confidence
    table["reading"] = [
        "n/a" if p_welch_undefined else equivalence_reading(tost, holm, margin, alpha)
        for tost, holm, p_welch_undefined in zip(
            table["tost_p"], table["paired_p_holm"], table["note"].str.contains(_UNDEFINED_NOTE, regex=False)
        )
    ]
    return table


def _checked_comparisons(summary: pd.DataFrame, metric: str, comparisons, undefined: str | None) -> list:
    required = {"fraction", "arm", "trial", metric} | ({undefined} if undefined else set())
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
    return kept


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
    "sd_diff",
    "welch_t",
    "welch_p",
    "paired_t",
    "paired_p",
    "hedges_g",
    "hedges_gz",
    "ci_low",
    "ci_high",
    "detectable_diff",
    "equivalence_margin",
    "tost_p",
    "note",
]
_UNDEFINED_NOTE = "has runs whose value is undefined"


def _compare_one(fraction, arm_a, arm_b, series_a, series_b, confidence, margin, power, flagged) -> list:
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
    sd_diff = _sd(pa - pb)
    tests = [*welch_ttest(a, b), *paired_ttest(pa, pb), hedges_g(a, b), hedges_g(pa, pb, paired=True),
             *paired_t_interval(pa, pb, confidence),
             detectable_difference(sd_diff, shared.size, 1.0 - confidence, power),
             margin if margin is not None else float("nan"), tost_paired(pa, pb, margin)]
    if flagged:
        notes.append(f"{flagged} {_UNDEFINED_NOTE} (a curve that never drops): no test")
        tests = [float("nan")] * 9 + tests[-2:-1] + [float("nan")]
    return [
        fraction, f"{arm_a} vs {arm_b}", arm_a, arm_b, series_a.name, int(a.size), int(b.size), int(shared.size),
        _mean(a), _sd(a), _mean(b), _sd(b), _mean(a) - _mean(b), sd_diff, *tests, "; ".join(notes),
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
    patients=None,
) -> dict[str, float]:
    """Paired bootstrap over test patients of the weighted-F1 difference a - b, pooled over trials.

    ``pred_a``/``pred_b`` (n_trials, n_records): each trial's predicted class per test record,
    trials paired by row (same bootstrap sample and seed) and records by column. One resample
    draws n_records records with replacement; the *same* records score both arms in every
    trial, and the statistic is the mean over trials of F1_a - F1_b (so its point estimate is
    the across-trial mean difference). Two percentile intervals:

    - ``records``: trials fixed, test records resampled: the test split's sampling variance
      given these trained models;
    - ``records_trials``: each resample also redraws the trials with replacement, so the
      interval covers training variance (sample and seed) and the test split's.

    ``patients`` (one id per record, i.e. per column) makes the patient the unit: a resample
    draws n_patients patients with replacement and a drawn patient brings all their records (a
    cluster bootstrap), since records of one person are not independent. Patients are numbered
    in order of their first record, so with one record per patient the draws, and the numbers,
    are exactly those of the record-level bootstrap.
    """
    y_true, pred_a, pred_b = _checked_record_inputs(y_true, pred_a, pred_b, confidence, n_boot)
    n_trials, n_records = pred_a.shape
    unit_of_record, n_units = _units_of_records(patients, n_records)
    ones = np.ones((1, n_records))
    f1_a = np.array([weighted_f1_resampled(y_true, p, n_classes, ones)[0] for p in pred_a])
    f1_b = np.array([weighted_f1_resampled(y_true, p, n_classes, ones)[0] for p in pred_b])
    records_only, with_trials = _resampled_differences(
        y_true, pred_a, pred_b, n_classes, n_boot, seed, chunk, unit_of_record, n_units
    )
    tail = (1.0 - confidence) / 2.0
    low_r, high_r = np.quantile(records_only, [tail, 1.0 - tail])
    low_b, high_b = np.quantile(with_trials, [tail, 1.0 - tail])
    return {
        "unit": "record" if patients is None else "patient",
        "n_records": int(n_records),
        "n_patients": int(n_units),
        "n_trials": int(n_trials),
        "f1_a": float(f1_a.mean()),
        "f1_b": float(f1_b.mean()),
        "mean_diff": float((f1_a - f1_b).mean()),
        "ci_low_records": float(low_r),
        "ci_high_records": float(high_r),
        "ci_low_records_trials": float(low_b),
        "ci_high_records_trials": float(high_b),
    }


def _checked_record_inputs(y_true, pred_a, pred_b, confidence: float, n_boot: int) -> tuple:
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
    if pred_a.shape[1] == 0:
        raise ValueError("record_bootstrap_comparison: no test records")
    return y_true, pred_a, pred_b


def _resampled_differences(y_true, pred_a, pred_b, n_classes, n_boot, seed, chunk, unit_of_record, n_units):
    """The resampled statistic (mean over trials of F1_a - F1_b): units only, and units and trials."""
    n_trials = pred_a.shape[0]
    record_rng, trial_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    records_only, with_trials = [], []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        drawn = record_rng.integers(0, n_units, size=(size, n_units))
        rows = np.repeat(np.arange(size), n_units)
        weights = np.bincount(rows * n_units + drawn.ravel(), minlength=size * n_units)
        weights = weights.reshape(size, n_units).astype(np.float64)[:, unit_of_record]
        diff = np.column_stack(
            [
                weighted_f1_resampled(y_true, a, n_classes, weights) - weighted_f1_resampled(y_true, b, n_classes, weights)
                for a, b in zip(pred_a, pred_b)
            ]
        )  # (size, n_trials)
        records_only.append(diff.mean(axis=1))
        trials = trial_rng.integers(0, n_trials, size=(size, n_trials))
        with_trials.append(np.take_along_axis(diff, trials, axis=1).mean(axis=1))
    return np.concatenate(records_only), np.concatenate(with_trials)


def _units_of_records(patients, n_records: int) -> tuple[np.ndarray, int]:
    """(unit index of every record, number of units): patients in order of their first record,
    or every record its own unit."""
    if patients is None:
        return np.arange(n_records), n_records
    patients = np.asarray(patients, dtype=object)
    if patients.shape != (n_records,):
        raise ValueError(
            f"record_bootstrap_comparison: patients has {patients.size} entries for {n_records} records"
        )
    if pd.isna(patients).any():
        raise ValueError("record_bootstrap_comparison: patients holds missing patient ids")
    codes, uniques = pd.factorize(patients, sort=False)
    return codes, int(uniques.size)


RECORD_COMPARISON_COLUMNS = [
    "fraction", "comparison", "arm_a", "arm_b", "metric", "selection", "split", "unit", "n_records",
    "n_patients", "n_trials", "f1_a", "f1_b", "mean_diff", "ci_low_records", "ci_high_records",
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
    patients=None,
) -> pd.DataFrame:
    """``record_bootstrap_comparison`` for every fraction and (a, b) pair of saved predictions.

    ``predictions`` is the long table of the runs' predictions (columns fraction, arm, trial,
    selection, split, record_id, label, prob_<class> for every class of ``classes``). The
    predicted class is the argmax of the probabilities (first class on ties). Trials pair by
    number (the ones both arms have), records by record_id (both arms must hold the same test
    records). At one fraction every comparison uses the same record resamples.

    The resampled unit is the patient when the predictions carry ``patient_id`` or ``patients``
    maps record id -> patient id (a mapping or a Series); else the record.
    """
    classes = [str(c) for c in classes]
    rows = _scored_predictions(predictions, classes, selection, split)

    def compare(truth, scores_a, scores_b, seed, patients):
        return record_bootstrap_comparison(truth.to_numpy(), scores_a, scores_b, len(classes), n_boot=n_boot,
                                           confidence=confidence, seed=seed, patients=patients)

    out = _paired_comparisons(
        rows, comparisons, _prediction_matrix, compare, _patient_map(rows, patients), seed,
        {"metric": "f1_weighted", "selection": selection, "split": split}, "record_bootstrap_comparisons",
    )
    return pd.DataFrame(out, columns=RECORD_COMPARISON_COLUMNS)


def _paired_comparisons(rows: pd.DataFrame, comparisons, arm_scores, compare, patient_of: dict | None, seed: int,
                        keys: dict, where: str) -> list[dict]:
    """One row per fraction (largest first) and (a, b) pair: ``compare(truth, scores_a,
    scores_b, seed, patients)`` on the trials both arms have, paired by number, records by id.

    ``arm_scores(rows, arm, fraction)`` gives an arm's (truth per record, records sorted; its
    trials; their scores stacked, trials first) or None when it has no predictions there; both
    arms must hold the same records with the same truth. Every comparison at one fraction uses
    the same seed, [seed, fraction x 1e6], so the same unit resamples."""
    out = []
    for fraction in sorted(rows["fraction"].unique(), reverse=True):
        at_fraction = rows[np.isclose(rows["fraction"], float(fraction))]
        for arm_a, arm_b in comparisons:
            base = {"fraction": float(fraction), "comparison": f"{arm_a} vs {arm_b}", "arm_a": arm_a,
                    "arm_b": arm_b, **keys}
            a, b = (arm_scores(at_fraction, arm, float(fraction)) for arm in (arm_a, arm_b))
            if a is None or b is None:
                absent = [arm for arm, m in ((arm_a, a), (arm_b, b)) if m is None]
                out.append({**base, "note": f"no predictions of {absent} at this fraction"})
                continue
            (truth_a, trials_a, scores_a), (truth_b, trials_b, scores_b) = a, b
            if not (truth_a.index.equals(truth_b.index) and truth_a.equals(truth_b)):
                raise ValueError(
                    f"{where}: {arm_a} and {arm_b} predicted different {keys['split']} records (or labels) at "
                    f"fraction {fraction:g}; the test split must be the same for every arm"
                )
            shared = sorted(set(trials_a) & set(trials_b))
            if not shared:
                out.append({**base, "note": "no shared trials"})
                continue
            note = "" if len(shared) == max(len(trials_a), len(trials_b)) else f"the {len(shared)} shared trials only"
            result = compare(
                truth_a, scores_a[[trials_a.index(t) for t in shared]], scores_b[[trials_b.index(t) for t in shared]],
                [int(seed), int(round(float(fraction) * 1_000_000))],
                None if patient_of is None else _patients_of(truth_a.index, patient_of),
            )
            out.append({**base, **result, "note": note})
    return out


def _scored_predictions(predictions: pd.DataFrame, classes: list[str], selection: str, split: str) -> pd.DataFrame:
    """The predictions of ``selection`` on ``split``, checked, with the predicted (``_pred``,
    argmax, first class on ties) and the true (``_true``) class codes."""
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
    return rows.assign(_pred=probabilities.argmax(axis=1), _true=rows["label"].astype(str).map(code))


def _patient_map(rows: pd.DataFrame, patients) -> dict | None:
    """record id -> patient id, from the predictions' ``patient_id`` column or ``patients``."""
    if "patient_id" in rows.columns:
        pairs = rows[["record_id", "patient_id"]].drop_duplicates()
        clash = pairs["record_id"].duplicated()
        if clash.any():
            raise ValueError(
                f"record_bootstrap_comparisons: record {pairs.loc[clash, 'record_id'].iloc[0]!r} "
                "has several patient ids in the predictions"
            )
        return dict(zip(pairs["record_id"].astype(str), pairs["patient_id"]))
    if patients is None:
        return None
    return {str(k): v for k, v in dict(patients).items()}


def _patients_of(record_ids: pd.Index, patient_of: dict) -> np.ndarray:
    unknown = [r for r in record_ids if str(r) not in patient_of]
    if unknown:
        raise ValueError(
            f"record_bootstrap_comparisons: no patient id for the test record(s) {unknown[:3]}; the "
            "predictions belong to other labelled data"
        )
    return np.array([patient_of[str(r)] for r in record_ids], dtype=object)


def _prediction_matrix(rows: pd.DataFrame, arm: str, fraction: float):
    """(true class per record, records sorted; the arm's trials; their predicted classes, trials
    x records) of one arm, or None when the arm has no predictions here."""
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
    return truth["first"], [int(t) for t in matrix.index], matrix.to_numpy(dtype=np.int64)


def multilabel_bootstrap_comparison(
    targets, scores_a, scores_b, n_boot: int = 2000, confidence: float = 0.95, seed=0, patients=None,
) -> dict[str, float]:
    """:func:`record_bootstrap_comparison` for a multi-label task: the paired bootstrap over test
    patients (or records) of the macro-AUROC difference a - b, pooled over trials.

    ``targets`` (n_records, K) 0/1; ``scores_a``/``scores_b`` (n_trials, n_records, K), each
    trial's probabilities, trials paired by the first axis and records by the second. Seeded as the
    single-label comparison (one generator for the unit resamples, one for the trial redraws);
    each resample scores both arms on the same records with the weighted macro AUROC of
    :func:`weighted_macro_auroc` (each trial's scores ranked once per label, then only the draw
    multiplicities change: :func:`_ranked_macro_auroc`, equal to it), and a label without
    positives in a resample is skipped there.
    """
    targets = np.asarray(targets)
    scores_a, scores_b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if scores_a.ndim != 3 or scores_a.shape != scores_b.shape or scores_a.shape[1:] != targets.shape:
        raise ValueError(f"multilabel_bootstrap_comparison: scores must be (trials, {targets.shape[0]} records, "
                         f"{targets.shape[1] if targets.ndim == 2 else '?'} labels) for both arms, got "
                         f"{scores_a.shape} and {scores_b.shape}")
    if not 0 < confidence < 1 or n_boot < 1:
        raise ValueError(f"multilabel_bootstrap_comparison: need 0 < confidence < 1 and n_boot >= 1, "
                         f"got {confidence} and {n_boot}")
    n_trials, n_records = scores_a.shape[:2]
    unit_of_record, n_units = _units_of_records(patients, n_records)
    ones = np.ones(n_records)
    auroc_a = np.array([weighted_macro_auroc(targets, a, ones) for a in scores_a])
    auroc_b = np.array([weighted_macro_auroc(targets, b, ones) for b in scores_b])
    positive = np.asarray(targets).astype(bool)
    ranks_a, ranks_b = [_label_ranks(a) for a in scores_a], [_label_ranks(b) for b in scores_b]
    record_rng, trial_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    records_only, with_trials = np.empty(n_boot), np.empty(n_boot)
    for i in range(n_boot):
        weights = np.bincount(record_rng.integers(0, n_units, size=n_units), minlength=n_units)[unit_of_record]
        weights = weights.astype(np.float64)
        diff = np.array([_ranked_macro_auroc(positive, a, weights) - _ranked_macro_auroc(positive, b, weights)
                         for a, b in zip(ranks_a, ranks_b)])
        records_only[i] = np.nanmean(diff)
        with_trials[i] = np.nanmean(diff[trial_rng.integers(0, n_trials, size=n_trials)])
    tail = (1.0 - confidence) / 2.0
    low_r, high_r = np.nanquantile(records_only, [tail, 1.0 - tail])
    low_b, high_b = np.nanquantile(with_trials, [tail, 1.0 - tail])
    return {
        "unit": "record" if patients is None else "patient", "n_records": int(n_records),
        "n_patients": int(n_units), "n_trials": int(n_trials),
        "auroc_a": float(auroc_a.mean()), "auroc_b": float(auroc_b.mean()),
        "mean_diff": float((auroc_a - auroc_b).mean()),
        "ci_low_records": float(low_r), "ci_high_records": float(high_r),
        "ci_low_records_trials": float(low_b), "ci_high_records_trials": float(high_b),
    }


def _label_ranks(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Each label's scores ranked once: (level of every record and label, numbered across the
    labels one after another (N, K); first level of each label (K,); levels in all)."""
    at = np.empty(scores.shape, dtype=np.int64)
    starts = np.zeros(scores.shape[1], dtype=np.int64)
    total = 0
    for k in range(scores.shape[1]):
        levels, inverse = np.unique(scores[:, k], return_inverse=True)
        at[:, k], starts[k] = inverse.reshape(-1) + total, total
        total += levels.size
    return at, starts, total


def _ranked_macro_auroc(positive: np.ndarray, ranks: tuple[np.ndarray, np.ndarray, int], weights: np.ndarray) -> float:
    """:func:`~ecg_transfer.training.metrics.weighted_macro_auroc` of scores ranked by
    :func:`_label_ranks`, all labels in one pass: per label, each positive's weight times the
    weight of the negatives below it plus half of those tied, over (positive x negative
    weight). Labels without weighted positives or negatives are skipped (NaN when none is
    left). With the integer weights of a resample every sum is exact, so the value equals
    ``weighted_macro_auroc`` to the last bit (tested)."""
    at, starts, total = ranks
    w_pos = weights[:, None] * positive
    w_neg = weights[:, None] * ~positive
    pos_sum, neg_sum = w_pos.sum(axis=0), w_neg.sum(axis=0)
    negatives = np.bincount(at.ravel(), weights=w_neg.ravel(), minlength=total)
    cumulative = np.cumsum(negatives)
    before_label = np.concatenate(([0.0], cumulative))[starts]  # negatives of the labels before
    below = cumulative[at] - negatives[at] - before_label
    numerators = (w_pos * (below + 0.5 * negatives[at])).sum(axis=0)
    defined = (pos_sum > 0) & (neg_sum > 0)
    if not defined.any():
        return float("nan")
    return float(np.mean(numerators[defined] / (pos_sum[defined] * neg_sum[defined])))


MULTILABEL_RECORD_COLUMNS = [
    "auroc_a" if c == "f1_a" else "auroc_b" if c == "f1_b" else c for c in RECORD_COMPARISON_COLUMNS
]
MULTILABEL_PREDICTION_COLUMNS = ("fraction", "arm", "trial", "selection", "split", "record_id")


def multilabel_bootstrap_comparisons(
    predictions: pd.DataFrame,
    labels,
    comparisons,
    selection: str = "honest",
    split: str = "test",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    patients=None,
) -> pd.DataFrame:
    """:func:`record_bootstrap_comparisons` for a multi-label study: per fraction and (a, b)
    pair, :func:`multilabel_bootstrap_comparison` of the macro AUROC difference over the test
    patients (or records), trials paired by number, records by record_id.

    ``predictions`` holds, per (fraction, arm, trial, selection, split, record_id), the record's
    0/1 targets ``target_<label>`` and sigmoid probabilities ``prob_<label>`` for every label of
    ``labels``; both arms must hold the same test records with the same targets. The same seeds
    as the single-label comparison ([seed, fraction x 1e6]); the patient is the unit when the
    predictions carry ``patient_id`` or ``patients`` maps record id -> patient id. Columns as
    :data:`RECORD_COMPARISON_COLUMNS` with ``auroc_a``/``auroc_b`` for ``f1_a``/``f1_b``.
    """
    labels = [str(name) for name in labels]
    rows = _multilabel_rows(predictions, labels, selection, split)

    def compare(targets, scores_a, scores_b, seed, patients):
        return multilabel_bootstrap_comparison(targets.to_numpy(), scores_a, scores_b, n_boot=n_boot,
                                               confidence=confidence, seed=seed, patients=patients)

    def arm_scores(at_fraction, arm, fraction):
        return _multilabel_scores(at_fraction, arm, labels, fraction)

    out = _paired_comparisons(
        rows, comparisons, arm_scores, compare, _patient_map(rows, patients), seed,
        {"metric": "auroc_macro", "selection": selection, "split": split}, "multilabel_bootstrap_comparisons",
    )
    return pd.DataFrame(out, columns=MULTILABEL_RECORD_COLUMNS)


def _multilabel_rows(predictions: pd.DataFrame, labels: list[str], selection: str, split: str) -> pd.DataFrame:
    wanted = (*MULTILABEL_PREDICTION_COLUMNS, *(f"target_{n}" for n in labels), *(f"prob_{n}" for n in labels))
    missing = [c for c in wanted if c not in predictions.columns]
    if missing:
        raise ValueError(f"multilabel_bootstrap_comparisons: predictions lack columns {missing} (labels {labels})")
    rows = predictions[(predictions["selection"] == selection) & (predictions["split"] == split)]
    if rows.empty:
        raise ValueError(
            f"multilabel_bootstrap_comparisons: no predictions with selection={selection!r}, split={split!r}"
        )
    targets = rows[[f"target_{n}" for n in labels]]
    if not targets.isin((0, 1)).all().all():
        raise ValueError("multilabel_bootstrap_comparisons: target_<label> columns must be 0/1")
    return rows


def _multilabel_scores(rows: pd.DataFrame, arm: str, labels: list[str], fraction: float):
    """(targets per record (records x labels, records sorted), trials, scores (trials x records
    x labels)) of one arm, or None when the arm has no predictions here."""
    own = rows[rows["arm"] == arm]
    if own.empty:
        return None
    if own.duplicated(["trial", "record_id"]).any():
        first = own.loc[own.duplicated(["trial", "record_id"]), ["trial", "record_id"]].iloc[0].tolist()
        raise ValueError(f"multilabel_bootstrap_comparisons: {arm} at fraction {fraction:g} predicts (trial, "
                         f"record) {first} twice")
    target_columns = [f"target_{n}" for n in labels]
    truth = own.groupby("record_id")[target_columns]
    if (truth.nunique() > 1).any().any():
        raise ValueError(f"multilabel_bootstrap_comparisons: {arm} gives a record several label sets")
    targets = truth.first().sort_index().astype(np.int64)
    trials = sorted(int(t) for t in own["trial"].unique())
    scores = []
    for trial in trials:
        matrix = own[own["trial"] == trial].set_index("record_id")[[f"prob_{n}" for n in labels]]
        if len(matrix) != len(targets):
            raise ValueError(f"multilabel_bootstrap_comparisons: not every trial of {arm} at fraction {fraction:g} "
                             "predicted every test record")
        scores.append(matrix.reindex(targets.index).to_numpy(dtype=np.float64))
    return targets, trials, np.stack(scores)
