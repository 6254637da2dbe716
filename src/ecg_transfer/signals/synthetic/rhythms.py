"""Beat timelines of the eleven rhythms of the Chapman/Shaoxing release.

Each rhythm is defined by the criteria a cardiologist would use to name it: the ventricular
rate band, the regularity of the RR intervals, and what the atria do (sinus P waves, ectopic
P waves, retrograde P waves, flutter waves or fibrillatory waves). The numbers follow
textbook criteria (see docs/synthetic_data.md for the table and sources). A timeline is
drawn once per record from the record's own generator and does not depend on the sampling
rate, so the same timeline can be rendered at 250 or 500 Hz.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import sawtooth

from ecg_transfer.signals.synthetic.morphology import (
    PatientMorphology,
    Waves,
    beat_waves,
    dipole_direction,
    p_waves,
)

SYNTHETIC_RHYTHMS = ("SB", "SR", "AFIB", "ST", "SVT", "AF", "SA", "AT", "AVNRT", "AVRT", "SAAWR")

# The AV node cannot conduct two beats closer than this (seconds); it caps AFIB and SVT rates.
_MIN_RR = 0.235


def _taper(t: np.ndarray, t_start: float, t_end: float, ramp: float = 0.15) -> np.ndarray:
    """1 inside [t_start, t_end], raised-cosine ramps outside, so segments join without steps."""
    rise = np.clip((t - (t_start - ramp)) / ramp, 0.0, 1.0)
    fall = np.clip(((t_end + ramp) - t) / ramp, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))


@dataclass
class FlutterWaves:
    """Sawtooth atrial flutter (F) waves: a macro re-entry circling the right atrium.

    Typical (counter-clockwise) flutter gives a slow downslope and sharp upstroke in II, III and
    aVF; that is a slowly rising, sharply falling sawtooth along a superior (about -90 deg)
    dipole.
    """

    rate_hz: float
    first_activation: float
    vector: np.ndarray
    t_start: float = -np.inf
    t_end: float = np.inf

    def dipole(self, t: np.ndarray) -> np.ndarray:
        wave = sawtooth(2.0 * np.pi * self.rate_hz * (t - self.first_activation), width=0.8)
        return (wave * _taper(t, self.t_start, self.t_end))[:, None] * self.vector[None, :]


@dataclass
class FibrillatoryWaves:
    """Fibrillatory (f) waves: a few disorganised 4-9 Hz oscillations of wandering frequency.

    Several components with their own frequency, direction and amplitude modulation make the
    atrial signal non-periodic and different from lead to lead, as in real AFIB (largest in V1).
    """

    freqs_hz: np.ndarray  # (k,)
    fm_hz: np.ndarray  # (k,) rate at which each component's frequency wanders
    fm_depth_hz: np.ndarray  # (k,)
    phases: np.ndarray  # (k,)
    vectors: np.ndarray  # (k, 3) mV
    am_hz: np.ndarray  # (k,)
    am_depth: np.ndarray  # (k,)
    t_start: float = -np.inf
    t_end: float = np.inf

    @property
    def dominant_rate_bpm(self) -> float:
        return float(60.0 * self.freqs_hz[np.argmax(np.linalg.norm(self.vectors, axis=1))])

    def dipole(self, t: np.ndarray) -> np.ndarray:
        out = np.zeros((len(t), 3))
        for k in range(len(self.freqs_hz)):
            phase = (
                2.0 * np.pi * self.freqs_hz[k] * t
                + (self.fm_depth_hz[k] / self.fm_hz[k]) * np.sin(2.0 * np.pi * self.fm_hz[k] * t)
                + self.phases[k]
            )
            envelope = 1.0 + self.am_depth[k] * np.sin(2.0 * np.pi * self.am_hz[k] * t + self.phases[k])
            wave = envelope * (np.sin(phase) + 0.35 * np.sin(2.0 * phase + 1.0))
            out += wave[:, None] * self.vectors[k][None, :]
        return out * _taper(t, self.t_start, self.t_end)[:, None]


@dataclass
class CardiacActivity:
    """Everything the heart does during one rhythm segment, before any noise is added."""

    rhythm: str
    waves: Waves
    r_times: np.ndarray
    atrial_times: np.ndarray  # atrial activations (P waves, flutter waves); empty for AFIB
    backgrounds: list = field(default_factory=list)  # FlutterWaves / FibrillatoryWaves
    atrial_rate_bpm: float | None = None  # for flutter/fibrillation, where no P waves exist

    def dipole_background(self, t: np.ndarray) -> np.ndarray:
        out = np.zeros((len(t), 3))
        for background in self.backgrounds:
            out += background.dipole(t)
        return out


def _rr_before(r_times: np.ndarray, first_rr: float) -> np.ndarray:
    return np.diff(r_times, prepend=r_times[0] - first_rr)


def _sinus_r_times(
    rng: np.random.Generator,
    t_first: float,
    t_end: float,
    rr_mean: float,
    swing_pp: float,
    jitter_cv: float,
    resp_hz: float,
    resp_phase: float,
) -> np.ndarray:
    """R times of a sinus node whose rate is modulated by breathing (respiratory sinus arrhythmia).

    ``swing_pp`` is the peak-to-peak RR change over a breath (seconds); a small AR(1) jitter adds
    the beat-to-beat variability every healthy heart shows.
    """
    times = [t_first]
    noise = 0.0
    t = t_first
    while t < t_end:
        noise = 0.6 * noise + rng.normal(0.0, jitter_cv)
        rr = rr_mean + 0.5 * swing_pp * np.sin(2.0 * np.pi * resp_hz * t + resp_phase) + rr_mean * noise
        t = t + max(rr, _MIN_RR)
        times.append(t)
    return np.asarray(times)


def _sinus_p(morph: PatientMorphology, r_times: np.ndarray) -> tuple[Waves, np.ndarray]:
    onsets = r_times + morph.qrs_onset - morph.pr_interval
    centres = onsets + 2.5 * morph.p_sigma
    return p_waves(centres, morph.p_amp * morph.p_dir, morph.p_sigma), onsets


def _sinus(rng, morph, t_first, t_end, hr, swing_pp, jitter_cv, resp_hz, resp_phase, rhythm) -> CardiacActivity:
    rr_mean = 60.0 / hr
    r_times = _sinus_r_times(rng, t_first, t_end, rr_mean, swing_pp, jitter_cv, resp_hz, resp_phase)
    p, onsets = _sinus_p(morph, r_times)
    ventricular = beat_waves(morph, r_times, _rr_before(r_times, rr_mean))
    return CardiacActivity(rhythm, Waves.concat([p, ventricular]), r_times, onsets)


def _wandering_pacemaker(rng, morph, t_first, t_end, resp_hz, resp_phase) -> CardiacActivity:
    """SAAWR: the pacemaker drifts between the sinus node and atrial sites beat by beat.

    Each site has its own P axis, P amplitude, PR interval and a slightly slower rate the
    lower it sits; the site moves by at most one step per beat (a random walk).
    """
    hr = rng.triangular(45.0, 65.0, 95.0)
    p_axis = np.array([
        morph.p_axis_deg,
        morph.p_axis_deg + rng.choice([-1.0, 1.0]) * rng.uniform(35.0, 60.0),
        rng.uniform(-95.0, -45.0),
    ])
    p_amp = morph.p_amp * np.array([1.0, rng.uniform(0.5, 0.8), rng.uniform(0.45, 0.75)])
    pr = np.array([morph.pr_interval, max(morph.pr_interval - 0.03, 0.11), rng.uniform(0.09, 0.12)])
    rr_factor = np.array([1.0, rng.uniform(1.03, 1.08), rng.uniform(1.08, 1.18)])
    rr_mean = 60.0 / hr
    site = int(rng.integers(0, 3))
    t = t_first
    r_times, sites = [t], [site]
    while t < t_end:
        step = rng.choice([-1, 0, 1], p=[0.35, 0.3, 0.35])
        site = int(np.clip(site + step, 0, 2))
        rr = rr_mean * rr_factor[site] * (1.0 + rng.normal(0.0, 0.03))
        rr += 0.02 * np.sin(2.0 * np.pi * resp_hz * t + resp_phase)
        t = t + max(rr, _MIN_RR)
        r_times.append(t)
        sites.append(site)
    r_times = np.asarray(r_times)
    sites = np.asarray(sites)
    n = len(r_times)
    axes = p_axis[sites] + rng.normal(0.0, 8.0, n)
    amps = p_amp[sites] * rng.uniform(0.9, 1.1, n)
    prs = pr[sites] + rng.normal(0.0, 0.008, n)
    onsets = r_times + morph.qrs_onset - prs
    vectors = amps[:, None] * dipole_direction(axes, rng.uniform(-0.1, 0.3, n))
    p = p_waves(onsets + 2.5 * morph.p_sigma, vectors, morph.p_sigma)
    ventricular = beat_waves(morph, r_times, _rr_before(r_times, rr_mean))
    return CardiacActivity("SAAWR", Waves.concat([p, ventricular]), r_times, onsets)


def _atrial_tachycardia(rng, morph, t_first, t_end) -> CardiacActivity:
    """AT: an ectopic atrial focus fires at 100-250/min with an abnormal P axis and shape.

    Faster foci are often conducted 2:1 by the AV node, giving a ventricular rate that can
    look normal; the non-conducted P waves are still drawn.
    """
    atrial_rate = rng.triangular(100.0, 140.0, 220.0)
    conduction = 2 if (atrial_rate > 160.0 and rng.random() < 0.5) else 1
    pp = 60.0 / atrial_rate
    axis = rng.uniform(-100.0, -30.0) if rng.random() < 0.6 else rng.uniform(100.0, 170.0)
    p_sigma = rng.uniform(0.013, 0.020)
    vector = rng.uniform(0.07, 0.18) * dipole_direction(axis, rng.uniform(-0.4, 0.4))
    pr = rng.uniform(0.12, 0.22)
    n_atrial = int(np.ceil((t_end - t_first) / pp)) + 2 * conduction + 2
    intervals = pp * (1.0 + rng.normal(0.0, 0.004, n_atrial))
    onsets = (t_first - pr + morph.qrs_onset) + np.concatenate([[0.0], np.cumsum(intervals[:-1])])
    conducted = onsets[::conduction]
    r_times = conducted + pr - morph.qrs_onset
    keep = r_times <= t_end + 60.0 / atrial_rate * conduction
    r_times = r_times[keep]
    p = p_waves(onsets + 2.5 * p_sigma, vector, p_sigma)
    ventricular = beat_waves(morph, r_times, _rr_before(r_times, pp * conduction))
    return CardiacActivity("AT", Waves.concat([p, ventricular]), r_times, onsets)


def _reentry(rng, morph, t_first, t_end, rhythm) -> CardiacActivity:
    """SVT, AVNRT and AVRT: regular narrow-complex re-entry with retrograde atrial activation.

    AVNRT (typical slow-fast) activates the atria at the same time as the ventricles: the
    retrograde P hides in or just ends the QRS. AVRT runs through an accessory pathway: the
    retrograde P falls in the ST segment (short RP, RP > 70 ms). "SVT" in the release is the
    label used when the mechanism was not named, so it mixes both pictures.
    """
    if rhythm == "AVNRT":
        hr = rng.triangular(140.0, 175.0, 240.0)
        rp = rng.uniform(0.0, 0.035)
    elif rhythm == "AVRT":
        hr = rng.triangular(150.0, 190.0, 250.0)
        rp = rng.uniform(0.09, 0.15)
    else:
        hr = rng.triangular(150.0, 175.0, 240.0)
        rp = rng.uniform(0.0, 0.035) if rng.random() < 0.6 else rng.uniform(0.08, 0.14)
    rr_mean = 60.0 / hr
    rp = min(rp, 0.45 * rr_mean)
    r_times = t_first + rr_mean * np.arange(int(np.ceil((t_end - t_first) / rr_mean)) + 2)
    r_times = r_times + np.cumsum(rng.normal(0.0, 0.002, len(r_times)))
    p_sigma = rng.uniform(0.012, 0.018)
    vector = rng.uniform(0.05, 0.14) * dipole_direction(rng.uniform(-120.0, -65.0), rng.uniform(0.2, 0.5))
    centres = r_times + rp
    p = p_waves(centres, vector, p_sigma)
    ventricular = beat_waves(morph, r_times, _rr_before(r_times, rr_mean))
    return CardiacActivity(rhythm, Waves.concat([p, ventricular]), r_times, centres - 2.5 * p_sigma)


def _flutter(rng, morph, t_first, t_end) -> CardiacActivity:
    """AF (atrial flutter): F waves at 250-350/min, conducted 2:1, 3:1, 4:1 or variably."""
    rate_hz = rng.uniform(250.0, 350.0) / 60.0
    period = 1.0 / rate_hz
    scheme = rng.choice(["2", "3", "4", "variable"], p=[0.45, 0.1, 0.25, 0.2])
    av_delay = rng.uniform(0.18, 0.30)
    first_activation = t_first - av_delay - rng.uniform(0.0, period)
    n_atrial = int(np.ceil((t_end - first_activation) / period)) + 8
    atrial = first_activation + period * np.arange(n_atrial)
    if scheme == "variable":
        ratios = rng.choice([2, 3, 4], size=n_atrial, p=[0.5, 0.15, 0.35])
    else:
        ratios = np.full(n_atrial, int(scheme))
    index = np.cumsum(np.concatenate([[0], ratios]))
    index = index[index < n_atrial]
    r_times = atrial[index] + av_delay + rng.normal(0.0, 0.004, len(index))
    r_times = r_times[r_times <= t_end + 4 * period * 2]
    # Half the sawtooth's peak-to-peak: F waves of 0.1-0.3 mV.
    vector = rng.uniform(0.05, 0.15) * dipole_direction(rng.uniform(-110.0, -70.0), rng.uniform(0.2, 0.5))
    flutter = FlutterWaves(rate_hz, first_activation, vector)
    ventricular = beat_waves(morph, r_times, _rr_before(r_times, period * 2.0))
    return CardiacActivity("AF", ventricular, r_times, atrial, [flutter], atrial_rate_bpm=60.0 * rate_hz)


def _fibrillation(rng, morph, t_first, t_end) -> CardiacActivity:
    """AFIB: no P waves, 4-9 Hz fibrillatory waves, irregularly irregular RR intervals.

    RR intervals are independent draws (no pattern repeats), log-normal around the mean with
    a coefficient of variation of 12-30 %, never shorter than the AV node's refractory period.
    """
    hr = rng.triangular(50.0, 95.0, 165.0)
    rr_mean = 60.0 / hr
    cv = rng.uniform(0.12, 0.30)
    n = int(np.ceil((t_end - t_first) / (rr_mean * 0.6))) + 2
    rr = np.maximum(rr_mean * np.exp(rng.normal(-0.5 * cv**2, cv, n)), _MIN_RR + 0.04)
    r_times = t_first + np.concatenate([[0.0], np.cumsum(rr)])
    r_times = r_times[: int(np.searchsorted(r_times, t_end)) + 2]
    k = int(rng.integers(2, 4))
    f0 = rng.uniform(4.0, 9.0)
    freqs = f0 * np.concatenate([[1.0], rng.uniform(0.8, 1.25, k - 1)])
    amps = rng.uniform(0.02, 0.12) * np.concatenate([[1.0], rng.uniform(0.3, 0.8, k - 1)])
    dirs = dipole_direction(rng.uniform(-180.0, 180.0, k), rng.uniform(0.3, 0.8, k))
    fib = FibrillatoryWaves(
        freqs_hz=np.minimum(freqs, 9.0),
        fm_hz=rng.uniform(0.1, 0.4, k),
        fm_depth_hz=rng.uniform(0.2, 0.8, k),
        phases=rng.uniform(0.0, 2.0 * np.pi, k),
        vectors=amps[:, None] * dirs,
        am_hz=rng.uniform(0.2, 1.0, k),
        am_depth=rng.uniform(0.2, 0.5, k),
    )
    ventricular = beat_waves(morph, r_times, _rr_before(r_times, rr_mean))
    return CardiacActivity("AFIB", ventricular, r_times, np.zeros(0), [fib], atrial_rate_bpm=fib.dominant_rate_bpm)


def simulate_rhythm(
    rhythm: str,
    morph: PatientMorphology,
    rng: np.random.Generator,
    t_first: float,
    t_end: float,
    resp_hz: float,
    resp_phase: float,
) -> CardiacActivity:
    """Draw a beat timeline of ``rhythm`` with a first R peak at ``t_first``, running past ``t_end``.

    ``resp_hz``/``resp_phase`` are the patient's breathing, shared with the baseline wander so
    that respiratory sinus arrhythmia and respiratory baseline move together.
    """
    resp = (resp_hz, resp_phase)
    if rhythm == "SB":
        return _sinus(rng, morph, t_first, t_end, rng.triangular(38.0, 54.0, 59.0),
                      rng.uniform(0.0, 0.06), 0.008, *resp, "SB")
    if rhythm == "SR":
        hr = rng.triangular(61.0, 75.0, 99.0)
        return _sinus(rng, morph, t_first, t_end, hr, rng.uniform(0.0, min(0.07, 0.08 * 60.0 / hr)),
                      0.008, *resp, "SR")
    if rhythm == "ST":
        hr = 101.0 + 59.0 * rng.beta(1.3, 3.5)
        return _sinus(rng, morph, t_first, t_end, hr, rng.uniform(0.0, 0.03), 0.005, *resp, "ST")
    if rhythm == "SA":
        hr = rng.triangular(45.0, 68.0, 100.0)
        swing = min(rng.uniform(0.16, 0.40), 0.6 * 60.0 / hr)
        return _sinus(rng, morph, t_first, t_end, hr, swing, 0.012, *resp, "SA")
    if rhythm == "SAAWR":
        return _wandering_pacemaker(rng, morph, t_first, t_end, *resp)
    if rhythm == "AT":
        return _atrial_tachycardia(rng, morph, t_first, t_end)
    if rhythm in ("SVT", "AVNRT", "AVRT"):
        return _reentry(rng, morph, t_first, t_end, rhythm)
    if rhythm == "AF":
        return _flutter(rng, morph, t_first, t_end)
    if rhythm == "AFIB":
        return _fibrillation(rng, morph, t_first, t_end)
    raise ValueError(f"unknown rhythm {rhythm!r}; expected one of {SYNTHETIC_RHYTHMS}")
