import pandas as pd
import pytest

from ecg_transfer.study.arms import ArmSpec
from ecg_transfer.study.bootstrap import draw_all_samples, sample_sizes
from ecg_transfer.study.floor import floor_scores
from ecg_transfer.study.report import (
    PAPER_CLASSES,
    PAPER_LCI,
    PAPER_TABLE2,
    is_paper_task,
    labelled_split_text,
    paper_arm,
    study_report,
)
from ecg_transfer.study.statistics import compare_arms, record_bootstrap_comparisons
from ecg_transfer.study.summaries import summarise_runs
from ecg_transfer.study.tables import mean_sd, table2, table3
from tests.study.histories import CLASSES, make_histories, make_predictions, registry

CHAPMAN = sorted(PAPER_CLASSES)
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
    comparisons = compare_arms(summary, "best_test_f1_weighted", PAIRS, n_boot=500)
    tables = {"Table 2": table2(summary, arms=registry(), comparisons=PAIRS),
              "Table 3": table3(summary, arms=registry(), comparisons=PAIRS)}
    return summary, study_report(summary, comparisons, tables, meta, registry=registry(), **kwargs)


def test_paper_constants_match_paper_md():
    assert PAPER_TABLE2[(0.25, "random init")] == (0.543, 0.009)
    assert PAPER_TABLE2[(1.0, "CAE transfer")] == (0.857, 0.004)
    assert PAPER_LCI[(0.5, "CAE transfer")] == (1.678, 0.266)
    assert len(PAPER_TABLE2) == 9 and len(PAPER_LCI) == 6
    assert len(PAPER_CLASSES) == 11 and is_paper_task(CHAPMAN) and not is_paper_task(CLASSES)


def test_paper_columns_map_to_arms_by_spec_not_by_name():
    assert paper_arm(ArmSpec("baseline", "random", False, "window", "b", "k")) == "random init"
    assert paper_arm(ArmSpec("cae", "pretrained", False, "window", "c", "k")) == "CAE transfer"
    assert paper_arm(ArmSpec("googlenet", "pretrained", True, "spectrogram", "g", "k")) == "image transfer"
    assert paper_arm(ArmSpec("probe", "pretrained", True, "window", "p", "k")) is None


def test_chapman_report_holds_paper_numbers_ours_and_the_data():
    summary, text = _report(_meta(CHAPMAN), classes=CHAPMAN)
    for mean, sd in list(PAPER_TABLE2.values()) + list(PAPER_LCI.values()):
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
        [compare_arms(summary, m, PAIRS, n_boot=200).assign(metric=m)
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
