"""The multi-label floor: prevalence-only scores, against hand computations and the metrics."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from ecg_transfer.study.floor import floor_for, multilabel_floor_scores
from ecg_transfer.training.metrics import fit_thresholds, multilabel_metrics

LABELS = ["AF", "LBBB", "STach"]
TRAIN = np.array([[1, 0, 0]] * 6 + [[0, 1, 0]] * 2 + [[1, 0, 1]] * 2)  # prevalences 0.8, 0.2, 0.2
TEST = np.array([[1, 0, 0]] * 3 + [[0, 1, 0]] * 1 + [[0, 0, 0]] * 1)  # N 5; positives 3, 1, 0


def test_prevalence_guess_and_always_positive_by_hand():
    floor = multilabel_floor_scores(TRAIN, TEST, LABELS).set_index("classifier")
    guess = floor.loc["prevalence guess"]
    assert guess["f1_AF"] == pytest.approx(2 * 3 * 0.8 / (3 + 5 * 0.8))
    assert guess["f1_LBBB"] == pytest.approx(2 * 1 * 0.2 / (1 + 5 * 0.2))
    assert np.isnan(guess["f1_STach"])  # no test positives
    assert guess["f1_macro"] == pytest.approx((guess["f1_AF"] + guess["f1_LBBB"]) / 2)
    always = floor.loc["always positive"]
    assert always["f1_AF"] == pytest.approx(f1_score(TEST[:, 0], np.ones(5)))
    assert always["f1_LBBB"] == pytest.approx(f1_score(TEST[:, 1], np.ones(5)))
    assert (floor["auroc_macro"] == 0.5).all()
    assert floor_for("honest_test_auroc_macro", floor.reset_index()) == {"prevalence guess": 0.5, "always positive": 0.5}


def test_the_floor_is_what_the_metrics_give_a_constant_prevalence_score():
    scores = np.tile(TRAIN.mean(axis=0), (5, 1))
    validation = np.array([[1, 1, 1], [0, 0, 0], [1, 0, 0]])
    scored = multilabel_metrics(TEST, scores, LABELS, fit_thresholds(validation, np.tile(TRAIN.mean(axis=0), (3, 1))))
    always = multilabel_floor_scores(TRAIN, TEST, LABELS).set_index("classifier").loc["always positive"]
    assert scored["f1_macro"] == pytest.approx(always["f1_macro"])
    assert scored["auroc_AF"] == roc_auc_score(TEST[:, 0], scores[:, 0]) == 0.5


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        multilabel_floor_scores(TRAIN[:, :2], TEST, LABELS)
