"""Kedro datasets for raw ECG folders: the Chapman release and WFDB corpora.

Loading returns the lazy reader objects of :mod:`ecg_transfer.signals` (nothing is read
until a node iterates them), so a catalog entry costs nothing until it is used.

Saving exists only for the two formats the project writes its bundled synthetic data in.
Because a raw-data folder is usually a user's irreplaceable download, saving refuses to
write into any non-empty folder that does not carry this project's marker file
``.ecg_transfer_synthetic.json``; a folder that does carry it is cleared of the files the
previous save wrote (CSVs / WFDB files) and rewritten.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ecg_transfer.signals.chapman import DIAGNOSTICS_FILE, ChapmanRelease, write_chapman_release
from ecg_transfer.signals.wfdb_records import (
    DEFAULT_LEAD_NAMES,
    PhysioNetLabelledWfdb,
    WfdbFolder,
    WfdbLabelledFolder,
    write_wfdb_records,
)

SYNTHETIC_MARKER = ".ecg_transfer_synthetic.json"


def _prepare_synthetic_folder(root: Path, kind: str, patterns: Sequence[str]) -> None:
    """Make ``root`` ready for a synthetic write, or refuse if it may hold real data."""
    marker = root / SYNTHETIC_MARKER
    if root.exists() and not root.is_dir():
        raise DatasetError(f"cannot write a {kind} to {root}: it is a file, not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not marker.is_file():
            raise DatasetError(
                f"refusing to write a synthetic {kind} into {root}: the folder is not empty "
                f"and has no {SYNTHETIC_MARKER} marker, so it may hold real data. Point the "
                f"catalog entry at an empty folder, or delete this one yourself."
            )
        for pattern in patterns:
            for path in root.rglob(pattern):
                if path.is_file():
                    path.unlink()
    root.mkdir(parents=True, exist_ok=True)


def _write_marker(root: Path, kind: str, n_records: int) -> None:
    (root / SYNTHETIC_MARKER).write_text(
        json.dumps(
            {"written_by": "ecg_transfer", "kind": kind, "n_records": n_records}, indent=2
        )
        + "\n",
        encoding="utf-8",
    )


def _local_path(path: str | Path) -> Path:
    """Raw ECG folders are read with local-file libraries (wfdb, openpyxl), so only local paths."""
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        raise DatasetError(f"{text}: raw ECG folders must be local paths, not remote URLs")
    return Path(text.removeprefix("file://"))


def _quietly(iterate):
    """Iterate a source without its own progress bar when it has one: the writer shows one."""
    if "progress" in inspect.signature(iterate).parameters:
        return iterate(progress=False)
    return iterate()


class ChapmanReleaseDataset(AbstractDataset):
    """A Chapman-Shaoxing figshare release folder (Diagnostics.xlsx + CSV folder).

    Example catalog entry::

        chapman_release:
          type: ecg_transfer.datasets.ChapmanReleaseDataset
          path: data/01_raw/chapman_shaoxing
          csv_folder: ECGDataDenoised
          lead: II
    """

    def __init__(
        self,
        path: str,
        csv_folder: str = "ECGDataDenoised",
        lead: str = "II",
        fs: float = 500.0,
        min_duration_s: float = 8.2,
        progress: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = _local_path(path)
        self._csv_folder = csv_folder
        self._lead = lead
        self._fs = float(fs)
        self._min_duration_s = float(min_duration_s)
        self._progress = progress
        self.metadata = metadata

    def _load(self) -> ChapmanRelease:
        return ChapmanRelease(
            self._path, csv_folder=self._csv_folder, lead=self._lead, fs=self._fs,
            min_duration_s=self._min_duration_s, progress=self._progress,
        )

    def _save(self, data: Any) -> None:
        if not hasattr(data, "diagnostics") or not hasattr(data, "iter_waveforms"):
            raise DatasetError(
                f"ChapmanReleaseDataset({self._path}) saves objects with .diagnostics and "
                f".iter_waveforms(); got {type(data).__name__}"
            )
        _prepare_synthetic_folder(self._path, "Chapman release", ("*.csv", DIAGNOSTICS_FILE))
        n_written = write_chapman_release(
            self._path, data.diagnostics, _quietly(data.iter_waveforms), csv_folder=self._csv_folder,
            progress=self._progress,
        )
        _write_marker(self._path, "chapman_release", n_written)

    def _exists(self) -> bool:
        return (self._path / DIAGNOSTICS_FILE).is_file()

    def _describe(self) -> dict[str, Any]:
        return {
            "path": str(self._path), "csv_folder": self._csv_folder, "lead": self._lead,
            "fs": self._fs, "min_duration_s": self._min_duration_s,
        }


class WfdbFolderDataset(AbstractDataset):
    """A folder of WFDB records read as an unlabelled corpus (lead chosen by name).

    Example catalog entry::

        monitor_corpus:
          type: ecg_transfer.datasets.WfdbFolderDataset
          path: data/01_raw/monitor_corpus
          leads: [II, MLII, ECG II]
    """

    def __init__(
        self,
        path: str,
        leads: Sequence[str] = DEFAULT_LEAD_NAMES,
        min_duration_s: float = 8.2,
        allow_first_channel: bool = False,
        progress: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = _local_path(path)
        self._leads = (leads,) if isinstance(leads, str) else tuple(leads)
        self._min_duration_s = float(min_duration_s)
        self._allow_first_channel = allow_first_channel
        self._progress = progress
        self.metadata = metadata

    def _load(self) -> WfdbFolder:
        return WfdbFolder(
            self._path, leads=self._leads, min_duration_s=self._min_duration_s,
            allow_first_channel=self._allow_first_channel, progress=self._progress,
        )

    def _save(self, data: Any) -> None:
        if not hasattr(data, "iter_records"):
            raise DatasetError(
                f"WfdbFolderDataset({self._path}) saves objects with .iter_records(); "
                f"got {type(data).__name__}"
            )
        _prepare_synthetic_folder(self._path, "WFDB corpus", ("*.hea", "*.dat"))
        n_written = write_wfdb_records(self._path, _quietly(data.iter_records), progress=self._progress)
        _write_marker(self._path, "wfdb_folder", n_written)

    def _exists(self) -> bool:
        return self._path.is_dir() and any(self._path.rglob("*.hea"))

    def _describe(self) -> dict[str, Any]:
        return {
            "path": str(self._path), "leads": self._leads,
            "min_duration_s": self._min_duration_s,
            "allow_first_channel": self._allow_first_channel,
        }


class PhysioNetWfdbDataset(AbstractDataset):
    """A PhysioNet WFDB release labelled by SNOMED-CT ``# Dx:`` codes (read-only).

    Example catalog entry::

        physionet_chapman:
          type: ecg_transfer.datasets.PhysioNetWfdbDataset
          path: data/01_raw/physionet_chapman_ningbo
          lead: II
    """

    def __init__(
        self,
        path: str,
        lead: str = "II",
        min_duration_s: float = 8.2,
        rhythm_priority: Sequence[str] | None = None,
        accept_ambiguous_saawr: bool = True,
        progress: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = _local_path(path)
        self._lead = lead
        self._min_duration_s = float(min_duration_s)
        self._rhythm_priority = tuple(rhythm_priority) if rhythm_priority is not None else None
        self._accept_ambiguous_saawr = accept_ambiguous_saawr
        self._progress = progress
        self.metadata = metadata

    def _load(self) -> PhysioNetLabelledWfdb:
        return PhysioNetLabelledWfdb(
            self._path, lead=self._lead, min_duration_s=self._min_duration_s,
            rhythm_priority=self._rhythm_priority,
            accept_ambiguous_saawr=self._accept_ambiguous_saawr, progress=self._progress,
        )

    def _save(self, data: Any) -> None:
        raise DatasetError(
            f"PhysioNetWfdbDataset({self._path}) is read-only: it points at a downloaded "
            f"PhysioNet release, which this project never writes"
        )

    def _exists(self) -> bool:
        return self._path.is_dir() and any(self._path.rglob("*.hea"))

    def _describe(self) -> dict[str, Any]:
        return {
            "path": str(self._path), "lead": self._lead, "min_duration_s": self._min_duration_s,
            "rhythm_priority": self._rhythm_priority,
            "accept_ambiguous_saawr": self._accept_ambiguous_saawr,
        }


class WfdbLabelledFolderDataset(AbstractDataset):
    """A user's WFDB folder plus a labels CSV (record, label[, patient_id]) (read-only).

    Example catalog entry::

        my_labelled_ecgs:
          type: ecg_transfer.datasets.WfdbLabelledFolderDataset
          path: data/01_raw/my_ecgs
          labels_csv: data/01_raw/my_ecgs_labels.csv
          lead: II
    """

    def __init__(
        self,
        path: str,
        labels_csv: str,
        lead: str | Sequence[str] = "II",
        min_duration_s: float = 8.2,
        allow_first_channel: bool = False,
        progress: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = _local_path(path)
        self._labels_csv = _local_path(labels_csv)
        self._lead = lead if isinstance(lead, str) else tuple(lead)
        self._min_duration_s = float(min_duration_s)
        self._allow_first_channel = allow_first_channel
        self._progress = progress
        self.metadata = metadata

    def _load(self) -> WfdbLabelledFolder:
        return WfdbLabelledFolder(
            self._path, self._labels_csv, lead=self._lead, min_duration_s=self._min_duration_s,
            allow_first_channel=self._allow_first_channel, progress=self._progress,
        )

    def _save(self, data: Any) -> None:
        raise DatasetError(
            f"WfdbLabelledFolderDataset({self._path}) is read-only: it points at your own "
            f"labelled recordings, which this project never writes"
        )

    def _exists(self) -> bool:
        return self._path.is_dir() and self._labels_csv.is_file()

    def _describe(self) -> dict[str, Any]:
        return {
            "path": str(self._path), "labels_csv": str(self._labels_csv), "lead": self._lead,
            "min_duration_s": self._min_duration_s,
        }
