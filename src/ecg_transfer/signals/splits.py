"""Train / validation / test assignment: stratified by rhythm, grouped by patient, seeded.

The Chapman set has rhythms with 16, 8 and 7 records. A stratified split that only aims at
proportions (sklearn's StratifiedGroupKFold included) can leave such a class out of the
test or validation split, and then its F1 is undefined for the whole study. Patients are
therefore allocated class by class, with at least one patient of every class in each split
and two in train whenever the class has enough patients (:func:`min_patients_per_class`:
4 with a validation split, 3 without). Smaller classes are the class decision's business
(signals/classes.py): they are excluded or refused before a split is made.

No patient appears in two splits: a model must never be tested on a person it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ecg_transfer.signals.classes import label_set
from ecg_transfer.typed_config import config_from_params

_UNLABELLED = "\x00unlabelled"  # stratum key for label None; cannot collide with a rhythm name


@dataclass(frozen=True)
class SplitConfig:
    """Shares of patients per split (val_fraction of the whole, not of train) and the seed."""

    test_fraction: float = 0.2
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        _check_fractions(self.test_fraction, self.val_fraction, "SplitConfig")

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, where: str = "splits") -> SplitConfig:
        return config_from_params(cls, params, where)

    @property
    def min_patients_per_class(self) -> int:
        return min_patients_per_class(self.test_fraction, self.val_fraction)


def _check_fractions(test_fraction: float, val_fraction: float, where: str) -> None:
    if not 0 <= test_fraction < 1 or not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise ValueError(
            f"{where}: need 0 <= test_fraction, val_fraction and test_fraction + val_fraction < 1, "
            f"got test_fraction={test_fraction}, val_fraction={val_fraction}"
        )


def min_patients_per_class(test_fraction: float, val_fraction: float) -> int:
    """The fewest patients a class needs for one in test, one in val (each if used) and two in train."""
    return 2 + (1 if test_fraction > 0 else 0) + (1 if val_fraction > 0 else 0)


def _allocate(n: int, test_fraction: float, val_fraction: float) -> tuple[int, int]:
    """(n_test, n_val) patients of one class; the rest go to train.

    Rounded shares, raised to one patient per split when the class can afford it, with
    train kept at two patients when the class can afford that too (else one), and test
    served before val when patients are scarce.
    """
    min_test = 1 if test_fraction > 0 and n >= 2 else 0
    min_val = 1 if val_fraction > 0 and n >= 2 + min_test else 0
    min_train = max(1, min(2, n - min_test - min_val))
    n_test = max(int(round(n * test_fraction)), min_test)
    n_val = max(int(round(n * val_fraction)), min_val)
    # Keep the training patients: take back from whichever split is above its floor, the
    # larger first. Terminates because min_test + min_val <= n - min_train by construction.
    while n_test + n_val > n - min_train:
        if n_val > min_val and (n_val >= n_test or n_test == min_test):
            n_val -= 1
        else:
            n_test -= 1
    return n_test, n_val


def assign_splits(
    index: pd.DataFrame,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> pd.Series:
    """"train" / "val" / "test" for every row of `index` (columns patient_id, label).

    Fractions are shares of the patients of each class (val_fraction of the whole, not of
    train: 0.2 / 0.1 gives 70 / 10 / 20). Rows of one patient share a split. A patient
    with rows of several labels is stratified by its most frequent label (ties: the
    alphabetically first). Label None forms its own stratum, so an unlabelled corpus gets
    a plain grouped random split (call it with val_fraction=0 for the paper's 8:2).
    """
    for col in ("patient_id", "label"):
        if col not in index.columns:
            raise ValueError(f"assign_splits: index lacks column {col!r} (has {list(index.columns)})")
    _check_fractions(test_fraction, val_fraction, "assign_splits")
    missing = index["patient_id"].isna()
    if missing.any():
        named = index.loc[missing, "record_id"].astype(str).tolist()[:5] if "record_id" in index else []
        raise ValueError(
            f"assign_splits: patient_id has missing values in {int(missing.sum())} rows"
            + (f" (records {named})" if named else "")
            + "; every row needs a patient"
        )
    if len(index) == 0:
        return pd.Series([], index=index.index, name="split", dtype=object)

    patients = index["patient_id"].astype(str).to_numpy()
    labels = index["label"].astype(object)
    labels = labels.where(pd.notna(labels), _UNLABELLED).astype(str).to_numpy()

    counts = pd.DataFrame({"patient": patients, "label": labels}).value_counts().reset_index(name="n")
    # Most frequent label per patient, ties to the alphabetically first label.
    counts = counts.sort_values(["patient", "n", "label"], ascending=[True, False, True])
    stratum_of_patient = counts.drop_duplicates("patient").set_index("patient")["label"]

    rng = np.random.default_rng(seed)
    split_of_patient: dict[str, str] = {}
    for stratum in sorted(stratum_of_patient.unique()):
        members = np.sort(stratum_of_patient.index[stratum_of_patient.to_numpy() == stratum].to_numpy())
        members = members[rng.permutation(members.size)]
        n_test, n_val = _allocate(members.size, test_fraction, val_fraction)
        for i, patient in enumerate(members):
            split_of_patient[patient] = "test" if i < n_test else "val" if i < n_test + n_val else "train"

    return pd.Series(
        [split_of_patient[p] for p in patients], index=index.index, name="split", dtype=object
    )


def assign_multilabel_splits(
    index: pd.DataFrame,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    labels=None,
) -> pd.Series:
    """"train" / "val" / "test" for every row of ``index`` (columns patient_id, label: a
    ``;``-joined label set, :func:`~ecg_transfer.signals.classes.label_set`), grouped by patient.

    Iterative stratification (Sechidis, Tsoumakas & Vlahavas 2011, "On the stratification of
    multi-label data"), with patients as the units and a patient's labels the union of its
    records': every label wants :func:`_allocate`'s patient counts per split (at least one in
    test and val, two in train, when the label has :func:`min_patients_per_class` patients);
    the label with the fewest unassigned patients goes first, its patients (in a seeded order)
    each to the split that still wants most of that label (ties: the split that wants most
    patients overall, then train, val, test). Patients without labels fill the splits' remaining
    shares. Then a repair pass: a split left without a label's positive takes one from a split
    with positives to spare, a patient whose move empties no other label's split. A label that
    cannot be kept in all three splits (too few patients: leave it out first,
    :func:`~ecg_transfer.signals.classes.decide_multilabel_classes`) is an error naming it.
    ``labels``: the labels that stratify (the decided label list); None: every label found.
    """
    for col in ("patient_id", "label"):
        if col not in index.columns:
            raise ValueError(f"assign_multilabel_splits: index lacks column {col!r} (has {list(index.columns)})")
    _check_fractions(test_fraction, val_fraction, "assign_multilabel_splits")
    if index["patient_id"].isna().any():
        raise ValueError("assign_multilabel_splits: patient_id has missing values; every row needs a patient")
    if len(index) == 0:
        return pd.Series([], index=index.index, name="split", dtype=object)
    patients = index["patient_id"].astype(str).to_numpy()
    sets = pd.DataFrame({"patient": patients, "label": index["label"].map(label_set)}).explode("label").dropna()
    if labels is not None:
        sets = sets[sets["label"].isin([str(name) for name in labels])]
    labels_of = sets.groupby("patient")["label"].agg(lambda values: sorted(set(values))).to_dict()
    split_of = _iterative_stratification(np.unique(patients), labels_of, test_fraction, val_fraction, seed)
    _repair(split_of, labels_of, test_fraction, val_fraction)
    return pd.Series([_SPLITS[split_of[p]] for p in patients], index=index.index, name="split", dtype=object)


_SPLITS = ("train", "val", "test")


def _wanted(n: int, test_fraction: float, val_fraction: float) -> np.ndarray:
    n_test, n_val = _allocate(n, test_fraction, val_fraction)
    return np.array([n - n_test - n_val, n_val, n_test], dtype=float)


def _iterative_stratification(patients, labels_of, test_fraction, val_fraction, seed) -> dict[str, int]:
    """Patient -> split position (0 train, 1 val, 2 test); see :func:`assign_multilabel_splits`."""
    rng = np.random.default_rng(seed)
    patients = patients[rng.permutation(patients.size)]
    members: dict[str, list[str]] = {}
    for patient in patients:
        for label in labels_of.get(patient, ()):
            members.setdefault(label, []).append(patient)
    wants = {label: _wanted(len(group), test_fraction, val_fraction) for label, group in members.items()}
    overall = _wanted(patients.size, test_fraction, val_fraction)
    split_of: dict[str, int] = {}
    remaining = {label: list(group) for label, group in members.items()}
    while any(remaining.values()):
        label = min((lbl for lbl, group in remaining.items() if group), key=lambda lbl: (len(remaining[lbl]), lbl))
        for patient in remaining[label]:
            split = int(np.lexsort((np.arange(3), -overall, -wants[label]))[0])
            split_of[patient] = split
            overall[split] -= 1
            for other in labels_of[patient]:
                wants[other][split] -= 1
        assigned = set(remaining[label])
        remaining = {lbl: [p for p in group if p not in assigned] for lbl, group in remaining.items()}
    for patient in patients:  # no label: the splits' remaining shares
        if patient not in split_of:
            split = int(np.lexsort((np.arange(3), -overall))[0])
            split_of[patient] = split
            overall[split] -= 1
    return split_of


def _repair(split_of: dict[str, int], labels_of, test_fraction: float, val_fraction: float) -> None:
    """Move patients so that every label has a positive patient in every split it must have."""
    needed = [0] + ([1] if val_fraction > 0 else []) + ([2] if test_fraction > 0 else [])
    labels = sorted({label for group in labels_of.values() for label in group})
    counts = {(label, split): 0 for label in labels for split in range(3)}
    for patient, split in split_of.items():
        for label in labels_of.get(patient, ()):
            counts[label, split] += 1
    for label in labels:
        for split in needed:
            if counts[label, split] > 0:
                continue
            donors = [p for p in sorted(split_of) if label in labels_of.get(p, ()) and
                      all(counts[other, split_of[p]] > 1 for other in labels_of[p])]
            if not donors:
                raise ValueError(
                    f"assign_multilabel_splits: label {label!r} cannot have a positive patient in every split "
                    f"({', '.join(_SPLITS[s] for s in needed)}); leave it out as too small (preprocessing."
                    "small_classes: exclude) or lower the split fractions"
                )
            for other in labels_of[donors[0]]:
                counts[other, split_of[donors[0]]] -= 1
                counts[other, split] += 1
            split_of[donors[0]] = split
