"""The multi-label bootstrap keeps every label's positives in every sample; patients stay the unit."""

import numpy as np
import pytest

from ecg_transfer.study.bootstrap import draw_multilabel_bootstrap_sample


def _training(n_patients=200, seed=0):
    rng = np.random.default_rng(seed)
    patient_targets = (rng.random((n_patients, 5)) < [0.4, 0.2, 0.05, 0.01, 0.3]).astype(np.int8)
    patient_targets[:2, 3] = 1  # the rarest label: two or a few patients
    windows = rng.integers(1, 4, n_patients)
    patients = np.repeat([f"p{i}" for i in range(n_patients)], windows)
    return np.repeat(patient_targets, windows, axis=0), patients


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.25, 0.05])
def test_every_label_has_positives_in_every_sample(fraction):
    targets, patients = _training()
    for seed in range(20):
        positions = draw_multilabel_bootstrap_sample(targets, fraction, seed, patients=patients)
        assert targets[positions].any(axis=0).all()
        drawn = patients[positions]
        # whole patients: each drawn patient brings all its windows, k times if drawn k times
        for patient in np.unique(drawn)[:10]:
            assert (drawn == patient).sum() % (patients == patient).sum() == 0
        assert np.unique(patients).size * fraction == pytest.approx(
            sum((drawn == p).sum() / (patients == p).sum() for p in np.unique(drawn)), abs=0.5)


def test_same_seed_same_sample_and_other_fractions_differ():
    targets, patients = _training()
    first = draw_multilabel_bootstrap_sample(targets, 0.5, 7, patients=patients)
    np.testing.assert_array_equal(first, draw_multilabel_bootstrap_sample(targets, 0.5, 7, patients=patients))
    assert not np.array_equal(first, draw_multilabel_bootstrap_sample(targets, 0.5, 8, patients=patients))


def test_a_label_without_training_positives_or_a_too_small_sample_is_refused():
    targets, patients = _training()
    with pytest.raises(ValueError, match=r"label columns \[1\] have no positive"):
        draw_multilabel_bootstrap_sample(np.c_[targets[:, :1], np.zeros(len(targets), np.int8)], 0.5, 0,
                                         patients=patients)
    with pytest.raises(ValueError, match="cannot hold a positive of every label"):
        draw_multilabel_bootstrap_sample(np.eye(5, dtype=np.int8).repeat(2, axis=0), 0.2, 0)
