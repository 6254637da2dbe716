"""The one in-memory form every reader returns, and the log of what the readers left out.

Readers of very different formats (Chapman CSV folders, PhysioNet WFDB, a user's own
monitor corpus) all hand the rest of the project the same :class:`EcgRecord`, so that
preprocessing, splitting and training never care where an ECG came from. Nothing is
dropped silently: every record a reader skips goes into an :class:`ExclusionLog` with a
reason from :data:`EXCLUSION_REASONS`, so the counts can be reported next to the results.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

# The 11 rhythm acronyms of the Chapman-Shaoxing Diagnostics.xlsx; class index = position.
RHYTHMS: tuple[str, ...] = (
    "SB",
    "SR",
    "AFIB",
    "ST",
    "SVT",
    "AF",
    "SA",
    "AT",
    "AVNRT",
    "AVRT",
    "SAAWR",
)

EXCLUSION_REASONS: tuple[str, ...] = (
    "missing_file",
    "unreadable",
    "too_short",
    "nan",
    "flat_lead",
    "unknown_label",
    "duplicate_id",
    "no_rhythm_code",
    "multiple_rhythm_codes",
    "missing_lead",
)

# Spellings seen in the Chapman release's own spreadsheets that mean one of the 11 classes.
_RHYTHM_ALIASES = {"SI": "SA"}

_LOG_COLUMNS = ["dataset", "record_id", "source", "reason", "detail"]


@dataclass(frozen=True)
class EcgRecord:
    """One lead of one recording, in millivolts, with where it came from.

    A single lead is kept because the study uses lead II only; carrying all twelve
    would multiply memory for nothing. ``source`` is the file path so that any odd
    value downstream can be traced back to the file that produced it.
    """

    record_id: str
    patient_id: str
    signal: np.ndarray  # 1-D float64, millivolts
    fs: float
    lead: str
    label: str | None
    source: str

    def __post_init__(self) -> None:
        signal = np.asarray(self.signal)
        if signal.ndim != 1:
            raise ValueError(
                f"EcgRecord {self.record_id!r} from {self.source}: signal must be 1-D "
                f"(one lead), got shape {signal.shape}"
            )
        if not np.isfinite(self.fs) or self.fs <= 0:
            raise ValueError(
                f"EcgRecord {self.record_id!r} from {self.source}: sampling rate must be "
                f"positive, got {self.fs!r}"
            )
        if self.label is not None and self.label not in RHYTHMS:
            raise ValueError(
                f"EcgRecord {self.record_id!r} from {self.source}: label {self.label!r} "
                f"is not one of {RHYTHMS}"
            )

    @property
    def duration_s(self) -> float:
        return len(self.signal) / self.fs


class ExclusionLog:
    """Every record a reader refused, with the reason, so data loss is counted and reported."""

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
        logger.log(
            self._log_level,
            "%s: excluded %s (%s): %s%s",
            dataset,
            record_id,
            source,
            reason,
            f" - {detail}" if detail else "",
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


def rhythm_from_acronym(value: object) -> str | None:
    """The class acronym for a label cell, or None when it is none of the 11.

    Case and surrounding blanks are ignored because hand-edited spreadsheets vary;
    ``SI`` becomes ``SA`` because the Chapman release itself uses both for sinus irregularity.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip().upper()
    text = _RHYTHM_ALIASES.get(text, text)
    for rhythm in RHYTHMS:
        if rhythm.upper() == text:
            return rhythm
    return None


def signal_problem(
    signal: np.ndarray, fs: float, min_duration_s: float, lead: str
) -> tuple[str, str] | None:
    """The exclusion reason and detail for a lead no model should see, or None if usable.

    Shared by every reader so that "too short", "NaN" and "flat" mean the same thing
    whatever the file format. Order matters: a NaN lead is reported as ``nan`` even if
    it is also short, so each record is counted once, under the first reason.
    """
    n_samples = len(signal)
    if n_samples < int(np.ceil(min_duration_s * fs)):
        return (
            "too_short",
            f"{n_samples} samples = {n_samples / fs:.2f} s at {fs:g} Hz < {min_duration_s} s",
        )
    n_nan = int(np.isnan(signal).sum())
    if n_nan:
        return "nan", f"{n_nan} NaN samples in lead {lead}"
    if np.ptp(signal) == 0:
        return "flat_lead", f"lead {lead} is constant at {signal[0]:g}"
    return None
