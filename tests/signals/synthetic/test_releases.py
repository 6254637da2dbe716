"""The simulated Chapman release: its table, its waveforms, and its reproducibility."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest

from ecg_transfer.signals.chapman import RHYTHMS
from ecg_transfer.signals.synthetic import (
    CHAPMAN_RHYTHM_COUNTS,
    DIAGNOSTICS_COLUMNS,
    allocate_class_counts,
    releases,
    simulate_chapman_release,
)

from .conftest import detect_r_peaks


def test_allocation_matches_hand_computed_split():
    # Floor 10 each; the remaining 80 go by excess over the floor: SB 75-10=65, SR 25-10=15.
    assert allocate_class_counts(100, {"SB": 3, "SR": 1}, 10) == {"SB": 75, "SR": 25}


def test_allocation_of_full_release_keeps_real_counts_and_lifts_rare_classes():
    counts = allocate_class_counts(10646, CHAPMAN_RHYTHM_COUNTS, 12)
    assert sum(counts.values()) == 10646
    assert counts["AVRT"] == 12 and counts["SAAWR"] == 12 and counts["AVNRT"] == 16
    # The 9 records lent to AVRT and SAAWR come out of the big classes, a handful each.
    assert abs(counts["SB"] - 3889) <= 5 and abs(counts["SR"] - 1826) <= 3


def test_allocation_refuses_impossible_requests():
    with pytest.raises(ValueError, match="need at least 132"):
        allocate_class_counts(100, CHAPMAN_RHYTHM_COUNTS, 12)
    with pytest.raises(ValueError, match="unknown rhythms"):
        allocate_class_counts(100, {"VT": 1.0}, 1)
    with pytest.raises(ValueError, match="seed"):
        simulate_chapman_release(50, seed=-1, min_per_class=1)


def test_every_class_gets_min_per_class_and_counts_sum(rendered_release):
    counts = rendered_release.diagnostics["Rhythm"].value_counts()
    assert set(counts.index) == set(RHYTHMS)
    assert counts.min() >= 14
    assert counts.sum() == 300
    assert counts.idxmax() == "SB"


def test_diagnostics_has_release_columns_and_unique_file_names(rendered_release):
    table = rendered_release.diagnostics
    assert tuple(table.columns) == DIAGNOSTICS_COLUMNS
    assert table["FileName"].is_unique
    assert table["FileName"].str.fullmatch(r"MUSE_\d{8}_\d{6}_\d{5}").all()
    assert set(table["Gender"]) <= {"MALE", "FEMALE"}
    assert (table["Beat"] == "NONE").all()
    assert table["PatientAge"].between(4, 98).all()
    assert (table["QOnset"] < table["QOffset"]).all() and (table["QOffset"] < table["TOffset"]).all()
    assert table["QRSDuration"].between(60, 120).all()


def test_diagnostics_rates_and_counts_agree_with_the_signal(rendered_release):
    table = rendered_release.diagnostics
    measured_counts = np.array([len(detect_r_peaks(x)) for x in rendered_release.lead_ii])
    measured_hr = rendered_release.features[:, 0]
    hr_error = np.abs(measured_hr - table["VentricularRate"].to_numpy())
    count_error = np.abs(measured_counts - table["QRSCount"].to_numpy())
    assert np.median(hr_error) < 1.0
    assert np.mean(hr_error < 3.0) > 0.95
    assert np.mean(count_error <= 1) > 0.95


def test_waveforms_have_release_shape_and_microvolt_scale(rendered_release):
    for waveform in rendered_release.first_waveforms:
        assert waveform.shape == (5000, 12) and waveform.dtype == np.float64
        assert np.isfinite(waveform).all()
    lead_ii_range = np.ptp(rendered_release.lead_ii, axis=1)
    # Microvolts: QRS complexes of a few hundred to a couple of thousand uV.
    assert np.percentile(lead_ii_range, 5) > 250.0
    assert np.percentile(lead_ii_range, 95) < 6000.0


def test_limb_leads_obey_einthoven_and_goldberger(rendered_release):
    for w in rendered_release.first_waveforms:
        lead_i, lead_ii, lead_iii, avr, avl, avf = (w[:, k] for k in range(6))
        np.testing.assert_allclose(lead_iii, lead_ii - lead_i, rtol=0, atol=1e-9)
        np.testing.assert_allclose(avr, -(lead_i + lead_ii) / 2, rtol=0, atol=1e-9)
        np.testing.assert_allclose(avl, lead_i - lead_ii / 2, rtol=0, atol=1e-9)
        np.testing.assert_allclose(avf, lead_ii - lead_i / 2, rtol=0, atol=1e-9)
        np.testing.assert_allclose(avr + avl + avf, 0.0, rtol=0, atol=1e-9)


def test_precordial_leads_show_r_wave_progression(rendered_release):
    # V1 faces the right ventricle (deep S), V5 the left (tall R): R/S ratio rises V1 -> V5.
    ratios = []
    for w in rendered_release.first_waveforms:
        v1, v5 = w[:, 6], w[:, 10]
        ratios.append((v5.max() / -v5.min(), v1.max() / -v1.min()))
    ratios = np.array(ratios)
    assert np.mean(ratios[:, 0] > ratios[:, 1]) > 0.9


def test_same_seed_same_data_other_seed_other_data():
    first = simulate_chapman_release(30, seed=5, min_per_class=2)
    again = simulate_chapman_release(30, seed=5, min_per_class=2)
    other = simulate_chapman_release(30, seed=6, min_per_class=2)
    pd.testing.assert_frame_equal(first.diagnostics, again.diagnostics)
    pairs = list(zip(first.iter_waveforms(progress=False), again.iter_waveforms(progress=False)))
    for (name_a, wave_a), (name_b, wave_b) in pairs[:5]:
        assert name_a == name_b
        np.testing.assert_array_equal(wave_a, wave_b)
    assert not first.diagnostics["FileName"].equals(other.diagnostics["FileName"])
    assert not np.allclose(first.waveform(0), other.waveform(0))
    # A record is a function of (seed, index) alone: random access matches iteration.
    np.testing.assert_array_equal(first.waveform(3), pairs[3][0][1])


def test_generation_is_lazy(monkeypatch):
    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered a waveform")

    monkeypatch.setattr(releases, "render_dipole", no_rendering)
    release = simulate_chapman_release(40, seed=0, min_per_class=3)  # table only: must not render
    waveforms = release.iter_waveforms(progress=False)
    assert inspect.isgenerator(waveforms)
    with pytest.raises(AssertionError, match="rendered a waveform"):
        next(waveforms)
