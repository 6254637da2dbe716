"""The study's Markdown report: our numbers beside the paper's, with the protocol and caveats."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecg_transfer.study.statistics import welch_ttest
from ecg_transfer.study.tables import format_p, fraction_label, mean_sd, to_markdown

# Jang, Kim & Yoon (2021), Table 2: weighted F1, mean and SD of 10 trials (see PAPER.md).
PAPER_TABLE2 = {
    (1.0, "random"): (0.843, 0.004),
    (1.0, "image"): (0.811, 0.005),
    (1.0, "transfer"): (0.857, 0.004),
    (0.5, "random"): (0.831, 0.005),
    (0.5, "image"): (0.796, 0.003),
    (0.5, "transfer"): (0.843, 0.004),
    (0.25, "random"): (0.543, 0.009),
    (0.25, "image"): (0.782, 0.003),
    (0.25, "transfer"): (0.835, 0.008),
}
# Table 3: LCI, mean and SD, random vs transfer; p of their Welch test ("<0.05" where the
# paper gives only the threshold).
PAPER_LCI = {
    (1.0, "random"): (1.370, 0.178),
    (1.0, "transfer"): (1.440, 0.205),
    (0.5, "random"): (1.211, 0.183),
    (0.5, "transfer"): (1.678, 0.266),
    (0.25, "random"): (0.557, 0.075),
    (0.25, "transfer"): (1.184, 0.242),
}
PAPER_LCI_P = {1.0: "0.45", 0.5: "<0.05", 0.25: "<0.05"}
PAPER_FRACTIONS = (1.0, 0.5, 0.25)


def study_report(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    table2: pd.DataFrame,
    table3: pd.DataFrame,
    meta: dict,
) -> str:
    """Markdown report. meta describes the run: any keys are listed; 'synthetic' (bool, default
    True: assume synthetic unless told otherwise), 'data', 'backbone', 'device' are used in prose."""
    synthetic = bool(meta.get("synthetic", True))
    parts = ["# ECG transfer learning: study report\n"]
    parts.append(_caveat(synthetic, meta))
    parts.append("## Run\n\n" + "".join(f"- **{k}**: {v}\n" for k, v in meta.items()) + "\n")
    parts.append(_PROTOCOL)
    parts.append("## Weighted F1: ours beside the paper's (mean ± SD over trials)\n\n")
    parts.append(to_markdown(_side_by_side(summary, PAPER_TABLE2, "best_test_f1_weighted", "honest_test_f1_weighted")))
    parts.append("\n## LCI: ours beside the paper's (random vs transfer)\n\n")
    parts.append(to_markdown(_lci_side_by_side(summary)))
    parts.append("\n## Table 2 (our runs, paper layout)\n\n")
    parts.append(to_markdown(table2))
    parts.append("\n## Table 3 (our runs, LCI, paper layout)\n\n")
    parts.append(to_markdown(table3))
    parts.append("\n## Comparisons between arms\n\n")
    parts.append(
        "Welch and paired t-tests, Hedges' g (independent) and g_z (paired), a paired percentile "
        "bootstrap CI of the mean difference, and Holm-adjusted p-values over the whole table. "
        "See docs/statistics.md for what each column means.\n\n"
    )
    if "metric" in comparisons.columns and comparisons["metric"].nunique() > 1:
        # One table per metric; Holm ran over each metric's own family.
        for _, per_metric in comparisons.groupby("metric", sort=False):
            parts.append(to_markdown(_comparison_view(per_metric.reset_index(drop=True))))
            parts.append("\n")
    else:
        parts.append(to_markdown(_comparison_view(comparisons)))
    return "".join(parts)


def _caveat(synthetic: bool, meta: dict) -> str:
    if synthetic:
        return (
            "> **Caveat: synthetic data.** These numbers come from simulated ECGs "
            f"({meta.get('data', 'synthetic data')}). They test that the pipeline runs end to end and "
            "that the statistics behave; they say nothing for or against the paper's claim.\n\n"
        )
    return (
        f"> Data: {meta.get('data', 'not stated')}. Backbone: {meta.get('backbone', 'not stated')}. "
        f"Device: {meta.get('device', 'not stated')}. Differences from the paper's setting (corpus, "
        "epochs, trials) are listed under Run.\n\n"
    )


_PROTOCOL = (
    "## Protocol\n\n"
    "- **optimistic** (`best_test_*`, the paper's): the best test F1 over all epochs; the test "
    "split chooses the epoch, so it overstates what a model would score on new data.\n"
    "- **honest** (`honest_test_*`): the epoch with the best validation F1_weighted (ties -> "
    "earliest) is chosen, and its test scores are reported.\n"
    "- All arms of one trial train on the same stratified bootstrap sample (with replacement) "
    "of the training split, so trials pair across arms.\n"
    "- LCI is computed on each run's per-epoch test F1_weighted curve.\n\n"
)


def _stats(summary: pd.DataFrame, fraction: float, arm: str, column: str) -> np.ndarray:
    if column not in summary.columns:
        return np.array([])
    rows = summary[np.isclose(summary["fraction"], fraction) & (summary["arm"] == arm)]
    return rows[column].to_numpy(dtype=float)


def _side_by_side(summary: pd.DataFrame, paper: dict, optimistic: str, honest: str) -> pd.DataFrame:
    fractions = sorted(set(PAPER_FRACTIONS) | set(float(f) for f in summary["fraction"].unique()), reverse=True)
    rows = {}
    for fraction in fractions:
        for arm in ("random", "image", "transfer", "transfer_frozen"):
            paper_value = paper.get((fraction, arm))
            ours = _stats(summary, fraction, arm, optimistic)
            if paper_value is None and ours.size == 0:
                continue
            rows[f"{fraction_label(fraction)} {arm}"] = {
                "paper": f"{paper_value[0]:.3f} ± {paper_value[1]:.3f}" if paper_value else "",
                "ours, optimistic": mean_sd(ours) or "not run",
                "ours, honest": mean_sd(_stats(summary, fraction, arm, honest)) or "not run",
                "trials": str(ours.size),
            }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "setting"
    return table


def _lci_side_by_side(summary: pd.DataFrame) -> pd.DataFrame:
    rows = {}
    for fraction in PAPER_FRACTIONS:
        random_lci = _stats(summary, fraction, "random", "lci")
        transfer_lci = _stats(summary, fraction, "transfer", "lci")
        _, p = welch_ttest(random_lci, transfer_lci) if random_lci.size and transfer_lci.size else (np.nan, np.nan)
        rows[fraction_label(fraction)] = {
            "paper random": "{:.3f} ± {:.3f}".format(*PAPER_LCI[(fraction, "random")]),
            "paper transfer": "{:.3f} ± {:.3f}".format(*PAPER_LCI[(fraction, "transfer")]),
            "paper p": PAPER_LCI_P[fraction],
            "ours random": mean_sd(random_lci) or "not run",
            "ours transfer": mean_sd(transfer_lci) or "not run",
            "ours p (Welch)": format_p(p),
            "ours bounded random": mean_sd(_stats(summary, fraction, "random", "lci_bounded")) or "not run",
            "ours bounded transfer": mean_sd(_stats(summary, fraction, "transfer", "lci_bounded")) or "not run",
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "training data"
    return table


def _comparison_view(comparisons: pd.DataFrame) -> pd.DataFrame:
    if comparisons.empty:
        return pd.DataFrame({"note": ["no comparisons could be made"]})
    view = pd.DataFrame(
        {
            "n (a/b/paired)": [f"{a}/{b}/{p}" for a, b, p in zip(comparisons["n_a"], comparisons["n_b"], comparisons["n_paired"])],
            "mean diff": comparisons["mean_diff"].map(lambda v: f"{v:+.4f}"),
            "CI of diff": [f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(comparisons["ci_low"], comparisons["ci_high"])],
            "g": comparisons["hedges_g"].map(lambda v: f"{v:.2f}"),
            "g_z": comparisons["hedges_gz"].map(lambda v: f"{v:.2f}"),
            "p Welch": comparisons["welch_p"].map(format_p),
            "p Welch (Holm)": comparisons["welch_p_holm"].map(format_p),
            "p paired": comparisons["paired_p"].map(format_p),
            "p paired (Holm)": comparisons["paired_p_holm"].map(format_p),
            "note": comparisons["note"].fillna(""),
        }
    )
    view.index = [f"{fraction_label(f)} {c}" for f, c in zip(comparisons["fraction"], comparisons["comparison"])]
    view.index.name = f"{comparisons['metric'].iloc[0]}"
    return view
