"""Ingestion: make the bundled data, then read every source once, keeping a manifest of
the records that pass and a row for each one that does not, so nothing is dropped silently."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from ecg_transfer.signals.records import ExclusionLog
from ecg_transfer.signals.synthetic import simulate_chapman_release, simulate_monitor_corpus

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["record_id", "patient_id", "label", "fs", "n_samples", "duration_s", "lead", "source"]


def simulate_labelled_release(bundled_data: dict[str, Any]):
    """The bundled stand-in for the Chapman-Shaoxing release, written by the catalog in its format."""
    labelled = bundled_data["labelled"]
    return simulate_chapman_release(
        n_records=int(labelled["n_records"]),
        seed=int(bundled_data["seed"]),
        min_per_class=int(labelled["min_per_class"]),
    )


def simulate_unlabelled_corpus(bundled_data: dict[str, Any]):
    """The bundled stand-in for the bedside-monitor corpus, written by the catalog as WFDB."""
    unlabelled = bundled_data["unlabelled"]
    return simulate_monitor_corpus(
        n_patients=int(unlabelled["n_patients"]),
        seconds_per_patient=float(unlabelled["seconds_per_patient"]),
        seed=int(bundled_data["seed"]) + 1,
        sampling_rates=tuple(int(fs) for fs in unlabelled["sampling_rates"]),
    )


def _scan(source, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    exclusions = ExclusionLog()
    rows = [
        {
            "record_id": record.record_id,
            "patient_id": record.patient_id,
            "label": record.label,
            "fs": float(record.fs),
            "n_samples": int(record.signal.shape[0]),
            "duration_s": record.signal.shape[0] / float(record.fs),
            "lead": record.lead,
            "source": record.source,
        }
        for record in source.iter_records(exclusions)
    ]
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    excluded = exclusions.to_frame()
    excluded["dataset"] = dataset
    logger.info("%s: %d records accepted, %d excluded", dataset, len(manifest), len(excluded))
    if manifest.empty:
        raise ValueError(f"{dataset}: no usable record in {source!r}; see the exclusions report")
    return manifest, excluded


def scan_labelled_records(chapman_release) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every labelled record once: the manifest of usable records and the exclusions."""
    return _scan(chapman_release, "labelled")


def scan_unlabelled_records(monitor_corpus) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every unlabelled recording once: the manifest of usable records and the exclusions."""
    return _scan(monitor_corpus, "unlabelled")


def report_ingestion(
    labelled_manifest: pd.DataFrame,
    labelled_exclusions: pd.DataFrame,
    unlabelled_manifest: pd.DataFrame,
    unlabelled_exclusions: pd.DataFrame,
) -> pd.DataFrame:
    """One table a person can read: records accepted and excluded, by dataset and reason."""
    rows = []
    for dataset, manifest, excluded in (
        ("labelled", labelled_manifest, labelled_exclusions),
        ("unlabelled", unlabelled_manifest, unlabelled_exclusions),
    ):
        rows.append({"dataset": dataset, "outcome": "accepted", "reason": "", "count": len(manifest)})
        for reason, count in excluded.groupby("reason", dropna=False).size().items():
            rows.append({"dataset": dataset, "outcome": "excluded", "reason": reason, "count": int(count)})
        if "label" in manifest and manifest["label"].notna().any():
            for label, count in manifest["label"].value_counts().sort_index().items():
                rows.append({"dataset": dataset, "outcome": "accepted_by_label", "reason": label, "count": int(count)})
    return pd.DataFrame(rows, columns=["dataset", "outcome", "reason", "count"])
