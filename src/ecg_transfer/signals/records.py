"""The one in-memory form every reader returns, the contract readers share, and the log of
what they left out.

Readers of very different formats (Chapman CSV folders, PhysioNet WFDB, a user's own
folders) all hand the rest of the project the same :class:`EcgRecord`, so that
preprocessing, splitting and training never care where an ECG came from. A reader is any
object that follows :class:`RecordSource`; it lists candidate records and lets
:func:`read_checked` read, check and exclude them, so that "too short", "non-finite" or
"implausible amplitude" mean the same thing whatever the format. Nothing is dropped
silently: every record a reader skips goes into an :class:`ExclusionLog` with a reason from
:data:`EXCLUSION_REASONS`, so the counts can be reported next to the results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from ecg_transfer.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere
from ecg_transfer.signals.leads import split_leads

logger = logging.getLogger(__name__)

EXCLUSION_REASONS: tuple[str, ...] = (
    "missing_file",
    "unreadable",
    "too_short",
    "non_finite",
    "implausible_amplitude",
    "flat_lead",
    "unknown_label",
    "excluded_label",
    "unlabelled_record",
    "duplicate_id",
    "no_rhythm_code",
    "multiple_rhythm_codes",
    "missing_lead",
)

# No ECG lead reaches 20 mV (a tall QRS is 2-4 mV); a larger value is a unit or gain error.
DEFAULT_MAX_AMPLITUDE_MV = 20.0
DEFAULT_MIN_DURATION_S = 8.2  # a 2,048-sample window at 250 Hz lasts 8.192 s

# Written by the project into every folder of simulated data it saves; a source whose root
# carries it is simulated, which the study reports instead of trusting a flag.
SYNTHETIC_MARKER = ".ecg_transfer_synthetic.json"

_LOG_COLUMNS = ["dataset", "record_id", "source", "reason", "detail"]


@dataclass(frozen=True)
class EcgRecord:
    """The lead(s) of one recording a study reads, in millivolts, with where it came from.

    Only the leads the study uses are kept (lead II alone by default: carrying all twelve
    would multiply memory for nothing). One lead: ``signal`` is 1-D and ``lead`` its name
    as the file gives it. Several leads (``preprocessing.leads``): ``signal`` is
    (C, samples), one row per lead, and ``lead`` the C names joined by ',' in that order. ``label`` is any class name the reader gives
    (``None`` for unlabelled data): the class list is data, not a constant. ``source`` is
    the file path so that any odd value downstream can be traced back to its file.
    """

    record_id: str
    patient_id: str
    signal: np.ndarray  # (samples,) or (C, samples) float64, millivolts; NaN marks a gap
    fs: float
    lead: str
    label: str | None
    source: str

    def __post_init__(self) -> None:
        signal = np.asarray(self.signal)
        n_leads = len(split_leads(self.lead))
        if signal.ndim != 1 and not (
            signal.ndim == 2 and n_leads > 1 and signal.shape[0] == n_leads
        ):
            raise ValueError(
                f"EcgRecord {self.record_id!r} from {self.source}: signal must be 1-D for one "
                f"lead or (C, samples) for C leads; got shape {signal.shape} for lead(s) {self.lead!r}"
            )
        if not np.isfinite(self.fs) or self.fs <= 0:
            raise ValueError(
                f"EcgRecord {self.record_id!r} from {self.source}: sampling rate must be "
                f"positive, got {self.fs!r}"
            )
        if self.label is not None and (not isinstance(self.label, str) or not self.label):
            raise ValueError(
                f"EcgRecord {self.record_id!r} from {self.source}: label must be a non-empty "
                f"string or None, got {self.label!r}"
            )

    @property
    def n_samples(self) -> int:
        return int(np.shape(self.signal)[-1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs

    def lead_signals(self) -> list[tuple[str, np.ndarray]]:
        """(lead name, 1-D signal) for each lead the record holds, in order."""
        if np.ndim(self.signal) == 1:
            return [(self.lead, np.asarray(self.signal))]
        return list(zip(split_leads(self.lead), np.asarray(self.signal)))


class ExclusionLog:
    """Every record a reader refused, with the reason, so data loss is counted and reported.

    Each exclusion is logged at DEBUG; :meth:`summarise` logs one line per reason at
    ``log_level`` (WARNING by default), so a corpus with thousands of bad files does not
    flood the log. The full list is :meth:`to_frame`, which ingestion saves as a CSV.
    """

    def __init__(self, log_level: int = logging.WARNING) -> None:
        self._rows: list[dict[str, str]] = []
        self._log_level = log_level

    def add(
        self, dataset: str, record_id: str, source: str, reason: str, detail: str = ""
    ) -> None:
        if reason not in EXCLUSION_REASONS:
            raise ValueError(
                f"unknown exclusion reason {reason!r}; expected one of {EXCLUSION_REASONS}"
            )
        self._rows.append(
            {
                "dataset": str(dataset),
                "record_id": str(record_id),
                "source": str(source),
                "reason": reason,
                "detail": str(detail),
            }
        )
        logger.debug(
            "%s: excluded %s (%s): %s%s", dataset, record_id, source, reason,
            f" - {detail}" if detail else "",
        )

    def summarise(self, since: int = 0) -> None:
        """One log line per (dataset, reason) for the exclusions from row ``since`` on."""
        rows = self._rows[since:]
        groups: dict[tuple[str, str], list[dict[str, str]]] = {}
        for row in rows:
            groups.setdefault((row["dataset"], row["reason"]), []).append(row)
        for (dataset, reason), group in groups.items():
            first = group[0]
            logger.log(
                self._log_level,
                "%s: %d record(s) excluded as %s, e.g. %s (%s)%s",
                dataset, len(group), reason, first["record_id"], first["source"],
                f": {first['detail']}" if first["detail"] else "",
            )

    def __len__(self) -> int:
        return len(self._rows)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self._rows, columns=_LOG_COLUMNS)

    def counts(self) -> pd.DataFrame:
        frame = self.to_frame()
        if frame.empty:
            return pd.DataFrame(
                {"dataset": pd.Series(dtype=str), "reason": pd.Series(dtype=str),
                 "count": pd.Series(dtype="int64")}
            )
        return (
            frame.groupby(["dataset", "reason"], sort=True)
            .size()
            .rename("count")
            .reset_index()
        )

    def count(self, reason: str, dataset: str | None = None) -> int:
        """How many records were excluded for ``reason`` (optionally in one dataset)."""
        return sum(
            1
            for row in self._rows
            if row["reason"] == reason and (dataset is None or row["dataset"] == dataset)
        )


@runtime_checkable
class RecordSource(Protocol):
    """What a reader is: a folder it reads and the records it yields.

    ``iter_records`` yields every usable record and adds every unusable one to
    ``exclusions`` under one reason; building the reader reads nothing. ``root`` is the
    folder the records come from: ingestion looks there for :data:`SYNTHETIC_MARKER` to
    tell simulated data from real. A new file format is one class with these two members
    (see :func:`read_checked` for the loop every project reader shares).
    """

    root: Path

    def iter_records(self, exclusions: ExclusionLog) -> Iterator[EcgRecord]: ...


def is_simulated(root: str | Path) -> bool:
    """Whether ``root`` holds data this project simulated (it carries the synthetic marker)."""
    return (Path(root) / SYNTHETIC_MARKER).is_file()


class Excluded(Exception):
    """Raised by a reader's read step to refuse one record under an :data:`EXCLUSION_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in EXCLUSION_REASONS:
            raise ValueError(
                f"unknown exclusion reason {reason!r}; expected one of {EXCLUSION_REASONS}"
            )
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SignalChecks:
    """The checks every record's chosen lead passes before any model sees it.

    ``max_amplitude_mv`` is in millivolts, a physical unit, so it means the same at any gain:
    a sample further than this from the lead's median is a unit or gain error (or a corrupt
    sample), not an ECG. ``allow_nan_gaps`` lets NaN samples (WFDB's invalid samples: a lead
    off for a while in a long monitor recording) through when a NaN-free stretch of at least
    ``min_duration_s`` remains; only the unlabelled corpus reader sets it, because its
    preprocessing cuts windows from the NaN-free stretches, while a labelled record gives
    windows at fixed places of the whole record.
    """

    min_duration_s: float = DEFAULT_MIN_DURATION_S
    max_amplitude_mv: float = DEFAULT_MAX_AMPLITUDE_MV
    allow_nan_gaps: bool = False

    def __post_init__(self) -> None:
        if not np.isfinite(self.min_duration_s) or self.min_duration_s < 0:
            raise ValueError(f"min_duration_s must be >= 0, got {self.min_duration_s!r}")
        if not np.isfinite(self.max_amplitude_mv) or self.max_amplitude_mv <= 0:
            raise ValueError(f"max_amplitude_mv must be positive, got {self.max_amplitude_mv!r}")
        if not isinstance(self.allow_nan_gaps, bool | np.bool_):
            raise ValueError(f"allow_nan_gaps must be true or false, got {self.allow_nan_gaps!r}")

    def problem(self, record: EcgRecord) -> tuple[str, str] | None:
        """The first problem of the record's leads, in lead order (each lead is checked)."""
        for lead, signal in record.lead_signals():
            problem = signal_problem(
                signal, record.fs, self.min_duration_s, lead, self.max_amplitude_mv,
                allow_nan_gaps=self.allow_nan_gaps,
            )
            if problem is not None:
                return problem
        return None


def longest_nan_free_stretch(signal: np.ndarray) -> int:
    """Samples in the longest run of finite samples of ``signal`` (0 when there is none)."""
    finite = np.isfinite(np.asarray(signal, dtype=np.float64))
    edges = np.flatnonzero(np.diff(np.concatenate(([False], finite, [False])).astype(np.int8)))
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


def signal_problem(
    signal: np.ndarray,
    fs: float,
    min_duration_s: float,
    lead: str,
    max_amplitude_mv: float = DEFAULT_MAX_AMPLITUDE_MV,
    allow_nan_gaps: bool = False,
) -> tuple[str, str] | None:
    """The exclusion reason and detail for a lead no model should see, or None if usable.

    ``signal`` is in millivolts. Order matters: each record is counted once, under the
    first reason that applies (too_short, non_finite, implausible_amplitude, flat_lead).
    With ``allow_nan_gaps`` NaN samples are gaps, not a fault, as long as the lead is not all
    NaN and its longest NaN-free stretch lasts ``min_duration_s``; an infinite sample is
    ``non_finite`` either way. The amplitude and flat checks then look at the other samples.
    """
    signal = np.asarray(signal, dtype=np.float64)
    n_samples = len(signal)
    min_samples = int(np.ceil(min_duration_s * fs))
    if n_samples < min_samples:
        return (
            "too_short",
            f"{n_samples} samples = {n_samples / fs:.2f} s at {fs:g} Hz < {min_duration_s} s",
        )
    finite = np.isfinite(signal)
    if not finite.all():
        n_nan = int(np.isnan(signal).sum())
        n_inf = int((~finite).sum()) - n_nan
        if not allow_nan_gaps or n_inf:
            return "non_finite", f"{n_nan} NaN and {n_inf} infinite samples in lead {lead}"
        if n_nan == n_samples:
            return "non_finite", f"lead {lead} is all NaN ({n_nan} samples)"
        longest = longest_nan_free_stretch(signal)
        if longest < max(min_samples, 1):
            return (
                "non_finite",
                f"{n_nan} NaN samples in lead {lead} leave no NaN-free stretch of "
                f"{min_duration_s} s: the longest is {longest} samples = {longest / fs:.2f} s "
                f"at {fs:g} Hz",
            )
        signal = signal[finite]
    deviation = np.abs(signal - np.median(signal))
    worst = int(np.argmax(deviation))
    if deviation[worst] > max_amplitude_mv:
        where = int(np.flatnonzero(finite)[worst])  # the sample's index in the whole lead
        return (
            "implausible_amplitude",
            f"lead {lead} sample {where} is {signal[worst]:.6g} mV, {deviation[worst]:.6g} mV "
            f"from the lead's median (max_amplitude_mv={max_amplitude_mv:g})",
        )
    if np.ptp(signal) == 0:
        return "flat_lead", f"lead {lead} is constant at {signal[0]:g}"
    return None


@dataclass(frozen=True)
class Candidate:
    """A record a reader may yield: its id and file, and how to read it (may raise Excluded)."""

    record_id: str
    source: str
    read: Callable[[], EcgRecord]


def read_checked(
    dataset: str,
    candidates: Iterable[Candidate],
    exclusions: ExclusionLog,
    checks: SignalChecks,
    progress: bool = True,
    total: int | None = None,
) -> Iterator[EcgRecord]:
    """Read each candidate, check its lead, and yield it or log its exclusion.

    The one loop every reader runs: a read step that raises :class:`Excluded`, or a lead
    that fails :class:`SignalChecks`, becomes one row in ``exclusions`` (first reason only);
    other exceptions are bugs and propagate. When the scan ends, one summary line per reason.
    """
    start = len(exclusions)
    for candidate in tqdm(
        candidates, total=total, desc=f"reading {dataset}", disable=not progress, unit="record"
    ):
        try:
            record = candidate.read()
            problem = checks.problem(record)
            if problem is not None:
                raise Excluded(*problem)
        except Excluded as excluded:
            exclusions.add(
                dataset, candidate.record_id, candidate.source, excluded.reason, excluded.detail
            )
            continue
        yield record
    exclusions.summarise(since=start)

