"""A study arm on multi-label data (issue 19): binary cross-entropy per label, the honest epoch
by validation macro AUROC, predictions in the statistics' multi-label format (label,
target_<label>, prob_<label>), run records with the multi-label headline scores."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ecg_transfer.models.classifier import FeatureClassifier
from ecg_transfer.study.experiment import (
    ArmData,
    FinetuningConfig,
    arm_task,
    honest_monitor,
    run_arm,
)
from ecg_transfer.study.summaries import HONEST_MONITOR, summarise_runs
from ecg_transfer.training.checkpoints import CheckpointStore
from ecg_transfer.training.engine import TrainConfig
from ecg_transfer.training.tasks import ClassificationTask, MultiLabelTask

LABELS = ("AF", "LBBB", "PVC")
CONFIG = TrainConfig(epochs=4, batch_size=8, lr=0.02, device="cpu", monitor_split="val", bf16=False)
PREDICTION_COLUMNS = [
    "fraction", "arm", "trial", "selection", "epoch", "split", "record_id", "label",
    "target_AF", "target_LBBB", "target_PVC", "prob_AF", "prob_LBBB", "prob_PVC",
]


def _split(rng, n_records, prefix, windows=2):
    """``windows`` windows per record, every window of a record with its label set; a label's
    signal is a shift of two of the six features, so the head can learn it."""
    targets = (rng.random((n_records, 3)) < 0.4).astype(np.int8)
    targets[:3] = np.eye(3, dtype=np.int8)  # every label has positives in every split
    targets[3] = 0  # and one record carries none of them
    y = np.repeat(targets, windows, axis=0)
    x = (rng.standard_normal((len(y), 6)) + 1.5 * np.repeat(y, 2, axis=1)).astype(np.float32)
    records = np.repeat(np.array([f"{prefix}{i:02d}" for i in range(n_records)], dtype=object), windows)
    return x, y, records


def multilabel_data(seed=0) -> ArmData:
    rng = np.random.default_rng(seed)
    (train_x, train_y, train_records), (val_x, val_y, val_records), (test_x, test_y, test_records) = (
        _split(rng, 20, "t", windows=1), _split(rng, 10, "v"), _split(rng, 10, "s"))
    return ArmData(train_x, train_y, val_x, val_y, test_x, test_y, val_records, test_records, train_records,
                   task="multilabel")


def _samples():
    rows = []
    for fraction, size in ((1.0, 20), (0.5, 10)):
        for trial, seed in ((1, 101), (2, 202)):
            positions = np.concatenate([[0, 1, 2], np.random.default_rng(seed).integers(0, 20, size - 3)])
            rows.append(pd.DataFrame({"fraction": fraction, "trial": trial, "seed": seed, "position": positions}))
    return pd.concat(rows, ignore_index=True)


def _make_model(seed):
    torch.manual_seed(seed)
    return FeatureClassifier(6, 3, hidden=8, dropout=0.0)


@pytest.fixture(scope="module")
def multilabel_runs():
    data = multilabel_data()
    return data, run_arm("random", _make_model, data, _samples(), CONFIG, LABELS, None, "fp", progress=False)


def test_a_multilabel_arm_scores_macro_and_per_label_auroc_every_epoch(multilabel_runs):
    _, runs = multilabel_runs
    history = runs.histories
    assert set(MultiLabelTask(LABELS).metric_columns) <= set(history.columns)
    assert "f1_weighted" not in history.columns and "accuracy" not in history.columns
    assert set(history["split"]) == {"train", "val", "test", "val_record", "test_record"}
    assert len(history) == 4 * CONFIG.epochs * 5  # runs x epochs x splits
    assert history.loc[history["split"] == "test", "auroc_macro"].between(0, 1).all()


def test_multilabel_predictions_hold_each_records_label_set_targets_and_sigmoid_probabilities(multilabel_runs):
    data, runs = multilabel_runs
    predictions = runs.predictions
    assert list(predictions.columns) == PREDICTION_COLUMNS
    # 4 runs x 2 selections x (10 val + 10 test records): scored per record
    assert len(predictions) == 4 * 2 * 20
    for split in ("val", "test"):
        records = getattr(data, f"{split}_records")
        targets = pd.DataFrame(getattr(data, f"{split}_y"), index=records).groupby(level=0).first()
        rows = predictions[predictions["split"] == split]
        expected = targets.loc[rows["record_id"]].to_numpy()
        np.testing.assert_array_equal(rows[["target_AF", "target_LBBB", "target_PVC"]].to_numpy(), expected)
        labels = [";".join(name for name, t in zip(LABELS, row) if t) for row in expected]
        assert list(rows["label"]) == labels
    assert "" in set(predictions["label"]) and predictions["label"].str.contains(";").any()
    probabilities = predictions[["prob_AF", "prob_LBBB", "prob_PVC"]].to_numpy()
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert not np.allclose(probabilities.sum(axis=1), 1.0)  # one sigmoid per label, not a softmax


def test_the_honest_predictions_come_from_the_best_validation_macro_auroc(multilabel_runs):
    _, runs = multilabel_runs
    history, predictions = runs.histories, runs.predictions
    for (fraction, trial), run in history.groupby(["fraction", "trial"]):
        val = run[run["split"] == "val"].set_index("epoch")["auroc_macro"]
        test = run[run["split"] == "test"].set_index("epoch")["auroc_macro"]
        mine = predictions[(predictions["fraction"] == fraction) & (predictions["trial"] == trial)]
        honest = mine[(mine["selection"] == "honest") & (mine["split"] == "test")]
        assert honest["epoch"].iloc[0] == int(val.idxmax())
        assert mine.loc[mine["selection"] == "best_test", "epoch"].iloc[0] == int(test.idxmax())
        # the saved record probabilities reproduce the history's per-record test AUROC there
        record_row = run[(run["split"] == "test_record") & (run["epoch"] == int(val.idxmax()))].iloc[0]
        scores = roc_auc_score(honest[["target_AF", "target_LBBB", "target_PVC"]].to_numpy(),
                               honest[["prob_AF", "prob_LBBB", "prob_PVC"]].to_numpy(), average="macro")
        assert scores == pytest.approx(record_row["auroc_macro"], abs=1e-6)


def test_multilabel_run_records_carry_the_auroc_headline(multilabel_runs):
    _, runs = multilabel_runs
    history = runs.histories
    for record, ((fraction, trial), run) in zip(runs.records, history.groupby(["fraction", "trial"], sort=False)):
        metrics = record["metrics"]
        assert set(metrics) == {"best_test_auroc_macro", "honest_test_auroc_macro", "best_test_f1_macro",
                                "honest_test_f1_macro", "lci"}
        assert record["params"]["fraction"] == f"{fraction:g}" and record["params"]["trial"] == trial
        val = run[run["split"] == "val"].set_index("epoch")["auroc_macro"]
        test = run[run["split"] == "test"].set_index("epoch")
        assert metrics["best_test_auroc_macro"] == test["auroc_macro"].max()
        assert metrics["honest_test_auroc_macro"] == test.loc[int(val.idxmax()), "auroc_macro"]
        assert metrics["honest_test_f1_macro"] == test.loc[int(val.idxmax()), "f1_macro"]


def test_run_records_carry_the_summaries_multilabel_scores(multilabel_runs):
    """A run record's final scores are summarise_runs's row of that run: honest epoch by the
    validation macro AUROC, its test scores, the best test scores and the LCI."""
    _, runs = multilabel_runs
    run = runs.histories[(runs.histories["fraction"] == 1.0) & (runs.histories["trial"] == 1)]
    summary = summarise_runs(run).iloc[0]
    val = run[run["split"] == "val"].set_index("epoch")["auroc_macro"]
    assert summary["honest_epoch"] == int(val.idxmax())
    test = run[run["split"] == "test"].set_index("epoch")
    assert summary["honest_test_auroc_macro"] == test.loc[int(val.idxmax()), "auroc_macro"]
    assert summary["best_test_auroc_macro"] == test["auroc_macro"].max()
    record = next(r for r in runs.records if r["params"]["fraction"] == "1" and r["params"]["trial"] == 1)
    for name in ("best_test_auroc_macro", "honest_test_auroc_macro", "honest_test_f1_macro", "lci"):
        assert record["metrics"][name] == pytest.approx(float(summary[name])), name


def test_the_honest_monitor_follows_the_task():
    assert honest_monitor(ClassificationTask(LABELS)) == HONEST_MONITOR == ("val", "f1_weighted")
    assert honest_monitor(MultiLabelTask(LABELS)) == ("val", "auroc_macro")
    assert isinstance(arm_task("multilabel", LABELS), MultiLabelTask)
    assert isinstance(arm_task("single", LABELS), ClassificationTask)


def test_balanced_class_weighting_gives_each_label_negatives_over_positives():
    data = multilabel_data()
    balanced = FinetuningConfig.from_params({"class_weighting": "balanced"})
    positives = data.train_y.sum(axis=0)
    expected = (len(data.train_y) - positives) / positives
    np.testing.assert_allclose(balanced.class_weights(data.train_y, LABELS, "multilabel"), expected)
    assert FinetuningConfig().class_weights(data.train_y, LABELS, "multilabel") is None
    task = arm_task("multilabel", LABELS, expected)
    assert isinstance(task, MultiLabelTask) and task.describe()["positive_weights"] == pytest.approx(expected)
    never = data.train_y.copy()
    never[:, 1] = 0
    with pytest.raises(ValueError, match=r"finetuning.class_weighting: balanced: .*labels \['LBBB'\] have no positive"):
        balanced.class_weights(never, LABELS, "multilabel")


def test_a_monitor_metric_the_multilabel_task_lacks_is_refused_before_training(tmp_path):
    built = []
    store = CheckpointStore(tmp_path)
    with pytest.raises(ValueError, match=r"finetuning.training.monitor_metric: 'f1_weighted'.*unset.*auroc_macro"):
        run_arm("random", lambda seed: built.append(seed) or _make_model(seed), multilabel_data(), _samples(),
                replace(CONFIG, monitor_metric="f1_weighted"), LABELS, store, "fp", progress=False)
    assert built == [] and not any(tmp_path.iterdir())


def test_a_multilabel_run_kept_on_validation_loss_is_refused_at_collection():
    with pytest.raises(ValueError, match=r"random: run fraction=.*honest.*val auroc_macro"):
        run_arm("random", _make_model, multilabel_data(), _samples(),
                replace(CONFIG, epochs=8, lr=0.2, monitor_metric="loss"), LABELS, None, "fp", progress=False)


def test_arm_data_refuses_targets_of_the_wrong_shape_for_its_task():
    data = multilabel_data()
    with pytest.raises(ValueError, match=r"multilabel task needs \(N, K\) 0/1 targets"):
        replace(data, val_y=data.val_y[:, 0])
    with pytest.raises(ValueError, match=r"single task needs \(N,\) class indices"):
        replace(data, task="single")
    with pytest.raises(ValueError, match="task must be one of"):
        replace(data, task="multi")


def test_stacked_trials_and_a_rerun_give_the_same_multilabel_runs(multilabel_runs, tmp_path):
    data, one_by_one = multilabel_runs
    store = CheckpointStore(tmp_path)
    stacked = run_arm("random", _make_model, data, _samples(), CONFIG, LABELS, store, "fp", progress=False,
                      batch_trials=2)
    reused = run_arm("random", _make_model, data, _samples(), CONFIG, LABELS, store, "fp", progress=False,
                     batch_trials=2)
    pd.testing.assert_frame_equal(stacked.predictions, reused.predictions)
    assert [r["metrics"] for r in stacked.records] == [r["metrics"] for r in reused.records]
    pd.testing.assert_frame_equal(stacked.predictions, one_by_one.predictions, check_exact=False, atol=1e-5)
