import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from ecg_transfer.signals.records import RHYTHMS
from ecg_transfer.training.metrics import classification_metrics, reconstruction_metrics


def test_hand_computed_three_classes():
    # class 0: P=R=1/2 -> F1 .5; class 1: P=2/3, R=1 -> F1 .8; class 2: never predicted -> 0
    result = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], n_classes=3)
    assert result["f1_weighted"] == pytest.approx((2 * 0.5 + 2 * 0.8 + 1 * 0.0) / 5)
    assert result["f1_macro"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert result["accuracy"] == pytest.approx(0.6)
    assert result["f1_c0"] == pytest.approx(0.5) and result["f1_c1"] == pytest.approx(0.8) and result["f1_c2"] == 0.0


def test_eleven_rhythms_against_sklearn_with_absent_classes():
    rng = np.random.default_rng(7)
    y_true = rng.choice([0, 1, 2, 3, 5, 8], size=200)  # classes 4, 6, 7, 9, 10 absent
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 11, 200))
    result = classification_metrics(y_true, y_pred)
    assert result["f1_weighted"] == pytest.approx(
        f1_score(y_true, y_pred, labels=range(11), average="weighted", zero_division=0))
    assert result["f1_macro"] == pytest.approx(
        f1_score(y_true, y_pred, labels=[0, 1, 2, 3, 5, 8], average="macro", zero_division=0))
    per_class = f1_score(y_true, y_pred, labels=range(11), average=None, zero_division=0)
    for index, name in enumerate(RHYTHMS):
        if index in (0, 1, 2, 3, 5, 8):
            assert result[f"f1_{name}"] == pytest.approx(per_class[index])
        else:
            assert math.isnan(result[f"f1_{name}"])
    assert set(result) == {"f1_weighted", "f1_macro", "accuracy"} | {f"f1_{r}" for r in RHYTHMS}


def test_bad_labels_raise():
    with pytest.raises(ValueError, match="outside 0..10"):
        classification_metrics([0, 11], [0, 1])
    with pytest.raises(ValueError, match="y_true has 2 labels, y_pred 3"):
        classification_metrics([0, 1], [0, 1, 1])


def test_reconstruction_metrics_by_hand():
    x = np.array([[0.0, 0.0], [1.0, 1.0]])
    reconstruction = np.array([[1.0, 0.0], [1.0, 3.0]])
    # squared errors [[1, 0], [0, 4]]: mean 5/4 per sample, (1 + 4) / 2 per window
    assert reconstruction_metrics(x, reconstruction) == {"mse": 1.25, "sse_per_window": 2.5}


def test_paper_numbers_are_consistent():
    # The paper's 626.583 summed per 2,048-sample window is 0.306 per sample.
    x = np.zeros((1, 2048))
    result = reconstruction_metrics(x, np.full((1, 2048), math.sqrt(626.583 / 2048)))
    assert result["sse_per_window"] == pytest.approx(626.583)
    assert result["mse"] == pytest.approx(0.30595, abs=1e-5)
