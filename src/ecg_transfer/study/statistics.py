"""Comparisons between arms over bootstrap trials: tests, effect sizes, intervals, correction.

The paper used Welch's t-test only. All arms of one trial share the bootstrap sample and seed, so
trials pair across arms and a paired t-test is valid and usually sharper; both are reported. Many
comparisons are made (3 fractions x 3 comparisons), so Holm-adjusted p-values come with them.

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

DEFAULT_COMPARISONS = (("transfer", "random"), ("transfer", "image"), ("transfer", "transfer_frozen"))


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
    metric: str = "best_test_f1_weighted",
    comparisons=DEFAULT_COMPARISONS,
    fractions=None,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (fraction, comparison a vs b) of `metric` over trials.

    Welch statistics use every trial of each arm; paired statistics, g_z and the CI use the trials
    both arms have. Holm adjustment runs over the whole table (all fractions and comparisons),
    separately for the Welch and the paired p-values. Comparisons naming an arm absent from the
    whole summary are dropped with a warning (e.g. no frozen-encoder runs); an arm missing at one
    fraction gives a row of NaN with a note.
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
    kept = []
    for arm_a, arm_b in comparisons:
        absent = [arm for arm in (arm_a, arm_b) if arm not in arms_present]
        if absent:
            logger.warning("compare_arms: skipping %s vs %s, no runs of %s", arm_a, arm_b, absent)
        else:
            kept.append((arm_a, arm_b))
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
    a = series_a.to_numpy(dtype=float)
    b = series_b.to_numpy(dtype=float)
    shared = series_a.index.intersection(series_b.index).sort_values()
    pa = series_a.loc[shared].to_numpy(dtype=float)
    pb = series_b.loc[shared].to_numpy(dtype=float)
    notes = []
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
