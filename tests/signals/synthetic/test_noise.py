"""Recording artefacts: where their power sits and that they are reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_transfer.signals.synthetic.noise import (
    BEDSIDE_MONITOR,
    RESTING_ECG,
    NoiseProfile,
    band_limited_noise,
    electrode_noise,
    respiratory_gain,
)


def _power_fraction(x, fs, low, high):
    spectrum = np.abs(np.fft.rfft(x, axis=-1)) ** 2
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / fs)
    inside = (freqs >= low) & (freqs <= high)
    return spectrum[..., inside].sum(axis=-1) / spectrum.sum(axis=-1)


def test_band_limited_noise_has_unit_sd_and_power_only_in_band():
    rng = np.random.default_rng(0)
    emg = band_limited_noise(rng, (4, 5000), 500.0, 20.0, 150.0)
    np.testing.assert_allclose(emg.std(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(_power_fraction(emg, 500.0, 20.0, 150.0), 1.0, rtol=1e-9)
    wander = band_limited_noise(rng, (4, 5000), 500.0, 0.02, 0.5, pink=True)
    np.testing.assert_allclose(_power_fraction(wander, 500.0, 0.0, 0.5), 1.0, rtol=1e-9)


def test_band_above_nyquist_is_clipped_to_it():
    emg = band_limited_noise(np.random.default_rng(1), (1, 2500), 250.0, 20.0, 150.0)
    assert np.isfinite(emg).all() and abs(emg.std() - 1.0) < 1e-9


def _only(**levels):
    zero = dict(baseline_mv=(0, 0), respiration_mv=(0, 0), emg_mv=(0, 0), emg_burst_gain=(1, 1),
                mains_mv=(0, 0), white_mv=(0, 0), motion_probability=0.0, motion_mv=(0, 0))
    zero.update(levels)
    return NoiseProfile(**zero)


def test_mains_hum_sits_at_the_mains_frequency():
    for mains_hz in (50.0, 60.0):
        hum = electrode_noise(np.random.default_rng(2), 3, 5000, 500.0, 0.3, mains_hz, _only(mains_mv=(0.02, 0.02)))
        spectrum = np.abs(np.fft.rfft(hum[0]))
        assert np.fft.rfftfreq(5000, 1 / 500.0)[np.argmax(spectrum)] == pytest.approx(mains_hz)


def test_breathing_baseline_sits_at_the_respiration_frequency():
    swing = electrode_noise(np.random.default_rng(3), 2, 5000, 500.0, 0.3, 50.0, _only(respiration_mv=(0.1, 0.1)))
    spectrum = np.abs(np.fft.rfft(swing[0]))
    assert np.fft.rfftfreq(5000, 1 / 500.0)[np.argmax(spectrum)] == pytest.approx(0.3)


def test_profiles_give_plausible_levels_and_are_reproducible():
    a = electrode_noise(np.random.default_rng(4), 9, 5000, 500.0, 0.25, 50.0, RESTING_ECG)
    b = electrode_noise(np.random.default_rng(4), 9, 5000, 500.0, 0.25, 50.0, RESTING_ECG)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (9, 5000)
    assert 0.002 < np.median(a.std(axis=1)) < 0.5  # mV: well below a 1 mV QRS
    monitor = electrode_noise(np.random.default_rng(4), 1, 30000, 250.0, 0.25, 60.0, BEDSIDE_MONITOR)
    assert monitor.shape == (1, 30000) and np.isfinite(monitor).all()


def test_respiratory_gain_swings_by_its_depth():
    t = np.arange(20000) / 500.0
    gain = respiratory_gain(t, 0.25, 0.0, 0.1)
    assert abs(gain.max() - 1.1) < 1e-6 and abs(gain.min() - 0.9) < 1e-6
