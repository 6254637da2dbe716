"""The paper's Tables 2 (weighted F1) and 3 (LCI), laid out as printed.

Rows: "trial 1" .. "trial n", then "mean ± SD", then one row of Welch p-values per comparison
(the p-value of a vs b at a fraction sits in the column of arm a at that fraction). Columns:
fraction x arm, e.g. "100% random", "100% image", "100% transfer", "50% random", ...
Cells are formatted strings, so the frame writes to CSV exactly as it reads in Markdown.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecg_transfer.study.statistics import welch_ttest

TABLE2_ARMS = ("random", "image", "transfer")
TABLE2_COMPARISONS = (("transfer", "random"), ("transfer", "image"))
TABLE3_ARMS = ("random", "transfer")
TABLE3_COMPARISONS = (("transfer", "random"),)


def trial_table(
    summary: pd.DataFrame,
    metric: str,
    arms=TABLE2_ARMS,
    comparisons=TABLE2_COMPARISONS,
    fractions=None,
    decimals: int = 3,
) -> pd.DataFrame:
    """Per-trial values, mean ± SD and Welch p-values of one summary column, paper layout."""
    missing = {"fraction", "arm", "trial", metric} - set(summary.columns)
    if missing:
        raise ValueError(f"trial_table: summary lacks columns {sorted(missing)}")
    duplicated = summary.duplicated(["fraction", "arm", "trial"])
    if duplicated.any():
        raise ValueError(f"trial_table: {int(duplicated.sum())} duplicate (fraction, arm, trial) rows")
    arms = [arm for arm in arms if arm in set(summary["arm"])]
    if not arms:
        raise ValueError("trial_table: none of the requested arms has runs in the summary")
    comparisons = [(a, b) for a, b in comparisons if a in arms and b in arms]
    if fractions is None:
        fractions = sorted(summary["fraction"].unique(), reverse=True)
    trials = sorted(int(t) for t in summary["trial"].unique())

    columns, cells = [], {}
    for fraction in fractions:
        at_fraction = summary[np.isclose(summary["fraction"], float(fraction))]
        for arm in arms:
            column = f"{fraction_label(fraction)} {arm}"
            columns.append(column)
            values = at_fraction.loc[at_fraction["arm"] == arm].set_index("trial")[metric]
            cell = {f"trial {t}": _number(values.get(t, np.nan), decimals) for t in trials}
            cell["mean ± SD"] = mean_sd(values.to_numpy(dtype=float), decimals)
            for arm_a, arm_b in comparisons:
                cell[_p_row(arm_a, arm_b)] = ""
            cells[column] = cell
        for arm_a, arm_b in comparisons:
            a = at_fraction.loc[at_fraction["arm"] == arm_a, metric].to_numpy(dtype=float)
            b = at_fraction.loc[at_fraction["arm"] == arm_b, metric].to_numpy(dtype=float)
            _, p = welch_ttest(a[~np.isnan(a)], b[~np.isnan(b)])
            cells[f"{fraction_label(fraction)} {arm_a}"][_p_row(arm_a, arm_b)] = format_p(p)

    index = [f"trial {t}" for t in trials] + ["mean ± SD"] + [_p_row(a, b) for a, b in comparisons]
    table = pd.DataFrame({column: [cells[column][row] for row in index] for column in columns}, index=index)
    table.index.name = metric
    return table


def table2(summary: pd.DataFrame, metric: str = "best_test_f1_weighted", **kwargs) -> pd.DataFrame:
    """Table 2: weighted F1 of random, image and transfer at each fraction."""
    kwargs.setdefault("arms", TABLE2_ARMS)
    kwargs.setdefault("comparisons", TABLE2_COMPARISONS)
    return trial_table(summary, metric, **kwargs)


def table3(summary: pd.DataFrame, metric: str = "lci", **kwargs) -> pd.DataFrame:
    """Table 3: LCI of random vs transfer at each fraction."""
    kwargs.setdefault("arms", TABLE3_ARMS)
    kwargs.setdefault("comparisons", TABLE3_COMPARISONS)
    return trial_table(summary, metric, **kwargs)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table; the index becomes the first column."""
    header = [str(table.index.name or "")] + [str(c) for c in table.columns]
    lines = [_md_row(header), "|" + "|".join([" --- "] + [" ---: "] * len(table.columns)) + "|"]
    for label, row in table.iterrows():
        lines.append(_md_row([str(label)] + [_md_cell(v) for v in row.tolist()]))
    return "\n".join(lines) + "\n"


def fraction_label(fraction: float) -> str:
    """1.0 -> '100%', 0.25 -> '25%', 0.125 -> '12.5%'."""
    return f"{float(fraction) * 100:g}%"


def mean_sd(values: np.ndarray, decimals: int = 3) -> str:
    """'0.843 ± 0.004' (SD with ddof=1); NaN values are left out; '' if nothing remains."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return ""
    if values.size == 1:
        return f"{values[0]:.{decimals}f} ± n/a"
    return f"{values.mean():.{decimals}f} ± {values.std(ddof=1):.{decimals}f}"


def format_p(p: float) -> str:
    """Three decimals, '<0.001' below that, 'n/a' when no test was possible."""
    if p is None or np.isnan(p):
        return "n/a"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def _p_row(arm_a: str, arm_b: str) -> str:
    return f"p Welch {arm_a} vs {arm_b}"


def _number(value, decimals: int) -> str:
    return "" if value is None or np.isnan(value) else f"{float(value):.{decimals}f}"


def _md_cell(value) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
