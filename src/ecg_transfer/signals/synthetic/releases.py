"""Synthetic stand-ins for the study's two data sources, written to disk by the real writers.

* :func:`simulate_chapman_release`: a labelled 12-lead release shaped like the
  Chapman/Shaoxing set (Zheng et al., Sci Data 2020): a Diagnostics table with the release's
  columns and one 10 s, 500 Hz, 12-lead waveform per patient, in microvolts.
* :func:`simulate_monitor_corpus`: an unlabelled lead-II corpus shaped like the paper's ICU
  monitor data: minutes per patient, two device sampling rates, mostly sinus rhythm with
  arrhythmias and rhythm changes mixed in.

Both are lazy: the small per-record plan (rhythm, morphology, beat times) is drawn from a
generator seeded by (seed, record index), and the waveform is rendered only when iterated,
so one record is in memory at a time and any record can be regenerated on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from ecg_transfer.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere
from ecg_transfer.signals.records import EcgRecord
from ecg_transfer.signals.synthetic.morphology import (
    ELECTRODES,
    PatientMorphology,
    Waves,
    draw_morphology,
    lead_ii_from_dipole,
    render_dipole,
    twelve_leads,
)
from ecg_transfer.signals.synthetic.noise import (
    BEDSIDE_MONITOR,
    RESTING_ECG,
    electrode_noise,
    respiratory_gain,
)
from ecg_transfer.signals.synthetic.rhythms import (
    SYNTHETIC_RHYTHMS,
    CardiacActivity,
    simulate_rhythm,
)

# Record counts of the public release (Zheng et al. 2020, Table 2); shares are these / 10,646.
CHAPMAN_RHYTHM_COUNTS: dict[str, int] = {
    "SB": 3889, "SR": 1826, "AFIB": 1780, "ST": 1568, "SVT": 587, "AF": 445,
    "SA": 399, "AT": 121, "AVNRT": 16, "AVRT": 8, "SAAWR": 7,
}

DIAGNOSTICS_COLUMNS = (
    "FileName", "Rhythm", "Beat", "PatientAge", "Gender", "VentricularRate", "AtrialRate",
    "QRSDuration", "QTInterval", "QTCorrected", "RAxis", "TAxis", "QRSCount", "QOnset",
    "QOffset", "TOffset",
)

CHAPMAN_FS = 500.0
CHAPMAN_SECONDS = 10.0
# Interval measurements (QOnset, QOffset, TOffset) are sample numbers on a 500 Hz median-beat
# frame whose R peak sits at this sample, the convention of the release's MUSE export.
_MEDIAN_BEAT_R_SAMPLE = 250

# Rhythm mix of an ICU monitor population: mostly sinus, a sizeable AFIB share, the rest rare.
MONITOR_RHYTHM_SHARES: dict[str, float] = {
    "SR": 0.40, "ST": 0.18, "SB": 0.10, "AFIB": 0.15, "AF": 0.04, "SA": 0.04, "AT": 0.03,
    "SVT": 0.02, "SAAWR": 0.02, "AVNRT": 0.01, "AVRT": 0.01,
}
# Chance that a monitor recording switches rhythm (paroxysms, rate changes) part-way.
_MONITOR_RHYTHM_CHANGE_PROBABILITY = 0.3

# Mean age by rhythm: atrial fibrillation and flutter are diseases of the old, SVT of the young.
_AGE_MEAN = {"AFIB": 72.0, "AF": 68.0, "SVT": 50.0, "AVNRT": 45.0, "AVRT": 38.0, "ST": 52.0}


def _check_seed(seed: int, where: str) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"{where}: seed must be a non-negative integer, got {seed!r}")


def allocate_class_counts(n_records: int, class_shares: dict[str, float], min_per_class: int) -> dict[str, int]:
    """Split ``n_records`` over the classes in proportion to their shares, each at least ``min_per_class``.

    The floor comes first, the rest is shared out by largest remainder in proportion to how far
    each class's proportional count exceeds the floor, so the common classes keep their ratios.
    """
    unknown = sorted(set(class_shares) - set(SYNTHETIC_RHYTHMS))
    if unknown:
        raise ValueError(f"class_shares names unknown rhythms {unknown}; expected some of {SYNTHETIC_RHYTHMS}")
    if any((not np.isfinite(v)) or v < 0 for v in class_shares.values()):
        raise ValueError(f"class_shares must be finite and non-negative, got {class_shares}")
    classes = [r for r in SYNTHETIC_RHYTHMS if class_shares.get(r, 0) > 0]
    if not classes:
        raise ValueError("class_shares gives no class a positive share")
    if min_per_class < 0:
        raise ValueError(f"min_per_class must be >= 0, got {min_per_class}")
    if n_records < len(classes) * min_per_class:
        raise ValueError(
            f"n_records={n_records} cannot give each of {len(classes)} classes min_per_class="
            f"{min_per_class} records; need at least {len(classes) * min_per_class}"
        )
    shares = np.array([class_shares[r] for r in classes], dtype=float)
    shares /= shares.sum()
    rest = n_records - len(classes) * min_per_class
    excess = np.maximum(n_records * shares - min_per_class, 0.0)
    weights = excess / excess.sum() if excess.sum() > 0 else shares
    ideal = rest * weights
    extra = np.floor(ideal).astype(int)
    leftover = rest - extra.sum()
    extra[np.argsort(-(ideal - extra), kind="stable")[:leftover]] += 1
    return {r: int(min_per_class + e) for r, e in zip(classes, extra)}


@dataclass
class _Plan:
    """The cheap part of one record: who the patient is and when every wave happens."""

    rhythm: str
    morph: PatientMorphology
    activities: list[CardiacActivity]
    resp_hz: float
    resp_phase: float
    resp_depth: float
    mains_hz: float

    @property
    def waves(self) -> Waves:
        return Waves.concat([a.waves for a in self.activities])

    @property
    def r_times(self) -> np.ndarray:
        return np.concatenate([a.r_times for a in self.activities])

    def dipole(self, t: np.ndarray) -> np.ndarray:
        gain = respiratory_gain(t, self.resp_hz, self.resp_phase, self.resp_depth)
        heart = render_dipole(t, self.waves) * gain[:, None]
        for activity in self.activities:
            heart += activity.dipole_background(t)
        return heart


def _draw_breathing(rng: np.random.Generator) -> tuple[float, float, float]:
    return rng.uniform(0.15, 0.4), rng.uniform(0.0, 2.0 * np.pi), rng.uniform(0.02, 0.12)


def _plan_chapman_record(seed: int, index: int, rhythm: str) -> _Plan:
    rng = np.random.default_rng([seed, index, 0])
    morph = draw_morphology(rng)
    resp_hz, resp_phase, resp_depth = _draw_breathing(rng)
    # Beats start before the window and run past it so no wave is cut at the record's edges.
    t_first = -1.5 + rng.uniform(0.0, 1.0)
    activity = simulate_rhythm(rhythm, morph, rng, t_first, CHAPMAN_SECONDS + 1.5, resp_hz, resp_phase)
    mains = 50.0 if rng.random() < 0.7 else 60.0
    return _Plan(rhythm, morph, [activity], resp_hz, resp_phase, resp_depth, mains)


def _rate_bpm(times: np.ndarray, start: float, stop: float) -> float:
    inside = np.sort(times[(times >= start) & (times < stop)])
    if len(inside) < 2:
        inside = np.sort(times)[:2]
    return 60.0 * (len(inside) - 1) / (inside[-1] - inside[0])


def _diagnostics_row(plan: _Plan, file_name: str, rng: np.random.Generator) -> dict:
    """Diagnostics.xlsx row measured from the plan: what the simulated heart actually did."""
    activity = plan.activities[0]
    morph = plan.morph
    r_all = np.sort(activity.r_times)
    in_window = (r_all >= 0.0) & (r_all < CHAPMAN_SECONDS)
    ventricular = _rate_bpm(r_all, 0.0, CHAPMAN_SECONDS)
    if activity.atrial_rate_bpm is not None:
        atrial = activity.atrial_rate_bpm
    else:
        atrial = _rate_bpm(activity.atrial_times, 0.0, CHAPMAN_SECONDS)
    rr_before = np.diff(r_all, prepend=r_all[0] - 60.0 / ventricular)[in_window]
    qt = float(np.median(morph.qt(rr_before)))
    qtc = qt / np.sqrt(60.0 / ventricular)
    age_mean = _AGE_MEAN.get(plan.rhythm, 58.0)
    return {
        "FileName": file_name,
        "Rhythm": plan.rhythm,
        "Beat": "NONE",
        "PatientAge": int(np.clip(round(rng.normal(age_mean, 15.0)), 4, 98)),
        "Gender": "MALE" if rng.random() < 0.56 else "FEMALE",
        "VentricularRate": int(round(ventricular)),
        "AtrialRate": int(round(atrial)),
        "QRSDuration": int(round(1000.0 * morph.qrs_duration)),
        "QTInterval": int(round(1000.0 * qt)),
        "QTCorrected": int(round(1000.0 * qtc)),
        "RAxis": int(round(morph.measured_qrs_axis_deg())),
        "TAxis": int(round(morph.measured_t_axis_deg())),
        "QRSCount": int(in_window.sum()),
        "QOnset": int(_MEDIAN_BEAT_R_SAMPLE + round(CHAPMAN_FS * morph.qrs_onset)),
        "QOffset": int(_MEDIAN_BEAT_R_SAMPLE + round(CHAPMAN_FS * morph.qrs_end)),
        "TOffset": int(_MEDIAN_BEAT_R_SAMPLE + round(CHAPMAN_FS * (morph.qrs_onset + qt))),
    }


def _file_names(rng: np.random.Generator, n: int) -> list[str]:
    """MUSE-style names ("MUSE_20180111_155115_19000"); the 5-digit tail is unique per record."""
    start = datetime(2017, 1, 1)
    seconds = rng.integers(0, 3 * 365 * 24 * 3600, size=n)
    tails = rng.choice(90000, size=n, replace=False) + 10000
    return [
        f"MUSE_{(start + timedelta(seconds=int(s))):%Y%m%d_%H%M%S}_{int(tail)}"
        for s, tail in zip(seconds, tails)
    ]


class SyntheticChapmanRelease:
    """A simulated Chapman/Shaoxing release: ``.diagnostics`` and lazily rendered waveforms."""

    def __init__(self, seed: int, rhythms: list[str], diagnostics: pd.DataFrame) -> None:
        self.seed = seed
        self._rhythms = list(rhythms)
        self.diagnostics = diagnostics

    def __len__(self) -> int:
        return len(self._rhythms)

    def waveform(self, index: int) -> np.ndarray:
        """The (5000, 12) microvolt waveform of record ``index``, regenerated from its seed."""
        plan = _plan_chapman_record(self.seed, index, self._rhythms[index])
        n = int(CHAPMAN_FS * CHAPMAN_SECONDS)
        t = np.arange(n) / CHAPMAN_FS
        noise_rng = np.random.default_rng([self.seed, index, 1])
        electrodes = electrode_noise(noise_rng, len(ELECTRODES), n, CHAPMAN_FS, plan.resp_hz, plan.mains_hz, RESTING_ECG)
        return 1000.0 * twelve_leads(plan.dipole(t), plan.morph, electrodes)

    def iter_waveforms(self, progress: bool = True) -> Iterator[tuple[str, np.ndarray]]:
        names = self.diagnostics["FileName"].tolist()
        for index in tqdm(range(len(self)), desc="synthetic ECGs", disable=not progress):
            yield names[index], self.waveform(index)


def simulate_chapman_release(
    n_records: int,
    seed: int,
    class_shares: dict | None = None,
    min_per_class: int = 12,
    progress: bool = False,
) -> SyntheticChapmanRelease:
    """Simulate a labelled release of ``n_records`` patients, one 10 s 12-lead ECG each.

    Class counts follow ``class_shares`` (default: the public release's proportions) with a
    floor of ``min_per_class`` so that every rhythm survives an 8:2 split and a validation
    split. Only the diagnostics table is computed here; waveforms render when iterated.
    """
    _check_seed(seed, "simulate_chapman_release")
    if n_records <= 0:
        raise ValueError(f"simulate_chapman_release: n_records must be positive, got {n_records}")
    counts = allocate_class_counts(n_records, class_shares or CHAPMAN_RHYTHM_COUNTS, min_per_class)
    rng = np.random.default_rng(seed)
    rhythms = np.repeat(list(counts), list(counts.values()))
    rhythms = rhythms[rng.permutation(len(rhythms))].tolist()
    names = _file_names(rng, n_records)
    rows = []
    for index in tqdm(range(n_records), desc="planning synthetic ECGs", disable=not progress):
        plan = _plan_chapman_record(seed, index, rhythms[index])
        rows.append(_diagnostics_row(plan, names[index], np.random.default_rng([seed, index, 2])))
    diagnostics = pd.DataFrame(rows, columns=list(DIAGNOSTICS_COLUMNS))
    return SyntheticChapmanRelease(seed, rhythms, diagnostics)


def _plan_monitor_patient(seed: int, index: int, seconds: float) -> tuple[_Plan, np.random.Generator]:
    rng = np.random.default_rng([seed, index, 0])
    morph = draw_morphology(rng)
    resp_hz, resp_phase, resp_depth = _draw_breathing(rng)
    names = list(MONITOR_RHYTHM_SHARES)
    shares = np.array([MONITOR_RHYTHM_SHARES[r] for r in names])
    first = str(rng.choice(names, p=shares / shares.sum()))
    segments = [first]
    if seconds >= 30.0 and rng.random() < _MONITOR_RHYTHM_CHANGE_PROBABILITY:
        for _ in range(int(rng.integers(1, 3))):
            others = [r for r in names if r != segments[-1]]
            weights = np.array([MONITOR_RHYTHM_SHARES[r] for r in others])
            segments.append(str(rng.choice(others, p=weights / weights.sum())))
    bounds = np.sort(rng.uniform(0.15, 0.85, len(segments) - 1)) * seconds
    ends = list(bounds) + [seconds + 1.5]
    activities = []
    t_first = -1.5 + rng.uniform(0.0, 1.0)
    for rhythm, t_end in zip(segments, ends):
        # A segment keeps at least two seconds even when the one before ran past its end.
        t_end = max(t_end, t_first + 2.0)
        activity = simulate_rhythm(rhythm, morph, rng, t_first, t_end, resp_hz, resp_phase)
        if len(segments) > 1:
            for background in activity.backgrounds:
                background.t_start = activity.r_times[0] - 0.3
                background.t_end = activity.r_times[-1]
        activities.append(activity)
        # A short pause after one rhythm stops, as after a paroxysm ends.
        t_first = float(activity.r_times[-1]) + rng.uniform(0.5, 1.0)
    mains = 50.0 if rng.random() < 0.5 else 60.0
    return _Plan(first, morph, activities, resp_hz, resp_phase, resp_depth, mains), rng


class SyntheticMonitorCorpus:
    """A simulated unlabelled bedside-monitor corpus: one lead-II recording per patient."""

    def __init__(self, n_patients: int, seconds_per_patient: float, seed: int, sampling_rates: tuple) -> None:
        self.n_patients = n_patients
        self.seconds_per_patient = seconds_per_patient
        self.seed = seed
        self.sampling_rates = tuple(float(f) for f in sampling_rates)

    def __len__(self) -> int:
        return self.n_patients

    def rhythms(self, index: int) -> list[str]:
        """The rhythm segments of patient ``index``, for checks; the records carry no label."""
        plan, _ = _plan_monitor_patient(self.seed, index, self.seconds_per_patient)
        return [a.rhythm for a in plan.activities]

    def record(self, index: int) -> EcgRecord:
        plan, rng = _plan_monitor_patient(self.seed, index, self.seconds_per_patient)
        fs = float(rng.choice(self.sampling_rates))
        n = int(round(fs * self.seconds_per_patient))
        t = np.arange(n) / fs
        noise_rng = np.random.default_rng([self.seed, index, 1])
        noise = electrode_noise(noise_rng, 1, n, fs, plan.resp_hz, plan.mains_hz, BEDSIDE_MONITOR)[0]
        record_id = f"synthetic_monitor_{index:06d}"
        return EcgRecord(
            record_id=record_id,
            patient_id=f"synthetic_patient_{index:06d}",
            signal=lead_ii_from_dipole(plan.dipole(t)) + noise,
            fs=fs,
            lead="II",
            label=None,
            source=f"synthetic:{record_id}",
        )

    def iter_records(self, progress: bool = True) -> Iterator[EcgRecord]:
        for index in tqdm(range(len(self)), desc="synthetic monitor ECGs", disable=not progress):
            yield self.record(index)


def simulate_monitor_corpus(
    n_patients: int,
    seconds_per_patient: float,
    seed: int,
    sampling_rates: tuple = (250, 500),
) -> SyntheticMonitorCorpus:
    """Simulate ``n_patients`` monitor recordings of lead II, ``seconds_per_patient`` long each.

    Each patient's device sampling rate is drawn from ``sampling_rates``, as from a ward with
    monitors of two brands. Records render lazily when iterated.
    """
    _check_seed(seed, "simulate_monitor_corpus")
    if n_patients <= 0:
        raise ValueError(f"simulate_monitor_corpus: n_patients must be positive, got {n_patients}")
    if not np.isfinite(seconds_per_patient) or seconds_per_patient <= 0:
        raise ValueError(f"simulate_monitor_corpus: seconds_per_patient must be positive, got {seconds_per_patient}")
    if len(sampling_rates) == 0 or any((not np.isfinite(f)) or f <= 0 for f in sampling_rates):
        raise ValueError(f"simulate_monitor_corpus: sampling_rates must be positive numbers, got {sampling_rates}")
    return SyntheticMonitorCorpus(n_patients, seconds_per_patient, seed, tuple(sampling_rates))
