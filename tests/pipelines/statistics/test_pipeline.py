"""Statistics: from hand-shaped per-epoch histories, predictions and run settings of every arm to
the paper's tables, the comparisons, the floor, the figures and the report, all through the real
pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ecg_transfer.pipelines.statistics.nodes import TABLE2_METRICS, TABLE3_METRICS
from ecg_transfer.pipelines.statistics.pipeline import create_pipeline, study_arm_names
from ecg_transfer.signals.window_store import WindowStore, WindowStoreWriter
from ecg_transfer.study.arms import arm_registry
from ecg_transfer.study.bootstrap import draw_all_samples
from ecg_transfer.study.tables import format_p
from tests.pipelines.conftest import make_catalog, run, shrunk_parameters
from tests.study.histories import ARMS as ARM_SPECS
from tests.study.histories import CLASSES, make_arm_settings, make_histories, make_predictions

PARAMS = shrunk_parameters()
ARMS = list(arm_registry(PARAMS["study"]["arms"]).names)
PIPELINE = create_pipeline(arms=ARMS)
SUMMARY = PIPELINE.from_nodes("check_study_runs").to_nodes("summarise_study_runs")
FRACTIONS = (1.0, 0.5)
N_TRIALS = 3
N_LABELLED = 24


def _store(path, n, labelled, test_records=()):
    """n windows, one record and patient each, train/train/val/test in blocks of three; with
    ``test_records`` (the predictions' record ids) the test split holds those records instead,
    two records per patient."""
    rng = np.random.default_rng(0)
    index = pd.DataFrame({
        "record_id": [f"r{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
        "label": [CLASSES[i % 3] if labelled else None for i in range(n)],
        "split": [("train", "train", "val", "test")[(i // 3) % 4] for i in range(n)],
    })
    if len(test_records):
        index = pd.concat([index[index["split"] != "test"], pd.DataFrame({
            "record_id": list(test_records), "patient_id": [f"tp{i // 2}" for i in range(len(test_records))],
            "label": [CLASSES[i % 3] for i in range(len(test_records))], "split": "test",
        })], ignore_index=True)
        n = len(index)
    with WindowStoreWriter(path) as writer:
        writer.append(rng.standard_normal((n, 2048)).astype(np.float32), index)
    return WindowStore(path)


def _manifest(n, simulated):
    return pd.DataFrame({"record_id": [f"r{i}" for i in range(n)],
                         "source": [f"data/01_raw/bundle/r{i}.csv" for i in range(n)],
                         "simulated": simulated})


def _inputs(tmp_path, histories, predictions, settings=None):
    cae_history = pd.DataFrame({"epoch": [1, 1, 2, 2], "split": ["train", "test"] * 2,
                                "loss": [0.9, 0.5, 0.4, 0.3], "mse": [0.9, 0.5, 0.4, 0.3]})
    test_records = sorted(predictions.loc[predictions["split"] == "test", "record_id"].unique())
    labelled = _store(tmp_path / "labelled", N_LABELLED, labelled=True, test_records=test_records)
    train = labelled.index["split"] == "train"
    samples = draw_all_samples(labelled.index.loc[train, "label"].to_numpy(dtype=object), FRACTIONS, N_TRIALS, 0)
    epochs = {"epochs": int(histories["epoch"].max())}
    settings = settings or {arm: make_arm_settings(arm, FRACTIONS, N_TRIALS, training=epochs) for arm in ARMS}
    return {
        **{f"{arm}.training_histories": histories[histories["arm"] == arm].reset_index(drop=True) for arm in ARMS},
        **{f"{arm}.run_predictions": predictions[predictions["arm"] == arm].reset_index(drop=True) for arm in ARMS},
        **{f"{arm}.arm_settings": settings[arm] for arm in ARMS},
        "labelled_windows": labelled,
        "unlabelled_windows": _store(tmp_path / "pretraining", 8, labelled=False),
        "labelled_manifest": _manifest(N_LABELLED, True),
        "unlabelled_manifest": _manifest(4, True),
        "bootstrap_samples": samples,
        "cae_history": cae_history,
    }


def _params():
    return {k: PARAMS[k] for k in ("statistics", "study", "preprocessing", "pretraining", "image_transfer",
                                   "paper_reference")}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("statistics")
    histories = make_histories(fractions=FRACTIONS, arms=ARMS, n_trials=N_TRIALS, n_epochs=6)
    predictions = make_predictions(fractions=FRACTIONS, arms=ARMS, n_trials=N_TRIALS, n_records=30)
    catalog = make_catalog(tmp_path, _params(), files=(), **_inputs(tmp_path, histories, predictions))
    return run(PIPELINE, catalog), histories


def test_the_pipeline_reads_every_arm_in_registry_order():
    inputs = PIPELINE.inputs()
    for kind in ("training_histories", "run_predictions", "arm_settings"):
        assert {f"{arm}.{kind}" for arm in ARMS} <= inputs
    combine = next(n for n in PIPELINE.nodes if n.name == "combine_histories")
    assert combine.inputs == ["study_runs", *(f"{arm}.training_histories" for arm in ARMS)]
    assert study_arm_names() == list(arm_registry(PARAMS["study"]["arms"]).names)  # conf/base
    registry = arm_registry(PARAMS["study"]["arms"])
    assert create_pipeline(arms=registry).inputs() == PIPELINE.inputs()  # a registry or names


def test_every_table_figure_and_report_is_produced(study):
    catalog, histories = study
    for name in PIPELINE.outputs():
        assert catalog.exists(name), name
    for name in [*TABLE2_METRICS, *TABLE3_METRICS]:
        assert isinstance(catalog.load(f"{name}_table_csv"), pd.DataFrame), name
        markdown = catalog.load(f"{name}_table_markdown")
        assert markdown.startswith("| ") and markdown.count("\n") == len(catalog.load(f"{name}_table_csv")) + 2
    for name in ("f1_vs_fraction", "f1_vs_fraction_honest", "learning_curves", "per_class_f1"):
        figure = catalog.load(f"{name}_figure")
        assert isinstance(figure, Figure) and figure.axes, name
    assert len(catalog.load("training_histories")) == len(histories)
    summary = catalog.load("run_summary")
    assert len(summary) == len(FRACTIONS) * len(ARMS) * N_TRIALS
    meta = catalog.load("study_meta")
    assert meta["labelled"]["windows"] == N_LABELLED - 6 + 30 and meta["unlabelled"]["windows"] == 8
    assert meta["synthetic"] is True and meta["labelled"]["source"] == "data/01_raw/bundle"
    assert meta["n_trials"] == N_TRIALS and meta["classes"] == list(CLASSES)
    report = catalog.load("study_report")
    assert "0.857 ± 0.004" not in report  # three made-up classes: not the paper's task
    assert "another task" in report and "Caveat: synthetic data" in report
    assert "- **epochs**: 6" in report  # from the arm settings, not from params:finetuning
    assert "floor" in report and "What each interval covers" in report


def test_table2_has_the_papers_layout_every_arm_and_its_context(study):
    catalog, _ = study
    table = catalog.load("table2_f1_weighted_table_csv")
    assert list(table.columns) == [f"{pct} {arm}" for pct in ("100%", "50%") for arm in ARMS]
    pairs = [tuple(p) for p in PARAMS["statistics"]["comparisons"]]
    assert list(table.index) == [
        *(f"trial {t}" for t in range(1, N_TRIALS + 1)), "mean ± SD",
        *(f"p Welch ({kind}) {a} vs {b}" for a, b in pairs for kind in ("unadjusted", "Holm")),
        "floor: majority class", "floor: stratified guess",
        "training patients per sample: drawn (unique, mean)", "labelled split train/val/test",
    ]
    summary = catalog.load("run_summary")
    best = summary[(summary["arm"] == "transfer") & (summary["fraction"] == 1.0) & (summary["trial"] == 2)]
    assert table.loc["trial 2", "100% transfer"] == f"{best['best_test_f1_weighted'].iloc[0]:.3f}"
    comparisons = catalog.load("arm_comparisons")
    read = comparisons[(comparisons["metric"] == "best_test_f1_weighted") & (comparisons["fraction"] == 1.0)
                       & (comparisons["comparison"] == "transfer vs random")].iloc[0]
    assert table.loc["p Welch (unadjusted) transfer vs random", "100% transfer"] == format_p(read["welch_p"])
    assert table.loc["p Welch (Holm) transfer vs random", "100% transfer"] == format_p(read["welch_p_holm"])
    assert table.loc["p Welch (unadjusted) transfer vs random", "100% random"] == ""
    floor = catalog.load("score_floor").set_index("classifier")
    assert table.loc["floor: majority class", "50% image"] == f"{floor.loc['majority class', 'f1_weighted']:.3f}"
    assert table.loc["labelled split train/val/test", "100% random"].startswith("70/10/20")
    auroc = catalog.load("table2_auroc_macro_honest_table_csv")
    assert auroc.loc["floor: majority class", "100% random"] == "0.500"
    lci = catalog.load("table3_lci_bounded_table_csv")
    assert list(lci.columns) == list(table.columns) and "runs whose curve never drops" in lci.index


def test_comparisons_cover_every_metric_pair_and_fraction(study):
    catalog, _ = study
    comparisons = catalog.load("arm_comparisons")
    metrics = [*TABLE2_METRICS.values(), *TABLE3_METRICS.values()]
    pairs = [tuple(pair) for pair in PARAMS["statistics"]["comparisons"]]
    assert set(comparisons["metric"]) == set(metrics)
    got = set(zip(comparisons["metric"], comparisons["arm_a"], comparisons["arm_b"], comparisons["fraction"]))
    assert got == {(m, a, b, f) for m in metrics for a, b in pairs for f in FRACTIONS}
    # the raw LCI is untestable where an arm has a curve that never drops: n/a, said in the note
    undefined = comparisons["note"].str.contains("never drops", na=False)
    assert (comparisons.loc[undefined, "metric"] == "lci").all()
    summary = catalog.load("run_summary")
    assert undefined.any() == bool(summary["lci_never_drops"].any())
    tested = comparisons[~undefined]
    assert tested[["welch_p", "welch_p_holm", "ci_low", "ci_high", "hedges_g"]].notna().all().all()
    assert comparisons.loc[undefined, ["welch_p", "ci_low"]].isna().all().all()
    assert (tested["ci_low"] <= tested["ci_high"]).all()
    # make_histories puts transfer 0.05 above random: the difference must show.
    weighted = comparisons[(comparisons["metric"] == "best_test_f1_weighted") & (comparisons["arm_b"] == "random")]
    assert (weighted["mean_diff"] > 0.03).all()
    records = catalog.load("record_comparisons")
    assert set(zip(records["arm_a"], records["arm_b"], records["fraction"])) == {
        (a, b, f) for a, b in pairs for f in FRACTIONS
    }
    assert (records["n_records"] == 30).all() and (records["ci_low_records"] <= records["ci_high_records"]).all()
    # the test patients (two records each, from the labelled windows' index) are the unit
    assert (records["unit"] == "patient").all() and (records["n_patients"] == 15).all()
    assert tested["detectable_diff"].notna().all() and comparisons["reading"].notna().all()
    weighted_f1 = comparisons["metric"].str.contains("f1_weighted")
    assert (comparisons.loc[weighted_f1, "equivalence_margin"] == PARAMS["statistics"]["equivalence_margin"]).all()
    assert comparisons.loc[~weighted_f1, "equivalence_margin"].isna().all()
    sizes = catalog.load("bootstrap_sample_sizes")
    assert sizes["fraction"].tolist() == list(FRACTIONS) and (sizes["training_records"] == 12).all()


def test_histories_missing_a_metric_are_refused(tmp_path):
    histories = make_histories(fractions=FRACTIONS, arms=ARMS, n_trials=N_TRIALS, n_epochs=3)
    predictions = make_predictions(fractions=FRACTIONS, arms=ARMS, n_trials=N_TRIALS, n_records=6)
    inputs = _inputs(tmp_path, histories, predictions)
    inputs["image.training_histories"] = inputs["image.training_histories"].drop(columns="f1_weighted")
    catalog = make_catalog(tmp_path, _params(), files=(), **inputs)
    with pytest.raises(ValueError, match="f1_weighted"):
        run(SUMMARY, catalog)
    assert not catalog.exists("run_summary")


def test_arms_run_under_other_settings_are_refused_before_anything_is_combined(tmp_path):
    histories = make_histories(fractions=FRACTIONS, arms=ARMS, n_trials=N_TRIALS, n_epochs=3)
    predictions = make_predictions(fractions=FRACTIONS, arms=ARMS, n_trials=N_TRIALS, n_records=6)
    settings = {arm: make_arm_settings(arm, FRACTIONS, N_TRIALS) for arm in ARMS}
    settings["image"] = make_arm_settings("image", FRACTIONS, N_TRIALS, training={"epochs": 3})
    catalog = make_catalog(tmp_path, _params(), files=(), **_inputs(tmp_path, histories, predictions, settings))
    with pytest.raises(ValueError, match=r"training.epochs differs: 6 \(random, transfer.*\); 3 \(image\)"):
        run(SUMMARY, catalog)
    assert not catalog.exists("training_histories")


def test_an_unknown_arm_in_the_comparisons_is_an_error(tmp_path):
    histories = make_histories(fractions=FRACTIONS, arms=ARMS, n_trials=2, n_epochs=3)
    predictions = make_predictions(fractions=FRACTIONS, arms=ARMS, n_trials=2, n_records=6)
    params = _params()
    params["statistics"] = {**params["statistics"], "comparisons": [["transfer", "random_linear"]]}
    settings = {arm: make_arm_settings(arm, FRACTIONS, 2, training={"epochs": 3}) for arm in ARMS}
    catalog = make_catalog(tmp_path, params, files=(), **_inputs(tmp_path, histories, predictions, settings))
    with pytest.raises(ValueError, match=r"unknown arm\(s\) \['random_linear'\]; the study's arms are"):
        run(PIPELINE.from_nodes("check_study_runs").to_nodes("compare_study_arms"), catalog)


def test_adding_an_arm_is_one_registry_entry(tmp_path):
    # a new arm in study.arms: the pipeline reads its datasets, the tables show it
    params = _params()
    spec = {"init": "random", "freeze": True, "input": "window", "label": "random, frozen", "colour": "tab:green"}
    params["study"] = {**params["study"], "arms": {**params["study"]["arms"], "random_linear": spec}}
    params["statistics"] = {**params["statistics"], "comparisons": [
        *params["statistics"]["comparisons"], ["transfer_frozen", "random_linear"]]}
    arms = [*ARMS, "random_linear"]
    ARM_SPECS["random_linear"] = spec
    try:
        histories = make_histories(fractions=FRACTIONS, arms=ARMS, n_trials=2, n_epochs=3)
        extra = histories[histories["arm"] == "random"].assign(arm="random_linear")
        predictions = make_predictions(fractions=FRACTIONS, arms=ARMS, n_trials=2, n_records=6)
        settings = {arm: make_arm_settings(arm, FRACTIONS, 2, training={"epochs": 3}) for arm in arms}
        inputs = _inputs(tmp_path, histories, predictions, settings)
        inputs["random_linear.training_histories"] = extra.reset_index(drop=True)
        inputs["random_linear.run_predictions"] = predictions[predictions["arm"] == "random"].assign(arm="random_linear")
        inputs["random_linear.arm_settings"] = settings["random_linear"]
        pipeline = create_pipeline(arms=arms)
        catalog = make_catalog(tmp_path, params, files=(), **inputs)
        run(pipeline.from_nodes("check_study_runs", "score_floor", "size_bootstrap_samples").to_nodes("make_tables"),
            catalog)
    finally:
        del ARM_SPECS["random_linear"]
    table = catalog.load("table2_f1_weighted_table_csv")
    assert list(table.columns[: len(arms)]) == [f"100% {arm}" for arm in arms]
    assert table.loc["p Welch (unadjusted) transfer_frozen vs random_linear", "100% transfer_frozen"] != ""


@pytest.mark.parametrize(
    "labelled, unlabelled, expected",
    [(True, True, True), (False, False, False), (False, True, True), (None, False, None)],
)
def test_synthetic_comes_from_the_manifests_simulated_column(tmp_path, labelled, unlabelled, expected):
    from ecg_transfer.pipelines.statistics.nodes import check_study_runs, describe_study

    def manifest(n, simulated):
        frame = _manifest(n, simulated)
        return frame.drop(columns="simulated") if simulated is None else frame

    settings, _ = check_study_runs(PARAMS["study"], *(make_arm_settings(arm, FRACTIONS, N_TRIALS) for arm in ARMS))
    meta = describe_study(
        settings, _store(tmp_path / "l", 12, True), _store(tmp_path / "u", 4, False),
        manifest(12, labelled), manifest(4, unlabelled), PARAMS["preprocessing"], PARAMS["pretraining"],
        PARAMS["image_transfer"],
    )
    assert meta["synthetic"] is expected
    assert meta["labelled"]["simulated"] is labelled and meta["labelled"]["records"] == 12
    assert meta["labelled_split"] == {"train": 0.7, "val": 0.1, "test": 0.2}
    assert meta["backbone"].startswith(f"CAE encoder, {PARAMS['pretraining']['cae']['n_blocks']} residual blocks")


def test_a_history_cut_short_is_refused_naming_the_arm_and_file(tmp_path):
    # Issue 20 item 7: cutting the last rows of random/training_histories.csv exited 0 with n_epochs 1.
    histories = make_histories(fractions=FRACTIONS, arms=ARMS, n_trials=2, n_epochs=3)
    predictions = make_predictions(fractions=FRACTIONS, arms=ARMS, n_trials=2, n_records=6)
    settings = {arm: make_arm_settings(arm, FRACTIONS, 2, training={"epochs": 3}) for arm in ARMS}
    inputs = _inputs(tmp_path, histories, predictions, settings)
    inputs["random.training_histories"] = inputs["random.training_histories"].iloc[:-4]
    catalog = make_catalog(tmp_path, _params(), files=(), **inputs)
    with pytest.raises(ValueError, match=r"random\.training_histories holds incomplete runs"):
        run(SUMMARY, catalog)
    assert not catalog.exists("run_summary")


def test_the_arm_registry_is_built_once():
    # Issue 17 item 6: one node builds it, every other node reads the registry it made.
    builds = [n.name for n in PIPELINE.nodes if "params:study" in n.inputs]
    assert builds == ["check_study_runs"]
    readers = {n.name for n in PIPELINE.nodes if "arm_registry" in n.inputs}
    assert readers == {"compare_study_arms", "compare_on_test_records", "make_tables", "plot_study", "write_study_report"}


def test_a_study_without_image_or_pretrained_arms_needs_neither_stage(tmp_path):
    """Issue 17 item 4: the statistics read neither cae_history nor params:image_transfer when
    no arm needs pretraining or the spectrogram features."""
    arms = ["random", "random_frozen"]
    params = {k: v for k, v in _params().items() if k != "image_transfer"}
    params["study"] = {**params["study"], "arms": {arm: params["study"]["arms"][arm] for arm in arms}}
    params["statistics"] = {**params["statistics"], "comparisons": [["random", "random_frozen"]]}
    pipeline = create_pipeline(arms=arm_registry(params["study"]["arms"]))
    assert not {"cae_history", "params:image_transfer"} & pipeline.inputs()
    histories = make_histories(fractions=FRACTIONS, arms=arms, n_trials=N_TRIALS, n_epochs=3)
    predictions = make_predictions(fractions=FRACTIONS, arms=arms, n_trials=N_TRIALS, n_records=6)
    inputs = _inputs(tmp_path, histories, predictions, {arm: make_arm_settings(arm, FRACTIONS, N_TRIALS, training={"epochs": 3}) for arm in ARMS})
    inputs = {k: v for k, v in inputs.items() if k != "cae_history" and k.split(".")[0] not in set(ARMS) - set(arms)}
    catalog = run(pipeline, make_catalog(tmp_path, params, files=(), **inputs))
    assert catalog.load("study_meta")["image_backbone"] == "no image arm"
    assert "random_frozen" in catalog.load("study_report")
