"""Statistics: from hand-shaped per-epoch histories of every arm to the paper's tables, the
comparisons, the figures and the report, all through the real pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ecg_transfer.pipelines.statistics.nodes import TABLE2_METRICS
from ecg_transfer.pipelines.statistics.pipeline import create_pipeline
from ecg_transfer.signals.window_store import WindowStore, WindowStoreWriter
from ecg_transfer.study.experiment import ARMS
from tests.pipelines.conftest import make_catalog, run, shrunk_parameters
from tests.study.histories import make_histories

STATISTICS = create_pipeline().from_nodes("combine_histories", "describe_study").to_nodes(
    "write_study_report", "plot_study"
)
SUMMARY = create_pipeline().from_nodes("combine_histories").to_nodes("summarise_study_runs")
FRACTIONS = (1.0, 0.5)
N_TRIALS = 3


def _store(path, n, labelled):
    rng = np.random.default_rng(0)
    index = pd.DataFrame({
        "record_id": [f"r{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
        "label": [("SR", "SB", "AFIB")[i % 3] if labelled else None for i in range(n)],
        "split": [("train", "train", "val", "test")[i % 4] for i in range(n)],
    })
    with WindowStoreWriter(path) as writer:
        writer.append(rng.standard_normal((n, 2048)).astype(np.float32), index)
    return WindowStore(path)


def _inputs(tmp_path, histories):
    cae_history = pd.DataFrame({"epoch": [1, 1, 2, 2], "split": ["train", "test"] * 2,
                                "loss": [0.9, 0.5, 0.4, 0.3], "mse": [0.9, 0.5, 0.4, 0.3]})
    return {
        **{f"{arm}_training_histories": histories[histories["arm"] == arm].reset_index(drop=True) for arm in ARMS},
        "labelled_windows": _store(tmp_path / "labelled", 12, labelled=True),
        "pretraining_windows": _store(tmp_path / "pretraining", 8, labelled=False),
        "cae_history": cae_history,
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("statistics")
    params = shrunk_parameters()
    histories = make_histories(fractions=FRACTIONS, arms=ARMS, n_trials=N_TRIALS, n_epochs=4)
    catalog = make_catalog(
        tmp_path, {k: params[k] for k in ("statistics", "study", "finetuning", "image_transfer")}, files=(),
        **_inputs(tmp_path, histories),
    )
    return run(STATISTICS, catalog), params, histories


def test_every_table_figure_and_report_is_produced(study):
    catalog, _, histories = study
    for name in STATISTICS.outputs():
        assert catalog.exists(name), name
    for name in [*TABLE2_METRICS, "table3_lci"]:
        assert isinstance(catalog.load(f"{name}_table_csv"), pd.DataFrame), name
        markdown = catalog.load(f"{name}_table_markdown")
        assert markdown.startswith("| ") and markdown.count("\n") == len(catalog.load(f"{name}_table_csv")) + 2
    for name in ("f1_vs_fraction", "f1_vs_fraction_honest", "learning_curves", "per_class_f1"):
        figure = catalog.load(f"{name}_figure")
        assert isinstance(figure, Figure) and figure.axes, name
    assert len(catalog.load("training_histories")) == len(histories)
    summary = catalog.load("run_summary")
    assert len(summary) == len(FRACTIONS) * len(ARMS) * N_TRIALS
    report = catalog.load("study_report")
    assert "0.857 ± 0.004" in report  # the paper's transfer result, beside ours
    meta = catalog.load("study_meta")
    assert meta["labelled_windows"] == 12 and meta["pretraining_windows"] == 8
    assert meta["n_trials"] == catalog.load("params:study")["n_trials"]


def test_table2_has_the_papers_layout(study):
    catalog, _, _ = study
    table = catalog.load("table2_f1_weighted_table_csv")
    assert list(table.columns) == [f"{pct} {arm}" for pct in ("100%", "50%") for arm in ("random", "image", "transfer")]
    assert list(table.index) == [
        *(f"trial {t}" for t in range(1, N_TRIALS + 1)), "mean ± SD",
        "p Welch transfer vs random", "p Welch transfer vs image",
    ]
    summary = catalog.load("run_summary")
    best = summary[(summary["arm"] == "transfer") & (summary["fraction"] == 1.0) & (summary["trial"] == 2)]
    assert table.loc["trial 2", "100% transfer"] == f"{best['best_test_f1_weighted'].iloc[0]:.3f}"
    assert " ± " in table.loc["mean ± SD", "50% random"]
    assert table.loc["p Welch transfer vs random", "100% transfer"] != ""
    assert table.loc["p Welch transfer vs random", "100% random"] == ""
    lci = catalog.load("table3_lci_table_csv")
    assert list(lci.columns) == [f"{pct} {arm}" for pct in ("100%", "50%") for arm in ("random", "transfer")]


def test_comparisons_cover_every_metric_pair_and_fraction(study):
    catalog, params, _ = study
    comparisons = catalog.load("arm_comparisons")
    metrics = [*TABLE2_METRICS.values(), "lci"]
    pairs = [tuple(pair) for pair in params["statistics"]["comparisons"]]
    assert set(comparisons["metric"]) == set(metrics)
    got = set(zip(comparisons["metric"], comparisons["arm_a"], comparisons["arm_b"], comparisons["fraction"]))
    assert got == {(m, a, b, f) for m in metrics for a, b in pairs for f in FRACTIONS}
    assert comparisons[["welch_p", "welch_p_holm", "ci_low", "ci_high", "hedges_g"]].notna().all().all()
    assert (comparisons["ci_low"] <= comparisons["ci_high"]).all()
    # make_histories puts transfer 0.05 above random: the difference must show.
    weighted = comparisons[(comparisons["metric"] == "best_test_f1_weighted") & (comparisons["arm_b"] == "random")]
    assert (weighted["mean_diff"] > 0.03).all()


def test_histories_missing_a_metric_are_refused(tmp_path):
    params = shrunk_parameters()
    histories = make_histories(fractions=FRACTIONS, arms=ARMS, n_trials=2, n_epochs=3)
    inputs = _inputs(tmp_path, histories)
    inputs["image_training_histories"] = inputs["image_training_histories"].drop(columns="f1_weighted")
    catalog = make_catalog(tmp_path, {"statistics": params["statistics"]}, files=(), **inputs)
    with pytest.raises(ValueError, match="f1_weighted"):
        run(SUMMARY, catalog)
    assert not catalog.exists("run_summary")
