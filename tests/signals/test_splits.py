import numpy as np
import pandas as pd
import pytest

from ecg_transfer.signals.splits import (
    SplitConfig,
    _allocate,
    assign_splits,
    min_patients_per_class,
)

# Record counts of the public Chapman release (PAPER.md), one record per patient.
CHAPMAN_COUNTS = {
    "SB": 3889, "SR": 1826, "AFIB": 1780, "ST": 1568, "SVT": 587, "AF": 445,
    "SA": 399, "AT": 121, "AVNRT": 16, "AVRT": 8, "SAAWR": 7,
}  # fmt: skip


def _chapman_index() -> pd.DataFrame:
    labels = [label for label, n in CHAPMAN_COUNTS.items() for _ in range(n)]
    return pd.DataFrame({"patient_id": [f"p{i}" for i in range(len(labels))], "label": labels})


@pytest.mark.parametrize(
    ("n", "test", "val", "expected"),
    [
        (1, 0.2, 0.1, (0, 0)),
        (2, 0.2, 0.1, (1, 0)),
        (3, 0.2, 0.1, (1, 1)),
        (7, 0.2, 0.1, (1, 1)),
        (8, 0.2, 0.1, (2, 1)),
        (16, 0.2, 0.1, (3, 2)),
        (100, 0.2, 0.1, (20, 10)),
        (2, 0.2, 0.0, (1, 0)),
        (4, 0.2, 0.1, (1, 1)),
        (4, 0.5, 0.4, (1, 1)),  # train keeps two patients when the class has them
        (5, 0.5, 0.4, (2, 1)),
    ],
)
def test_allocate_hand_cases(n, test, val, expected):
    assert _allocate(n, test, val) == expected


def test_chapman_like_split_proportions_and_rare_classes():
    index = _chapman_index()
    split = assign_splits(index, test_fraction=0.2, val_fraction=0.1, seed=0)
    assert split.index.equals(index.index)
    shares = split.value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.2, abs=0.005)
    assert shares["val"] == pytest.approx(0.1, abs=0.005)
    table = pd.crosstab(index["label"], split)
    assert (table[["train", "val", "test"]] >= 1).all().all()  # every class, even SAAWR (7)
    for label, n in CHAPMAN_COUNTS.items():
        assert table.loc[label, "test"] == _allocate(n, 0.2, 0.1)[0]


def test_no_patient_in_two_splits_and_patient_rows_share_a_split():
    rng = np.random.default_rng(0)
    patients = rng.integers(0, 300, size=3000)
    labels = np.array(["SB", "SR", "AFIB"])[patients % 3]
    index = pd.DataFrame({"patient_id": [f"p{p}" for p in patients], "label": labels})
    split = assign_splits(index, seed=4)
    assert (split.groupby(index["patient_id"]).nunique() == 1).all()


def test_seeded_and_order_independent():
    index = _chapman_index()
    a = assign_splits(index, seed=3)
    pd.testing.assert_series_equal(a, assign_splits(index, seed=3))
    shuffled = index.sample(frac=1.0, random_state=1)
    pd.testing.assert_series_equal(a, assign_splits(shuffled, seed=3).sort_index())
    assert not a.equals(assign_splits(index, seed=4))


def test_unlabelled_corpus_grouped_random_split():
    index = pd.DataFrame({"patient_id": np.repeat([f"p{i}" for i in range(50)], 100), "label": None})
    split = assign_splits(index, test_fraction=0.2, val_fraction=0.0, seed=0)
    assert set(split) == {"train", "test"}
    assert (split == "test").mean() == pytest.approx(0.2)
    assert (split.groupby(index["patient_id"]).nunique() == 1).all()


def test_patient_with_several_labels_is_stratified_by_its_most_frequent():
    index = pd.DataFrame(
        {"patient_id": ["a", "a", "a", "b", "c", "d"], "label": ["SR", "SB", "SB", "SB", "SB", "SB"]}
    )
    split = assign_splits(index, test_fraction=0.25, val_fraction=0.25, seed=0)
    # Four SB patients (a, b, c, d) -> one test, one val, two train; patient a stays whole.
    per_patient = split.groupby(index["patient_id"]).first()
    assert sorted(per_patient) == ["test", "train", "train", "val"]
    assert split.iloc[0] == split.iloc[1] == split.iloc[2]


@pytest.mark.parametrize(
    ("index", "kwargs", "match"),
    [
        (pd.DataFrame({"label": ["SR"]}), {}, "patient_id"),
        (pd.DataFrame({"patient_id": ["a"], "label": ["SR"]}), {"test_fraction": 0.8, "val_fraction": 0.3}, "< 1"),
        (pd.DataFrame({"patient_id": [None], "label": ["SR"]}), {}, "missing values"),
        (pd.DataFrame({"record_id": ["r7"], "patient_id": [None], "label": ["SR"]}), {}, r"records \['r7'\]"),
    ],
)
def test_bad_input(index, kwargs, match):
    with pytest.raises(ValueError, match=match):
        assign_splits(index, **kwargs)


@pytest.mark.parametrize(("test", "val", "expected"), [(0.2, 0.1, 4), (0.2, 0.0, 3), (0.0, 0.0, 2)])
def test_min_patients_per_class_is_one_per_split_and_two_in_train(test, val, expected):
    assert min_patients_per_class(test, val) == expected
    n_test, n_val = _allocate(expected, test, val)
    assert n_test == (test > 0) and n_val == (val > 0) and expected - n_test - n_val == 2


def test_split_config_from_params():
    cfg = SplitConfig.from_params({"test_fraction": 0.2, "val_fraction": 0, "seed": 17})
    assert cfg == SplitConfig(0.2, 0.0, 17) and isinstance(cfg.val_fraction, float)
    assert cfg.min_patients_per_class == 3
    with pytest.raises(ValueError, match="labelled_splits: unknown parameter"):
        SplitConfig.from_params({"test": 0.2}, "labelled_splits")
    with pytest.raises(TypeError, match="labelled_splits.seed: expected an integer"):
        SplitConfig.from_params({"seed": 1.5}, "labelled_splits")
    with pytest.raises(ValueError, match="< 1"):
        SplitConfig(0.6, 0.5)
