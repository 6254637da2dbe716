"""Bootstrap samples of the labelled training split: the single source of every arm's data.

The paper repeats each (arm, data fraction) setting ten times on bootstrap samples. Every arm of
one trial trains on the *same* sample, so arm differences are not confounded with sample
differences, and the trials can be paired across arms in the statistics.

Samples are drawn with replacement and stratified: each class gets a count proportional to its
share of the training split, and at least one. The rare rhythms of the Chapman set (AVRT 8,
SAAWR 7 records) would otherwise vanish from a 25 % sample now and then, and the classifier's
output layer would never see them.

The unit of resampling is the unit of independence: the *patient*. Pass ``patients`` (the
patient id of every training window) and a drawn patient brings all their records and windows
(a cluster bootstrap); pass only ``records`` and a drawn record brings all its windows. A
patient's stratum is their most frequent label (ties to the first in sorted order), the rule
the patient-level splits use (signals/splits.py). With one window per record and one record per
patient every variant is exactly the window-level draw (the same positions, bit for bit), so
the bundled data's samples do not move.
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
    train_labels: np.ndarray,
    fraction: float,
    seed: int,
    max_redraws: int = 1000,
    records: np.ndarray | None = None,
    patients: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """draw_bootstrap_sample, also returning how many draws were rejected for a missing class."""
    labels = _as_label_array(train_labels)
    if not (0.0 < float(fraction) <= 1.0):
        raise ValueError(f"draw_bootstrap_sample: fraction must be in (0, 1], got {fraction}")
    if max_redraws < 0:
        raise ValueError(f"draw_bootstrap_sample: max_redraws must be >= 0, got {max_redraws}")
    units = _Units(labels, records, patients)
    classes, class_index = np.unique(units.labels, return_inverse=True)
    all_classes = np.unique(labels).size  # a minority label of a patient is no stratum, yet counts
    class_sizes = np.bincount(class_index, minlength=classes.size)
    sample_size = int(round(float(fraction) * units.labels.size))
    counts = stratified_counts(class_sizes, sample_size)
    members = [np.flatnonzero(class_index == c) for c in range(classes.size)]
    # The fraction enters the generator's seed, so one trial seed gives independent samples
    # at 100 %, 50 % and 25 % and each (fraction, seed) pair always gives the same sample.
    rng = np.random.default_rng([int(seed), _fraction_key(fraction)])
    for redraws in range(max_redraws + 1):
        drawn = np.concatenate(
            [rng.choice(idx, size=k, replace=True) for idx, k in zip(members, counts)]
        )
        positions = units.positions(drawn)
        if np.unique(labels[positions]).size == all_classes:
            # Sorted positions read a memmapped window store front to back; the training
            # loop shuffles every epoch anyway.
            return np.sort(positions), redraws
    raise RuntimeError(
        f"draw_bootstrap_sample: no sample with all {all_classes} classes after "
        f"{max_redraws} redraws (fraction={fraction}, seed={seed})"
    )


class _Units:
    """What the sample draws: windows, records with all their windows, or patients with all
    their records' windows.

    Units are numbered in the order of their first window, so with one window per unit, unit i
    is window i and the draw is the window-level draw exactly.
    """

    def __init__(self, labels: np.ndarray, records: np.ndarray | None, patients: np.ndarray | None = None):
        self._windows = None
        self.labels = labels
        if records is not None:
            codes, uniques = _unit_codes(records, labels, "records", "record")
            mixed = np.flatnonzero(pd.Series(labels).groupby(codes).nunique().to_numpy() > 1)
            if mixed.size:
                raise ValueError(
                    f"draw_bootstrap_sample: record {uniques[mixed[0]]!r} has windows of several labels; "
                    "a record has one label"
                )
        if patients is None and records is None:
            return
        codes, _ = _unit_codes(patients if patients is not None else records, labels, "patients", "patient")
        self.labels = _stratum_labels(labels, codes)
        if self.labels.size < codes.size:  # several windows per unit: remember them
            order = np.argsort(codes, kind="stable")
            sizes = np.bincount(codes, minlength=self.labels.size)
            self._windows = (order, np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)

    def positions(self, drawn: np.ndarray) -> np.ndarray:
        """Window positions of the drawn units (a record drawn twice gives its windows twice)."""
        if self._windows is None:
            return drawn
        order, starts, sizes = self._windows
        lengths = sizes[drawn]
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return order[np.repeat(starts[drawn], lengths) + offsets]


def _unit_codes(ids, labels: np.ndarray, name: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of the units in order of first appearance, and the unit ids."""
    ids = np.asarray(ids, dtype=object)
    if ids.shape != labels.shape:
        raise ValueError(
            f"draw_bootstrap_sample: {name} has {ids.size} entries but train_labels "
            f"{labels.size}; give the {what} id of every training window"
        )
    if pd.isna(ids).any():
        raise ValueError(f"draw_bootstrap_sample: {name} holds missing {what} ids")
    return pd.factorize(ids, sort=False)


def _stratum_labels(labels: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """One label per unit: its windows' label, or the most frequent one (ties to the first in
    sorted order) for a patient whose records carry several labels."""
    _, first = np.unique(codes, return_index=True)
    strata = labels[first]
    mixed = np.flatnonzero(pd.Series(labels).groupby(codes).nunique().to_numpy() > 1)
    for unit in mixed:
        values, counts = np.unique(labels[codes == unit], return_counts=True)
        strata[unit] = values[np.argmax(counts)]  # np.unique sorts; argmax takes the first maximum
    return strata


def draw_bootstrap_sample(
    train_labels: np.ndarray,
    fraction: float,
    seed: int,
    max_redraws: int = 1000,
    records: np.ndarray | None = None,
    patients: np.ndarray | None = None,
) -> np.ndarray:
    """Positions into the training split for one trial, drawn with replacement.

    Without ``records`` or ``patients``: round(fraction * n) windows. With ``records`` (the
    record id of each training window): round(fraction * n_records) records, each with all its
    windows. With ``patients``: round(fraction * n_patients) patients, each with all their windows.
    Stratification puts every class in by construction; the check-and-redraw loop stays as a
    guard so that a change to the allocation can never silently drop a class.
    """
    positions, redraws = bootstrap_sample_with_redraws(train_labels, fraction, seed, max_redraws, records, patients)
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
    records: np.ndarray | None = None,
    patients: np.ndarray | None = None,
) -> pd.DataFrame:
    """Every (fraction, trial) sample in long format: one row per drawn position.

    Trials are numbered 1..n_trials; the seed column is the trial's seed from trial_seeds, shared
    by all fractions and arms of that trial (the model-initialisation seed can reuse it).
    ``records`` / ``patients`` (id per training window) make the samples draw records / patients
    (the cluster bootstrap), see the module. ``train_labels`` of shape (N, K), 0/1 targets of a
    multi-label task, draw with :func:`draw_multilabel_bootstrap_sample` (``max_redraws`` unused).
    """
    if len(fractions) == 0:
        raise ValueError("draw_all_samples: fractions is empty")
    if len(set(float(f) for f in fractions)) != len(fractions):
        raise ValueError(f"draw_all_samples: fractions repeat: {list(fractions)}")
    seeds = trial_seeds(base_seed, n_trials)
    frames = []
    for fraction in fractions:
        for trial, seed in enumerate(seeds, start=1):
            if np.ndim(train_labels) == 2:
                positions = draw_multilabel_bootstrap_sample(train_labels, fraction, seed, records, patients)
            else:
                positions = draw_bootstrap_sample(train_labels, fraction, seed, max_redraws, records, patients)
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


def sample_sizes(bootstrap_samples: pd.DataFrame, train_records=None, train_patients=None) -> pd.DataFrame:
    """Per fraction: how many training windows, records and patients a sample holds on average.

    ``train_records`` / ``train_patients`` are the record / patient id of every training window
    (position i -> window i); without records every window is its own record, without patients
    every record is its own patient.
    ``unique_share`` is unique / drawn patients (the unit the sample draws): sampling n of n
    with replacement keeps about 1 - 1/e = 63 % distinct units, a quarter of n about 88 %.
    """
    missing = {"fraction", "trial", "position"} - set(bootstrap_samples.columns)
    if missing:
        raise ValueError(f"sample_sizes: bootstrap_samples lacks columns {sorted(missing)}")
    positions = bootstrap_samples["position"].to_numpy(dtype=np.int64)
    per_trial = {"fraction": bootstrap_samples["fraction"].to_numpy(dtype=float),
                 "trial": bootstrap_samples["trial"].to_numpy()}
    counts = {}
    for unit, ids in (("records", train_records), ("patients", train_patients if train_patients is not None else train_records)):
        known = ids is not None
        ids = np.asarray(ids, dtype=object) if known else np.arange(int(positions.max()) + 1 if positions.size else 0)
        if positions.size and positions.max() >= len(ids):
            raise ValueError(
                f"sample_sizes: position {int(positions.max())} lies outside the training split "
                f"of {len(ids)} windows; the samples belong to other data"
            )
        codes, uniques = pd.factorize(pd.Series(ids, dtype=object), sort=False)
        drawn = codes[positions]
        per_trial[unit] = drawn
        # a unit drawn once contributes all its windows: 1 / windows per row
        per_trial[f"{unit}_draw"] = 1.0 / np.bincount(codes)[drawn]
        counts[unit] = int(uniques.size) if known else np.nan
    per_trial = (
        pd.DataFrame(per_trial)
        .groupby(["fraction", "trial"])
        .agg(windows=("records", "size"), records_drawn=("records_draw", "sum"), unique_records=("records", "nunique"),
             patients_drawn=("patients_draw", "sum"), unique_patients=("patients", "nunique"))
    )
    table = per_trial.groupby(level="fraction").agg(
        trials=("windows", "size"),
        windows_mean=("windows", "mean"),
        records_drawn_mean=("records_drawn", "mean"),
        unique_records_mean=("unique_records", "mean"),
        unique_records_min=("unique_records", "min"),
        unique_records_max=("unique_records", "max"),
        patients_drawn_mean=("patients_drawn", "mean"),
        unique_patients_mean=("unique_patients", "mean"),
    )
    table = table.sort_index(ascending=False).reset_index()
    table["records_drawn_mean"] = table["records_drawn_mean"].round(6)
    table["patients_drawn_mean"] = table["patients_drawn_mean"].round(6)
    table["unique_share"] = table["unique_patients_mean"] / table["patients_drawn_mean"]
    table["training_records"] = counts["records"]
    table["training_patients"] = counts["patients"]
    return table


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


def draw_multilabel_bootstrap_sample(
    train_targets: np.ndarray,
    fraction: float,
    seed: int,
    records: np.ndarray | None = None,
    patients: np.ndarray | None = None,
) -> np.ndarray:
    """Positions into the training split for one multi-label trial (``task: multilabel``).

    ``train_targets``: (N, K) 0/1, one column per label. The units (windows, records or
    patients, as :func:`draw_bootstrap_sample`) are drawn with replacement, round(fraction x
    n_units) of them, so that every label has a positive unit in the sample *by construction*,
    not by redrawing: first one unit per label, drawn uniformly among that label's positive
    units, the rarest label first and a label already covered by an earlier pick skipped; then
    the rest uniformly among all units. Rare labels thus get at least one unit, the others
    their share of a plain draw. Proportional strata, as the single-label draw uses, do not
    exist when a unit carries several labels. A unit's labels are the union of its windows'.
    """
    targets = np.asarray(train_targets)
    if targets.ndim != 2 or targets.shape[0] == 0 or not np.isin(targets, (0, 1)).all():
        raise ValueError(f"draw_multilabel_bootstrap_sample: train_targets must be a non-empty (N, K) 0/1 array, "
                         f"got shape {targets.shape}")
    if not (0.0 < float(fraction) <= 1.0):
        raise ValueError(f"draw_multilabel_bootstrap_sample: fraction must be in (0, 1], got {fraction}")
    set_codes = pd.factorize(pd.Series([row.tobytes() for row in targets.astype(np.int8)]), sort=False)[0]
    units = _Units(set_codes.astype(np.int64), records, patients)  # refuses a record with several label sets
    ids = patients if patients is not None else records
    codes = np.arange(targets.shape[0]) if ids is None else _unit_codes(ids, set_codes, "units", "unit")[0]
    unit_targets = np.zeros((units.labels.size, targets.shape[1]), dtype=bool)
    np.logical_or.at(unit_targets, codes, targets.astype(bool))
    missing = np.flatnonzero(~unit_targets.any(axis=0))
    if missing.size:
        raise ValueError(f"draw_multilabel_bootstrap_sample: label columns {missing.tolist()} have no positive "
                         "in the training split")
    sample_size = int(round(float(fraction) * units.labels.size))
    rng = np.random.default_rng([int(seed), _fraction_key(fraction)])
    picked: list[int] = []
    for label in np.lexsort((np.arange(targets.shape[1]), unit_targets.sum(axis=0))):
        if picked and unit_targets[picked, label].any():
            continue
        picked.append(int(rng.choice(np.flatnonzero(unit_targets[:, label]))))
    if len(picked) > sample_size:
        raise ValueError(f"draw_multilabel_bootstrap_sample: a sample of {sample_size} units cannot hold a positive of "
                         f"every label ({len(picked)} units needed); raise the fraction")
    rest = rng.choice(units.labels.size, size=sample_size - len(picked), replace=True)
    return np.sort(units.positions(np.concatenate([np.asarray(picked, dtype=np.int64), rest])))
