"""Labelled records that also sit in the unlabelled (pretraining) corpus.

A record copied from the labelled set into the pretraining folder lets the CAE see a test
record before the classifiers are evaluated on it: a leak no reader can see, because each
reader reads only its own folder. It is found after reading and before windowing, from the
two manifests: by content (:func:`signal_hash`, the hash of the samples as read, so a copy
in another folder or under another name is found) and by record id (the record's name, so a
copy stored in another format or at another gain is found too).
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

OVERLAP_COLUMNS = [
    "dataset", "record_id", "source", "outcome", "reason", "detail",
    "matched_by", "labelled_record_id", "labelled_split",
]
# The split of a labelled record that preprocessing left out of the study (too short, a class
# too small): it is in no split, but still a labelled record.
NOT_IN_A_SPLIT = "none"


def signal_hash(signal: np.ndarray) -> str:
    """The SHA-256 of a lead's samples as float64 (the reader's millivolts): equal samples,
    equal hash, whatever the file, folder or name they were read from."""
    samples = np.ascontiguousarray(np.asarray(signal, dtype=np.float64))
    return hashlib.sha256(samples.tobytes()).hexdigest()


def _record_name(record_id: object) -> str:
    return PurePosixPath(str(record_id)).name


def _require_hashes(manifest: pd.DataFrame, name: str) -> None:
    if "content_hash" not in manifest:
        raise ValueError(
            f"{name} has no content_hash column: it was written by an older version of the "
            "ingestion pipeline. Run `kedro run --pipeline=ingestion` again"
        )


def find_overlap(
    unlabelled_manifest: pd.DataFrame, labelled_manifest: pd.DataFrame, labelled_splits: pd.DataFrame
) -> pd.DataFrame:
    """One row per unlabelled record that is a labelled one, matched by content or by name.

    Columns: ``record_id``, ``source`` (the unlabelled record), ``matched_by`` (``content``,
    ``record_id`` or ``content+record_id``), ``labelled_record_id`` and ``labelled_split``
    (train / val / test, or ``none`` for a labelled record the study left out). A content
    match wins over a name match when the two point at different labelled records.
    """
    _require_hashes(unlabelled_manifest, "unlabelled_manifest")
    _require_hashes(labelled_manifest, "labelled_manifest")
    labelled = labelled_manifest.assign(record_id=labelled_manifest["record_id"].astype(str))
    labelled = labelled.sort_values("record_id", kind="stable").assign(name=lambda m: m["record_id"].map(_record_name))
    # the first labelled record (by id) of each content and of each name
    by_content = labelled.drop_duplicates("content_hash").set_index("content_hash")["record_id"].to_dict()
    by_name = labelled.drop_duplicates("name").set_index("name")["record_id"].to_dict()
    split_of = dict(zip(labelled_splits["record_id"].astype(str), labelled_splits["split"].astype(str)))
    rows = []
    for record_id, source, content in zip(
        unlabelled_manifest["record_id"].astype(str), unlabelled_manifest["source"].astype(str),
        unlabelled_manifest["content_hash"],
    ):
        same_content, same_name = by_content.get(content), by_name.get(_record_name(record_id))
        if same_content is None and same_name is None:
            continue
        match = same_content if same_content is not None else same_name
        how = [kind for kind, found in (("content", same_content), ("record_id", same_name)) if found == match]
        rows.append({"record_id": record_id, "source": source, "matched_by": "+".join(how),
                     "labelled_record_id": match, "labelled_split": split_of.get(match, NOT_IN_A_SPLIT)})
    return pd.DataFrame(rows, columns=["record_id", "source", "matched_by", "labelled_record_id", "labelled_split"])


def overlap_decisions(overlap: pd.DataFrame, exclude: bool) -> pd.DataFrame:
    """The overlap as rows of the exclusions report: outcome ``excluded`` (left out of
    pretraining) or ``kept``, reason ``labelled_overlap``, and a detail a person can read."""
    detail = (
        "same " + overlap["matched_by"].str.replace("+", " and ", regex=False) + " as labelled record "
        + overlap["labelled_record_id"] + " (" + overlap["labelled_split"] + " split)"
    )
    decisions = overlap.assign(
        dataset="unlabelled", outcome="excluded" if exclude else "kept", reason="labelled_overlap",
        detail=detail if len(overlap) else pd.Series(dtype=str),
    )
    return decisions[OVERLAP_COLUMNS].reset_index(drop=True)
