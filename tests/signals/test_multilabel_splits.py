"""Multi-label splits: patient-grouped iterative stratification that keeps every label's
positives in train, validation and test; the label decision and the target matrix."""

import numpy as np
import pandas as pd
import pytest

from ecg_transfer.signals.classes import (
    ClassConfig,
    decide_multilabel_classes,
    join_label_set,
    label_set,
    target_matrix,
)
from ecg_transfer.signals.splits import assign_multilabel_splits, assign_splits

LABELS = ["AF", "LBBB", "RBBB", "STach", "SB", "PVC", "IAVB", "LAD"]


def _index(n_patients=300, seed=0, records_per_patient=2):
    rng = np.random.default_rng(seed)
    prevalence = np.array([0.3, 0.05, 0.08, 0.2, 0.25, 0.03, 0.1, 0.015])  # LAD: ~4 patients
    rows = []
    for p in range(n_patients):
        has = rng.random(len(LABELS)) < prevalence
        for r in range(records_per_patient):
            rows.append({"record_id": f"r{p}_{r}", "patient_id": f"p{p}",
                         "label": join_label_set(np.array(LABELS)[has]) or "SR"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(6))
def test_no_label_s_positives_vanish_from_any_split(seed):
    index = _index(seed=seed)
    kept, excluded = decide_multilabel_classes(index, ClassConfig(), min_patients=4)
    index = index[~index["record_id"].isin(excluded["record_id"])]
    split = assign_multilabel_splits(index, 0.2, 0.1, seed=seed, labels=kept)
    # patients stay whole
    assert (pd.DataFrame({"p": index["patient_id"], "s": split}).groupby("p")["s"].nunique() == 1).all()
    targets = target_matrix(index["label"], LABELS + ["SR"])
    for k, name in enumerate(LABELS + ["SR"]):
        positives = targets[:, k] == 1
        if name not in kept:
            assert index.loc[positives, "patient_id"].nunique() < 4
            continue
        found = set(split[positives])
        assert found == {"train", "val", "test"}, (name, found)
    shares = split.value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.7, abs=0.06) and shares["test"] == pytest.approx(0.2, abs=0.06)


def test_rare_labels_get_their_minimum_in_every_split_and_same_seed_same_split():
    index = pd.DataFrame({
        "patient_id": [f"p{i}" for i in range(12)],
        "label": ["AF;LBBB", "AF", "AF", "AF;LBBB", "LBBB", "LBBB", "AF", "SB", "SB;LBBB", "SB", "SB", "AF;SB"],
    })
    split = assign_multilabel_splits(index, 0.2, 0.1, seed=3)
    pd.testing.assert_series_equal(split, assign_multilabel_splits(index, 0.2, 0.1, seed=3))
    for name in ("AF", "LBBB", "SB"):
        has = index["label"].map(lambda cell, name=name: name in label_set(cell))
        assert set(split[has]) == {"train", "val", "test"}


def test_a_label_too_small_to_split_is_an_error_naming_it():
    index = pd.DataFrame({"patient_id": ["a", "b", "c", "d", "e"], "label": ["AF", "AF", "AF", "AF", "LBBB;AF"]})
    with pytest.raises(ValueError, match="label 'LBBB' cannot have a positive patient in every split"):
        assign_multilabel_splits(index, 0.2, 0.1, seed=0)


def test_single_label_splits_do_not_move():
    index = pd.DataFrame({"patient_id": [f"p{i}" for i in range(40)], "label": ["A", "B"] * 20})
    expected = assign_splits(index, 0.2, 0.1, seed=5)
    pd.testing.assert_series_equal(assign_splits(index, 0.2, 0.1, seed=5), expected)


def test_label_sets_and_targets():
    assert label_set(" LBBB ;AF;;AF") == ("AF", "LBBB") and label_set(None) == () and label_set(float("nan")) == ()
    assert join_label_set(["LBBB", "AF", "AF"]) == "AF;LBBB"
    with pytest.raises(ValueError, match="separator"):
        join_label_set(["A;B"])
    np.testing.assert_array_equal(target_matrix(["AF;LBBB", "SB", "LBBB"], ["LBBB", "AF"]), [[1, 1], [0, 0], [1, 0]])


def test_labels_with_too_few_patients_are_left_out_and_counted_as_class_too_small():
    manifest = pd.DataFrame({
        "record_id": [f"r{i}" for i in range(9)], "patient_id": ["a", "b", "c", "d", "a", "b", "c", "d", "e"],
        "label": ["AF", "AF", "AF;LBBB", "AF", "SB", "SB", "SB", "SB", "LBBB"],
    })
    kept, excluded = decide_multilabel_classes(manifest, ClassConfig(), min_patients=4)
    assert kept == ["AF", "SB"]
    # r8 has only LBBB (2 patients): left out; r2 keeps AF and ignores LBBB
    assert excluded["record_id"].tolist() == ["r8"] and set(excluded["reason"]) == {"class_too_small"}
    assert "LBBB (2 patients)" in excluded["detail"].iloc[0]
    with pytest.raises(ValueError, match=r"LBBB \(2 patients\)"):
        decide_multilabel_classes(manifest, ClassConfig(small_classes="error"), min_patients=4)


def test_the_repair_pass_fills_a_split_the_stratification_left_without_a_label():
    from ecg_transfer.signals.splits import _iterative_stratification

    cells = ["A;D", "A;C", "A;B;D", "D", "C;D", "B;C", "D", "B;C", "B;D", "C", "D", "C", "A;C", "A;C", "A;C;D",
             "A", "A;C"]
    index = pd.DataFrame({"patient_id": [f"p{i}" for i in range(len(cells))], "label": cells})
    labels_of = {p: list(label_set(c)) for p, c in zip(index["patient_id"], cells)}
    stratified = _iterative_stratification(np.unique(index["patient_id"]), labels_of, 0.2, 0.1, 3)
    val_labels = {label for p, s in stratified.items() if s == 1 for label in labels_of[p]}
    assert val_labels != {"A", "B", "C", "D"}  # the stratification alone leaves a label out of val
    split = assign_multilabel_splits(index, 0.2, 0.1, seed=3)
    for name in "ABCD":
        assert set(split[index["label"].str.contains(name)]) == {"train", "val", "test"}, name
