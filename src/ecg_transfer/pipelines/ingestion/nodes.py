"""Ingestion: read every source once, keeping a manifest of the records that pass and a row
for each one that does not, so nothing is dropped silently.

The report of what became of every record (:func:`report_ingestion`) is a node of the
preprocessing pipeline, after decide_label_classes, so it counts preprocessing's exclusions
too."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ecg_transfer.signals.leads import parse_leads, reading, study_leads
from ecg_transfer.signals.overlap import signal_hash
from ecg_transfer.signals.records import ExclusionLog, RecordSource, is_simulated

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    "record_id", "patient_id", "label", "fs", "n_samples", "duration_s", "lead", "source",
    "simulated", "nan_samples", "content_hash",
]
REPORT_COLUMNS = ["dataset", "stage", "outcome", "reason", "count"]


def _scan(source: RecordSource, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not isinstance(source, RecordSource):
        raise TypeError(
            f"{dataset}: {source!r} is not a record source (it needs .root and "
            f".iter_records(exclusions)); check the catalog entry's type"
        )
    exclusions = ExclusionLog()
    simulated = is_simulated(source.root)
    rows = [
        {
            "record_id": record.record_id,
            "patient_id": record.patient_id,
            "label": record.label,
            "fs": float(record.fs),
            "n_samples": record.n_samples,
            "duration_s": record.n_samples / float(record.fs),
            "lead": record.lead,
            "source": record.source,
            "simulated": simulated,
            # NaN samples are gaps the reader let through (allow_nan_gaps); 0 for most readers
            "nan_samples": int(np.isnan(record.signal).sum()),
            # the samples as read: finds a labelled record copied into the unlabelled corpus
            "content_hash": signal_hash(record.signal),
        }
        for record in source.iter_records(exclusions)
    ]
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).astype(
        {"simulated": bool, "nan_samples": "int64"}
    )
    excluded = exclusions.to_frame()
    excluded["dataset"] = dataset
    with_gaps = int((manifest["nan_samples"] > 0).sum())
    logger.info(
        "%s: %d records accepted%s, %d excluded (%s)", dataset, len(manifest),
        f" ({with_gaps} with NaN gaps, {int(manifest['nan_samples'].sum())} NaN samples)"
        if with_gaps else "",
        len(excluded), "simulated data" if simulated else "no synthetic marker: real data",
    )
    return manifest, excluded


def _leads_setting(preprocessing: dict | None) -> tuple[str, ...] | str:
    return parse_leads((preprocessing or {}).get("leads", ["II"]))


def scan_labelled_records(
    labelled_recordings: RecordSource, preprocessing: dict | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every labelled record once (the leads of ``preprocessing.leads``; for ``all``,
    the standard leads all its records share): the records that pass, and the exclusions
    (a record lacking a lead is ``missing_lead``, naming it)."""
    leads = study_leads(_leads_setting(preprocessing), source=labelled_recordings)
    return _scan(reading(labelled_recordings, leads), "labelled")


def scan_unlabelled_records(
    unlabelled_recordings: RecordSource,
    scanned_labelled_manifest: pd.DataFrame | None = None,
    preprocessing: dict | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every unlabelled recording once, in the labelled records' leads: the records
    that pass, and the exclusions."""
    setting = _leads_setting(preprocessing)
    manifest_leads = scanned_labelled_manifest["lead"] if setting == "all" and scanned_labelled_manifest is not None else None
    leads = study_leads(setting, manifest_leads=manifest_leads)
    return _scan(reading(unlabelled_recordings, leads), "unlabelled")


def _require_records(
    source: RecordSource, scanned: pd.DataFrame, exclusions: pd.DataFrame, dataset: str
) -> pd.DataFrame:
    """The manifest, or an error when no record passed.

    A node of its own, after the scan, so that the exclusions are saved before it fails and
    the report the message points at exists.
    """
    if not scanned.empty:
        return scanned
    counts = exclusions["reason"].value_counts().sort_index()
    found = (
        ", ".join(f"{reason}: {count}" for reason, count in counts.items())
        if len(counts) else "no record found at all"
    )
    raise ValueError(
        f"{dataset}: no usable record in {source!r} ({found}). Every excluded record is "
        f"listed with its file and reason in the exclusions report `{dataset}_exclusions` "
        f"(by default data/08_reporting/ingestion/{dataset}_exclusions.csv), saved before "
        f"this check; docs/own_data.md explains each reason"
    )


def check_labelled_records(
    labelled_recordings: RecordSource, scanned: pd.DataFrame, labelled_exclusions: pd.DataFrame
) -> pd.DataFrame:
    """The labelled manifest, once it is known to hold at least one record."""
    return _require_records(labelled_recordings, scanned, labelled_exclusions, "labelled")


def check_unlabelled_records(
    unlabelled_recordings: RecordSource, scanned: pd.DataFrame, unlabelled_exclusions: pd.DataFrame
) -> pd.DataFrame:
    """The unlabelled manifest, once it is known to hold at least one record."""
    return _require_records(unlabelled_recordings, scanned, unlabelled_exclusions, "unlabelled")


def report_ingestion(
    labelled_manifest: pd.DataFrame,
    labelled_exclusions: pd.DataFrame,
    unlabelled_manifest: pd.DataFrame,
    unlabelled_exclusions: pd.DataFrame,
    labelled_class_exclusions: pd.DataFrame,
    unlabelled_overlap: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One table a person can read: what became of every record, by dataset, stage and reason.

    ``stage`` says who decided: ``ingestion`` (the readers' checks: ``accepted``,
    ``excluded`` per reason, ``accepted_by_label``, and ``accepted_with_gaps``, the
    recordings let through with NaN gaps) or ``preprocessing`` (``labelled_class_exclusions``
    from decide_label_classes: ``excluded`` as too_short or class_too_small, ``padded``,
    then ``used`` and ``used_by_label``, the labelled records the study goes on with; and
    the unlabelled recordings that are labelled records, ``excluded`` from pretraining or
    ``kept``, counted per labelled split as reason ``labelled_overlap_<split>``). So
    every record left out is counted under its reason; the exclusion CSVs list each one.
    """
    rows: list[dict[str, object]] = []

    def add(dataset: str, stage: str, outcome: str, reason: object, count: int) -> None:
        rows.append({"dataset": dataset, "stage": stage, "outcome": outcome,
                     "reason": reason, "count": int(count)})

    for dataset, manifest, excluded in (
        ("labelled", labelled_manifest, labelled_exclusions),
        ("unlabelled", unlabelled_manifest, unlabelled_exclusions),
    ):
        add(dataset, "ingestion", "accepted", "", len(manifest))
        for reason, count in excluded.groupby("reason", dropna=False).size().items():
            add(dataset, "ingestion", "excluded", reason, count)
        if "label" in manifest and manifest["label"].notna().any():
            for label, count in manifest["label"].value_counts().sort_index().items():
                add(dataset, "ingestion", "accepted_by_label", label, count)
        if "nan_samples" in manifest:
            with_gaps = int((manifest["nan_samples"] > 0).sum())
            if with_gaps:
                add(dataset, "ingestion", "accepted_with_gaps", "nan_gaps", with_gaps)

    if unlabelled_overlap is not None:
        for (outcome, split), count in unlabelled_overlap.groupby(
            ["outcome", "labelled_split"], sort=True
        ).size().items():
            add("unlabelled", "preprocessing", outcome, f"labelled_overlap_{split}", count)
    decided = labelled_class_exclusions
    for (outcome, reason), count in decided.groupby(["outcome", "reason"], sort=True).size().items():
        add("labelled", "preprocessing", outcome, reason, count)
    left_out = set(decided.loc[decided["outcome"] == "excluded", "record_id"].astype(str))
    used = labelled_manifest[~labelled_manifest["record_id"].astype(str).isin(left_out)]
    add("labelled", "preprocessing", "used", "", len(used))
    if "label" in used and used["label"].notna().any():
        for label, count in used["label"].value_counts().sort_index().items():
            add("labelled", "preprocessing", "used_by_label", label, count)
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)
