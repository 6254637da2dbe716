"""Small labelled lead-II windows from the project's rhythm simulator, for the pretext tests.

Each simulated 10 s record (500 Hz) is cut to lead II, decimated by 8 (62.5 Hz) and split into
two 256-sample windows (about 4 s each, the tiny CAE's length), z-scored per window as the
preprocessing does: so every record gives the two windows that ``same_record`` pairs. With
``leads`` of several names the windows hold those leads, (N, C, 256), each z-scored per window.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import resample_poly

from ecg_transfer.signals.synthetic import simulate_chapman_release
from ecg_transfer.signals.synthetic.morphology import TWELVE_LEADS

CLASSES = ("SB", "SR", "ST", "AFIB")
WINDOW = 256


@lru_cache(maxsize=4)
def synthetic_windows(n_records: int, seed: int, leads: tuple[str, ...] = ("II",)
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows (2 n_records, 256) float32 ((2 n_records, C, 256) for C > 1 ``leads``), class
    indices into CLASSES and record ids."""
    release = simulate_chapman_release(n_records, seed=seed, class_shares={c: 1.0 for c in CLASSES},
                                       min_per_class=1)
    rhythms = release.diagnostics["Rhythm"].tolist()
    windows, labels, records = [], [], []
    for index, (name, waveform) in enumerate(release.iter_waveforms(progress=False)):
        columns = [TWELVE_LEADS.index(lead) for lead in leads]
        signal = resample_poly(waveform[:, columns].astype(np.float64), 1, 8, axis=0).T  # (C, samples)
        for start in (0, WINDOW):
            window = signal[:, start : start + WINDOW]
            window = (window - window.mean(axis=-1, keepdims=True)) / (window.std(axis=-1, keepdims=True) + 1e-8)
            windows.append(window[0] if len(leads) == 1 else window)
            labels.append(CLASSES.index(rhythms[index]))
            records.append(name)
    return np.asarray(windows, dtype=np.float32), np.asarray(labels, dtype=np.int64), np.asarray(records)
