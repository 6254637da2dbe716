"""Readers of a user's own WFDB folders: an unlabelled corpus (:class:`WfdbFolder`, the
pretraining data) and labelled records plus a labels CSV (:class:`WfdbLabelledFolder`). The
format itself is :mod:`ecg_transfer.signals.wfdb_format`; the PhysioNet releases are
:mod:`ecg_transfer.signals.physionet`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from ecg_transfer.signals.classes import join_label_set, label_set
from ecg_transfer.signals.folder_reader import FolderReader, has_headers, quietly
from ecg_transfer.signals.label_csv import Column, LabelsCsv
from ecg_transfer.signals.records import (
    DEFAULT_MAX_AMPLITUDE_MV,
    DEFAULT_MIN_DURATION_S,
    Candidate,
    EcgRecord,
    Excluded,
    SignalChecks,
)
from ecg_transfer.signals.wfdb_format import (
    DEFAULT_LEAD_NAMES,
    header_paths,
    patient_from_comments,
    read_leads,
    read_one_lead,
    signal_names,
    write_wfdb_records,
)

_RECORD_SUFFIXES = (".hea", ".dat", ".mat")


def _lead_names(leads: str | Sequence[str]) -> tuple[str, ...]:
    return (leads,) if isinstance(leads, str) else tuple(str(lead) for lead in leads)


def _relative_id(root: Path, header_path: Path) -> str:
    return header_path.relative_to(root).with_suffix("").as_posix()


def read_record_leads(reader: FolderReader, header_path: Path) -> tuple:
    """Signal, fs, lead field and comments of a record: the leads of ``reader.read_leads``
    when a study reads several, else the one lead the reader's catalog entry names."""
    if reader.read_leads is not None:
        return read_leads(header_path, reader.read_leads)
    return read_one_lead(header_path, reader.lead_names, getattr(reader, "allow_first_channel", False))


def header_lead_names(root: Path) -> list[tuple[str, ...]]:
    """The signal names of every readable header under ``root``."""
    names = []
    for path in header_paths(root):
        try:
            names.append(tuple(signal_names(path)))
        except Excluded:
            continue
    return names


class WfdbFolder(FolderReader):
    """A user's unlabelled WFDB corpus: every record under ``root`` (recursive), one lead.

    Patient id, in this order: a ``patient: X`` header comment; else the sub-folder the
    record sits in (relative to root, as many corpora keep one folder per patient); else
    the record name. Record ids are the path relative to root without extension, so two
    patients' ``rec1`` never collide.

    Long monitor recordings often hold stretches of invalid samples (WFDB's invalid value,
    read as NaN) where a lead came off. With ``allow_nan_gaps`` (the default) such a
    recording passes as long as a NaN-free stretch of ``min_duration_s`` remains, and
    preprocessing cuts its windows from the NaN-free stretches; ``allow_nan_gaps=False``
    excludes every recording with a NaN as ``non_finite``, as the labelled readers do.
    """

    reader_name = "wfdb_folder"
    dataset_name = "wfdb_folder"
    folder_kind = "WFDB corpus"
    writable = True
    written_files = ("*.hea", "*.dat")

    def __init__(
        self,
        root: str | Path,
        leads: str | Sequence[str] = DEFAULT_LEAD_NAMES,
        min_duration_s: float = DEFAULT_MIN_DURATION_S,
        allow_first_channel: bool = False,
        max_amplitude_mv: float = DEFAULT_MAX_AMPLITUDE_MV,
        allow_nan_gaps: bool = True,
        progress: bool = True,
    ) -> None:
        super().__init__(root, progress)
        self.leads = _lead_names(leads)
        if not self.leads and not allow_first_channel:
            raise ValueError("give at least one lead name or allow_first_channel=True")
        self.checks = SignalChecks(
            float(min_duration_s), float(max_amplitude_mv), allow_nan_gaps=allow_nan_gaps
        )
        self.allow_first_channel = allow_first_channel

    def __repr__(self) -> str:
        return f"WfdbFolder(root={str(self.root)!r}, leads={self.read_leads or self.leads!r})"

    @property
    def lead_names(self) -> tuple[str, ...]:
        return self.leads

    def record_lead_names(self) -> list[tuple[str, ...]]:
        return header_lead_names(self.root)

    def __len__(self) -> int:
        """Number of header files, i.e. records before any exclusion."""
        return len(header_paths(self.root))

    @classmethod
    def folder_exists(cls, root: Path, options: Mapping[str, Any]) -> bool:
        return has_headers(root, options)

    @classmethod
    def write_folder(cls, root: Path, data: Any, options: Mapping[str, Any], progress: bool) -> int:
        if not hasattr(data, "iter_records"):
            raise TypeError(
                f"a WFDB corpus at {root} is saved from an object with .iter_records(); "
                f"got {type(data).__name__}"
            )
        return write_wfdb_records(root, quietly(data.iter_records), progress=progress)

    def candidates(self) -> tuple[Iterator[Candidate], int]:
        headers = header_paths(self.root)
        candidates = (
            Candidate(_relative_id(self.root, path), str(path), lambda path=path: self._read(path))
            for path in headers
        )
        return candidates, len(headers)

    def _read(self, header_path: Path) -> EcgRecord:
        relative = header_path.relative_to(self.root).with_suffix("")
        signal, fs, lead, comments = read_record_leads(self, header_path)
        patient = patient_from_comments(comments)
        if patient is None:
            folder = relative.parent.as_posix()
            patient = folder if folder != "." else relative.name
        return EcgRecord(relative.as_posix(), patient, signal, fs, lead, None, str(header_path))


@dataclass(frozen=True)
class _LabelRow:
    record_id: str
    label: str
    patient: str


class WfdbLabelledFolder(FolderReader):
    """A user's labelled WFDB records: a folder plus a CSV naming each record's label.

    Labels are any strings (surrounding blanks stripped): the study's classes are the labels
    the data has. ``label_map`` renames or merges labels (``{A: AF, O: Other}``);
    records whose label (before or after the map) is in ``exclude_labels`` are excluded as
    ``excluded_label``. The CSV: ``record_column`` / ``label_column`` (names, or 0-based
    positions) and optionally ``patient_column``; ``header`` is ``True``, ``False`` or
    ``"auto"`` (a first row holding the named columns is a header; a two-column file whose
    first row names a record in the folder has none). A record cell is the record's path
    relative to root without extension (``p01/rec1``) or, when unique, its bare name.

    Patient id: the patient column's cell when given and not empty (without the option, a
    ``patient_id`` column of a CSV with a header is used); else a ``patient: X`` header
    comment; else the record name. Every header in the folder that no CSV row names is
    excluded as ``unlabelled_record``; every CSV row without a header as ``missing_file``
    (a row naming a path outside the folder names no header in it: nothing outside is read).

    ``task: multilabel`` (pair it with ``preprocessing.task: multilabel``): a record may carry
    several labels, in one cell (``AF;LBBB``), in several rows (one per label), or both; the
    record's label is the ``;``-joined sorted set (:func:`~ecg_transfer.signals.classes.join_label_set`),
    ``label_map`` applies to each label, labels in ``exclude_labels`` are dropped from the set,
    and a record left with none is ``excluded_label``. Its patient is the first non-empty
    patient cell of its rows. Under ``task: single`` (the default) a record named twice is
    ``duplicate_id`` as before.
    """

    reader_name = "wfdb_labelled_folder"
    dataset_name = "wfdb_labelled_folder"
    folder_kind = "labelled WFDB"
    why_read_only = "it points at your own labelled recordings, which this project never writes"

    def __init__(
        self,
        root: str | Path,
        labels_csv: str | Path,
        lead: str | Sequence[str] = DEFAULT_LEAD_NAMES,
        min_duration_s: float = DEFAULT_MIN_DURATION_S,
        allow_first_channel: bool = False,
        label_map: Mapping[str, str] | None = None,
        exclude_labels: Sequence[str] = (),
        record_column: Column = "record",
        label_column: Column = "label",
        patient_column: Column | None = None,
        header: bool | Literal["auto"] = "auto",
        max_amplitude_mv: float = DEFAULT_MAX_AMPLITUDE_MV,
        progress: bool = True,
        task: str = "single",
    ) -> None:
        super().__init__(root, progress)
        if task not in ("single", "multilabel"):
            raise ValueError(f"task must be single or multilabel, got {task!r}")
        self.task = task
        self.labels_csv = Path(labels_csv)
        if not self.labels_csv.is_file():
            raise FileNotFoundError(f"labels CSV does not exist: {self.labels_csv}")
        self.leads = _lead_names(lead)
        self.checks = SignalChecks(float(min_duration_s), float(max_amplitude_mv))
        self.allow_first_channel = allow_first_channel
        self.label_map = {str(k).strip(): str(v).strip() for k, v in (label_map or {}).items()}
        empty = [key for key, value in self.label_map.items() if not key or not value]
        if empty:
            raise ValueError(f"label_map maps to or from an empty label: {empty}")
        if isinstance(exclude_labels, str):
            exclude_labels = [exclude_labels]
        self.exclude_labels = frozenset(str(label).strip() for label in exclude_labels)
        self.csv = LabelsCsv(self.labels_csv, record_column, label_column, patient_column, header)

    def __repr__(self) -> str:
        return f"WfdbLabelledFolder(root={str(self.root)!r}, labels_csv={str(self.labels_csv)!r})"

    @property
    def lead_names(self) -> tuple[str, ...]:
        return self.leads

    def record_lead_names(self) -> list[tuple[str, ...]]:
        return header_lead_names(self.root)

    @classmethod
    def folder_exists(cls, root: Path, options: Mapping[str, Any]) -> bool:
        return has_headers(root, options) and Path(str(options.get("labels_csv", ""))).is_file()

    def labels(self) -> pd.DataFrame:
        """The CSV as columns ``record``, ``label``, ``patient`` (strings, blanks stripped).

        Raises ValueError naming the file and the columns it has when a named column is
        missing, or when ``header: auto`` cannot tell whether the first row is a header.
        """
        index = self._index()
        return self.csv.read(lambda cell: self._resolve(_record_id(cell), index)[0] is not None, self.root)

    def _index(self) -> tuple[dict[str, Path], dict[str, list[Path]]]:
        headers = header_paths(self.root)
        by_relative = {_relative_id(self.root, path): path for path in headers}
        by_stem: dict[str, list[Path]] = {}
        for path in headers:
            by_stem.setdefault(path.stem, []).append(path)
        return by_relative, by_stem

    def _resolve(self, record_id: str, index) -> tuple[Path | None, bool]:
        """The header a CSV record cell names, and whether a bare name was ambiguous."""
        by_relative, by_stem = index
        path = by_relative.get(record_id)
        if path is not None:
            return path, False
        matches = by_stem.get(record_id, [])
        return (matches[0], False) if len(matches) == 1 else (None, len(matches) > 1)

    def candidates(self) -> tuple[Iterator[Candidate], int]:
        labels = self.labels()
        if self.task == "multilabel":  # one row per record, its label cells joined
            labels = labels.assign(record=labels["record"].map(_record_id)).groupby("record", sort=False).agg(
                label=("label", ";".join), patient=("patient", lambda cells: next((c for c in cells if c), "")),
            ).reset_index()
        index = self._index()
        rows: list[tuple[_LabelRow, Path | None, bool]] = []
        for record, label, patient in labels.itertuples(index=False):
            row = _LabelRow(_record_id(record), label, patient)
            rows.append((row, *self._resolve(row.record_id, index)))
        labelled = {path for _, path, _ in rows if path is not None}
        unlabelled = [path for path in index[0].values() if path not in labelled]
        return self._candidates(rows, unlabelled), len(rows) + len(unlabelled)

    def _candidates(
        self, rows: list[tuple[_LabelRow, Path | None, bool]], unlabelled: list[Path]
    ) -> Iterator[Candidate]:
        seen: set[str] = set()
        for row, path, ambiguous in rows:
            duplicate = row.record_id in seen
            seen.add(row.record_id)
            source = str(path) if path is not None else str(self.root / row.record_id)
            yield Candidate(
                row.record_id, source,
                lambda row=row, path=path, amb=ambiguous, dup=duplicate:
                    self._read(row, path, amb, dup),
            )
        for path in unlabelled:
            yield Candidate(_relative_id(self.root, path), str(path), self._unlabelled)

    def _unlabelled(self) -> EcgRecord:
        raise Excluded("unlabelled_record", f"no row of {self.labels_csv} names this record")

    def label_of(self, raw_label: str) -> str:
        """The label a CSV cell gives after ``label_map``, or raise Excluded."""
        if self.task == "multilabel":
            return self._label_set_of(raw_label)
        raw_label = raw_label.strip()
        if not raw_label:
            raise Excluded("unknown_label", f"{self.labels_csv}: empty label cell")
        label = self.label_map.get(raw_label, raw_label)
        if raw_label in self.exclude_labels or label in self.exclude_labels:
            shown = raw_label if label == raw_label else f"{raw_label} (mapped to {label})"
            raise Excluded("excluded_label", f"label {shown} is in exclude_labels")
        return label

    def _label_set_of(self, cell: str) -> str:
        """The ``;``-joined label set of a record's joined cells under ``task: multilabel``."""
        kept, dropped = [], []
        for raw_label in label_set(cell):
            label = self.label_map.get(raw_label, raw_label)
            (dropped if raw_label in self.exclude_labels or label in self.exclude_labels else kept).append(label)
        if not kept:
            if dropped:
                raise Excluded("excluded_label", f"labels {sorted(set(dropped))} are all in exclude_labels")
            raise Excluded("unknown_label", f"{self.labels_csv}: empty label cell")
        return join_label_set(kept)

    def _read(
        self, row: _LabelRow, header_path: Path | None, ambiguous: bool, duplicate: bool
    ) -> EcgRecord:
        if duplicate:
            raise Excluded("duplicate_id", f"{self.labels_csv}: record listed twice")
        label = self.label_of(row.label)
        if header_path is None:
            raise Excluded(
                "duplicate_id" if ambiguous else "missing_file",
                f"{self.labels_csv}: record {row.record_id!r} "
                + ("names several records; give the relative path" if ambiguous
                   else f"has no header under {self.root}"),
            )
        signal, fs, lead, comments = read_record_leads(self, header_path)
        patient = row.patient or patient_from_comments(comments) or Path(row.record_id).name
        return EcgRecord(row.record_id, patient, signal, fs, lead, label, str(header_path))


def _record_id(cell: str) -> str:
    record_id = str(cell).strip()
    for suffix in _RECORD_SUFFIXES:
        if record_id.lower().endswith(suffix):
            return record_id[: -len(suffix)]
    return record_id
