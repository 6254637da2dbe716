"""The base of the project's readers: one folder of records, read lazily, and what the Kedro
dataset needs to know about such a folder.

A reader is any :class:`~ecg_transfer.signals.records.RecordSource`. The project's own readers
subclass :class:`FolderReader`, which holds what they share (the folder, the signal checks,
the progress flag, the one read loop of :func:`~ecg_transfer.signals.records.read_checked`)
and, as class attributes, what :class:`~ecg_transfer.datasets.RawEcgDataset` asks of a
reader: its ``reader:`` name in the catalog, how to tell that its folder exists, and whether
and how the project writes such a folder (only for its bundled synthetic data). A new format
is one subclass (``reader_name``, ``candidates``) and one catalog entry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from ecg_transfer.signals.leads import joined
from ecg_transfer.signals.records import (
    Candidate,
    EcgRecord,
    ExclusionLog,
    SignalChecks,
    read_checked,
)


def require_folder(root: str | Path, kind: str) -> Path:
    """``root`` as a Path, or FileNotFoundError naming it (readers read nothing when built,
    so a wrong path would otherwise surface only when a node first iterates)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{kind} folder does not exist: {root}")
    return root


def has_headers(root: Path, options: Mapping[str, Any]) -> bool:
    """Whether ``root`` is a folder holding at least one WFDB header (anywhere below it)."""
    return root.is_dir() and any(root.rglob("*.hea"))


def quietly(iterate: Callable[..., Iterable]) -> Iterable:
    """Iterate a source without its own progress bar when it has one: the writer shows one."""
    if "progress" in inspect.signature(iterate).parameters:
        return iterate(progress=False)
    return iterate()


class FolderReader:
    """A folder of ECG records, read one record at a time into :class:`EcgRecord`.

    Subclasses set the class attributes, set ``self.checks`` (the :class:`SignalChecks` of
    their options) and implement :meth:`candidates`; building a reader checks that the
    folder exists (first, so a wrong path is the error a user sees) and reads nothing else.
    """

    checks: SignalChecks
    # The leads to read when a study reads several (set by signals.leads.reading on a copy);
    # None: the one lead the catalog entry names (``lead_names``).
    read_leads: tuple[str, ...] | None = None

    reader_name: ClassVar[str]  # the catalog's `reader:` name
    dataset_name: ClassVar[str]  # the `dataset` column of the exclusion log and the progress bar
    folder_kind: ClassVar[str]  # "<folder_kind> folder does not exist: <root>"
    # Only folders of the bundled synthetic data are written (write_folder); these patterns
    # are cleared before such a folder is rewritten.
    writable: ClassVar[bool] = False
    written_files: ClassVar[tuple[str, ...]] = ()
    why_read_only: ClassVar[str] = "it points at data this project never writes"

    def __init__(self, root: str | Path, progress: bool) -> None:
        self.root = require_folder(root, self.folder_kind)
        self.progress = progress

    @property
    def lead_names(self) -> tuple[str, ...] | None:
        """The names of the one lead a single-lead study reads (the catalog's lead option);
        None: the reader does not say (then a one-lead study is not checked against it)."""
        return None

    def record_lead_names(self) -> list[tuple[str, ...]]:
        """The lead names of every record (for ``preprocessing.leads: all``); a record whose
        header cannot be read is left out here (its scan excludes it as ``unreadable``)."""
        raise ValueError(
            f"preprocessing.leads is 'all' but {type(self).__name__} cannot list its records' leads; "
            "list the leads instead"
        )

    @property
    def min_duration_s(self) -> float:
        return self.checks.min_duration_s

    @classmethod
    def folder_exists(cls, root: Path, options: Mapping[str, Any]) -> bool:
        """Whether a folder of this format is at ``root`` (``options``: the catalog entry's)."""
        return root.is_dir()

    @classmethod
    def write_folder(cls, root: Path, data: Any, options: Mapping[str, Any], progress: bool) -> int:
        """Write ``data`` as a folder of this format; return the number of records written."""
        raise TypeError(f"{cls.__name__} folders are read-only: {cls.why_read_only}")

    def candidates(self) -> tuple[Iterable[Candidate], int]:
        """The records to read, in order, and how many there are (for the progress bar)."""
        raise NotImplementedError

    def iter_records(self, exclusions: ExclusionLog) -> Iterator[EcgRecord]:
        """Yield every usable record; log each unusable one in ``exclusions`` under its reason."""
        candidates, total = self.candidates()
        wanted = None if self.read_leads is None else joined(self.read_leads)
        for record in read_checked(
            self.dataset_name, candidates, exclusions, self.checks, self.progress, total
        ):
            if wanted is not None and record.lead != wanted:
                raise TypeError(
                    f"{type(self).__name__} was asked for the leads {wanted} (preprocessing.leads) but "
                    f"gave record {record.record_id!r} with lead(s) {record.lead!r}: it does not read "
                    "several leads (see docs/data_readers.md, 'Several leads')"
                )
            yield record
