"""The study's class list, decided from the labelled data: which labels are classes, in what order.

The class list is data, not a constant: readers hand over whatever label strings the
user's data has (after the reader's ``label_map`` / ``exclude_labels``), and the study's
classes follow from the labelled manifest. Class index = position in the list, so the
order fixes the classifier's output units and the metric columns (``f1_<class>``).

Order: the configured ``classes`` list when given (a label present in the data but not in
the list is an error, not a silent drop); otherwise by descending record count, ties in
alphabetical order (the bundled Chapman data then gives the 11 rhythms in the release's
own order, SB first, SAAWR last).

A class with fewer patients than a patient-level stratified split needs
(:func:`ecg_transfer.signals.splits.min_patients_per_class`) is excluded with its records
counted as ``class_too_small`` (``small_classes="exclude"``, the default) or refused with
an error naming the class and its patient count (``small_classes="error"``).

Label text is kept as the user wrote it in every table, figure and report (``f1_~``,
``f1_AF+flutter``). Where a name must be safe (MLflow metric and param keys, file names) it is
the class's **safe name**, by one rule (:func:`safe_class_name`): a label of 1-64 ASCII letters,
digits, ``_``, ``.`` and ``-`` (not dots only) is its own safe name; any other label becomes its
characters outside ``[A-Za-z0-9]`` collapsed to ``_`` (at most 40 characters, ``class`` when
nothing is left), ``-`` and the first 8 hex digits of the SHA-1 of its UTF-8 text: ``~`` ->
``class-<hash>``, ``AF+flutter`` -> ``AF_flutter-<hash>``, ``1st° AV block`` ->
``1st_AV_block-<hash>``. Distinct labels get distinct safe names (the hash; checked by
:func:`class_table`, which is the mapping, one row per class).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ecg_transfer.typed_config import config_from_params

SMALL_CLASS_RULES = ("exclude", "error")

# Columns of the tables of records that preprocessing leaves out (or pads): the ExclusionLog's
# columns plus the outcome ("excluded" or "padded"), so ingestion's tables and these concatenate.
DECISION_COLUMNS = ["dataset", "record_id", "source", "outcome", "reason", "detail"]


_SAFE_LABEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9]+")


def safe_class_name(label: str) -> str:
    """The name of class ``label`` where a name must be safe (MLflow keys, file names): the label
    itself when it is 1-64 of ``[A-Za-z0-9_.-]`` and not dots only, else a readable slug and a
    hash of the label (module docstring)."""
    text = str(label)
    if _SAFE_LABEL.fullmatch(text) and text.strip("."):
        return text
    slug = _UNSAFE_RUN.sub("_", text).strip("_")[:40] or "class"
    return f"{slug}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}"


def class_table(classes: Sequence[str]) -> pd.DataFrame:
    """The class list as a table: ``class_index``, ``label`` (the user's text) and ``safe_name``.
    A ValueError if two classes would share a safe name (a label that looks like another's
    derived name), so that it is found before anything trains."""
    labels = [str(c) for c in classes]
    table = pd.DataFrame({"class_index": range(len(labels)), "label": labels,
                          "safe_name": [safe_class_name(c) for c in labels]})
    shared = table[table["safe_name"].duplicated(keep=False)]
    if not shared.empty:
        pairs = shared.groupby("safe_name")["label"].apply(list).to_dict()
        raise ValueError(
            f"classes {sorted(pairs.values())} would share the safe name(s) {sorted(pairs)} used for MLflow keys "
            "and file names; rename one of them with the reader's `label_map`"
        )
    return table


@dataclass(frozen=True)
class ClassConfig:
    """``classes``: the class list in order, or None to take every label by frequency;
    ``small_classes``: what to do with a class too small to split ("exclude" or "error")."""

    classes: tuple[str, ...] | None = None
    small_classes: str = "exclude"

    def __post_init__(self) -> None:
        if self.small_classes not in SMALL_CLASS_RULES:
            raise ValueError(
                f"ClassConfig: small_classes must be one of {SMALL_CLASS_RULES}, got {self.small_classes!r}"
            )
        if self.classes is not None:
            if not self.classes:
                raise ValueError("ClassConfig: classes is an empty list; give the class names or null")
            duplicated = sorted({c for c in self.classes if self.classes.count(c) > 1})
            if duplicated:
                raise ValueError(f"ClassConfig: classes lists {duplicated} more than once")

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, where: str = "classes") -> ClassConfig:
        return config_from_params(cls, params, where)


def decision_rows(
    manifest: pd.DataFrame, outcome: str, reason: str, details: pd.Series | str, dataset: str = "labelled"
) -> pd.DataFrame:
    """Rows of DECISION_COLUMNS for the records of ``manifest`` (columns record_id, source)."""
    source = manifest["source"].astype(str) if "source" in manifest else pd.Series("", index=manifest.index)
    return pd.DataFrame(
        {
            "dataset": dataset,
            "record_id": manifest["record_id"].astype(str).to_numpy(),
            "source": source.to_numpy(),
            "outcome": outcome,
            "reason": reason,
            "detail": details.to_numpy() if isinstance(details, pd.Series) else details,
        },
        columns=DECISION_COLUMNS,
    )


def _ordered_classes(records: pd.Series, cfg: ClassConfig, dataset: str) -> list[str]:
    """The class order: ``cfg.classes`` when given (a label of the data outside it is an error
    naming it), else by descending record count, ties alphabetical. ``records``: label -> count."""
    if cfg.classes is None:
        return sorted(records.index, key=lambda label: (-int(records[label]), label))
    unknown = sorted(set(records.index) - set(cfg.classes))
    if unknown:
        counts = ", ".join(f"{label} ({records[label]} records)" for label in unknown)
        raise ValueError(
            f"{dataset}: label(s) not among the configured preprocessing.classes {list(cfg.classes)}: {counts}. "
            "Add them to `classes`, or leave them out at the reader with its `exclude_labels` option "
            "(or merge them with `label_map`)"
        )
    return list(cfg.classes)


def decide_classes(
    manifest: pd.DataFrame, cfg: ClassConfig, min_patients: int, dataset: str = "labelled"
) -> tuple[list[str], pd.DataFrame]:
    """(class list, rows of the records left out as ``class_too_small``) for a labelled manifest.

    ``manifest`` needs record_id, patient_id and label (and source, copied into the rows).
    Patients of a class = distinct patient_id among its records.
    """
    missing = [c for c in ("record_id", "patient_id", "label") if c not in manifest.columns]
    if missing:
        raise KeyError(f"decide_classes: the manifest lacks column(s) {missing} (has {list(manifest.columns)})")
    unlabelled = manifest["label"].isna()
    if unlabelled.any():
        named = manifest.loc[unlabelled, "record_id"].astype(str).tolist()
        raise ValueError(f"decide_classes: {len(named)} labelled record(s) have no label, e.g. {named[:5]}")
    labels = manifest["label"].astype(str)
    records = labels.value_counts()
    patients = manifest.groupby(labels)["patient_id"].nunique()

    ordered = _ordered_classes(records, cfg, dataset)

    small = {c: int(patients.get(c, 0)) for c in ordered if int(patients.get(c, 0)) < min_patients}
    if small and cfg.small_classes == "error":
        listed = ", ".join(f"{c} ({n} patient{'s' if n != 1 else ''})" for c, n in small.items())
        raise ValueError(
            f"{dataset}: class(es) with fewer than {min_patients} patients, the fewest that a patient-level "
            f"stratified split into train/val/test needs: {listed}. Set preprocessing.small_classes: exclude "
            "to leave their records out (counted), merge them with the reader's `label_map`, or lower the split "
            "fractions"
        )
    kept = [c for c in ordered if c not in small]
    dropped = manifest[labels.isin(list(small))]
    details = labels[dropped.index].map(
        lambda c: f"class {c} has {small[c]} patient(s), fewer than the {min_patients} a stratified split needs"
    )
    exclusions = decision_rows(dropped, "excluded", "class_too_small", details, dataset)
    if len(kept) < 2:
        raise ValueError(
            f"{dataset}: {len(kept)} class(es) left ({kept}) after leaving out the classes too small to split "
            f"({sorted(small)}); a classifier needs at least 2"
        )
    class_table(kept)  # names that MLflow or a file system would refuse: an error now, not per epoch
    return kept, exclusions


# ---------------------------------------------------------------- several labels per record

LABEL_SEPARATOR = ";"


def label_set(text) -> tuple[str, ...]:
    """The labels of a record under ``task: multilabel``: its manifest ``label`` cell split at
    ``;`` (``"AF;LBBB"``), stripped, empty parts dropped, deduplicated and sorted (one spelling
    per set, so equal sets compare equal as text). A missing cell is the empty set."""
    if text is None or (isinstance(text, float) and text != text):
        return ()
    return tuple(sorted({part.strip() for part in str(text).split(LABEL_SEPARATOR) if part.strip()}))


def join_label_set(labels) -> str:
    """The manifest cell of a label set: the sorted labels joined by ``;``. A label holding
    ``;`` cannot be told apart from two labels, so it is refused."""
    names = [str(name).strip() for name in labels]
    clash = [name for name in names if LABEL_SEPARATOR in name or not name]
    if clash:
        raise ValueError(f"label names {clash} are empty or hold {LABEL_SEPARATOR!r}, the separator of a label set")
    return LABEL_SEPARATOR.join(sorted(set(names)))


def target_matrix(cells, labels: Sequence[str]):
    """(N, K) int8 0/1 targets, column k = ``labels[k]``, built once from the manifest's label
    cells; labels of a cell outside ``labels`` (left out as too small) are ignored."""
    column = {name: k for k, name in enumerate(labels)}
    targets = np.zeros((len(cells), len(column)), dtype=np.int8)
    for row, cell in enumerate(cells):
        for name in label_set(cell):
            if name in column:
                targets[row, column[name]] = 1
    return targets


def decide_multilabel_classes(
    manifest: pd.DataFrame, cfg: ClassConfig, min_patients: int, dataset: str = "labelled"
) -> tuple[list[str], pd.DataFrame]:
    """(label list, rows of the records left out as ``class_too_small``) under ``task: multilabel``.

    A label's patients are the distinct patients with a record carrying it. A label with fewer
    than ``min_patients`` is dropped (or refused with ``small_classes: error``); a record whose
    every label is dropped is left out as ``class_too_small``; a record keeping at least one label
    stays, its dropped labels ignored (:func:`target_matrix`). Order: ``cfg.classes`` when
    given, else by descending record count, ties alphabetical (as :func:`decide_classes`).
    """
    missing = [c for c in ("record_id", "patient_id", "label") if c not in manifest.columns]
    if missing:
        raise KeyError(f"decide_multilabel_classes: the manifest lacks column(s) {missing} (has {list(manifest.columns)})")
    sets = manifest["label"].map(label_set)
    empty = sets.map(len) == 0
    if empty.any():
        named = manifest.loc[empty, "record_id"].astype(str).tolist()
        raise ValueError(f"{dataset}: {len(named)} labelled record(s) have no label, e.g. {named[:5]}")
    pairs = pd.DataFrame({"label": sets, "patient_id": manifest["patient_id"]}).explode("label")
    records = pairs["label"].value_counts()
    patients = pairs.groupby("label")["patient_id"].nunique()
    ordered = _ordered_classes(records, cfg, dataset)
    small = {c: int(patients.get(c, 0)) for c in ordered if int(patients.get(c, 0)) < min_patients}
    if small and cfg.small_classes == "error":
        listed = ", ".join(f"{c} ({n} patients)" for c, n in small.items())
        raise ValueError(f"{dataset}: label(s) with fewer than {min_patients} patients, the fewest that keeps positives "
                         f"in train, validation and test: {listed}. Set preprocessing.small_classes: exclude")
    kept = [c for c in ordered if c not in small]
    if not kept:
        raise ValueError(f"{dataset}: no label has {min_patients} patients; a multi-label task needs at least one")
    dropped = manifest[sets.map(lambda labels: not set(labels) & set(kept))]
    details = sets[dropped.index].map(
        lambda labels: "labels " + ", ".join(f"{c} ({small[c]} patients)" for c in labels)
        + f": each has fewer than the {min_patients} patients a stratified split needs"
    )
    class_table(kept)
    return kept, decision_rows(dropped, "excluded", "class_too_small", details, dataset)
