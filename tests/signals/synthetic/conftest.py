"""One simulated release shared by the synthetic-data tests, rendered once per session.

The R-peak detector here is deliberately independent of the simulator (it sees only the
lead-II samples, as a reader of the real release would), so that rates and RR statistics
measured from the signal check what the simulator claims.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from scipy.signal import butter, find_peaks, sosfiltfilt

from ecg_transfer.signals.synthetic import simulate_chapman_release

FS = 500.0


def detect_r_peaks(lead: np.ndarray, fs: float = FS) -> np.ndarray:
    """Pan-Tompkins-like detector: band-pass, squared slope, 100 ms moving energy, peak picking."""
    band = sosfiltfilt(butter(3, [5.0, 25.0], btype="band", fs=fs, output="sos"), lead)
    width = int(0.1 * fs)
    energy = np.convolve(np.gradient(band) ** 2, np.ones(width) / width, mode="same")
    peaks, _ = find_peaks(energy, distance=int(0.22 * fs), height=0.25 * np.percentile(energy, 99))
    return peaks


def rr_features(lead: np.ndarray, fs: float = FS) -> tuple[float, float, float]:
    """Mean heart rate (bpm), RR standard deviation (s), RMSSD (s)."""
    rr = np.diff(detect_r_peaks(lead, fs)) / fs
    return 60.0 / rr.mean(), rr.std(), float(np.sqrt(np.mean(np.diff(rr) ** 2)))


@dataclass
class RenderedRelease:
    diagnostics: pd.DataFrame
    labels: np.ndarray
    lead_ii: np.ndarray  # (n, 5000) microvolts
    features: np.ndarray  # (n, 3): mean HR, RR SD, RMSSD
    first_waveforms: list  # a few full 12-lead records


@pytest.fixture(scope="session")
def rendered_release() -> RenderedRelease:
    release = simulate_chapman_release(300, seed=11, min_per_class=14)
    lead_ii, first = [], []
    for index, (_, waveform) in enumerate(release.iter_waveforms(progress=False)):
        lead_ii.append(waveform[:, 1].copy())
        if index < 40:
            first.append(waveform)
    lead_ii = np.asarray(lead_ii)
    return RenderedRelease(
        diagnostics=release.diagnostics,
        labels=release.diagnostics["Rhythm"].to_numpy(dtype=str),
        lead_ii=lead_ii,
        features=np.array([rr_features(x) for x in lead_ii]),
        first_waveforms=first,
    )
