"""The paper's Tables 2 (weighted F1; any summary column, e.g. macro AUROC for a multi-label
study) and 3 (LCI), laid out as printed, for every arm.

Rows: "trial 1" .. "trial n", then "mean ± SD", then per declared comparison two rows of Welch
p-values read from the comparisons table (``statistics.compare_arms``), unadjusted and
Holm-adjusted over that metric's family (the p-value of a vs b at a fraction sits in the column
of arm a at that fraction), then optional context rows (the floor, the sample sizes, the labelled split, runs whose curve
never drops). Columns: fraction x arm in the arm registry's order, e.g. "100% random",
"100% image", "100% transfer", "50% random", ...
Cells are formatted strings, so the frame writes to CSV exactly as it reads in Markdown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ecg_transfer.study.arms import ArmRegistry

# An extra row's content: one text for every column, one per fraction, or one per fraction and arm.
RowContent = str | Mapping[float, str | Mapping[str, str]]


def arm_order(arms: ArmRegistry | Sequence[str] | None, present: Iterable[str]) -> list[str]:
    """The arms to show, in display order: a registry's order (arms it lacks last), the given
    names' order, or sorted; only arms that have runs."""
    present = [str(a) for a in pd.unique(pd.Series(list(present), dtype=object))]
    if isinstance(arms, ArmRegistry):
        return arms.ordered(present)
    if arms is None:
        return sorted(present)
    return [a for a in arms if a in set(present)]


def trial_table(
    summary: pd.DataFrame,
    metric: str,
    arms: ArmRegistry | Sequence[str] | None = None,
    comparisons: pd.DataFrame | None = None,
    fractions=None,
    decimals: int = 3,
    extra_rows: Mapping[str, RowContent] | None = None,
) -> pd.DataFrame:
    """Per-trial values, mean ± SD and Welch p-values of one summary column, paper layout.

    ``comparisons`` is the comparisons table (``compare_arms``; its rows of ``metric`` are
    read, never recomputed); pairs naming an arm without runs get no row, a fraction without
    a comparison row reads n/a. ``extra_rows`` (label -> text, {fraction: text} or
    {fraction: {arm: text}}) are appended in order.
    """
    missing = {"fraction", "arm", "trial", metric} - set(summary.columns)
    if missing:
        raise ValueError(f"trial_table: summary lacks columns {sorted(missing)}")
    duplicated = summary.duplicated(["fraction", "arm", "trial"])
    if duplicated.any():
        raise ValueError(f"trial_table: {int(duplicated.sum())} duplicate (fraction, arm, trial) rows")
    arms = arm_order(arms, summary["arm"])
    if not arms:
        raise ValueError("trial_table: none of the requested arms has runs in the summary")
    p_values = _p_values(comparisons, metric, arms)
    if fractions is None:
        fractions = sorted(summary["fraction"].unique(), reverse=True)
    trials = sorted(int(t) for t in summary["trial"].unique())
    extra_rows = dict(extra_rows or {})
    p_rows = [_p_row(a, b, kind) for a, b in p_values for kind in P_KINDS]

    columns, cells = [], {}
    for fraction in fractions:
        at_fraction = summary[np.isclose(summary["fraction"], float(fraction))]
        for arm in arms:
            column = f"{fraction_label(fraction)} {arm}"
            columns.append(column)
            values = at_fraction.loc[at_fraction["arm"] == arm].set_index("trial")[metric]
            cell = {f"trial {t}": _number(values.get(t, np.nan), decimals) for t in trials}
            cell["mean ± SD"] = mean_sd(values.to_numpy(dtype=float), decimals)
            cell.update({row: "" for row in p_rows})
            for (arm_a, arm_b), rows in p_values.items():
                if arm == arm_a:
                    for kind, column_name in P_KINDS.items():
                        cell[_p_row(arm_a, arm_b, kind)] = format_p(_at(rows, float(fraction), column_name))
            for label, content in extra_rows.items():
                cell[label] = _row_text(content, float(fraction), arm)
            cells[column] = cell

    index = [f"trial {t}" for t in trials] + ["mean ± SD"] + p_rows + list(extra_rows)
    table = pd.DataFrame({column: [cells[column][row] for row in index] for column in columns}, index=index)
    table.index.name = metric
    return table


# The p-value rows of a comparison: label -> column of the comparisons table.
P_KINDS = {"unadjusted": "welch_p", "Holm": "welch_p_holm"}


def _p_values(comparisons: pd.DataFrame | None, metric: str, arms: list[str]) -> dict[tuple[str, str], pd.DataFrame]:
    """The comparisons table's rows of ``metric`` per (a, b) pair whose arms are shown."""
    if comparisons is None:
        return {}
    if not isinstance(comparisons, pd.DataFrame):
        raise TypeError("trial_table: comparisons must be the comparisons table (statistics.compare_arms)")
    if comparisons.empty:
        return {}
    missing = {"fraction", "arm_a", "arm_b", "metric", *P_KINDS.values()} - set(comparisons.columns)
    if missing:
        raise ValueError(f"trial_table: the comparisons lack columns {sorted(missing)}")
    rows = comparisons[comparisons["metric"] == metric]
    pairs = dict.fromkeys(zip(rows["arm_a"].astype(str), rows["arm_b"].astype(str)))
    return {
        (a, b): rows[(rows["arm_a"] == a) & (rows["arm_b"] == b)]
        for a, b in pairs if a in arms and b in arms
    }


def _at(rows: pd.DataFrame, fraction: float, column: str) -> float:
    chosen = rows.loc[np.isclose(rows["fraction"].astype(float), fraction), column]
    return float(chosen.iloc[0]) if len(chosen) else float("nan")


def table2(
    summary: pd.DataFrame,
    metric: str = "best_test_f1_weighted",
    arms: ArmRegistry | Sequence[str] | None = None,
    comparisons: pd.DataFrame | None = None,
    floor: Mapping[str, float] | None = None,
    sample_sizes: pd.DataFrame | None = None,
    labelled_split: str | None = None,
    **kwargs,
) -> pd.DataFrame:
    """Table 2: `metric` of every arm at each fraction, with the context a reader needs.

    ``floor`` ({"majority class": 0.55, ...}) adds one row per trivial classifier;
    ``sample_sizes`` (``bootstrap.sample_sizes``) a row of training patients (the unit drawn;
    records for a table without patient columns) per sample (drawn, and unique on average); ``labelled_split`` a row stating the train/val/test split.
    """
    extra: dict[str, RowContent] = dict(kwargs.pop("extra_rows", None) or {})
    for name, value in (floor or {}).items():
        extra[f"floor: {name}"] = _number(value, kwargs.get("decimals", 3))
    if sample_sizes is not None:
        unit = "patients" if "patients_drawn_mean" in sample_sizes.columns else "records"
        extra[f"training {unit} per sample: drawn (unique, mean)"] = {
            float(row.fraction): f"{getattr(row, f'{unit}_drawn_mean'):g} ({getattr(row, f'unique_{unit}_mean'):.1f})"
            for row in sample_sizes.itertuples()
        }
    if labelled_split:
        extra["labelled split train/val/test"] = labelled_split
    return trial_table(summary, metric, arms=arms, comparisons=comparisons, extra_rows=extra, **kwargs)


def table3(
    summary: pd.DataFrame,
    metric: str = "lci",
    arms: ArmRegistry | Sequence[str] | None = None,
    comparisons: pd.DataFrame | None = None,
    **kwargs,
) -> pd.DataFrame:
    """Table 3: LCI of every arm at each fraction; with ``lci_never_drops`` in the summary, a row
    counting the runs whose test curve of the headline metric never drops (their LCI is ~1e7 and
    swamps mean and SD)."""
    extra: dict[str, RowContent] = dict(kwargs.pop("extra_rows", None) or {})
    if "lci_never_drops" in summary.columns:
        counts = {}
        for (fraction, arm), runs in summary.groupby(["fraction", "arm"]):
            counts.setdefault(float(fraction), {})[arm] = f"{int(runs['lci_never_drops'].sum())} of {len(runs)}"
        extra["runs whose curve never drops"] = counts
    return trial_table(summary, metric, arms=arms, comparisons=comparisons, extra_rows=extra, **kwargs)


def to_markdown(table: pd.DataFrame, index: bool = True) -> str:
    """A GitHub-flavoured Markdown table; the index becomes the first column unless ``index``
    is false (then the first column is left-aligned instead)."""
    if not index:
        table = table.set_index(table.columns[0])
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


def _p_row(arm_a: str, arm_b: str, kind: str) -> str:
    return f"p Welch ({kind}) {arm_a} vs {arm_b}"


def _row_text(content: RowContent, fraction: float, arm: str) -> str:
    """The text of an extra row's cell: the same for all, per fraction, or per fraction and arm."""
    if isinstance(content, str):
        return content
    for key, value in content.items():
        if np.isclose(float(key), fraction):
            return value if isinstance(value, str) else str(value.get(arm, ""))
    return ""


def _number(value, decimals: int) -> str:
    return "" if value is None or np.isnan(value) else f"{float(value):.{decimals}f}"


def _md_cell(value) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


# ---------------------------------------------------------------- pretraining methods

HONEST_F1 = "honest_test_f1_weighted"


def arm_encoder(spec) -> str | None:
    """What a window arm's encoder starts from: "random", "CAE" (``init: pretrained``) or the
    pretraining method the arm names; None for the spectrogram arms."""
    if spec.input != "window":
        return None
    return "random" if spec.init == "random" else spec.pretext_method or "CAE"


def pretraining_methods(registry: ArmRegistry) -> list[str]:
    """The pretrained encoders the study's window arms start from (the CAE and each method), in
    registry order."""
    named = [arm_encoder(spec) for spec in registry]
    return list(dict.fromkeys(name for name in named if name not in (None, "random")))


def _mean_interval(values: np.ndarray, confidence: float) -> str:
    """``mean [lo, hi]``: the mean over trials and its t interval (n/a under two trials)."""
    from scipy import stats

    if values.size == 0:
        return "not run"
    mean = float(np.mean(values))
    if values.size < 2:
        return f"{mean:.3f} [n/a]"
    half = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1) * np.std(values, ddof=1) / np.sqrt(values.size))
    return f"{mean:.3f} [{mean - half:.3f}, {mean + half:.3f}]"


def methods_table(summary: pd.DataFrame, registry: ArmRegistry, confidence: float = 0.95,
                  metric: str = HONEST_F1) -> pd.DataFrame:
    """Window arms x fractions: the honest headline's mean over trials (``metric``: weighted F1,
    or macro AUROC for multi-label) with its t interval (at ``confidence``), each arm labelled
    with the encoder it starts from and whether it trains."""
    fractions = sorted({float(f) for f in summary["fraction"]}, reverse=True)
    rows = {}
    for spec in registry:
        encoder = arm_encoder(spec)
        if encoder is None or spec.name not in set(summary["arm"]):
            continue
        own = summary[summary["arm"] == spec.name]
        training = "frozen" if spec.freeze is True else "fine-tuned" if spec.freeze is False else f"{spec.freeze} blocks frozen"
        row = {"encoder": encoder, "encoder trains": training}
        for fraction in fractions:
            values = own.loc[np.isclose(own["fraction"], fraction), metric].to_numpy(dtype=float)
            row[fraction_label(fraction)] = _mean_interval(values[~np.isnan(values)], confidence)
        rows[spec.name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "arm"
    return table


def method_comparisons(comparisons: pd.DataFrame, registry: ArmRegistry, metric: str = HONEST_F1) -> pd.DataFrame:
    """The declared comparisons of an arm from a pretrained encoder against a random-init arm or
    a CAE arm, on the honest headline (``metric``): difference, its paired interval,
    Holm-adjusted paired p, the smallest detectable difference and the statistics' reading."""
    if comparisons.empty or "metric" not in comparisons.columns:
        return pd.DataFrame()
    rows = comparisons[comparisons["metric"] == metric]
    kept = []
    for _, row in rows.iterrows():
        a, b = str(row["arm_a"]), str(row["arm_b"])
        if a not in registry or b not in registry:
            continue
        encoder_a, encoder_b = arm_encoder(registry[a]), arm_encoder(registry[b])
        if encoder_a in (None, "random") or encoder_b not in ("random", "CAE") or encoder_a == encoder_b:
            continue
        kept.append({
            "fraction": fraction_label(float(row["fraction"])), "arm": a, "method": encoder_a, "against": b,
            "against encoder": encoder_b,
            "mean diff": "n/a" if pd.isna(row["mean_diff"]) else f"{row['mean_diff']:+.4f}",
            "CI (paired t)": "n/a" if pd.isna(row["ci_low"]) else f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]",
            "p paired (Holm)": format_p(row["paired_p_holm"]),
            "detectable diff": "n/a" if pd.isna(row["detectable_diff"]) else f"{row['detectable_diff']:.4f}",
            "reading": "" if pd.isna(row["reading"]) else str(row["reading"]),
        })
    return pd.DataFrame(kept)
