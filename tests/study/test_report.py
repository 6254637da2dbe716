from pathlib import Path

import pandas as pd
import pytest
import yaml

from ecg_transfer.study.arms import ArmSpec
from ecg_transfer.study.bootstrap import draw_all_samples, sample_sizes
from ecg_transfer.study.floor import floor_scores
from ecg_transfer.study.report import PaperReference, labelled_split_text, paper_arm, study_report
from ecg_transfer.study.statistics import compare_arms, record_bootstrap_comparisons
from ecg_transfer.study.summaries import still_improving, summarise_runs
from ecg_transfer.study.tables import mean_sd, table2, table3
from tests.study.histories import CLASSES, make_histories, make_predictions, registry

PAPER_PARAMS = yaml.safe_load((Path(__file__).parents[2] / "conf/base/parameters_paper.yml").read_text())["paper_reference"]
PAPER = PaperReference.from_params(PAPER_PARAMS)
CHAPMAN = sorted(PAPER.classes)
PAIRS = (("transfer", "random"), ("transfer", "image"))


def _meta(classes, synthetic=True):
    return {
        "labelled": {"source": "data/01_raw/chapman_shaoxing", "records": 300, "windows": 300,
                     "simulated": synthetic, "split_sizes": {"train": 210, "val": 30, "test": 60}},
        "unlabelled": {"source": "data/01_raw/unlabelled_recordings", "records": 40, "windows": 240,
                       "simulated": synthetic},
        "classes": list(classes), "synthetic": synthetic,
        "backbone": "CAE encoder, 9 residual blocks, kernel 19, channels [4, 8], 60 features",
        "image_backbone": "efficientnet_lite0",
        "labelled_split": {"train": 0.7, "val": 0.1, "test": 0.2},
        "run": {"fractions": [1.0, 0.5, 0.25], "n_trials": 3, "epochs": 6,
                "training": {"epochs": 6, "batch_size": 32, "lr": 0.005},
                "labelled_fingerprint": "1abe", "bootstrap_fingerprint": "b00t"},
    }


def _report(meta, classes=CLASSES, **kwargs):
    summary = summarise_runs(make_histories(fractions=(1.0, 0.5, 0.25), classes=classes))
    comparisons = compare_arms(summary, "best_test_f1_weighted", PAIRS, margin=0.02).assign(metric="best_test_f1_weighted")
    tables = {"Table 2": table2(summary, arms=registry(), comparisons=comparisons),
              "Table 3": table3(summary, arms=registry(), comparisons=comparisons)}
    kwargs.setdefault("paper", PAPER)
    return summary, study_report(summary, comparisons, tables, meta, registry=registry(), **kwargs)


def test_paper_numbers_are_data_matching_paper_md():
    # Issue 17 item 7: the paper's numbers live in conf/base/parameters_paper.yml, not in code.
    assert PAPER.table2[(0.25, "random init")] == (0.543, 0.009)
    assert PAPER.table2[(1.0, "CAE transfer")] == (0.857, 0.004)
    assert PAPER.lci[(0.5, "CAE transfer")] == (1.678, 0.266)
    assert PAPER.lci_p == {1.0: "0.45", 0.5: "<0.05", 0.25: "<0.05"}
    assert len(PAPER.table2) == 9 and len(PAPER.lci) == 6 and PAPER.fractions == (1.0, 0.5, 0.25)
    assert len(PAPER.classes) == 11 and PAPER.is_task(CHAPMAN) and not PAPER.is_task(CLASSES)
    assert dict(PAPER.protocol) == {"epochs": 150, "n_trials": 10, "test_fraction": 0.2}
    bad = {**PAPER_PARAMS, "table3_lci": [{"fraction": 1.0, "column": "CAE", "mean": 1, "sd": 0}]}
    with pytest.raises(ValueError, match="column 'CAE' is none of"):
        PaperReference.from_params(bad)
    with pytest.raises(ValueError, match=r"lacks \['protocol'\]"):
        PaperReference.from_params({k: v for k, v in PAPER_PARAMS.items() if k != "protocol"})


def test_paper_columns_map_to_arms_by_spec_not_by_name():
    assert paper_arm(ArmSpec("baseline", "random", False, "window", "b", "k")) == "random init"
    assert paper_arm(ArmSpec("cae", "pretrained", False, "window", "c", "k")) == "CAE transfer"
    assert paper_arm(ArmSpec("googlenet", "pretrained", True, "spectrogram", "g", "k")) == "image transfer"
    assert paper_arm(ArmSpec("probe", "pretrained", True, "window", "p", "k")) is None


def test_chapman_report_holds_paper_numbers_ours_and_the_data():
    summary, text = _report(_meta(CHAPMAN), classes=CHAPMAN)
    for mean, sd in list(PAPER.table2.values()) + list(PAPER.lci.values()):
        assert f"{mean:.3f} ± {sd:.3f}" in text
    ours = summary[(summary["fraction"] == 0.25) & (summary["arm"] == "transfer")]
    assert mean_sd(ours["best_test_f1_weighted"].to_numpy()) in text
    assert mean_sd(ours["honest_test_f1_weighted"].to_numpy()) in text
    assert mean_sd(ours["honest_test_auroc_macro"].to_numpy()) in text
    assert "Caveat: synthetic data" in text and "data/01_raw/chapman_shaoxing" in text
    assert "300 records (300 windows), 11 classes" in text and "CAE encoder, 9 residual blocks" in text
    assert "efficientnet_lite0" in text
    assert "optimistic" in text and "honest" in text and "Holm" in text
    assert "| 25% transfer vs random |" in text
    assert "- **trials per setting**: 3" in text and "- **epochs**: 6" in text


def test_another_task_gets_no_paper_columns():
    _, text = _report(_meta(CLASSES))
    assert "0.857 ± 0.004" not in text and "1.678 ± 0.266" not in text
    assert "this study's task (3 classes) is another task" in text
    assert "3 classes (SB, SR, AFIB)" in text


def test_real_data_report_drops_synthetic_caveat_and_unknown_says_so():
    _, text = _report(_meta(CLASSES, synthetic=False))
    assert "Caveat: synthetic" not in text and "; real." in text
    _, unknown = _report(_meta(CLASSES, synthetic=None))
    assert "Caveat: synthetic" not in unknown and "not recorded" in unknown


def test_report_states_split_sample_sizes_floor_lci_counts_and_intervals():
    labels = pd.Series(list(CLASSES) * 20)
    samples = draw_all_samples(labels.to_numpy(dtype=object), (1.0, 0.5, 0.25), 3, 0)
    sizes = sample_sizes(samples, [f"r{i}" for i in range(len(labels))])
    floor = floor_scores(labels, labels)
    predictions = make_predictions(fractions=(1.0, 0.5, 0.25))
    records = record_bootstrap_comparisons(predictions, CLASSES, PAIRS, n_boot=200)
    summary, text = _report(_meta(CLASSES), sample_sizes=sizes, floor=floor, record_comparisons=records)
    assert labelled_split_text({"train": 0.7, "val": 0.1, "test": 0.2}) in text
    assert "70/10/20 (paper: 80/20 train/test, no validation split)" in text
    assert f"{sizes['unique_records_mean'].iloc[0]:.1f}" in text
    assert "| majority class |" in text and "| stratified guess |" in text
    assert "runs that never drop" in text
    assert f"{int(summary['lci_never_drops'].sum())} of {len(summary)} runs have a test-F1 curve that never drops" in text
    assert "What each interval covers" in text and "test-split variance" in text and "training variance" in text
    assert "| 25% transfer vs image |" in text and "CI records + trials" in text


def test_comparisons_of_several_metrics_get_one_table_each():
    summary = summarise_runs(make_histories(fractions=(1.0, 0.5)))
    comparisons = pd.concat(
        [compare_arms(summary, m, PAIRS).assign(metric=m)
         for m in ("best_test_f1_weighted", "honest_test_f1_weighted")],
        ignore_index=True,
    )
    text = study_report(summary, comparisons, {}, {}, registry=registry())
    assert "| best_test_f1_weighted | n (a/b/paired)" in text
    assert "| honest_test_f1_weighted | n (a/b/paired)" in text
    assert text.count("| 50% transfer vs random |") == 2


@pytest.mark.parametrize("split, expected", [({"train": 0.8, "val": 0.0, "test": 0.2}, "80/0/20"), (None, "not recorded")])
def test_labelled_split_text(split, expected):
    assert labelled_split_text(split).startswith(expected)


def test_the_papers_numbers_come_with_a_caveat_unless_the_run_is_the_papers_protocol():
    # Issue 16 item 7: ours (6 epochs, 3 trials) differ from the paper's (150, 10): say how.
    _, text = _report(_meta(CHAPMAN), classes=CHAPMAN)
    assert "Caveat: not the paper's protocol" in text
    assert "fine-tuning epochs: ours 6, the paper's 150" in text and "trials per setting: ours 3, the paper's 10" in text
    assert "test share" not in text.split("Caveat: not the paper's protocol")[1].split("\n")[0]  # 20 % both
    paper_run = _meta(CHAPMAN)
    paper_run["run"] = {**paper_run["run"], "epochs": 150, "n_trials": 10}
    _, same = _report(paper_run, classes=CHAPMAN)
    assert "Caveat: not the paper's protocol" not in same and "follows the paper's protocol" in same
    assert "0.857 ± 0.004" in same
    _, other = _report(_meta(CLASSES))
    assert "paper's protocol" not in other  # another task: no paper numbers, so no caveat either


def test_the_cae_mse_is_labelled_as_the_minimum_on_the_split_that_stopped_it():
    meta = {**_meta(CLASSES), "cae_heldout_mse_min": 0.1234}
    _, text = _report(meta)
    assert "CAE reconstruction MSE per sample**: 0.1234: the minimum over epochs on the held-out split that also early-stopped the CAE" in text
    assert "cae_test_mse_per_sample" not in text


def test_arms_still_improving_at_their_last_epochs_are_flagged():
    # Issue 16 item 6: an arm whose best-validation epoch is in the last fifth in most runs.
    summary = summarise_runs(make_histories(fractions=(1.0,), n_trials=3, n_epochs=10))
    summary["honest_epoch"] = 3
    summary.loc[summary["arm"] == "random", "honest_epoch"] = [9, 10, 4]  # 2 of 3 late
    summary.loc[summary["arm"] == "image", "honest_epoch"] = [9, 8, 4]  # epoch 8 is not in the last fifth
    flags = still_improving(summary, 10)
    assert flags.set_index("arm")["flagged"].to_dict() == {"random": True, "transfer": False, "image": False}
    assert flags.set_index("arm").loc["random", "late_runs"] == 2
    meta = {**_meta(CLASSES), "run": {**_meta(CLASSES)["run"], "epochs": 10}}
    text = study_report(summary, compare_arms(summary, "best_test_f1_weighted", PAIRS).assign(metric="best_test_f1_weighted"),
                        {}, meta, registry=registry(), still_improving=flags)
    assert ("**100% random**: honest epoch in the last fifth of the 10 epochs in 2 of 3 runs. Still improving: "
            "a longer budget may change this comparison.") in text
    assert "**100% image**" not in text
    quiet = study_report(summary, pd.DataFrame(), {}, meta, registry=registry(),
                         still_improving=flags.assign(flagged=False))
    assert "No arm had its honest (best-validation) epoch in the last fifth" in quiet


def test_comparisons_say_which_p_is_adjusted_the_detectable_difference_and_the_reading():
    _, text = _report(_meta(CLASSES))
    for column in ("p Welch (unadjusted)", "p Welch (Holm)", "p paired (unadjusted)", "p paired (Holm)",
                   "95 % CI (paired t)", "detectable diff (80 % power)", "TOST p", "reading"):
        assert f"| {column} " in text or f" {column} |" in text, column
    assert "3/3/3" in text  # n of the paired t-interval


def test_the_record_comparisons_name_the_patient_as_unit():
    predictions = make_predictions(fractions=(1.0,))
    records = sorted(predictions["record_id"].unique())
    patients = {r: f"p{i // 2}" for i, r in enumerate(records)}
    compared = record_bootstrap_comparisons(predictions, CLASSES, PAIRS, n_boot=100, patients=patients)
    _, text = _report(_meta(CLASSES), record_comparisons=compared)
    assert "with the **patient** as the unit" in text and "| 20 (40) |" in text


def _methods_study():
    """random, the CAE's transfer arm and a `masked` method's arm (the `image` arm's curves)."""
    from ecg_transfer.study.arms import arm_registry
    from tests.study.histories import ARMS

    histories = make_histories(fractions=(1.0, 0.5)).replace({"arm": {"image": "masked"}})
    summary = summarise_runs(histories)
    arms = arm_registry({"random": ARMS["random"], "transfer": ARMS["transfer"],
                         "masked": {"init": "masked", "freeze": False, "input": "window"}})
    pairs = (("transfer", "random"), ("masked", "random"), ("masked", "transfer"))
    comparisons = pd.concat([compare_arms(summary, metric, pairs, margin=0.02).assign(metric=metric)
                             for metric in ("best_test_f1_weighted", "honest_test_f1_weighted")], ignore_index=True)
    return summary, comparisons, arms


def test_a_study_of_several_pretraining_methods_reports_methods_by_fraction_and_their_comparisons():
    from ecg_transfer.study.tables import method_comparisons, methods_table

    summary, comparisons, arms = _methods_study()
    table = methods_table(summary, arms)
    assert list(table.index) == ["random", "transfer", "masked"] and list(table.columns) == [
        "encoder", "encoder trains", "100%", "50%"]
    assert list(table["encoder"]) == ["random", "CAE", "masked"]
    masked = summary[(summary["arm"] == "masked") & (summary["fraction"] == 1.0)]["honest_test_f1_weighted"]
    mean, half = masked.mean(), 4.303 * masked.std(ddof=1) / 3 ** 0.5  # t(0.975, 2 df), three trials
    assert table.loc["masked", "100%"] == f"{mean:.3f} [{mean - half:.3f}, {mean + half:.3f}]"
    paired = method_comparisons(comparisons, arms)
    # masked vs random and vs the CAE, and the CAE vs random; honest F1 only, both fractions.
    assert sorted(zip(paired["arm"], paired["against"])) == sorted(
        [("masked", "random"), ("masked", "transfer"), ("transfer", "random")] * 2)
    honest = comparisons[(comparisons["metric"] == "honest_test_f1_weighted") & (comparisons["arm_a"] == "masked")
                         & (comparisons["arm_b"] == "random") & (comparisons["fraction"] == 0.5)].iloc[0]
    row = paired[(paired["arm"] == "masked") & (paired["against"] == "random") & (paired["fraction"] == "50%")].iloc[0]
    assert row["reading"] == honest["reading"] and row["mean diff"] == f"{honest['mean_diff']:+.4f}"
    text = study_report(summary, comparisons, {}, {}, registry=arms)
    assert "## Pretraining methods (honest weighted F1)" in text
    assert "Each method against random init and against the CAE" in text and honest["reading"] in text


def test_a_study_with_one_pretrained_encoder_has_no_methods_section():
    summary, comparisons, _ = _methods_study()
    summary = summary[summary["arm"] != "masked"]
    comparisons = comparisons[comparisons["arm_a"] != "masked"]
    assert "Pretraining methods" not in study_report(summary, comparisons, {}, {}, registry=registry(("random", "transfer")))


def test_a_multilabel_report_is_on_macro_auroc_and_never_shows_the_papers_numbers():
    """Issue 19: the report names the headline and the labels; the paper's numbers stay with its
    single-label task even when the labels are its rhythms."""
    from ecg_transfer.study.arms import arm_registry
    from tests.study.histories import ARMS, make_multilabel_histories

    histories = make_multilabel_histories(fractions=(1.0, 0.5), labels=CHAPMAN[:3]).replace({"arm": {"image": "masked"}})
    summary = summarise_runs(histories)
    arms = arm_registry({"random": ARMS["random"], "transfer": ARMS["transfer"],
                         "masked": {"init": "masked", "freeze": False, "input": "window"}})
    pairs = (("transfer", "random"), ("masked", "random"))
    comparisons = pd.concat([compare_arms(summary, metric, pairs, margin=0.02).assign(metric=metric)
                             for metric in ("best_test_auroc_macro", "honest_test_auroc_macro")], ignore_index=True)
    meta = {**_meta(CHAPMAN[:3]), "labelled": {**_meta(CHAPMAN)["labelled"], "label_counts": {CHAPMAN[0]: 7}}}
    paper = PaperReference(**{**PAPER.__dict__, "classes": frozenset(CHAPMAN[:3])})  # "its" task, but one label each
    text = study_report(summary, comparisons, {}, meta, registry=arms, paper=paper)
    assert f"3 labels, several per record possible ({', '.join(CHAPMAN[:3])})" in text
    assert "**Headline metric: macro AUROC** over the 3 labels" in text and f"{CHAPMAN[0]} 7; {CHAPMAN[1]}; " in text
    assert "paper (weighted F1)" not in text and "this study's task (3 labels, multi-label) is another task" in text
    assert "| setting | macro AUROC, optimistic | macro AUROC, honest | honest macro F1 (validation thresholds) |" in text
    assert "## Pretraining methods (honest macro AUROC)" in text and "honest test macro AUROC with its" in text
    honest = comparisons[(comparisons["metric"] == "honest_test_auroc_macro") & (comparisons["arm_a"] == "masked")
                         & (comparisons["fraction"] == 1.0)].iloc[0]
    assert f"| 100% masked | masked | random | random | {honest['mean_diff']:+.4f} |" in text
    assert "test macro AUROC curve that never drops" in text and "F1_weighted" not in text
