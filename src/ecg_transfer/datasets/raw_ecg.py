"""One Kedro dataset for raw ECG folders, whatever the reader.

:class:`RawEcgDataset` loads a lazy reader of :mod:`ecg_transfer.signals` (nothing is read
until a node iterates it), so a catalog entry costs nothing until it is used. ``reader:``
names the file format (:data:`READERS`) or, with a dotted path, your own class following
:class:`~ecg_transfer.signals.records.RecordSource`; every other key of the entry is an
option of that reader, checked when the catalog is built. The four named datasets
(``ChapmanReleaseDataset``, ``WfdbFolderDataset``, ``PhysioNetWfdbDataset``,
``WfdbLabelledFolderDataset``) are the same class with the reader fixed.

Saving exists only for the two formats the project writes its bundled synthetic data in.
Because a raw-data folder is usually a user's irreplaceable download, saving refuses to
write into any non-empty folder that does not carry this project's marker file
``.ecg_transfer_synthetic.json``; a folder that does carry it is cleared of the files the
previous save wrote (CSVs / WFDB files) and rewritten.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from kedro.io import AbstractDataset, DatasetError

from ecg_transfer.atomic_files import atomic_write_text
from ecg_transfer.signals.chapman import DIAGNOSTICS_FILE, ChapmanRelease, write_chapman_release
from ecg_transfer.signals.records import SYNTHETIC_MARKER
from ecg_transfer.signals.wfdb_records import (
    PhysioNetLabelledWfdb,
    WfdbFolder,
    WfdbLabelledFolder,
    write_wfdb_records,
)

__all__ = [
    "READERS",
    "SYNTHETIC_MARKER",
    "ChapmanReleaseDataset",
    "PhysioNetWfdbDataset",
    "RawEcgDataset",
    "WfdbFolderDataset",
    "WfdbLabelledFolderDataset",
]


def _write_chapman(root: Path, data: Any, options: dict[str, Any], progress: bool) -> int:
    if not hasattr(data, "diagnostics") or not hasattr(data, "iter_waveforms"):
        raise DatasetError(
            f"a Chapman release at {root} is saved from an object with .diagnostics and "
            f".iter_waveforms(); got {type(data).__name__}"
        )
    return write_chapman_release(
        root, data.diagnostics, _quietly(data.iter_waveforms),
        csv_folder=options.get("csv_folder", "ECGDataDenoised"), progress=progress,
    )


def _write_wfdb(root: Path, data: Any, options: dict[str, Any], progress: bool) -> int:
    if not hasattr(data, "iter_records"):
        raise DatasetError(
            f"a WFDB corpus at {root} is saved from an object with .iter_records(); "
            f"got {type(data).__name__}"
        )
    return write_wfdb_records(root, _quietly(data.iter_records), progress=progress)


def _has_headers(root: Path, options: dict[str, Any]) -> bool:
    return root.is_dir() and any(root.rglob("*.hea"))


@dataclass(frozen=True)
class ReaderFormat:
    """A reader class and what the dataset needs to know about its folders."""

    reader: type
    exists: Callable[[Path, dict[str, Any]], bool]
    write: Callable[[Path, Any, dict[str, Any], bool], int] | None = None
    written_files: tuple[str, ...] = ()  # cleared before a rewrite of a synthetic folder
    why_read_only: str = "it points at data this project never writes"


READERS: dict[str, ReaderFormat] = {
    "chapman": ReaderFormat(
        ChapmanRelease,
        exists=lambda root, options: (root / DIAGNOSTICS_FILE).is_file(),
        write=_write_chapman,
        written_files=("*.csv", DIAGNOSTICS_FILE),
    ),
    "wfdb_folder": ReaderFormat(
        WfdbFolder, exists=_has_headers, write=_write_wfdb, written_files=("*.hea", "*.dat"),
    ),
    "physionet_wfdb": ReaderFormat(
        PhysioNetLabelledWfdb, exists=_has_headers,
        why_read_only="it points at a downloaded PhysioNet release, which this project never writes",
    ),
    "wfdb_labelled_folder": ReaderFormat(
        WfdbLabelledFolder,
        exists=lambda root, options: _has_headers(root, options)
        and Path(str(options.get("labels_csv", ""))).is_file(),
        why_read_only="it points at your own labelled recordings, which this project never writes",
    ),
}


def _custom_format(dotted: str) -> ReaderFormat:
    module_name, _, class_name = dotted.rpartition(".")
    try:
        reader = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise DatasetError(
            f"reader {dotted!r} is neither one of {sorted(READERS)} nor an importable class "
            f"({error})"
        ) from error
    return ReaderFormat(reader, exists=lambda root, options: root.is_dir())


def _local_path(path: str | Path) -> Path:
    """Raw ECG folders are read with local-file libraries (wfdb, openpyxl), so only local paths."""
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        raise DatasetError(f"{text}: raw ECG folders must be local paths, not remote URLs")
    return Path(text.removeprefix("file://"))


def _reader_options(reader: type) -> list[str]:
    parameters = list(inspect.signature(reader.__init__).parameters.values())[2:]  # self, root
    return [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


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
    atomic_write_text(
        root / SYNTHETIC_MARKER,
        json.dumps({"written_by": "ecg_transfer", "kind": kind, "n_records": n_records}, indent=2) + "\n",
    )


def _quietly(iterate):
    """Iterate a source without its own progress bar when it has one: the writer shows one."""
    if "progress" in inspect.signature(iterate).parameters:
        return iterate(progress=False)
    return iterate()


class RawEcgDataset(AbstractDataset):
    """A folder of raw ECG records, loaded as the reader for its format.

    Example catalog entries::

        labelled_recordings:
          type: ecg_transfer.datasets.RawEcgDataset
          reader: wfdb_labelled_folder      # or chapman, wfdb_folder, physionet_wfdb,
          path: data/01_raw/my_ecgs         # or my_package.MyReader
          labels_csv: data/01_raw/my_ecgs/labels.csv
          lead: MLII

    ``path`` is the folder (the reader's ``root``); every other key is passed to the
    reader, and a key the reader does not take is an error listing the ones it does.
    """

    default_reader: ClassVar[str | None] = None

    def __init__(
        self,
        path: str,
        reader: str | None = None,
        metadata: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        name = reader or self.default_reader
        if name is None:
            raise DatasetError(
                f"RawEcgDataset({path}): give `reader:`, one of {sorted(READERS)} or the dotted "
                f"path of your own reader class"
            )
        if reader is not None and self.default_reader not in (None, reader):
            raise DatasetError(
                f"{type(self).__name__}({path}) always uses the reader {self.default_reader!r}; "
                f"for {reader!r} use type: ecg_transfer.datasets.RawEcgDataset"
            )
        self._reader_name = name
        self._format = READERS[name] if name in READERS else _custom_format(name)
        accepted = _reader_options(self._format.reader)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise DatasetError(
                f"{type(self).__name__}({path}): option(s) {unknown} are not options of the "
                f"{name!r} reader ({self._format.reader.__name__}); it takes {accepted}"
            )
        self._path = _local_path(path)
        self._options = dict(options)
        if "labels_csv" in self._options:
            self._options["labels_csv"] = _local_path(self._options["labels_csv"])
        self.metadata = metadata

    def _load(self) -> Any:
        return self._format.reader(self._path, **self._options)

    def _save(self, data: Any) -> None:
        if self._format.write is None:
            raise DatasetError(
                f"{type(self).__name__}({self._path}) is read-only: "
                f"{self._format.why_read_only}"
            )
        kind = f"{self._reader_name} folder"
        _prepare_synthetic_folder(self._path, kind, self._format.written_files)
        progress = bool(self._options.get("progress", True))
        n_written = self._format.write(self._path, data, self._options, progress)
        _write_marker(self._path, self._reader_name, n_written)

    def _exists(self) -> bool:
        return self._format.exists(self._path, self._options)

    def _describe(self) -> dict[str, Any]:
        options = {key: value for key, value in self._options.items() if key != "progress"}
        return {"path": str(self._path), "reader": self._reader_name, **options}


class ChapmanReleaseDataset(RawEcgDataset):
    """A Chapman-Shaoxing figshare release folder (Diagnostics.xlsx + CSV folder)::

        labelled_recordings:
          type: ecg_transfer.datasets.ChapmanReleaseDataset
          path: data/01_raw/chapman_shaoxing
          csv_folder: ECGDataDenoised
          lead: II
    """

    default_reader = "chapman"


class WfdbFolderDataset(RawEcgDataset):
    """A folder of WFDB records read as an unlabelled corpus (lead chosen by name)::

        unlabelled_recordings:
          type: ecg_transfer.datasets.WfdbFolderDataset
          path: data/01_raw/unlabelled_recordings
          leads: [II, MLII, ECG II]
    """

    default_reader = "wfdb_folder"


class PhysioNetWfdbDataset(RawEcgDataset):
    """A PhysioNet WFDB release labelled by SNOMED-CT ``# Dx:`` codes (read-only)::

        labelled_recordings:
          type: ecg_transfer.datasets.PhysioNetWfdbDataset
          path: data/01_raw/physionet_chapman_ningbo
          lead: II
    """

    default_reader = "physionet_wfdb"


class WfdbLabelledFolderDataset(RawEcgDataset):
    """Your WFDB folder plus a labels CSV, with any label strings (read-only)::

        labelled_recordings:
          type: ecg_transfer.datasets.WfdbLabelledFolderDataset
          path: data/01_raw/my_ecgs
          labels_csv: data/01_raw/my_ecgs/labels.csv
          lead: MLII
    """

    default_reader = "wfdb_labelled_folder"
