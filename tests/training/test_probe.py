import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from ecg_transfer.training.probe import linear_probe_f1


def _codes(seed: int, n: int, shift: float = 0.0):
    """Three classes in 5 features whose scales differ a lot (so standardising matters)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 5)) + np.eye(3, 5)[y] * 1.2
    return (x + shift) * np.array([1.0, 50.0, 0.01, 3.0, 1000.0]), y


def _hand_macro_f1(y_true, y_pred) -> float:
    scores = []
    for c in sorted(set(y_true) | set(y_pred)):
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == c and p != c)
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def test_the_probe_is_a_logistic_regression_on_codes_standardised_by_the_train_codes():
    x_train, y_train = _codes(0, 90)
    x_test, y_test = _codes(1, 60, shift=0.5)  # a shifted test set: its own mean must not be used
    mean, sd = x_train.mean(axis=0), x_train.std(axis=0)
    by_hand = LogisticRegression(max_iter=3000).fit((x_train - mean) / sd, y_train)
    expected = _hand_macro_f1(y_test.tolist(), by_hand.predict((x_test - mean) / sd).tolist())
    assert linear_probe_f1(x_train, y_train, x_test, y_test) == pytest.approx(expected, abs=1e-12)
    assert 0.4 < expected < 1.0  # the case is neither trivial nor at chance
    standardised_by_test = by_hand.predict((x_test - x_test.mean(axis=0)) / x_test.std(axis=0))
    assert _hand_macro_f1(y_test.tolist(), standardised_by_test.tolist()) != pytest.approx(expected, abs=1e-12)


def test_separable_codes_probe_at_one_and_a_missed_class_costs_its_share():
    y = np.array([0, 1, 2] * 10)
    x = np.eye(3)[y] * 10.0
    assert linear_probe_f1(x, y, x, y) == 1.0
    # Codes that cannot tell classes 1 and 2 apart: at most one of them is predicted right.
    blurred = np.eye(3)[np.minimum(y, 1)] * 10.0
    assert linear_probe_f1(blurred, y, blurred, y) < 0.8


def test_bad_codes_and_labels_are_named():
    x, y = _codes(0, 30)
    with pytest.raises(ValueError, match=r"train codes must be \(windows, features\)"):
        linear_probe_f1(x[:, 0], y, x, y)
    with pytest.raises(ValueError, match=r"test labels must be \(30,\)"):
        linear_probe_f1(x, y, x, y[:-1])
    with pytest.raises(ValueError, match="train codes have 5 features, test codes 4"):
        linear_probe_f1(x, y, x[:, :4], y)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="test codes hold NaN"):
        linear_probe_f1(x, y, bad, y)
    with pytest.raises(ValueError, match="fewer than two classes"):
        linear_probe_f1(x, np.zeros(30, dtype=int), x, y)
