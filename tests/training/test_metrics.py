import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from ecg_transfer.training.metrics import (
    auroc_macro,
    classification_metrics,
    reconstruction_metrics,
)

RHYTHMS = ("SB", "SR", "AFIB", "ST", "AF", "SI", "SVT", "AT", "AVNRT", "AVRT", "SAAWR")


def test_hand_computed_three_classes():
    # class 0: P=R=1/2 -> F1 .5; class 1: P=2/3, R=1 -> F1 .8; class 2: never predicted -> 0
    result = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ("c0", "c1", "c2"))
    assert result["f1_weighted"] == pytest.approx((2 * 0.5 + 2 * 0.8 + 1 * 0.0) / 5)
    assert result["f1_macro"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert result["accuracy"] == pytest.approx(0.6)
    assert result["f1_c0"] == pytest.approx(0.5) and result["f1_c1"] == pytest.approx(0.8) and result["f1_c2"] == 0.0


def test_eleven_rhythms_against_sklearn_with_absent_classes():
    rng = np.random.default_rng(7)
    y_true = rng.choice([0, 1, 2, 3, 5, 8], size=200)  # classes 4, 6, 7, 9, 10 absent
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 11, 200))
    result = classification_metrics(y_true, y_pred, RHYTHMS)
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
    assert set(result) == {"f1_weighted", "f1_macro", "accuracy", "auroc_macro"} | {f"f1_{r}" for r in RHYTHMS}
    assert math.isnan(result["auroc_macro"])  # no probabilities given


def test_bad_labels_raise():
    with pytest.raises(ValueError, match="outside 0..10"):
        classification_metrics([0, 11], [0, 1], RHYTHMS)
    with pytest.raises(ValueError, match="y_true has 2 labels, y_pred 3"):
        classification_metrics([0, 1], [0, 1, 1], RHYTHMS)


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


def _probabilities(rng, n, n_classes):
    logits = rng.standard_normal((n, n_classes))
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_binary_auroc_is_the_positive_class_auroc():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 2, 50)
    probabilities = _probabilities(rng, 50, 2)
    probabilities[:5, 1] = 0.5  # ties count one half, as in sklearn
    result = classification_metrics(y_true, probabilities.argmax(1), ("neg", "pos"), probabilities)
    assert result["auroc_macro"] == pytest.approx(roc_auc_score(y_true, probabilities[:, 1]))


def test_three_class_auroc_is_sklearns_macro_one_vs_rest():
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 3, 60)
    probabilities = _probabilities(rng, 60, 3)
    probabilities[y_true == 2, 2] += 0.3  # make one class easier than the others
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    expected = roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro")
    assert auroc_macro(y_true, probabilities) == pytest.approx(expected)
    result = classification_metrics(y_true, probabilities.argmax(1), ("a", "b", "c"), probabilities)
    assert result["auroc_macro"] == pytest.approx(expected)


def test_auroc_averages_only_the_classes_present():
    rng = np.random.default_rng(3)
    y_true = rng.choice([0, 2, 3], size=40)  # class 1 absent
    probabilities = _probabilities(rng, 40, 4)
    expected = np.mean([roc_auc_score(y_true == c, probabilities[:, c]) for c in (0, 2, 3)])
    assert auroc_macro(y_true, probabilities) == pytest.approx(expected)


def test_auroc_is_nan_with_fewer_than_two_classes_present():
    probabilities = _probabilities(np.random.default_rng(4), 5, 3)
    assert math.isnan(auroc_macro(np.zeros(5, int), probabilities))
    result = classification_metrics(np.full(5, 2), np.full(5, 2), ("a", "b", "c"), probabilities)
    assert math.isnan(result["auroc_macro"]) and result["accuracy"] == 1.0


def test_probabilities_must_match_the_classes():
    with pytest.raises(ValueError, match="2 columns for 3 classes"):
        classification_metrics([0, 1], [0, 1], ("a", "b", "c"), np.full((2, 2), 0.5))
