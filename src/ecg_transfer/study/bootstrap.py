"""Bootstrap samples of the labelled training split: the single source of every arm's data.

The paper repeats each (arm, data fraction) setting ten times on bootstrap samples. Every arm of
one trial trains on the *same* sample, so arm differences are not confounded with sample
differences, and the trials can be paired across arms in the statistics.

Samples are drawn with replacement and stratified: each class gets a count proportional to its
share of the training split, and at least one. The rare rhythms of the Chapman set (AVRT 8,
SAAWR 7 records) would otherwise vanish from a 25 % sample now and then, and the classifier's
output layer would never see them.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

SAMPLE_COLUMNS = ("fraction", "trial", "seed", "position")


def trial_seeds(base_seed: int, n_trials: int) -> list[int]:
    """Independent seeds for trials 1..n_trials (trial k uses element k-1).

    SeedSequence.spawn gives statistically independent streams, unlike base_seed + k, whose
    neighbouring seeds can be correlated for some generators.
    """
    if n_trials < 1:
        raise ValueError(f"trial_seeds: n_trials must be >= 1, got {n_trials}")
    children = np.random.SeedSequence(int(base_seed)).spawn(int(n_trials))
    return [int(child.generate_state(1, dtype=np.uint32)[0]) for child in children]


def stratified_counts(class_sizes: np.ndarray, sample_size: int) -> np.ndarray:
    """Per-class counts proportional to class_sizes, each at least 1, summing to sample_size.

    Largest-remainder rounding keeps the shares as close to the split's as integers allow;
    the classes raised to 1 are paid for by the largest classes, which barely notice.
    """
    class_sizes = np.asarray(class_sizes, dtype=np.int64)
    n_classes = class_sizes.size
    if sample_size < n_classes:
        raise ValueError(
            f"stratified_counts: a sample of {sample_size} cannot hold all {n_classes} classes "
            "of the training split; raise the fraction or merge rare classes"
        )
    quotas = sample_size * class_sizes / class_sizes.sum()
    counts = np.maximum(np.floor(quotas).astype(np.int64), 1)
    remainders = quotas - counts  # negative for classes already raised to 1
    deficit = sample_size - int(counts.sum())
    if deficit > 0:
        # Sum of floors exceeds sample_size - n_classes, so deficit < n_classes: one pass.
        # lexsort breaks remainder ties by class order, keeping the allocation deterministic.
        order = np.lexsort((np.arange(n_classes), -remainders))
        counts[order[:deficit]] += 1
    while counts.sum() > sample_size:
        candidates = np.flatnonzero(counts > 1)
        surplus = counts[candidates] - quotas[candidates]
        c = candidates[np.argmax(surplus)]
        counts[c] -= 1
    return counts


def bootstrap_sample_with_redraws(
    train_labels: np.ndarray, fraction: float, seed: int, max_redraws: int = 1000
) -> tuple[np.ndarray, int]:
    """draw_bootstrap_sample, also returning how many draws were rejected for a missing class."""
    labels = _as_label_array(train_labels)
    if not (0.0 < float(fraction) <= 1.0):
        raise ValueError(f"draw_bootstrap_sample: fraction must be in (0, 1], got {fraction}")
    if max_redraws < 0:
        raise ValueError(f"draw_bootstrap_sample: max_redraws must be >= 0, got {max_redraws}")
    classes, class_index = np.unique(labels, return_inverse=True)
    class_sizes = np.bincount(class_index, minlength=classes.size)
    sample_size = int(round(float(fraction) * labels.size))
    counts = stratified_counts(class_sizes, sample_size)
    members = [np.flatnonzero(class_index == c) for c in range(classes.size)]
    # The fraction enters the generator's seed, so one trial seed gives independent samples
    # at 100 %, 50 % and 25 % and each (fraction, seed) pair always gives the same sample.
    rng = np.random.default_rng([int(seed), _fraction_key(fraction)])
    for redraws in range(max_redraws + 1):
        positions = np.concatenate(
            [rng.choice(idx, size=k, replace=True) for idx, k in zip(members, counts)]
        )
        if np.unique(class_index[positions]).size == classes.size:
            # Sorted positions read a memmapped window store front to back; the training
            # loop shuffles every epoch anyway.
            return np.sort(positions), redraws
    raise RuntimeError(
        f"draw_bootstrap_sample: no sample with all {classes.size} classes after "
        f"{max_redraws} redraws (fraction={fraction}, seed={seed})"
    )


def draw_bootstrap_sample(
    train_labels: np.ndarray, fraction: float, seed: int, max_redraws: int = 1000
) -> np.ndarray:
    """Positions into the training split for one trial: size round(fraction * n), with replacement.

    Stratification puts every class in by construction; the check-and-redraw loop stays as a
    guard so that a change to the allocation can never silently drop a class.
    """
    positions, redraws = bootstrap_sample_with_redraws(train_labels, fraction, seed, max_redraws)
    if redraws:
        logger.warning(
            "bootstrap sample (fraction=%s, seed=%s) needed %d redraws to hold every class",
            fraction,
            seed,
            redraws,
        )
    return positions


def draw_all_samples(
    train_labels: np.ndarray,
    fractions: tuple[float, ...] | list[float],
    n_trials: int,
    base_seed: int,
    max_redraws: int = 1000,
) -> pd.DataFrame:
    """Every (fraction, trial) sample in long format: one row per drawn position.

    Trials are numbered 1..n_trials; the seed column is the trial's seed from trial_seeds, shared
    by all fractions and arms of that trial (the model-initialisation seed can reuse it).
    """
    if len(fractions) == 0:
        raise ValueError("draw_all_samples: fractions is empty")
    if len(set(float(f) for f in fractions)) != len(fractions):
        raise ValueError(f"draw_all_samples: fractions repeat: {list(fractions)}")
    seeds = trial_seeds(base_seed, n_trials)
    frames = []
    for fraction in fractions:
        for trial, seed in enumerate(seeds, start=1):
            positions = draw_bootstrap_sample(train_labels, fraction, seed, max_redraws)
            frames.append(
                pd.DataFrame(
                    {
                        "fraction": np.full(positions.size, float(fraction)),
                        "trial": np.full(positions.size, trial, dtype=np.int64),
                        "seed": np.full(positions.size, seed, dtype=np.int64),
                        "position": positions.astype(np.int64),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def _fraction_key(fraction: float) -> int:
    # Integer parts per million: floats cannot seed a SeedSequence, and 0.25 and 0.250000001
    # are the same setting.
    return int(round(float(fraction) * 1_000_000))


def _as_label_array(train_labels) -> np.ndarray:
    labels = np.asarray(train_labels, dtype=object)
    if labels.ndim != 1:
        raise ValueError(
            f"draw_bootstrap_sample: train_labels must be 1-D, got shape {labels.shape}"
        )
    if labels.size == 0:
        raise ValueError("draw_bootstrap_sample: train_labels is empty")
    missing = pd.isna(labels)
    if missing.any():
        raise ValueError(
            f"draw_bootstrap_sample: {int(missing.sum())} training labels are missing "
            f"(first at position {int(np.flatnonzero(missing)[0])}); the training split "
            "must be labelled"
        )
    kinds = {type(v) for v in labels}
    if len(kinds) > 1 and not all(issubclass(k, (int, np.integer)) for k in kinds):
        raise ValueError(
            f"draw_bootstrap_sample: train_labels mix types {sorted(k.__name__ for k in kinds)}"
        )
    return labels
