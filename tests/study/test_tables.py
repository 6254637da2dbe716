import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ecg_transfer.study.statistics import compare_arms
from ecg_transfer.study.tables import format_p, fraction_label, mean_sd, table2, table3, to_markdown
from tests.study.histories import registry

PAIRS = (("transfer", "random"), ("transfer", "image"))


def _summary() -> pd.DataFrame:
    values = {
        (1.0, "random"): [0.84, 0.85, 0.83],
        (1.0, "image"): [0.81, 0.80, 0.82],
        (1.0, "transfer"): [0.86, 0.87, 0.85],
        (0.25, "random"): [0.54, 0.55, 0.53],
        (0.25, "image"): [0.78, 0.79, 0.77],
        (0.25, "transfer"): [0.83, 0.84, 0.82],
    }
    rows = []
    for (fraction, arm), trials in values.items():
        for trial, value in enumerate(trials, start=1):
            rows.append({"fraction": fraction, "arm": arm, "trial": trial,
                         "best_test_f1_weighted": value, "lci": value * 2})
    return pd.DataFrame(rows)


def _compared(summary, pairs=PAIRS):
    """The comparisons table the tables read, for both metrics of _summary."""
    undefined = {"lci": "lci_never_drops"} if "lci_never_drops" in summary.columns else {}
    return pd.concat(
        [compare_arms(summary, metric, pairs, undefined=undefined.get(metric)).assign(metric=metric)
         for metric in ("best_test_f1_weighted", "lci")],
        ignore_index=True,
    )


def test_table2_layout_and_values():
    table = table2(_summary(), arms=registry(), comparisons=_compared(_summary()))
    assert list(table.columns) == [
        "100% random", "100% image", "100% transfer", "25% random", "25% image", "25% transfer",
    ]
    assert list(table.index) == [
        "trial 1", "trial 2", "trial 3", "mean ± SD",
        "p Welch (unadjusted) transfer vs random", "p Welch (Holm) transfer vs random",
        "p Welch (unadjusted) transfer vs image", "p Welch (Holm) transfer vs image",
    ]
    assert table.loc["trial 2", "100% random"] == "0.850"
    # mean 0.84, SD 0.01 (ddof=1)
    assert table.loc["mean ± SD", "100% random"] == "0.840 ± 0.010"
    expected_p = stats.ttest_ind([0.86, 0.87, 0.85], [0.84, 0.85, 0.83], equal_var=False).pvalue
    assert table.loc["p Welch (unadjusted) transfer vs random", "100% transfer"] == f"{expected_p:.3f}"
    assert table.loc["p Welch (unadjusted) transfer vs random", "100% random"] == ""
    assert table.loc["p Welch (unadjusted) transfer vs random", "25% transfer"] == "<0.001"
    # Holm over the metric's family of four p-values, read from the comparisons, not recomputed
    compared = _compared(_summary())
    row = compared[(compared["metric"] == "best_test_f1_weighted") & (compared["fraction"] == 1.0)
                   & (compared["arm_b"] == "random")].iloc[0]
    assert (compared["welch_p_holm"] > compared["welch_p"]).any()
    assert table.loc["p Welch (Holm) transfer vs random", "100% transfer"] == format_p(row["welch_p_holm"])
    doctored = compared.assign(welch_p=0.5)
    assert table2(_summary(), arms=registry(), comparisons=doctored).loc[
        "p Welch (unadjusted) transfer vs random", "100% transfer"] == "0.500"


def test_table3_shows_every_arm_in_registry_order_with_every_declared_comparison():
    table = table3(_summary(), arms=registry(), comparisons=_compared(_summary()))
    assert list(table.columns) == [
        "100% random", "100% image", "100% transfer", "25% random", "25% image", "25% transfer",
    ]
    assert list(table.index[-4:]) == [
        "p Welch (unadjusted) transfer vs random", "p Welch (Holm) transfer vs random",
        "p Welch (unadjusted) transfer vs image", "p Welch (Holm) transfer vs image",
    ]
    assert table.loc["mean ± SD", "100% random"] == "1.680 ± 0.020"


def test_an_added_arm_gets_its_columns_and_comparison_rows():
    summary = _summary()
    extra = summary[summary["arm"] == "transfer"].assign(arm="transfer_frozen", best_test_f1_weighted=lambda f: f["best_test_f1_weighted"] - 0.1)
    both = pd.concat([summary, extra])
    table = table2(both, arms=registry(), comparisons=_compared(both, (*PAIRS, ("transfer", "transfer_frozen"))))
    assert list(table.columns[:4]) == ["100% random", "100% image", "100% transfer", "100% transfer_frozen"]
    assert table.loc["p Welch (unadjusted) transfer vs transfer_frozen", "100% transfer"] != ""
    # the other cells are unchanged by the new arm
    base = table2(summary, arms=registry(), comparisons=_compared(_summary()))
    unadjusted = [row for row in base.index if "Holm" not in row]  # Holm's family grew
    pd.testing.assert_frame_equal(table.loc[unadjusted, base.columns], base.loc[unadjusted])


def test_table2_context_rows_floor_sizes_and_split():
    sizes = pd.DataFrame({"fraction": [1.0, 0.25], "records_drawn_mean": [100.0, 25.0],
                          "unique_records_mean": [63.2, 22.1]})
    table = table2(_summary(), arms=registry(), comparisons=_compared(_summary()),
                   floor={"majority class": 0.5512, "stratified guess": 0.4},
                   sample_sizes=sizes, labelled_split="70/10/20 (paper: 80/20)")
    assert table.loc["floor: majority class", "25% image"] == "0.551"
    assert table.loc["floor: stratified guess", "100% random"] == "0.400"
    row = "training records per sample: drawn (unique, mean)"
    assert table.loc[row, "100% transfer"] == "100 (63.2)" and table.loc[row, "25% random"] == "25 (22.1)"
    assert table.loc["labelled split train/val/test", "100% random"] == "70/10/20 (paper: 80/20)"


def test_table3_counts_runs_whose_curve_never_drops():
    summary = _summary().assign(lci_never_drops=lambda f: f["trial"] == 1)
    table = table3(summary, metric="lci", arms=registry(), comparisons=_compared(summary))
    assert table.loc["runs whose curve never drops", "25% transfer"] == "1 of 3"
    # Issue 16 item 4: the raw LCI's p is n/a when an arm has a curve that never drops
    assert table.loc["p Welch (unadjusted) transfer vs random", "25% transfer"] == "n/a"
    assert table.loc["p Welch (Holm) transfer vs random", "100% transfer"] == "n/a"


def test_missing_trial_leaves_empty_cell_and_missing_arm_is_dropped():
    summary = _summary()
    summary = summary[~((summary["arm"] == "image") & (summary["trial"] == 3) & (summary["fraction"] == 1.0))]
    table = table2(summary, arms=registry(), comparisons=_compared(_summary()))
    assert table.loc["trial 3", "100% image"] == ""
    assert table.loc["mean ± SD", "100% image"] == "0.805 ± 0.007"
    no_image = table2(summary[summary["arm"] != "image"], arms=registry(), comparisons=_compared(_summary()))
    assert "100% image" not in no_image.columns
    assert "p Welch (unadjusted) transfer vs image" not in no_image.index


def test_helpers():
    assert fraction_label(1.0) == "100%" and fraction_label(0.25) == "25%" and fraction_label(0.125) == "12.5%"
    assert mean_sd(np.array([1.0, 2.0, 3.0]), 2) == "2.00 ± 1.00"
    assert mean_sd(np.array([0.5]), 1) == "0.5 ± n/a"
    assert mean_sd(np.array([])) == ""
    assert format_p(0.04567) == "0.046" and format_p(1e-5) == "<0.001" and format_p(float("nan")) == "n/a"


def test_to_markdown_renders_every_cell():
    table = pd.DataFrame({"a|b": ["x", "y"], "c": [0.5, np.nan]}, index=["r1", "r2"])
    table.index.name = "metric"
    text = to_markdown(table)
    lines = text.strip().split("\n")
    assert lines[0] == "| metric | a\\|b | c |"
    assert lines[1] == "| --- | ---: | ---: |"
    assert lines[2] == "| r1 | x | 0.500 |"
    assert lines[3] == "| r2 | y |  |"
    assert len(lines) == 4


def test_table2_to_markdown_row_count():
    text = to_markdown(table2(_summary(), arms=registry(), comparisons=_compared(_summary())))
    assert text.count("\n") == 2 + 8  # 3 trials, mean, 2 comparisons x (unadjusted, Holm)
    assert "| mean ± SD | 0.840 ± 0.010 |" in text


def test_bad_metric_raises():
    with pytest.raises(ValueError, match="lacks columns"):
        table2(_summary(), metric="honest_test_f1_weighted")


def test_duplicate_runs_raise():
    summary = _summary()
    with pytest.raises(ValueError, match="duplicate"):
        table2(pd.concat([summary, summary.iloc[:1]]))


def test_to_markdown_without_the_index_takes_the_first_column_as_labels():
    table = pd.DataFrame({"step": ["a", "b"], "seconds": [1.5, 2.0]})
    assert to_markdown(table, index=False) == (
        "| step | seconds |\n| --- | ---: |\n| a | 1.500 |\n| b | 2.000 |\n"
    )
    assert to_markdown(table.set_index("step")) == to_markdown(table, index=False)
