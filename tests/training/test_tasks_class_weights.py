"""The classification task's optional class-weighted loss (issue 16 item 6): weights from the
training labels' class frequencies, a loss equal to a hand computation and to torch's weighted
cross-entropy, and the same per-trial results in the stacked-trials path as in the engine."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ecg_transfer.models.classifier import build_feature_classifier
from ecg_transfer.training.batched import fit_trials
from ecg_transfer.training.engine import TrainConfig, fit
from ecg_transfer.training.tasks import (
    ClassificationTask,
    balanced_class_weights,
    task_from_description,
)

CLASSES = ("a", "b", "c")


def test_balanced_weights_by_hand():
    # n = 6, 3 classes, counts 3, 1, 2: n / (3 * count) = 2/3, 2, 1
    weights = balanced_class_weights(np.array([0, 0, 0, 1, 2, 2]), 3)
    np.testing.assert_allclose(weights, [2 / 3, 2.0, 1.0])
    assert np.isclose(weights[[0, 0, 0, 1, 2, 2]].mean(), 1.0)  # mean weight over the labels is 1
    with pytest.raises(ValueError, match=r"class indices \[1\] have no rows"):
        balanced_class_weights(np.array([0, 2, 2]), 3)


def test_the_weighted_loss_is_the_hand_computation_and_torch_s():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    labels = torch.tensor([0, 0, 1, 2])
    weights = [0.5, 2.0, 1.5]
    task = ClassificationTask(CLASSES, class_weights=weights)
    nll = -torch.log_softmax(logits, dim=1)[torch.arange(4), labels]
    w = torch.tensor(weights)[labels]
    by_hand_mean = float((w * nll).sum() / w.sum())
    assert float(task.loss(logits, None, labels)) == pytest.approx(by_hand_mean, rel=1e-6)
    assert float(task.loss(logits, None, labels, reduction="sum")) == pytest.approx(float((w * nll).sum()), rel=1e-6)
    torch_loss = nn.CrossEntropyLoss(weight=torch.tensor(weights))(logits, labels)
    assert torch.equal(task.loss(logits, None, labels), torch_loss)
    plain = ClassificationTask(CLASSES)
    assert float(plain.loss(logits, None, labels)) == pytest.approx(float(nll.mean()), rel=1e-6)
    assert "class_weights" not in plain.describe()  # unweighted runs keep their checkpoints
    assert task.describe()["class_weights"] == pytest.approx(weights)
    assert task_from_description(task.describe()).describe() == task.describe()  # as a DDP worker rebuilds it


@pytest.mark.parametrize("weights", [[1.0, 2.0], [1.0, -1.0, 1.0], [1.0, float("nan"), 1.0]])
def test_bad_class_weights_are_refused(weights):
    with pytest.raises(ValueError, match="class_weights must be 3 finite positive numbers"):
        ClassificationTask(CLASSES, class_weights=weights)


def _features(n, seed):
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.7, 0, rng.integers(1, 3, n))  # class 0 dominates
    x = (rng.standard_normal((n, 5)) + 0.8 * np.eye(5)[y]).astype(np.float32)
    return x, y.astype(np.int64)


def test_weighted_training_differs_from_plain_and_stacked_trials_agree_with_the_engine():
    x, y = _features(80, 0)
    evals = {"val": _features(30, 1), "test": _features(30, 2)}
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.01, device="cpu", monitor_split="val", bf16=False)
    weighted = ClassificationTask(CLASSES, class_weights=balanced_class_weights(y, 3))
    seeds, rows = (3, 4), [np.sort(np.random.default_rng(s).integers(0, 80, 60)) for s in (3, 4)]

    def model(seed):
        return build_feature_classifier(5, 3, seed, hidden=8, dropout=0.0)

    def sequential(task):
        return [fit(model(s), task, x[r], y[r], evals, TrainConfig(**{**cfg.__dict__, "seed": s}), progress=False)
                for s, r in zip(seeds, rows)]

    plain_runs, weighted_runs = sequential(ClassificationTask(CLASSES)), sequential(weighted)
    assert not np.allclose(plain_runs[0].history["loss"], weighted_runs[0].history["loss"])
    stacked = fit_trials([model(s) for s in seeds], weighted, x, y, rows, evals, cfg, list(seeds), progress=False)
    for one, other in zip(weighted_runs, stacked):
        pd.testing.assert_frame_equal(
            one.history.drop(columns="samples_per_s").reset_index(drop=True),
            other.history.drop(columns="samples_per_s").reset_index(drop=True),
            check_exact=False, atol=1e-5, rtol=0,
        )
