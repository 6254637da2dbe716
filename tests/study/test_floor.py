import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.metrics import accuracy_score, f1_score

from ecg_transfer.study.floor import floor_for, floor_scores

# An imbalanced task with names unlike Chapman's; the test shares differ a little from train's.
TRAIN = np.array(["Normal"] * 70 + ["AF"] * 20 + ["Other"] * 10, dtype=object)
TEST = np.array(["Normal"] * 36 + ["AF"] * 9 + ["Other"] * 5, dtype=object)


def _scores(y_true, y_pred):
    present = sorted(set(y_true))
    return (
        f1_score(y_true, y_pred, average="weighted", zero_division=0),
        f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0),
        accuracy_score(y_true, y_pred),
    )


def test_majority_class_equals_sklearn_dummy_classifier():
    floor = floor_scores(TRAIN, TEST).set_index("classifier")
    dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((TRAIN.size, 1)), TRAIN)
    expected = _scores(TEST, dummy.predict(np.zeros((TEST.size, 1))))
    row = floor.loc["majority class"]
    assert row["predicts"] == "Normal"
    assert (row["f1_weighted"], row["f1_macro"], row["accuracy"]) == pytest.approx(expected)
    # by hand: F1(Normal) = 2 x 36 / (36 + 50), weighted by 36/50; macro over 3 present classes
    assert row["f1_weighted"] == pytest.approx(36 / 50 * 72 / 86)
    assert row["f1_macro"] == pytest.approx(72 / 86 / 3)
    assert row["auroc_macro"] == 0.5


def test_stratified_guess_is_the_mean_of_sklearn_dummy_guesses():
    # large test split so the mean of random guesses settles on the expected-confusion value
    test = np.repeat(TEST, 40)
    floor = floor_scores(TRAIN, test).set_index("classifier").loc["stratified guess"]
    runs = []
    for seed in range(40):
        dummy = DummyClassifier(strategy="stratified", random_state=seed).fit(np.zeros((TRAIN.size, 1)), TRAIN)
        runs.append(_scores(test, dummy.predict(np.zeros((test.size, 1)))))
    mean = np.mean(runs, axis=0)
    assert floor["f1_weighted"] == pytest.approx(mean[0], abs=0.005)
    assert floor["f1_macro"] == pytest.approx(mean[1], abs=0.005)
    assert floor["accuracy"] == pytest.approx(mean[2], abs=0.005)


def test_stratified_guess_hand_value_when_shares_match():
    # train and test shares equal q: F1_c = q_c, weighted F1 = sum q^2, macro = mean q
    labels = np.array(["a"] * 6 + ["b"] * 3 + ["c"] * 1, dtype=object)
    row = floor_scores(labels, labels).set_index("classifier").loc["stratified guess"]
    assert row["f1_weighted"] == pytest.approx(0.36 + 0.09 + 0.01)
    assert row["f1_macro"] == pytest.approx(1 / 3)
    assert row["accuracy"] == pytest.approx(0.46)


def test_binary_imbalanced_task_floor_is_high():
    # the case: 90 % of one class makes 'always the majority' score about 0.85 weighted F1
    labels = np.array(["non-AF"] * 90 + ["AF"] * 10, dtype=object)
    row = floor_scores(labels, labels).set_index("classifier").loc["majority class"]
    assert row["f1_weighted"] == pytest.approx(0.9 * 1.8 / 1.9)


def test_floor_for_picks_the_metric():
    floor = floor_scores(TRAIN, TEST)
    assert floor_for("honest_test_f1_macro", floor) == dict(zip(floor["classifier"], floor["f1_macro"]))
    assert floor_for("best_test_auroc_macro", floor) == {"majority class": 0.5, "stratified guess": 0.5}
    assert floor_for("lci", floor) == {}
    with pytest.raises(ValueError, match="need training and test labels"):
        floor_scores([], TEST)
    assert isinstance(floor, pd.DataFrame)
