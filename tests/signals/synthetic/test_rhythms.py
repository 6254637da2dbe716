"""Each rhythm carries its textbook criteria, measured from the signal where possible."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_transfer.signals.synthetic.morphology import draw_morphology
from ecg_transfer.signals.synthetic.rhythms import FibrillatoryWaves, FlutterWaves, simulate_rhythm

from .conftest import detect_r_peaks

# Ventricular-rate bands (bpm) by textbook criteria, with a few bpm of slack for measurement.
RATE_BANDS = {
    "SB": (30.0, 61.0),
    "SR": (58.0, 102.0),
    "ST": (98.0, 165.0),
    "SVT": (145.0, 255.0),
    "AVNRT": (135.0, 255.0),
    "AVRT": (145.0, 255.0),
}


def _by_class(rendered, rhythm):
    return rendered.features[rendered.labels == rhythm]


@pytest.mark.parametrize("rhythm", sorted(RATE_BANDS))
def test_measured_rate_lies_in_the_rhythm_band(rendered_release, rhythm):
    low, high = RATE_BANDS[rhythm]
    rates = _by_class(rendered_release, rhythm)[:, 0]
    assert len(rates) >= 14
    assert np.mean((rates >= low) & (rates <= high)) >= 0.9, np.round(rates)


def test_rate_bands_overlap_between_rhythms(rendered_release):
    # Flutter with 2:1-4:1 block, AFIB and the atrial-site rhythms span several sinus bands:
    # rate alone must not name the rhythm.
    af = _by_class(rendered_release, "AF")[:, 0]
    afib = _by_class(rendered_release, "AFIB")[:, 0]
    assert af.min() < 100.0 < af.max()
    assert afib.min() < 100.0 < afib.max()


def test_afib_is_irregularly_irregular(rendered_release):
    sr_sd = np.median(_by_class(rendered_release, "SR")[:, 1])
    afib_sd = np.median(_by_class(rendered_release, "AFIB")[:, 1])
    sr_rmssd = np.median(_by_class(rendered_release, "SR")[:, 2])
    afib_rmssd = np.median(_by_class(rendered_release, "AFIB")[:, 2])
    assert afib_sd > 3 * sr_sd
    assert afib_rmssd > 3 * sr_rmssd


def test_sinus_arrhythmia_varies_rr_beyond_120_ms(rendered_release):
    ranges = []
    for lead, label in zip(rendered_release.lead_ii, rendered_release.labels):
        if label in ("SA", "SR"):
            rr = np.diff(detect_r_peaks(lead)) / 500.0
            ranges.append((label, np.ptp(rr)))
    sa = np.array([r for label, r in ranges if label == "SA"])
    sr = np.array([r for label, r in ranges if label == "SR"])
    assert np.mean(sa > 0.12) >= 0.9
    assert np.mean(sr < 0.12) >= 0.9
    assert np.median(sa) > 2 * np.median(sr)


def test_flutter_conducts_a_whole_number_of_f_waves_per_beat(rendered_release):
    table = rendered_release.diagnostics
    flutter = np.flatnonzero(rendered_release.labels == "AF")
    assert table["AtrialRate"].iloc[flutter].between(250, 350).all()
    for index in flutter:
        f_period = 60.0 / table["AtrialRate"].iloc[index]
        rr = np.diff(detect_r_peaks(rendered_release.lead_ii[index])) / 500.0
        ratio = rr / f_period
        # Conduction ratios 2, 3 or 4 (rounding of the reported atrial rate adds a little error).
        assert np.mean(np.abs(ratio - np.round(ratio)) < 0.2) > 0.8
        assert set(np.round(ratio).astype(int)) <= {1, 2, 3, 4, 5}


def _activity(rhythm, seed, seconds=10.0):
    rng = np.random.default_rng(seed)
    morph = draw_morphology(rng)
    return morph, simulate_rhythm(rhythm, morph, rng, 0.0, seconds, 0.25, 0.0)


def _frontal_axes(vectors):
    return np.degrees(np.arctan2(vectors[:, 1], vectors[:, 0]))


def _p_vectors(activity):
    """The waves that are not Q, R, S or T: atrial (P) waves, in time order."""
    waves = activity.waves
    n_beats = len(activity.r_times)
    n_p = len(waves) - 4 * n_beats
    return waves.centres[:n_p], waves.vectors[:n_p]


def test_atrial_fibrillation_has_no_p_waves_and_4_to_9_hz_f_waves():
    for seed in range(10):
        _, activity = _activity("AFIB", seed)
        assert len(_p_vectors(activity)[0]) == 0
        (fib,) = activity.backgrounds
        assert isinstance(fib, FibrillatoryWaves)
        assert np.all((fib.freqs_hz >= 3.2) & (fib.freqs_hz <= 9.0))
        # The f waves really oscillate at that rate: spectral peak of the atrial dipole.
        t = np.arange(5000) / 500.0
        signal = fib.dipole(t) @ np.array([1.0, 1.0, 1.0])
        spectrum = np.abs(np.fft.rfft(signal))
        peak_hz = np.fft.rfftfreq(len(t), 1 / 500.0)[np.argmax(spectrum)]
        assert 3.0 <= peak_hz <= 10.0, peak_hz


def test_flutter_waves_run_at_250_to_350_per_minute():
    for seed in range(10):
        _, activity = _activity("AF", seed)
        (flutter,) = activity.backgrounds
        assert isinstance(flutter, FlutterWaves)
        assert 250.0 <= 60.0 * flutter.rate_hz <= 350.0
        # Typical flutter: negative sawtooth in the inferior leads (superior dipole).
        assert flutter.vector[1] < 0


def test_sinus_p_waves_have_a_normal_axis_and_precede_every_qrs():
    for seed in range(10):
        _, activity = _activity("SR", seed)
        centres, vectors = _p_vectors(activity)
        assert len(centres) == len(activity.r_times)
        assert np.all((_frontal_axes(vectors) >= 0) & (_frontal_axes(vectors) <= 80))
        pr = activity.r_times - centres
        assert np.all((pr > 0.10) & (pr < 0.26))


def test_atrial_tachycardia_has_ectopic_p_axis_and_atrial_rate_100_to_250():
    for seed in range(10):
        _, activity = _activity("AT", seed)
        _, vectors = _p_vectors(activity)
        axes = _frontal_axes(vectors)
        assert np.all((axes < -20) | (axes > 90))
        atrial_rate = 60.0 / np.median(np.diff(activity.atrial_times))
        assert 100.0 <= atrial_rate <= 250.0


def test_avnrt_hides_retrograde_p_in_qrs_and_avrt_puts_it_in_st():
    for seed in range(10):
        for rhythm, (low, high) in {"AVNRT": (0.0, 0.04), "AVRT": (0.07, 0.16)}.items():
            _, activity = _activity(rhythm, seed)
            centres, vectors = _p_vectors(activity)
            rp = centres - activity.r_times
            assert np.all((rp >= low - 0.003) & (rp <= high)), (rhythm, rp)
            assert np.all(rp < 0.5 * np.median(np.diff(activity.r_times)))  # short RP
            # Retrograde conduction runs bottom-up: P axis superior (negative in II, III, aVF).
            assert np.all(_frontal_axes(vectors) < -30)


def test_wandering_pacemaker_changes_p_axis_and_pr_beat_to_beat():
    for seed in range(10):
        _, activity = _activity("SAAWR", seed, seconds=20.0)
        centres, vectors = _p_vectors(activity)
        axes = _frontal_axes(vectors)
        pr = activity.r_times - centres
        assert np.ptp(axes) > 60.0
        assert np.ptp(pr) > 0.02
        assert len(np.unique(np.round(axes))) >= 3


def test_unknown_rhythm_is_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown rhythm 'VT'"):
        simulate_rhythm("VT", draw_morphology(rng), rng, 0.0, 10.0, 0.25, 0.0)
