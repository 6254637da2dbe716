"""Learning curve index (LCI): how steadily a per-epoch test-F1 curve climbs.

With d_t = F1_t - F1_(t-1), pos the positive d_t and neg the negative d_t:

    LCI = best F1 x mean(pos) / (|mean(neg)| + eps)

Edge cases, decided here because the paper is silent (see docs/statistics.md):
- epochs with d_t == 0 count in neither pos nor neg;
- no positive change: mean(pos) is taken as 0, so LCI = 0 (the curve never improved);
- no negative change: |mean(neg)| is 0 and eps keeps the ratio finite, but the LCI is then
  about best x mean(pos) / eps, i.e. ~1e7 for eps=1e-8: a real curve with one tiny drop and a
  curve with none differ by orders of magnitude (curve_never_drops tells which runs these are).
  bounded_learning_curve_index is a variant that stays in [0, best F1]; it orders curves like
  the LCI only among curves of equal best F1 (see its docstring);
- fewer than two points or any NaN: ValueError (no change is defined / the run is broken).
"""

from __future__ import annotations

import numpy as np


def _changes(f1_curve, name: str) -> tuple[np.ndarray, float, float, float]:
    curve = np.asarray(f1_curve, dtype=np.float64)
    if curve.ndim != 1:
        raise ValueError(f"{name}: the F1 curve must be 1-D, got shape {curve.shape}")
    if curve.size < 2:
        raise ValueError(f"{name}: needs at least 2 epochs to measure a change, got {curve.size}")
    if np.isnan(curve).any():
        raise ValueError(
            f"{name}: the F1 curve holds NaN at epoch index {int(np.flatnonzero(np.isnan(curve))[0])}"
        )
    deltas = np.diff(curve)
    rises = deltas[deltas > 0]
    drops = deltas[deltas < 0]
    mean_rise = float(rises.mean()) if rises.size else 0.0
    mean_drop = float(abs(drops.mean())) if drops.size else 0.0
    return curve, mean_rise, mean_drop, float(curve.max())


def learning_curve_index(f1_curve, eps: float = 1e-8) -> float:
    """The paper's LCI of one run's per-epoch F1 curve (epochs in order)."""
    if not eps > 0:
        raise ValueError(f"learning_curve_index: eps must be > 0, got {eps}")
    _, mean_rise, mean_drop, best = _changes(f1_curve, "learning_curve_index")
    return best * mean_rise / (mean_drop + eps)


def bounded_learning_curve_index(f1_curve) -> float:
    """best F1 x mean(pos) / (mean(pos) + |mean(neg)|), in [0, best F1].

    With the paper's ratio r = mean(pos) / |mean(neg)| the LCI is best x r and this is
    best x r / (1 + r). r / (1 + r) is monotone in r, so among curves with the *same* best F1
    both order alike; across different best F1 they can disagree (best 0.9, r = 1 gives LCI 0.9
    and bounded 0.45; best 0.6, r = 2 gives LCI 1.2 but bounded 0.4). A curve without drops
    scores best F1 instead of ~1e7, which keeps means, SDs and t-tests over trials meaningful.
    A flat curve scores 0.
    """
    _, mean_rise, mean_drop, best = _changes(f1_curve, "bounded_learning_curve_index")
    if mean_rise == 0.0:
        return 0.0
    return best * mean_rise / (mean_rise + mean_drop)


def curve_never_drops(f1_curve) -> bool:
    """True when no epoch is worse than the one before: the LCI is then ~best x mean(pos) / eps."""
    curve, _, _, _ = _changes(f1_curve, "curve_never_drops")
    return bool((np.diff(curve) >= 0).all())
