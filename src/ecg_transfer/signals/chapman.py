"""Reader and writer for the figshare release of the Chapman-Shaoxing 12-lead ECG database.

Layout of the release (Zheng et al., Sci Data 7:48, 2020)::

    <root>/Diagnostics.xlsx          one row per recording: FileName (no extension), Rhythm, ...
    <root>/ECGDataDenoised/<FileName>.csv   5000 x 12 values, microvolts, 500 Hz
    <root>/ECGData/<FileName>.csv           the same, before denoising

Quirks of the real files this module absorbs (reported by projects that use the release):
CSVs come with or without a header row; values are microvolts (we hand out millivolts);
``RhythmNames.xlsx`` spells sinus irregularity ``SI`` where ``Diagnostics.xlsx`` says ``SA``;
40 denoised files are all zeros; some files are short or hold NaNs. Every record that
cannot be used is counted in the :class:`ExclusionLog` under one reason, never dropped silently.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecg_transfer.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere
from ecg_transfer.signals.folder_reader import FolderReader, quietly
from ecg_transfer.signals.leads import joined, lead_aliases, normalise_lead_name
from ecg_transfer.signals.records import (
    DEFAULT_MAX_AMPLITUDE_MV,
    DEFAULT_MIN_DURATION_S,
    Candidate,
    EcgRecord,
    Excluded,
    SignalChecks,
)

# The 11 rhythm acronyms of the Chapman-Shaoxing Diagnostics.xlsx, in the paper's order.
# Only the Chapman readers (this module and the PhysioNet SNOMED reader) know them: every
# other part of the project takes its class list from the data.
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

# Spellings seen in the Chapman release's own spreadsheets that mean one of the 11 classes.
_RHYTHM_ALIASES = {"SI": "SA"}

CHAPMAN_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)
DIAGNOSTICS_FILE = "Diagnostics.xlsx"
DIAGNOSTICS_COLUMNS: tuple[str, ...] = (
    "FileName", "Rhythm", "Beat", "PatientAge", "Gender", "VentricularRate", "AtrialRate",
    "QRSDuration", "QTInterval", "QTCorrected", "RAxis", "TAxis", "QRSCount", "QOnset",
    "QOffset", "TOffset",
)
CSV_FOLDERS: tuple[str, ...] = ("ECGDataDenoised", "ECGData")
DATASET_NAME = "chapman_shaoxing"

_MICROVOLTS_PER_MILLIVOLT = 1000.0



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


# The name reads well where a Diagnostics.xlsx cell is mapped.
chapman_rhythm_label = rhythm_from_acronym


def read_diagnostics(root: str | Path) -> pd.DataFrame:
    """Diagnostics.xlsx as a DataFrame, with FileName as text, checked for the columns we use."""
    path = Path(root) / DIAGNOSTICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"Chapman release: no {DIAGNOSTICS_FILE} at {path}")
    try:
        frame = pd.read_excel(path, engine="openpyxl", dtype={"FileName": str})
    except Exception as error:  # openpyxl raises several unrelated types on a bad file
        raise ValueError(f"{path}: cannot be read as an Excel workbook ({error})") from error
    missing = [column for column in ("FileName", "Rhythm") if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; found {list(frame.columns)}"
        )
    return frame


def read_chapman_csv(path: str | Path) -> pd.DataFrame:
    """One waveform CSV as a (samples x 12) frame in microvolts, columns named by lead.

    The header row is detected rather than assumed: a first line that does not parse as
    numbers is a header. Without one, columns are taken in the release's lead order.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    first_line = text.split("\n", 1)[0].strip()
    if not first_line:
        raise ValueError(f"{path}: empty file or empty first line")
    first_fields = next(csv.reader([first_line]))
    has_header = not all(_is_number(field) for field in first_fields)
    frame = pd.read_csv(io.StringIO(text), header=0 if has_header else None)
    if has_header:
        by_lower = {str(column).strip().lower(): column for column in frame.columns}
        missing = [lead for lead in CHAPMAN_LEADS if lead.lower() not in by_lower]
        if missing:
            raise ValueError(
                f"{path}: header lacks lead column(s) {missing}; found {list(frame.columns)}"
            )
        frame = frame[[by_lower[lead.lower()] for lead in CHAPMAN_LEADS]]
    elif frame.shape[1] != len(CHAPMAN_LEADS):
        raise ValueError(
            f"{path}: no header row and {frame.shape[1]} columns; expected "
            f"{len(CHAPMAN_LEADS)} in the order {CHAPMAN_LEADS}"
        )
    frame.columns = list(CHAPMAN_LEADS)
    try:
        return frame.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: non-numeric values in the waveform ({error})") from error


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def write_chapman_release(
    root: str | Path,
    diagnostics: pd.DataFrame,
    waveforms: Iterable[tuple[str, np.ndarray]],
    csv_folder: str = "ECGDataDenoised",
    progress: bool = True,
) -> int:
    """Write a release in the real layout so the same reader serves real and synthetic data.

    ``waveforms`` yields ``(FileName, array (n, 12) in microvolts, CHAPMAN_LEADS order)``.
    CSVs get a header row, as most of the real files have. Returns the number of CSVs written.
    """
    root = Path(root)
    missing = [column for column in ("FileName", "Rhythm") if column not in diagnostics.columns]
    if missing:
        raise ValueError(f"diagnostics for {root}: missing column(s) {missing}")
    wave_dir = root / csv_folder
    wave_dir.mkdir(parents=True, exist_ok=True)
    diagnostics.to_excel(root / DIAGNOSTICS_FILE, index=False, engine="openpyxl")
    written = 0
    for file_name, waveform in tqdm(
        waveforms, desc=f"writing {wave_dir}", disable=not progress, unit="record"
    ):
        waveform = np.asarray(waveform, dtype=np.float64)
        if waveform.ndim != 2 or waveform.shape[1] != len(CHAPMAN_LEADS):
            raise ValueError(
                f"waveform {file_name!r} for {wave_dir}: expected shape (n, 12), "
                f"got {waveform.shape}"
            )
        (wave_dir / f"{file_name}.csv").write_text(_format_csv(waveform), encoding="utf-8")
        written += 1
    return written


def _format_csv(waveform_uv: np.ndarray) -> str:
    """CSV text with a header row; 3 decimals of a microvolt is far below any ECG's noise.

    Formatted by hand because pandas' ``to_csv`` is about four times slower here, which
    matters when a synthetic release of 10,646 records is written.
    """
    row_format = ",".join(["%.3f"] * waveform_uv.shape[1]) + "\n"
    body = "".join(row_format % tuple(row) for row in waveform_uv.tolist())
    return ",".join(CHAPMAN_LEADS) + "\n" + body


def _chapman_lead(lead: str, source: Path) -> str:
    """The release's column for ``lead`` (any of its names), or Excluded ``missing_lead``."""
    wanted = {normalise_lead_name(name) for name in lead_aliases(lead)}
    for column in CHAPMAN_LEADS:
        if normalise_lead_name(column) in wanted:
            return column
    raise Excluded("missing_lead", f"{source}: lead {lead} is not among the release's leads {CHAPMAN_LEADS}")


class ChapmanRelease(FolderReader):
    """A Chapman-Shaoxing release on disk, read lazily one record at a time.

    Nothing is read when the object is built (only the folder is checked), so a Kedro
    catalog can hand it to a node that streams 10,646 records without holding them all.
    The patient id is the FileName: the release has one recording per patient.
    """

    reader_name = "chapman"
    dataset_name = DATASET_NAME
    folder_kind = "Chapman release"
    writable = True
    written_files = ("*.csv", DIAGNOSTICS_FILE)

    def __init__(
        self,
        root: str | Path,
        csv_folder: str = "ECGDataDenoised",
        lead: str = "II",
        fs: float = 500.0,
        min_duration_s: float = DEFAULT_MIN_DURATION_S,
        max_amplitude_mv: float = DEFAULT_MAX_AMPLITUDE_MV,
        progress: bool = True,
    ) -> None:
        super().__init__(root, progress)
        matched = [name for name in CHAPMAN_LEADS if name.lower() == lead.strip().lower()]
        if not matched:
            raise ValueError(f"lead {lead!r} is not one of the release's leads {CHAPMAN_LEADS}")
        self.csv_folder = csv_folder
        self.lead = matched[0]
        self.fs = float(fs)
        if not np.isfinite(self.fs) or self.fs <= 0:
            raise ValueError(f"fs must be a positive number of Hz, got {fs!r}")
        self.checks = SignalChecks(float(min_duration_s), float(max_amplitude_mv))

    def __repr__(self) -> str:
        return (
            f"ChapmanRelease(root={str(self.root)!r}, csv_folder={self.csv_folder!r}, "
            f"lead={self.lead!r}, fs={self.fs}, min_duration_s={self.min_duration_s})"
        )

    @property
    def lead_names(self) -> tuple[str, ...]:
        return (self.lead,)

    def record_lead_names(self) -> list[tuple[str, ...]]:
        return [CHAPMAN_LEADS]  # every waveform CSV holds the twelve (a CSV lacking one is unreadable)

    @classmethod
    def folder_exists(cls, root: Path, options: Mapping[str, Any]) -> bool:
        return (root / DIAGNOSTICS_FILE).is_file()

    @classmethod
    def write_folder(cls, root: Path, data: Any, options: Mapping[str, Any], progress: bool) -> int:
        if not hasattr(data, "diagnostics") or not hasattr(data, "iter_waveforms"):
            raise TypeError(
                f"a Chapman release at {root} is saved from an object with .diagnostics and "
                f".iter_waveforms(); got {type(data).__name__}"
            )
        return write_chapman_release(
            root, data.diagnostics, quietly(data.iter_waveforms),
            csv_folder=options.get("csv_folder", "ECGDataDenoised"), progress=progress,
        )

    @property
    def diagnostics(self) -> pd.DataFrame:
        return read_diagnostics(self.root)

    def candidates(self) -> tuple[Iterator[Candidate], int]:
        """Every row of Diagnostics.xlsx. Checks run cheapest first (duplicate and label need
        no file read) and a record is logged under the first reason that applies, so the
        counts add up to the rows."""
        diagnostics = read_diagnostics(self.root)
        wave_dir = self.root / self.csv_folder

        def candidates() -> Iterator[Candidate]:
            seen: set[str] = set()
            for file_name, rhythm in zip(diagnostics["FileName"], diagnostics["Rhythm"]):
                record_id = str(file_name).strip()
                source = wave_dir / f"{record_id}.csv"
                duplicate = record_id in seen
                seen.add(record_id)
                yield Candidate(
                    record_id, str(source),
                    lambda r=record_id, s=source, y=rhythm, d=duplicate: self._read(r, s, y, d),
                )

        return candidates(), len(diagnostics)

    def _read(self, record_id: str, source: Path, rhythm: object, duplicate: bool) -> EcgRecord:
        if duplicate:
            raise Excluded("duplicate_id", "FileName listed more than once in Diagnostics.xlsx")
        label = chapman_rhythm_label(rhythm)
        if label is None:
            raise Excluded("unknown_label", f"Rhythm {rhythm!r} is none of {RHYTHMS}")
        if not source.is_file():
            raise Excluded("missing_file", "listed in Diagnostics.xlsx but no CSV")
        leads = self.read_leads or (self.lead,)
        columns = [_chapman_lead(lead, source) for lead in leads]
        try:
            signal_uv = read_chapman_csv(source)[columns].to_numpy().T
        except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
            raise Excluded("unreadable", str(error)) from error
        return EcgRecord(
            record_id=record_id,
            patient_id=record_id,
            signal=(signal_uv[0] if len(leads) == 1 else signal_uv) / _MICROVOLTS_PER_MILLIVOLT,
            fs=self.fs,
            lead=joined(columns),
            label=label,
            source=str(source),
        )
