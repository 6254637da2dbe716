"""Multi-label metrics against scikit-learn and hand computations."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from ecg_transfer.training.metrics import fit_thresholds, multilabel_auroc, multilabel_metrics

TARGETS = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]])
SCORES = np.array([[0.9, 0.2, 0.6], [0.3, 0.8, 0.7], [0.6, 0.4, 0.6], [0.2, 0.1, 0.9], [0.4, 0.3, 0.2],
                   [0.5, 0.7, 0.1]])


def test_auroc_equals_sklearn_per_label_and_macro():
    assert np.allclose(multilabel_auroc(TARGETS, SCORES), roc_auc_score(TARGETS, SCORES, average=None))
    result = multilabel_metrics(TARGETS, SCORES, ["AF", "LBBB", "RBBB"])
    assert result["auroc_macro"] == pytest.approx(roc_auc_score(TARGETS, SCORES, average="macro"))
    assert result["auroc_LBBB"] == pytest.approx(roc_auc_score(TARGETS[:, 1], SCORES[:, 1]))
    assert "f1_macro" not in result  # F1 needs thresholds from the validation split


def test_tied_scores_count_one_half_as_sklearn():
    targets = np.array([[1], [0], [1], [0]])
    scores = np.array([[0.5], [0.5], [0.7], [0.1]])
    assert multilabel_auroc(targets, scores)[0] == pytest.approx(roc_auc_score(targets[:, 0], scores[:, 0]))


def test_a_label_without_positives_in_the_split_has_no_auroc_and_no_f1():
    targets = TARGETS.copy()
    targets[:, 1] = 0  # LBBB absent from this split
    result = multilabel_metrics(targets, SCORES, ["AF", "LBBB", "RBBB"], thresholds=[0.5, 0.5, 0.5])
    assert np.isnan(result["auroc_LBBB"]) and np.isnan(result["f1_LBBB"])
    defined = [0, 2]
    assert result["auroc_macro"] == pytest.approx(roc_auc_score(targets[:, defined], SCORES[:, defined], average="macro"))
    f1 = f1_score(targets[:, defined], SCORES[:, defined] >= 0.5, average=None, zero_division=0)
    assert result["f1_macro"] == pytest.approx(f1.mean())


def test_f1_at_given_thresholds_equals_sklearn():
    thresholds = np.array([0.5, 0.35, 0.65])
    result = multilabel_metrics(TARGETS, SCORES, ["AF", "LBBB", "RBBB"], thresholds=thresholds)
    expected = f1_score(TARGETS, SCORES >= thresholds, average=None, zero_division=0)
    assert [result[f"f1_{n}"] for n in ("AF", "LBBB", "RBBB")] == pytest.approx(expected.tolist())
    assert result["f1_macro"] == pytest.approx(f1_score(TARGETS, SCORES >= thresholds, average="macro"))


def test_fitted_thresholds_maximise_f1_over_every_candidate():
    thresholds = fit_thresholds(TARGETS, SCORES)
    for k in range(3):
        best = max(f1_score(TARGETS[:, k], SCORES[:, k] >= t, zero_division=0) for t in SCORES[:, k])
        assert f1_score(TARGETS[:, k], SCORES[:, k] >= thresholds[k]) == pytest.approx(best)
    # by hand, AF: ranked 0.9+ 0.6+ 0.5- 0.4+ 0.3- 0.2-: F1 at 0.6 is 4/5, at 0.4 is 6/7
    assert thresholds[0] == pytest.approx(0.4)


def test_ties_in_f1_go_to_the_highest_threshold():
    # ranked 0.9+ 0.8- 0.7- 0.6+: F1 2/3 at 0.9 and 2/3 at 0.6
    assert fit_thresholds(np.array([[1], [0], [0], [1]]), np.array([[0.9], [0.8], [0.7], [0.6]]))[0] == 0.9


def test_a_label_without_validation_positives_gets_threshold_one_half():
    targets = TARGETS.copy()
    targets[:, 2] = 0
    assert fit_thresholds(targets, SCORES)[2] == 0.5


def test_bad_shapes_and_values_are_refused():
    with pytest.raises(ValueError, match="must both be"):
        multilabel_auroc(TARGETS, SCORES[:, :2])
    with pytest.raises(ValueError, match="0/1"):
        multilabel_auroc(TARGETS * 2, SCORES)
    with pytest.raises(ValueError, match="3 target columns for 2 labels"):
        multilabel_metrics(TARGETS, SCORES, ["AF", "LBBB"])
