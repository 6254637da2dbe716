"""The multi-label task strategy: BCE loss, AUROC headline, F1 at validation-fitted thresholds."""

import numpy as np
import pandas as pd
import pytest
import torch

from ecg_transfer.models.classifier import build_feature_classifier
from ecg_transfer.training.batched import fit_trials
from ecg_transfer.training.engine import TrainConfig, fit
from ecg_transfer.training.metrics import fit_thresholds, multilabel_metrics
from ecg_transfer.training.tasks import (
    MultiLabelTask,
    balanced_label_weights,
    task_from_description,
)

LABELS = ("AF", "LBBB", "STach")


def _features(n, seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < [0.4, 0.3, 0.5]).astype(np.int64)
    y[: 3] = np.eye(3, dtype=np.int64)  # every label has positives
    x = (rng.standard_normal((n, 5)) + np.pad(1.2 * y, ((0, 0), (0, 2)))).astype(np.float32)
    return x, y


def test_loss_is_bce_with_logits_mean_over_windows_and_labels():
    task = MultiLabelTask(LABELS)
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    p = torch.sigmoid(logits)
    by_hand = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p))
    assert float(task.loss(logits, None, targets)) == pytest.approx(float(by_hand.mean()), rel=1e-6)
    assert float(task.loss(logits, None, targets, reduction="sum")) == pytest.approx(float(by_hand.sum()), rel=1e-6)
    assert torch.equal(task.probabilities(logits), torch.sigmoid(logits))


def test_positive_weights_multiply_each_label_s_positive_targets_by_hand_and_as_torch_s_pos_weight():
    weights = [3.0, 0.5, 1.0]
    task = MultiLabelTask(LABELS, positive_weights=weights)
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0], [-0.5, 0.3, 1.5]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    p = torch.sigmoid(logits)
    by_hand = -(torch.tensor(weights) * targets * torch.log(p) + (1 - targets) * torch.log(1 - p))
    assert float(task.loss(logits, None, targets)) == pytest.approx(float(by_hand.mean()), rel=1e-6)
    assert float(task.loss(logits, None, targets, reduction="sum")) == pytest.approx(float(by_hand.sum()), rel=1e-6)
    torch_loss = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weights))(logits, targets)
    assert torch.equal(task.loss(logits, None, targets), torch_loss)
    assert task.describe()["positive_weights"] == pytest.approx(weights)
    again = task_from_description(task.describe())
    assert again.describe() == task.describe()
    assert "positive_weights" not in MultiLabelTask(LABELS).describe()  # unweighted runs keep their checkpoints
    for bad in ([1.0, 2.0], [1.0, 0.0, 1.0], [1.0, float("inf"), 1.0]):
        with pytest.raises(ValueError, match="positive_weights must be 3 finite positive numbers"):
            MultiLabelTask(LABELS, positive_weights=bad)


def test_balanced_label_weights_by_hand():
    # 5 windows; positives per label 1, 2, 4: negatives / positives = 4, 1.5, 0.25
    targets = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 1], [0, 0, 0]])
    np.testing.assert_allclose(balanced_label_weights(targets, LABELS), [4.0, 1.5, 0.25])
    with pytest.raises(ValueError, match=r"labels \['LBBB'\] have no positive rows"):
        balanced_label_weights(targets * [1, 0, 1], LABELS)
    with pytest.raises(ValueError, match=r"labels \['STach'\] have no negative rows"):
        balanced_label_weights(np.maximum(targets, [0, 0, 1]), LABELS)
    with pytest.raises(ValueError, match=r"\(windows, labels\)"):
        balanced_label_weights(np.array([1, 0, 1]))


def test_description_round_trip_and_label_checks():
    task = MultiLabelTask(LABELS)
    again = task_from_description(task.describe())
    assert isinstance(again, MultiLabelTask) and again.labels == LABELS
    assert task.headline_metric == task.default_monitor == "auroc_macro" and task.validation_monitor
    with pytest.raises(ValueError, match=r"targets of shape \(4,\)"):
        task.check_labels(np.zeros(4, dtype=np.int64), 4)
    with pytest.raises(ValueError, match="0/1"):
        task.check_labels(np.full((4, 3), 2), 4)
    with pytest.raises(TypeError):
        MultiLabelTask("AF")


def test_fit_scores_auroc_per_epoch_and_f1_at_validation_thresholds():
    x, y = _features(90, 0)
    (vx, vy), (tx, ty) = _features(40, 1), _features(40, 2)
    record_ids = np.repeat(np.arange(20), 2)
    ty[1::2], vy[1::2] = ty[::2], vy[::2]  # both windows of a record carry its label set
    evals = {"val": (vx, vy, record_ids), "test": (tx, ty, record_ids)}
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.01, device="cpu", monitor_split="val", bf16=False, seed=1)
    task = MultiLabelTask(LABELS)
    result = fit(build_feature_classifier(5, 3, 1, hidden=8, dropout=0.0), task, x, y, evals, cfg, progress=False)
    history = result.history
    test = history[history["split"] == "test"].iloc[-1]
    assert set(task.metric_columns) <= set(history.columns)
    assert history.loc[history["split"] == "train", "f1_macro"].isna().all()  # no thresholds for the train row
    assert 0.5 < test["auroc_macro"] <= 1.0
    # the honest predictions reproduce the kept epoch's test F1 from the val-fitted thresholds
    kept = result.predictions["honest"]
    row = history[(history["epoch"] == kept["epoch"]) & (history["split"] == "test")].iloc[0]
    thresholds = fit_thresholds(vy, np.asarray(kept["val"]))
    expected = multilabel_metrics(ty, np.asarray(kept["test"]), LABELS, thresholds)
    for column, value in expected.items():
        assert row[column] == pytest.approx(value)
    # a threshold fitted on test would score at least as well: never the rule
    on_test = multilabel_metrics(ty, np.asarray(kept["test"]), LABELS, fit_thresholds(ty, np.asarray(kept["test"])))
    assert on_test["f1_macro"] >= row["f1_macro"]
    assert "test_record" in set(history["split"]) and not np.isnan(
        history.loc[history["split"] == "test_record", "f1_macro"]).any()


def test_stacked_trials_agree_with_the_engine():
    x, y = _features(80, 3)
    evals = {"val": _features(30, 4), "test": _features(30, 5)}
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.01, device="cpu", monitor_split="val", bf16=False)
    task = MultiLabelTask(LABELS, positive_weights=balanced_label_weights(y))  # weighted, as under "balanced"
    seeds, rows = (3, 4), [np.sort(np.random.default_rng(s).integers(0, 80, 60)) for s in (3, 4)]

    def model(seed):
        return build_feature_classifier(5, 3, seed, hidden=8, dropout=0.0)

    one_by_one = [fit(model(s), task, x[r], y[r], evals, TrainConfig(**{**cfg.__dict__, "seed": s}), progress=False)
                  for s, r in zip(seeds, rows)]
    stacked = fit_trials([model(s) for s in seeds], task, x, y, rows, evals, cfg, list(seeds), progress=False)
    for one, other in zip(one_by_one, stacked):
        pd.testing.assert_frame_equal(
            one.history.drop(columns="samples_per_s").reset_index(drop=True),
            other.history.drop(columns="samples_per_s").reset_index(drop=True),
            check_exact=False, atol=1e-5, rtol=0,
        )


def test_record_labels_must_agree_within_a_record():
    task = MultiLabelTask(LABELS)
    y = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1]], dtype=np.float32)
    from ecg_transfer.training.tasks import RecordIndex

    np.testing.assert_array_equal(task.record_labels(y, RecordIndex.build(["a", "a", "b"], 3)), y[[0, 2]])
    with pytest.raises(ValueError, match="different label sets"):
        task.record_labels(y, RecordIndex.build(["a", "b", "b"], 3))
