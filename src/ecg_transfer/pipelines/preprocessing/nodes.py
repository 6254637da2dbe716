"""Preprocessing: patient-level splits, then the paper's signal chain (250 Hz, high-pass,
2,048-sample windows, z-score) streamed into on-disk window stores, so the pretraining corpus
can grow to the paper's 2.6 M windows without growing memory."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import pandas as pd

from ecg_transfer.signals.preprocess import (
    PreprocessConfig,
    windows_from_labelled_records,
    windows_from_unlabelled_records,
)
from ecg_transfer.signals.records import EcgRecord, ExclusionLog
from ecg_transfer.signals.splits import assign_splits


def _split_table(manifest: pd.DataFrame, split_params: dict[str, Any]) -> pd.DataFrame:
    splits = assign_splits(
        manifest[["patient_id", "label"]],
        test_fraction=float(split_params["test_fraction"]),
        val_fraction=float(split_params["val_fraction"]),
        seed=int(split_params["seed"]),
    )
    return pd.DataFrame({"record_id": manifest["record_id"].to_numpy(), "split": splits.to_numpy()})


def assign_labelled_splits(labelled_manifest: pd.DataFrame, preprocessing: dict[str, Any]) -> pd.DataFrame:
    """Stratified 8:2 train/test by patient, with a validation split carved from train."""
    return _split_table(labelled_manifest, preprocessing["labelled_splits"])


def assign_unlabelled_splits(unlabelled_manifest: pd.DataFrame, preprocessing: dict[str, Any]) -> pd.DataFrame:
    """8:2 train/test by patient for the CAE's early stopping (no validation split, as the paper)."""
    manifest = unlabelled_manifest.assign(label=None)
    return _split_table(manifest, preprocessing["unlabelled_splits"])


def _records_in(source, splits: pd.DataFrame) -> Iterator[EcgRecord]:
    """The records the scan accepted, read again from the source; a record that was accepted
    then but fails now means the files changed under us, which must not pass unnoticed."""
    wanted = set(splits["record_id"])
    seen: set[str] = set()
    log = ExclusionLog(log_level=logging.DEBUG)  # reported once already, at ingestion
    for record in source.iter_records(log):
        if record.record_id in wanted:
            seen.add(record.record_id)
            yield record
    missing = wanted - seen
    if missing:
        raise RuntimeError(
            f"{len(missing)} records accepted at ingestion could not be read again from {source!r} "
            f"(e.g. {sorted(missing)[:3]}); the data changed since `ingestion` ran: run it again"
        )


class _SplitWindowStream:
    """A lazy stream of (windows, index) chunks with each window's split attached."""

    def __init__(self, chunks: Iterable[tuple], splits: pd.DataFrame):
        self._chunks = chunks
        self._split_of = dict(zip(splits["record_id"], splits["split"]))

    def __iter__(self):
        for windows, index in self._chunks:
            index = index.copy()
            index["split"] = index["record_id"].map(self._split_of)
            yield windows, index


def window_labelled_records(chapman_release, labelled_splits: pd.DataFrame, preprocessing: dict[str, Any]):
    """One z-scored 2,048-sample lead-II window per labelled record, streamed to the window store."""
    config = PreprocessConfig(**preprocessing["signal"])
    chunks = windows_from_labelled_records(_records_in(chapman_release, labelled_splits), config)
    return _SplitWindowStream(chunks, labelled_splits)


def window_unlabelled_records(monitor_corpus, unlabelled_splits: pd.DataFrame, preprocessing: dict[str, Any]):
    """Many random z-scored windows per unlabelled recording, streamed to the window store."""
    config = PreprocessConfig(**preprocessing["signal"])
    chunks = windows_from_unlabelled_records(
        _records_in(monitor_corpus, unlabelled_splits), config, seed=int(preprocessing["unlabelled_seed"])
    )
    return _SplitWindowStream(chunks, unlabelled_splits)
