"""One Kedro dataset for raw ECG folders, whatever the reader.

:class:`RawEcgDataset` loads a lazy reader of :mod:`ecg_transfer.signals` (nothing is read
until a node iterates it), so a catalog entry costs nothing until it is used. ``reader:``
names the file format (:data:`~ecg_transfer.signals.readers.READERS`) or, with a dotted
path, your own class following :class:`~ecg_transfer.signals.records.RecordSource`; every
other key of the entry is an option of that reader, checked when the catalog is built. What
the dataset needs to know about a reader's folders (how to tell one exists, whether and how
the project writes one) the reader class says itself
(:class:`~ecg_transfer.signals.folder_reader.FolderReader`); a reader that says nothing is
read-only and its folder exists when it is a folder. The four named datasets
(``ChapmanReleaseDataset``, ``WfdbFolderDataset``, ``PhysioNetWfdbDataset``,
``WfdbLabelledFolderDataset``) are the same class with the reader fixed, kept for the
catalog entries that name them.

Saving exists only for the two formats the project writes its bundled synthetic data in.
Because a raw-data folder is usually a user's irreplaceable download, saving refuses to
write into any non-empty folder that does not carry this project's marker file
``.ecg_transfer_synthetic.json``. A save writes the whole folder beside the target (a hidden
``.<name>.partial-*`` sibling), then, under a lock file ``.<name>.lock`` beside it, swaps it in
whole: a reader never sees a half-written folder, so two runs started together on an empty
project both finish. The marker records a digest of what the save wrote; a save that would
write the same is dropped (the folder is not rewritten under a run reading it).
A folder of other content that carries the marker is replaced, keeping any file of yours
that the format does not write.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import inspect
import json
import logging
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from kedro.io import AbstractDataset, DatasetError

from ecg_transfer.atomic_files import (
    atomic_write_text,
    file_lock,
    leftover_dir,
    remove_stale_leftovers,
    replace_directory,
)
from ecg_transfer.signals.folder_reader import FolderReader
from ecg_transfer.signals.readers import READERS
from ecg_transfer.signals.records import SYNTHETIC_MARKER

__all__ = [
    "READERS",
    "SYNTHETIC_MARKER",
    "ChapmanReleaseDataset",
    "PhysioNetWfdbDataset",
    "RawEcgDataset",
    "WfdbFolderDataset",
    "WfdbLabelledFolderDataset",
]

logger = logging.getLogger(__name__)
# Members of an Office file (.xlsx) that record when it was written, not what it holds.
_WRITE_TIME_MEMBERS = frozenset({"docProps/core.xml"})


def _custom_reader(dotted: str) -> type:
    module_name, _, class_name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise DatasetError(
            f"reader {dotted!r} is neither one of {sorted(READERS)} nor an importable class "
            f"({error})"
        ) from error


def _exists(reader: type, root: Path, options: dict[str, Any]) -> bool:
    """What the reader says about its folders; a reader that says nothing: ``root`` is a folder."""
    folder_exists = getattr(reader, "folder_exists", None)
    return folder_exists(root, options) if folder_exists is not None else root.is_dir()


def _local_path(path: str | Path) -> Path:
    """Raw ECG folders are read with local-file libraries (wfdb, openpyxl), so only local paths."""
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        raise DatasetError(f"{text}: raw ECG folders must be local paths, not remote URLs")
    return Path(text.removeprefix("file://"))


def _reader_options(reader: type) -> list[str]:
    parameters = list(inspect.signature(reader.__init__).parameters.values())[2:]  # self, root
    return [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _check_synthetic_target(root: Path, kind: str) -> None:
    """Refuse a target that is a file, or a non-empty folder that may hold real data."""
    if root.exists() and not root.is_dir():
        raise DatasetError(f"cannot write a {kind} to {root}: it is a file, not a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / SYNTHETIC_MARKER).is_file():
        raise DatasetError(
            f"refusing to write a synthetic {kind} into {root}: the folder is not empty "
            f"and has no {SYNTHETIC_MARKER} marker, so it may hold real data. Point the "
            f"catalog entry at an empty folder, or delete this one yourself."
        )


def content_digest(folder: Path) -> str:
    """A digest of what a written folder holds: every file's relative path and bytes (the
    marker aside); an Office zip (.xlsx) by its members but the ones stamped with the time of
    writing, so two writes of the same data have the same digest."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != SYNTHETIC_MARKER):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        if path.suffix.lower() == ".xlsx" and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for member in sorted(set(archive.namelist()) - _WRITE_TIME_MEMBERS):
                    digest.update(member.encode() + b"\0" + archive.read(member))
        else:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _marker_digest(root: Path) -> str | None:
    try:
        return json.loads((root / SYNTHETIC_MARKER).read_text()).get("content_sha256")
    except (OSError, ValueError, AttributeError):
        return None


def _write_marker(root: Path, kind: str, n_records: int, digest: str) -> None:
    atomic_write_text(
        root / SYNTHETIC_MARKER,
        json.dumps({"written_by": "ecg_transfer", "kind": kind, "n_records": n_records,
                    "content_sha256": digest}, indent=2) + "\n",
    )


def _swap_in(written: Path, root: Path, kind: str, patterns: Sequence[str]) -> None:
    """Put the complete folder ``written`` at ``root`` (under the caller's lock): dropped when
    ``root`` already holds the same content, else swapped in with your own files of ``root``
    (those the format does not write) carried over."""
    _check_synthetic_target(root, kind)
    if root.is_dir() and _marker_digest(root) == _marker_digest(written):
        logger.info("%s already holds this synthetic %s; left as it is", root, kind)
        return
    if root.is_dir():
        for path in root.rglob("*"):
            relative = path.relative_to(root)
            if (path.is_file() and path.name != SYNTHETIC_MARKER and not (written / relative).exists()
                    and not any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns)):
                (written / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, written / relative)
    replace_directory(written, root)


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
        self._reader = READERS[name] if name in READERS else _custom_reader(name)
        accepted = _reader_options(self._reader)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise DatasetError(
                f"{type(self).__name__}({path}): option(s) {unknown} are not options of the "
                f"{name!r} reader ({self._reader.__name__}); it takes {accepted}"
            )
        self._path = _local_path(path)
        self._options = dict(options)
        if "labels_csv" in self._options:
            self._options["labels_csv"] = _local_path(self._options["labels_csv"])
        self.metadata = metadata

    def _load(self) -> Any:
        return self._reader(self._path, **self._options)

    def _save(self, data: Any) -> None:
        if not getattr(self._reader, "writable", False):
            why = getattr(self._reader, "why_read_only", FolderReader.why_read_only)
            raise DatasetError(f"{type(self).__name__}({self._path}) is read-only: {why}")
        kind = f"{self._reader_name} folder"
        _check_synthetic_target(self._path, kind)  # before the work of writing
        remove_stale_leftovers(self._path)
        written = leftover_dir(self._path, "partial")
        try:
            written.mkdir(parents=True)
            progress = bool(self._options.get("progress", True))
            n_written = self._reader.write_folder(written, data, self._options, progress)
            _write_marker(written, self._reader_name, n_written, content_digest(written))
            with file_lock(self._path.parent / f".{self._path.name}.lock"):
                _swap_in(written, self._path, kind, self._reader.written_files)
        finally:
            shutil.rmtree(written, ignore_errors=True)

    def _exists(self) -> bool:
        return _exists(self._reader, self._path, self._options)

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
