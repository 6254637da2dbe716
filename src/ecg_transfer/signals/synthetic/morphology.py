"""Beat shapes and lead geometry of the rhythm simulator.

Every wave (P, Q, R, S, T, retrograde P) is a Gaussian bump in time (asymmetric for T)
carrying a 3-D cardiac dipole vector, after the sum-of-Gaussians beat model of McSharry et al.
(IEEE TBME 50(3), 2003). Leads are projections of that one dipole, so the twelve leads of a
record are mutually consistent: limb leads I and II are dipole projections, and III, aVR, aVL,
aVF follow from them by the Einthoven/Goldberger identities. Precordial leads project the
dipole on horizontal-plane directions, giving the usual R-wave progression.

Dipole axes: x points to the patient's left, y down (inferior), z forward (anterior). A frontal
angle follows the hexaxial convention: 0 deg = lead I, +90 deg = aVF (inferior).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LIMB_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF")
PRECORDIAL_LEADS = ("V1", "V2", "V3", "V4", "V5", "V6")
TWELVE_LEADS = LIMB_LEADS + PRECORDIAL_LEADS

# Horizontal-plane angle of each chest electrode, measured from the patient's left (+x)
# towards the front (+z); V1 sits right of the sternum, V6 in the left mid-axillary line.
_PRECORDIAL_ANGLES_DEG = np.array([120.0, 95.0, 75.0, 60.0, 35.0, 10.0])
# Chest electrodes closer to the heart (V2-V4) see larger voltages than limb leads.
_PRECORDIAL_GAINS = np.array([1.1, 1.9, 2.0, 1.8, 1.4, 1.1])
# Unit vectors of leads I (0 deg) and II (+60 deg) in the frontal plane.
_LEAD_I = np.array([1.0, 0.0, 0.0])
_LEAD_II = np.array([np.cos(np.pi / 3), np.sin(np.pi / 3), 0.0])

# A Gaussian contributes nothing measurable beyond this many widths from its centre.
_GAUSS_REACH = 5.0


def dipole_direction(frontal_deg: float | np.ndarray, anterior: float | np.ndarray) -> np.ndarray:
    """Unit vector(s) from a frontal-plane angle and a forward (z) component in [-1, 1].

    Frontal angle and anterior share are the two numbers a cardiologist reads off the limb
    and chest leads, so morphology is drawn in those terms.
    """
    frontal = np.deg2rad(np.asarray(frontal_deg, dtype=float))
    z = np.clip(np.asarray(anterior, dtype=float), -0.99, 0.99)
    planar = np.sqrt(1.0 - z**2)
    return np.stack([np.cos(frontal) * planar, np.sin(frontal) * planar, z * np.ones_like(frontal)], axis=-1)


@dataclass
class Waves:
    """A set of Gaussian waves on one time line (seconds); vectors are in millivolts."""

    centres: np.ndarray  # (n,) seconds
    vectors: np.ndarray  # (n, 3) dipole amplitude x direction, mV
    sigma_left: np.ndarray  # (n,) seconds, width before the centre
    sigma_right: np.ndarray  # (n,) seconds, width after the centre

    @classmethod
    def empty(cls) -> Waves:
        return cls(np.zeros(0), np.zeros((0, 3)), np.zeros(0), np.zeros(0))

    @classmethod
    def concat(cls, parts: list[Waves]) -> Waves:
        parts = [p for p in parts if len(p.centres)]
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.centres for p in parts]),
            np.concatenate([p.vectors for p in parts]),
            np.concatenate([p.sigma_left for p in parts]),
            np.concatenate([p.sigma_right for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.centres)


def render_dipole(t: np.ndarray, waves: Waves, chunk: int = 512) -> np.ndarray:
    """Sum the waves on sample times ``t`` into a (len(t), 3) dipole signal in mV.

    Works chunk by chunk with only the waves that reach into each chunk, so the cost grows
    with the record length rather than with (record length x number of beats).
    """
    out = np.zeros((len(t), 3))
    if len(waves) == 0 or len(t) == 0:
        return out
    order = np.argsort(waves.centres)
    centres = waves.centres[order]
    vectors = waves.vectors[order]
    sl = waves.sigma_left[order]
    sr = waves.sigma_right[order]
    reach = _GAUSS_REACH * float(max(sl.max(), sr.max()))
    for start in range(0, len(t), chunk):
        tc = t[start : start + chunk]
        lo = np.searchsorted(centres, tc[0] - reach, side="left")
        hi = np.searchsorted(centres, tc[-1] + reach, side="right")
        if hi <= lo:
            continue
        delta = tc[None, :] - centres[lo:hi, None]
        width = np.where(delta < 0.0, sl[lo:hi, None], sr[lo:hi, None])
        out[start : start + chunk] = np.exp(-0.5 * (delta / width) ** 2).T @ vectors[lo:hi]
    return out


@dataclass
class PatientMorphology:
    """One patient's beat shape; drawn once per patient, reused for every beat.

    Timings are relative to the R peak (seconds); amplitudes are dipole magnitudes (mV).
    """

    qrs_axis_deg: float
    p_axis_deg: float
    t_axis_deg: float
    p_amp: float
    p_sigma: float
    pr_interval: float  # P onset to QRS onset, seconds
    q_amp: float
    q_offset: float
    q_sigma: float
    r_amp: float
    r_sigma: float
    s_amp: float
    s_offset: float
    s_sigma: float
    t_amp: float
    t_sigma_left: float
    t_sigma_right: float
    qtc: float  # Bazett-corrected QT, seconds
    q_dir: np.ndarray = field(repr=False)
    r_dir: np.ndarray = field(repr=False)
    s_dir: np.ndarray = field(repr=False)
    t_dir: np.ndarray = field(repr=False)
    p_dir: np.ndarray = field(repr=False)
    precordial_vectors: np.ndarray = field(repr=False)  # (6, 3), gain x direction

    @property
    def qrs_onset(self) -> float:
        """QRS onset relative to the R peak (negative), where the Q wave starts to rise."""
        return self.q_offset - 2.5 * self.q_sigma

    @property
    def qrs_end(self) -> float:
        return self.s_offset + 2.5 * self.s_sigma

    @property
    def qrs_duration(self) -> float:
        return self.qrs_end - self.qrs_onset

    def qt(self, rr: np.ndarray | float) -> np.ndarray:
        """QT for the preceding RR by Bazett's formula, never letting T start inside the QRS."""
        return np.maximum(self.qtc * np.sqrt(np.asarray(rr, dtype=float)), self.qrs_duration + 0.12)

    def t_centre(self, rr: np.ndarray | float) -> np.ndarray:
        """T-peak time after R such that the T wave ends (2.5 widths past its peak) at QT."""
        return self.qrs_onset + self.qt(rr) - 2.5 * self.t_sigma_right

    def qrs_area_vector(self) -> np.ndarray:
        """Net QRS dipole area (mV s); its frontal angle is the reported QRS axis."""
        root = np.sqrt(2.0 * np.pi)
        return root * (
            self.q_amp * self.q_sigma * self.q_dir + self.r_amp * self.r_sigma * self.r_dir
            + self.s_amp * self.s_sigma * self.s_dir
        )

    def measured_qrs_axis_deg(self) -> float:
        area = self.qrs_area_vector()
        return float(np.degrees(np.arctan2(area[1], area[0])))

    def measured_t_axis_deg(self) -> float:
        return float(np.degrees(np.arctan2(self.t_dir[1], self.t_dir[0])))


def draw_morphology(rng: np.random.Generator) -> PatientMorphology:
    """Draw one adult's sinus-beat shape from normal ranges.

    Ranges are textbook normal values: QRS axis -30..+90 deg (mostly +30..+75), P axis
    0..+75 deg, PR 120-200 ms, QRS 70-110 ms, QTc 370-460 ms, R 0.6-2 mV, T 0.15-0.5 mV.
    """
    qrs_axis = float(np.clip(rng.normal(45.0, 28.0), -40.0, 105.0))
    p_axis = float(np.clip(rng.normal(50.0, 15.0), 0.0, 80.0))
    t_axis = float(qrs_axis + np.clip(rng.normal(0.0, 18.0), -45.0, 45.0))
    q_sigma = rng.uniform(0.005, 0.008)
    r_sigma = rng.uniform(0.008, 0.013)
    s_sigma = rng.uniform(0.007, 0.011)
    q_offset = -rng.uniform(0.015, 0.025)
    s_offset = rng.uniform(0.018, 0.030)
    rotation = rng.normal(0.0, 8.0)  # heart rotation about the long axis moves the transition zone
    angles = np.deg2rad(_PRECORDIAL_ANGLES_DEG + rotation)
    chest_dirs = np.stack([np.cos(angles), np.zeros(6), np.sin(angles)], axis=1)
    gains = _PRECORDIAL_GAINS * rng.uniform(0.85, 1.15, size=6)
    return PatientMorphology(
        qrs_axis_deg=qrs_axis,
        p_axis_deg=p_axis,
        t_axis_deg=t_axis,
        p_amp=rng.uniform(0.08, 0.22),
        p_sigma=rng.uniform(0.016, 0.024),
        pr_interval=rng.uniform(0.12, 0.20),
        q_amp=rng.uniform(0.05, 0.20),
        q_offset=q_offset,
        q_sigma=q_sigma,
        r_amp=rng.uniform(0.6, 2.0),
        r_sigma=r_sigma,
        s_amp=rng.uniform(0.15, 0.6),
        s_offset=s_offset,
        s_sigma=s_sigma,
        t_amp=rng.uniform(0.15, 0.5),
        t_sigma_left=rng.uniform(0.045, 0.070),
        t_sigma_right=rng.uniform(0.028, 0.042),
        qtc=rng.uniform(0.37, 0.46),
        # Septal activation (q) runs rightward and forward; the main R vector follows the
        # axis and points slightly backward; terminal S runs rightward-backward; T roughly
        # follows the QRS axis and points forward.
        q_dir=dipole_direction(qrs_axis + 180.0 + rng.normal(0.0, 20.0), rng.uniform(0.3, 0.7)),
        r_dir=dipole_direction(qrs_axis, rng.uniform(-0.3, 0.05)),
        s_dir=dipole_direction(qrs_axis + 180.0 + rng.normal(0.0, 25.0), rng.uniform(-0.9, -0.6)),
        t_dir=dipole_direction(t_axis, rng.uniform(0.15, 0.5)),
        p_dir=dipole_direction(p_axis, rng.uniform(0.0, 0.3)),
        precordial_vectors=chest_dirs * gains[:, None],
    )


def beat_waves(morph: PatientMorphology, r_times: np.ndarray, rr_before: np.ndarray) -> Waves:
    """Q, R, S and T waves for ventricular beats at ``r_times`` (the QRST complex only)."""
    n = len(r_times)
    if n == 0:
        return Waves.empty()
    ones = np.ones(n)
    t_centres = r_times + morph.t_centre(rr_before)
    centres = np.concatenate([r_times + morph.q_offset, r_times, r_times + morph.s_offset, t_centres])
    vectors = np.concatenate([
        np.outer(ones, morph.q_amp * morph.q_dir),
        np.outer(ones, morph.r_amp * morph.r_dir),
        np.outer(ones, morph.s_amp * morph.s_dir),
        np.outer(ones, morph.t_amp * morph.t_dir),
    ])
    sl = np.concatenate([ones * morph.q_sigma, ones * morph.r_sigma, ones * morph.s_sigma, ones * morph.t_sigma_left])
    sr = np.concatenate([ones * morph.q_sigma, ones * morph.r_sigma, ones * morph.s_sigma, ones * morph.t_sigma_right])
    return Waves(centres, vectors, sl, sr)


def p_waves(centres: np.ndarray, vectors: np.ndarray, sigmas: np.ndarray) -> Waves:
    """Symmetric P (or retrograde P) waves with per-wave dipole vectors (mV) and widths."""
    centres = np.asarray(centres, dtype=float)
    sigmas = np.broadcast_to(np.asarray(sigmas, dtype=float), centres.shape).copy()
    vectors = np.broadcast_to(np.asarray(vectors, dtype=float), (len(centres), 3)).copy()
    return Waves(centres, vectors, sigmas, sigmas.copy())


def lead_ii_from_dipole(dipole: np.ndarray) -> np.ndarray:
    return dipole @ _LEAD_II


def assemble_twelve_leads(lead_i: np.ndarray, lead_ii: np.ndarray, chest: np.ndarray) -> np.ndarray:
    """Stack leads in CHAPMAN order, deriving III and the augmented leads from I and II.

    Deriving them (rather than projecting separately) makes the Einthoven and Goldberger
    identities hold to the last bit, as they do for a real electrocardiograph.
    """
    lead_iii = lead_ii - lead_i
    avr = -(lead_i + lead_ii) / 2.0
    avl = lead_i - lead_ii / 2.0
    avf = lead_ii - lead_i / 2.0
    return np.column_stack([lead_i, lead_ii, lead_iii, avr, avl, avf, chest])


# Electrodes of a 12-lead recording, in the order electrode noise is generated.
ELECTRODES = ("RA", "LA", "LL", "V1", "V2", "V3", "V4", "V5", "V6")


def twelve_leads(dipole: np.ndarray, morph: PatientMorphology, electrodes: np.ndarray | None = None) -> np.ndarray:
    """Leads (n, 12) in mV from the heart dipole plus optional electrode potentials (9, n).

    Electrode artefacts enter the way an electrocardiograph sees them: limb leads as
    differences of limb electrodes, chest leads against Wilson's central terminal.
    """
    lead_i = dipole @ _LEAD_I
    lead_ii = dipole @ _LEAD_II
    chest = dipole @ morph.precordial_vectors.T
    if electrodes is not None:
        ra, la, ll = electrodes[0], electrodes[1], electrodes[2]
        lead_i = lead_i + (la - ra)
        lead_ii = lead_ii + (ll - ra)
        chest = chest + (electrodes[3:] - (ra + la + ll) / 3.0).T
    return assemble_twelve_leads(lead_i, lead_ii, chest)
