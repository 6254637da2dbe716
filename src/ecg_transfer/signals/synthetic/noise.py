"""Recording artefacts added to the simulated heart signal.

Noise is generated per electrode (RA, LA, LL, V1..V6 for a 12-lead ECG) and the leads are
formed from electrode differences afterwards, so artefacts obey the same Einthoven/Goldberger
identities as the cardiac signal. The components follow the noise types of the MIT-BIH Noise
Stress Test Database (Moody et al., 1984): baseline wander, muscle (EMG) artefact and
electrode motion, plus mains interference and amplifier noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseProfile:
    """Ranges (millivolts) from which one record's artefact levels are drawn."""

    baseline_mv: tuple[float, float]  # slow wander, below 0.5 Hz
    respiration_mv: tuple[float, float]  # baseline swing at the breathing frequency
    emg_mv: tuple[float, float]  # RMS of muscle noise between bursts
    emg_burst_gain: tuple[float, float]  # burst RMS relative to the background EMG
    mains_mv: tuple[float, float]  # differential residue of 50/60 Hz hum
    white_mv: tuple[float, float]  # amplifier / quantisation noise
    motion_probability: float  # chance that a record holds electrode-motion events
    motion_mv: tuple[float, float]


# A resting 12-lead ECG taken by a technician: patient lying still, good skin preparation.
RESTING_ECG = NoiseProfile(
    baseline_mv=(0.01, 0.12),
    respiration_mv=(0.01, 0.10),
    emg_mv=(0.002, 0.015),
    emg_burst_gain=(2.0, 5.0),
    mains_mv=(0.0, 0.02),
    white_mv=(0.002, 0.006),
    motion_probability=0.15,
    motion_mv=(0.1, 0.4),
)

# A bedside monitor over minutes: the patient moves, electrodes are older, more muscle noise.
BEDSIDE_MONITOR = NoiseProfile(
    baseline_mv=(0.05, 0.35),
    respiration_mv=(0.02, 0.15),
    emg_mv=(0.004, 0.03),
    emg_burst_gain=(2.0, 6.0),
    mains_mv=(0.0, 0.03),
    white_mv=(0.003, 0.01),
    motion_probability=0.5,
    motion_mv=(0.1, 0.8),
)


def band_limited_noise(
    rng: np.random.Generator, shape: tuple[int, int], fs: float, low_hz: float, high_hz: float,
    pink: bool = False,
) -> np.ndarray:
    """Gaussian noise with power only in [low_hz, high_hz], unit SD per row.

    Random complex coefficients are drawn for the passband bins only and inverse-transformed:
    the same process as filtering white noise, at a fraction of the cost for narrow bands
    (baseline wander needs a handful of bins). ``pink`` weights amplitudes by 1/sqrt(f), the
    1/f power spread of baseline wander.
    """
    n = shape[-1]
    freqs = np.fft.rfftfreq(n, d=1.0 / fs)
    band = np.flatnonzero((freqs >= low_hz) & (freqs <= min(high_hz, 0.5 * fs)) & (freqs > 0))
    out_shape = (*shape[:-1], n)
    if len(band) == 0:
        return np.zeros(out_shape)
    weight = 1.0 / np.sqrt(freqs[band]) if pink else np.ones(len(band))
    coeffs = rng.standard_normal((*shape[:-1], len(band), 2))
    spectrum = np.zeros((*shape[:-1], len(freqs)), dtype=complex)
    spectrum[..., band] = (coeffs[..., 0] + 1j * coeffs[..., 1]) * weight
    out = np.fft.irfft(spectrum, n=n, axis=-1)
    sd = out.std(axis=-1, keepdims=True)
    return out / np.where(sd > 0, sd, 1.0)


def _burst_envelope(rng: np.random.Generator, t: np.ndarray, gain_range: tuple[float, float]) -> np.ndarray:
    """1 between bursts; smooth bumps of extra muscle activity (0.3-2 s, about one per 8 s)."""
    duration = t[-1] - t[0] if len(t) > 1 else 0.0
    envelope = np.ones(len(t))
    for _ in range(rng.poisson(duration / 8.0)):
        centre = rng.uniform(t[0], t[-1])
        width = rng.uniform(0.3, 2.0) / 4.0
        envelope += (rng.uniform(*gain_range) - 1.0) * np.exp(-0.5 * ((t - centre) / width) ** 2)
    return envelope


def electrode_noise(
    rng: np.random.Generator,
    n_electrodes: int,
    n_samples: int,
    fs: float,
    resp_hz: float,
    mains_hz: float,
    profile: NoiseProfile,
) -> np.ndarray:
    """Artefacts of ``n_electrodes`` electrodes over ``n_samples`` samples, (n_electrodes, n) mV."""
    t = np.arange(n_samples) / fs
    shape = (n_electrodes, n_samples)
    gains = lambda: rng.normal(1.0, 0.4, (n_electrodes, 1))  # noqa: E731 - electrodes differ

    baseline = rng.uniform(*profile.baseline_mv) * gains() * band_limited_noise(rng, shape, fs, 0.02, 0.5, pink=True)
    # sin(wt + phase_e) = cos(phase_e) sin(wt) + sin(phase_e) cos(wt): two sines for all electrodes.
    phases = rng.uniform(0.0, 2.0 * np.pi, (n_electrodes, 1))
    wt = 2.0 * np.pi * resp_hz * t[None, :]
    breathing = rng.uniform(*profile.respiration_mv) * gains() * (np.cos(phases) * np.sin(wt) + np.sin(phases) * np.cos(wt))
    emg_band = band_limited_noise(rng, shape, fs, 20.0, 150.0)
    emg = rng.uniform(*profile.emg_mv) * np.abs(gains()) * emg_band * _burst_envelope(rng, t, profile.emg_burst_gain)
    mains_phase = rng.uniform(0.0, 2.0 * np.pi)
    hum = np.sin(2.0 * np.pi * mains_hz * t + mains_phase) + 0.2 * np.sin(6.0 * np.pi * mains_hz * t + mains_phase)
    mains = rng.uniform(*profile.mains_mv) * rng.uniform(0.0, 1.0, (n_electrodes, 1)) * hum[None, :]
    white = rng.uniform(*profile.white_mv) * rng.standard_normal(shape, dtype=np.float32)

    noise = baseline + breathing + emg + mains + white
    if rng.random() < profile.motion_probability:
        for _ in range(int(rng.integers(1, 3))):
            # An electrode shifts on the skin: a step in half-cell potential that the amplifier's
            # high-pass input lets decay over a fraction of a second.
            electrode = int(rng.integers(0, n_electrodes))
            onset = rng.uniform(t[0], t[-1])
            tau = rng.uniform(0.2, 0.8)
            since = t - onset
            step = np.exp(-np.maximum(since, 0.0) / tau) * np.clip(since / 0.02, 0.0, 1.0)
            noise[electrode] += rng.choice([-1.0, 1.0]) * rng.uniform(*profile.motion_mv) * step
    return noise


def respiratory_gain(t: np.ndarray, resp_hz: float, resp_phase: float, depth: float) -> np.ndarray:
    """Breathing moves the heart and changes chest impedance: the ECG amplitude swells and ebbs."""
    return 1.0 + depth * np.sin(2.0 * np.pi * resp_hz * t + resp_phase + 0.5)
