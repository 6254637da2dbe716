"""Readers and a writer for ECGs in the WFDB format (``.hea`` header + ``.dat`` or ``.mat``).

Three kinds of WFDB folder are read here, all into :class:`EcgRecord`:

* :class:`WfdbFolder`: a user's own unlabelled corpus (bedside monitors, Holters) at any
  sampling rate, the lead chosen by name from a fallback list. This is the pretraining corpus.
* :class:`PhysioNetLabelledWfdb`: the PhysioNet release of Chapman/Ningbo and the
  PhysioNet/CinC 2020/2021 challenge folders, labelled by SNOMED-CT codes on ``# Dx:``.
* :class:`WfdbLabelledFolder`: a user's own WFDB records plus a CSV of labels, with any
  label strings the user has (renamed, merged or left out by option).

Real headers vary. The ``wfdb`` package reads most of them; where it raises, a small
lenient parser (:func:`read_wfdb_minimal`) reads formats 16, 212 and ``.mat`` itself, and
where that fails too the record is logged as ``unreadable`` with the file and the reason,
so one bad file never stops a corpus of thousands. A header whose sampling frequency is
missing, not a number or not positive is ``unreadable`` too: wfdb would silently read such
a record at 250 Hz.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.io
import wfdb
from ecg_transfer.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere

from ecg_transfer.signals.chapman import RHYTHMS
from ecg_transfer.signals.records import (
    DEFAULT_MAX_AMPLITUDE_MV,
    DEFAULT_MIN_DURATION_S,
    Candidate,
    EcgRecord,
    Excluded,
    ExclusionLog,
    SignalChecks,
    read_checked,
)

# Lead II under the names monitors and databases give it (MIT-BIH says MLII).
DEFAULT_LEAD_NAMES: tuple[str, ...] = ("II", "MLII", "ECG II", "ECG2", "ECG 2", "Lead II")

# SNOMED-CT codes of the 11 rhythms, from the PhysioNet release's condition table.
RHYTHM_SNOMED_CODES: dict[str, str] = {
    "426177001": "SB",
    "426783006": "SR",
    "164889003": "AFIB",
    "427084000": "ST",
    "426761007": "SVT",
    "164890007": "AF",
    "427393009": "SA",
    "713422000": "AT",
    "233896004": "AVNRT",
    "233897008": "AVRT",
    "195101003": "SAAWR",
}
# 195101003 is also used in the condition table for a second condition, so a record
# carrying it may not be SAAWR. See PhysioNetLabelledWfdb for how it is treated.
AMBIGUOUS_SAAWR_CODE = "195101003"

# Physical units to millivolts. WFDB's spec makes an omitted unit mean millivolts.
_UNIT_TO_MILLIVOLTS = {"mv": 1.0, "": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}
_PATIENT_COMMENT = re.compile(r"^\s*patient(?:[ _-]?id)?\s*[:=]\s*(\S.*?)\s*$", re.IGNORECASE)
_DX_COMMENT = re.compile(r"^\s*dx\s*:\s*(.*)$", re.IGNORECASE)
_RECORD_NAME = re.compile(r"^[-\w]+$")
_MISSPLIT_SIGNAL_LINE = re.compile(r"^,\d|\(-?\d+\)/|/mV\b")


@dataclass(frozen=True)
class WfdbSignals:
    """What any of the two read paths produces: physical signals and the header facts we use."""

    signals: np.ndarray  # (n_samples, n_channels), physical units
    fs: float
    sig_names: list[str]
    units: list[str]
    comments: list[str]


def _normalise_lead_name(name: object) -> str:
    return " ".join(str(name).split()).lower() if name is not None else ""


def _choose_channel(
    sig_names: Sequence[str | None], wanted: Sequence[str], allow_first_channel: bool,
    header_path: Path,
) -> int:
    """Index of the first wanted lead present (case- and spacing-insensitive)."""
    present = [_normalise_lead_name(name) for name in sig_names]
    for name in wanted:
        key = _normalise_lead_name(name)
        if key in present:
            return present.index(key)
    if allow_first_channel and sig_names:
        return 0
    raise Excluded(
        "missing_lead",
        f"{header_path}: none of the leads {tuple(wanted)} among {list(sig_names)}"
        + ("" if allow_first_channel else " (allow_first_channel=False)"),
    )


def _to_millivolts(signal: np.ndarray, unit: str | None, header_path: Path) -> np.ndarray:
    key = (unit or "").strip().lower()
    if key not in _UNIT_TO_MILLIVOLTS:
        raise Excluded(
            "unreadable",
            f"{header_path}: unit {unit!r} is not a voltage we can convert to mV "
            f"(known: mV, uV, V)",
        )
    return np.asarray(signal, dtype=np.float64) * _UNIT_TO_MILLIVOLTS[key]


# ----------------------------------------------------------------------------- lenient parser
def _read_header_text(header_path: Path) -> str:
    raw = header_path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _parse_number(text: str, what: str, header_path: Path) -> float:
    try:
        # A decimal comma comes from headers written under a European locale.
        return float(text.replace(",", "."))
    except ValueError:
        raise ValueError(f"{header_path}: cannot read {what} from {text!r}") from None


def _decode_212(raw: bytes, n_values: int) -> np.ndarray:
    """Format 212: two 12-bit two's-complement samples packed in every three bytes."""
    data = np.frombuffer(raw[: (len(raw) // 3) * 3], dtype=np.uint8).reshape(-1, 3).astype(np.int32)
    first = data[:, 0] | ((data[:, 1] & 0x0F) << 8)
    second = data[:, 2] | ((data[:, 1] & 0xF0) << 4)
    values = np.empty(2 * len(data), dtype=np.int32)
    values[0::2] = first
    values[1::2] = second
    values[values >= 2048] -= 4096
    return values[:n_values]


def read_wfdb_minimal(header_path: str | Path) -> WfdbSignals:
    """Read a single-segment WFDB record without the wfdb package's header parser.

    The fallback for headers wfdb rejects (UTF-16 text written by Windows tools, decimal
    commas, odd spacing). It reads what the study needs and no more: record line
    ``name nsig fs [nsamp]``, one line per signal ``file fmt [gain[(baseline)][/units]] ...
    [description]``; formats 16 and 212 from ``.dat`` files and ``.mat`` files (variable
    ``val``, channels x samples, as in the PhysioNet challenges). Anything else raises
    ValueError naming the file, which the readers log as ``unreadable``.
    """
    header_path = Path(header_path)
    all_lines = [line.strip() for line in _read_header_text(header_path).splitlines()]
    lines = [line for line in all_lines if line and not line.startswith("#")]
    comments = [line[1:].strip() for line in all_lines if line.startswith("#")]
    if not lines:
        raise ValueError(f"{header_path}: no record line in the header")
    record_fields = lines[0].split()
    if len(record_fields) < 3:
        raise ValueError(
            f"{header_path}: record line {lines[0]!r} needs at least 'name nsig fs'"
        )
    try:
        n_signals = int(record_fields[1])
    except ValueError:
        raise ValueError(
            f"{header_path}: record line {lines[0]!r}: number of signals "
            f"{record_fields[1]!r} is not an integer "
            f"(multi-segment records are not supported)"
        ) from None
    fs_text = re.split(r"[/(]", record_fields[2])[0]
    fs = _parse_number(fs_text, "the sampling frequency", header_path)
    signal_lines = lines[1 : 1 + n_signals]
    if len(signal_lines) != n_signals:
        raise ValueError(
            f"{header_path}: record line declares {n_signals} signals but "
            f"{len(signal_lines)} signal lines follow"
        )
    files: list[str] = []
    gains: list[float] = []
    baselines: list[float] = []
    units: list[str] = []
    names: list[str] = []
    formats: list[str] = []
    for line in signal_lines:
        fields = line.split()
        if len(fields) < 2:
            raise ValueError(f"{header_path}: signal line {line!r} lacks a format")
        files.append(fields[0])
        formats.append(re.split(r"[x:+]", fields[1])[0])
        gain, baseline, unit = 200.0, 0.0, "mV"  # WFDB defaults when the field is absent
        if len(fields) >= 3:
            match = re.match(r"^([-+0-9.,eE]+)(?:\(([-+0-9]+)\))?(?:/(.*))?$", fields[2])
            if match is None:
                raise ValueError(f"{header_path}: cannot read gain field {fields[2]!r}")
            gain = _parse_number(match.group(1), "a gain", header_path) or 200.0
            baseline = float(match.group(2)) if match.group(2) else 0.0
            unit = match.group(3) if match.group(3) is not None else "mV"
        gains.append(gain)
        baselines.append(baseline)
        units.append(unit)
        names.append(" ".join(fields[8:]) if len(fields) > 8 else "")
    if len(set(files)) != 1:
        raise ValueError(f"{header_path}: signals spread over several files {sorted(set(files))}")
    data_path = header_path.parent / files[0]
    if not data_path.is_file():
        raise ValueError(f"{header_path}: signal file {data_path} does not exist")
    if data_path.suffix.lower() == ".mat":
        content = scipy.io.loadmat(data_path)
        if "val" not in content:
            raise ValueError(f"{data_path}: no variable 'val' in the .mat file")
        digital = np.asarray(content["val"], dtype=np.float64)
        if digital.shape[0] != n_signals and digital.shape[1] == n_signals:
            digital = digital.T
        digital = digital.T  # samples x channels
    else:
        fmt = set(formats)
        raw = data_path.read_bytes()
        if fmt == {"16"}:
            flat = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.int32)
            invalid = -32768
        elif fmt == {"212"}:
            flat = _decode_212(raw, len(raw) * 2 // 3)
            invalid = -2048
        else:
            raise ValueError(
                f"{header_path}: storage format {sorted(fmt)} not supported by the fallback "
                f"reader (16 and 212 are)"
            )
        n_samples = len(flat) // n_signals
        digital = flat[: n_samples * n_signals].reshape(n_samples, n_signals).astype(np.float64)
        digital[flat[: n_samples * n_signals].reshape(n_samples, n_signals) == invalid] = np.nan
    if len(record_fields) >= 4:
        declared = int(_parse_number(record_fields[3], "the number of samples", header_path))
        if declared > digital.shape[0]:
            raise ValueError(
                f"{header_path}: header declares {declared} samples but {data_path.name} "
                f"holds {digital.shape[0]}"
            )
        digital = digital[:declared]
    physical = (digital - np.asarray(baselines)) / np.asarray(gains)
    return WfdbSignals(physical, fs, names, units, comments)


# ----------------------------------------------------------------------------- one lead
def header_sampling_rate(header_path: str | Path) -> float:
    """The sampling frequency on a header's record line, or raise Excluded ``unreadable``.

    Read from the text itself because wfdb (4.x) takes a missing, non-numeric or negative
    field for the WFDB default of 250 Hz without a word, which would stretch or squeeze
    every such record in time. The WFDB spec allows the field to be omitted; for ECGs from
    elsewhere that default is almost never right, so a missing field is refused too.
    """
    header_path = Path(header_path)
    try:
        text = _read_header_text(header_path)
    except OSError as error:
        raise Excluded("unreadable", f"{header_path}: cannot read the header ({error})") from error
    lines = [line.strip() for line in text.splitlines()]
    record_lines = [line for line in lines if line and not line.startswith("#")]
    if not record_lines:
        raise Excluded("unreadable", f"{header_path}: no record line in the header")
    fields = record_lines[0].split()
    if len(fields) < 3:
        raise Excluded(
            "unreadable",
            f"{header_path}: sampling frequency field missing on the record line "
            f"{record_lines[0]!r} (expected 'name nsig fs ...')",
        )
    # fs[/counter_frequency[(base_counter)]]
    fs_text = re.split(r"[/(]", fields[2])[0]
    try:
        fs = float(fs_text.replace(",", "."))
    except ValueError:
        raise Excluded(
            "unreadable",
            f"{header_path}: sampling frequency field {fields[2]!r} on the record line "
            f"{record_lines[0]!r} is not a number",
        ) from None
    if not np.isfinite(fs) or fs <= 0:
        raise Excluded(
            "unreadable",
            f"{header_path}: sampling frequency field {fields[2]!r} on the record line "
            f"{record_lines[0]!r} is not a positive number of Hz",
        )
    return fs


def _read_one_lead(
    header_path: Path, wanted: Sequence[str], allow_first_channel: bool
) -> tuple[np.ndarray, float, str, list[str]]:
    """Signal (mV), fs, lead name and header comments of one record, or raise Excluded.

    The wfdb package is tried first and reads only the chosen channel (Holter files are
    large); if it raises, :func:`read_wfdb_minimal` is tried; if that raises too, the
    record is ``unreadable`` with both messages, naming the file. The sampling rate is the
    one :func:`header_sampling_rate` read and checked from the header text.
    """
    fs = header_sampling_rate(header_path)
    record_path = str(header_path.with_suffix(""))
    try:
        header = wfdb.rdheader(record_path)
        if header.n_sig is None or header.n_sig < 1 or header.fs is None:
            raise ValueError("header has no signals or no sampling frequency")
        names = list(header.sig_name or [None] * header.n_sig)
        if any(name and _MISSPLIT_SIGNAL_LINE.search(name) for name in names):
            # A decimal comma in a gain makes wfdb read the rest of the line as the lead
            # name and the gain wrong, silently; the fallback parser reads such lines.
            raise ValueError(f"wfdb mis-split the signal lines into names {names}")
        channel = _choose_channel(names, wanted, allow_first_channel, header_path)
        record = wfdb.rdrecord(record_path, channels=[channel])
        signal = record.p_signal[:, 0]
        unit = (record.units or ["mV"])[0]
        return (
            _to_millivolts(signal, unit, header_path),
            fs,
            names[channel] or f"channel {channel}",
            list(record.comments or []),
        )
    except Excluded:
        raise
    except Exception as wfdb_error:  # wfdb raises many types on odd headers
        try:
            fallback = read_wfdb_minimal(header_path)
        except Exception as fallback_error:
            raise Excluded(
                "unreadable",
                f"{header_path}: wfdb could not read it ({type(wfdb_error).__name__}: "
                f"{wfdb_error}) nor could the fallback reader ({fallback_error})",
            ) from fallback_error
        channel = _choose_channel(fallback.sig_names, wanted, allow_first_channel, header_path)
        return (
            _to_millivolts(fallback.signals[:, channel], fallback.units[channel], header_path),
            fs,
            fallback.sig_names[channel] or f"channel {channel}",
            fallback.comments,
        )


def patient_from_comments(comments: Iterable[str]) -> str | None:
    """The patient id from a ``patient: X`` (or ``patient_id = X``) header comment, if any."""
    for comment in comments:
        match = _PATIENT_COMMENT.match(comment)
        if match:
            return match.group(1)
    return None


def _require_folder(root: str | Path, what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{what} folder does not exist: {root}")
    return root


def _headers(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*.hea") if path.is_file())


# ----------------------------------------------------------------------------- writer
def write_wfdb_records(
    root: str | Path, records: Iterable[EcgRecord], progress: bool = True
) -> int:
    """Write each record as one WFDB record (format 16, units mV) so WfdbFolder reads it back.

    The patient id goes into a ``# patient: X`` comment because WFDB has no field for
    it and the splits group by patient. Returns the number of records written.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    for record in tqdm(records, desc=f"writing {root}", disable=not progress, unit="record"):
        if not _RECORD_NAME.match(record.record_id):
            raise ValueError(
                f"record id {record.record_id!r} (from {record.source}) is not a valid WFDB "
                f"record name for {root}: use letters, digits, '_' and '-'"
            )
        if record.record_id in written:
            raise ValueError(f"record id {record.record_id!r} written twice to {root}")
        comments = [f"patient: {record.patient_id}"]
        if record.label is not None:
            comments.append(f"label: {record.label}")
        wfdb.wrsamp(
            record.record_id,
            fs=float(record.fs),
            units=["mV"],
            sig_name=[record.lead],
            p_signal=np.asarray(record.signal, dtype=np.float64).reshape(-1, 1),
            fmt=["16"],
            comments=comments,
            write_dir=str(root),
        )
        written.add(record.record_id)
    return len(written)



# ----------------------------------------------------------------------------- readers
def _lead_names(leads: str | Sequence[str]) -> tuple[str, ...]:
    return (leads,) if isinstance(leads, str) else tuple(str(lead) for lead in leads)


class WfdbFolder:
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

    dataset_name = "wfdb_folder"

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
        self.root = _require_folder(root, "WFDB corpus")
        self.leads = _lead_names(leads)
        if not self.leads and not allow_first_channel:
            raise ValueError("give at least one lead name or allow_first_channel=True")
        self.checks = SignalChecks(
            float(min_duration_s), float(max_amplitude_mv), allow_nan_gaps=allow_nan_gaps
        )
        self.allow_first_channel = allow_first_channel
        self.progress = progress

    @property
    def min_duration_s(self) -> float:
        return self.checks.min_duration_s

    def __repr__(self) -> str:
        return f"WfdbFolder(root={str(self.root)!r}, leads={self.leads!r})"

    def __len__(self) -> int:
        """Number of header files, i.e. records before any exclusion."""
        return len(_headers(self.root))

    def iter_records(self, exclusions: ExclusionLog) -> Iterator[EcgRecord]:
        headers = _headers(self.root)
        candidates = (
            Candidate(self._record_id(path), str(path), lambda path=path: self._read(path))
            for path in headers
        )
        yield from read_checked(
            self.dataset_name, candidates, exclusions, self.checks, self.progress, len(headers)
        )

    def _record_id(self, header_path: Path) -> str:
        return header_path.relative_to(self.root).with_suffix("").as_posix()

    def _read(self, header_path: Path) -> EcgRecord:
        relative = header_path.relative_to(self.root).with_suffix("")
        signal, fs, lead, comments = _read_one_lead(
            header_path, self.leads, self.allow_first_channel
        )
        patient = patient_from_comments(comments)
        if patient is None:
            folder = relative.parent.as_posix()
            patient = folder if folder != "." else relative.name
        return EcgRecord(relative.as_posix(), patient, signal, fs, lead, None, str(header_path))


class PhysioNetLabelledWfdb:
    """PhysioNet WFDB releases labelled by SNOMED-CT codes on the ``# Dx:`` header line.

    Rule for the rhythm label: the Dx codes are mapped to the 11 rhythms; codes for other
    conditions (bundle branch block, ST changes, ...) are ignored. A record with no rhythm
    code is excluded as ``no_rhythm_code``. A record with two or more *distinct* rhythm
    codes (e.g. PTB-XL's SR+ST) is excluded as ``multiple_rhythm_codes`` by default: the
    Chapman labels are one rhythm per recording, and guessing which of two rhythms a
    10-s strip shows would put label noise into the evaluation. Pass ``rhythm_priority``
    (an ordering of the 11 acronyms) to keep such records under the first listed rhythm.
    The ambiguous code 195101003 counts as SAAWR unless ``accept_ambiguous_saawr=False``,
    in which case it is ignored like any non-rhythm code. Patient id: ``patient: X``
    header comment if present, else the record name (one recording per patient).
    """

    dataset_name = "physionet_wfdb"

    def __init__(
        self,
        root: str | Path,
        lead: str = "II",
        min_duration_s: float = DEFAULT_MIN_DURATION_S,
        rhythm_priority: Sequence[str] | None = None,
        accept_ambiguous_saawr: bool = True,
        max_amplitude_mv: float = DEFAULT_MAX_AMPLITUDE_MV,
        progress: bool = True,
    ) -> None:
        self.root = _require_folder(root, "PhysioNet WFDB")
        self.lead = lead
        self.checks = SignalChecks(float(min_duration_s), float(max_amplitude_mv))
        if rhythm_priority is not None:
            unknown = [name for name in rhythm_priority if name not in RHYTHMS]
            if unknown:
                raise ValueError(f"rhythm_priority holds {unknown}, not among {RHYTHMS}")
        self.rhythm_priority = tuple(rhythm_priority) if rhythm_priority is not None else None
        self.accept_ambiguous_saawr = accept_ambiguous_saawr
        self.progress = progress

    @property
    def min_duration_s(self) -> float:
        return self.checks.min_duration_s

    def __repr__(self) -> str:
        return f"PhysioNetLabelledWfdb(root={str(self.root)!r}, lead={self.lead!r})"

    def rhythm_label(self, comments: Iterable[str], source: str) -> str:
        """The one rhythm of a record from its Dx comment, or raise Excluded per the rule."""
        codes: list[str] = []
        for comment in comments:
            match = _DX_COMMENT.match(comment)
            if match:
                codes.extend(code.strip() for code in match.group(1).split(",") if code.strip())
        rhythms = []
        for code in codes:
            if code == AMBIGUOUS_SAAWR_CODE and not self.accept_ambiguous_saawr:
                continue
            rhythm = RHYTHM_SNOMED_CODES.get(code)
            if rhythm is not None and rhythm not in rhythms:
                rhythms.append(rhythm)
        if not rhythms:
            raise Excluded(
                "no_rhythm_code", f"{source}: Dx codes {codes} hold none of the 11 rhythms"
            )
        if len(rhythms) == 1:
            return rhythms[0]
        if self.rhythm_priority is not None:
            for rhythm in self.rhythm_priority:
                if rhythm in rhythms:
                    return rhythm
        raise Excluded(
            "multiple_rhythm_codes", f"{source}: Dx codes {codes} give rhythms {rhythms}"
        )

    def iter_records(self, exclusions: ExclusionLog) -> Iterator[EcgRecord]:
        headers = _headers(self.root)

        def candidates() -> Iterator[Candidate]:
            seen: set[str] = set()
            for path in headers:
                duplicate = path.stem in seen
                seen.add(path.stem)
                yield Candidate(
                    path.stem, str(path), lambda path=path, dup=duplicate: self._read(path, dup)
                )

        yield from read_checked(
            self.dataset_name, candidates(), exclusions, self.checks, self.progress, len(headers)
        )

    def _read(self, header_path: Path, duplicate: bool) -> EcgRecord:
        if duplicate:
            raise Excluded("duplicate_id", f"{header_path}: record name seen before")
        signal, fs, lead, comments = _read_one_lead(header_path, (self.lead,), False)
        label = self.rhythm_label(comments, str(header_path))
        patient = patient_from_comments(comments) or header_path.stem
        return EcgRecord(header_path.stem, patient, signal, fs, lead, label, str(header_path))


Column = str | int
_RECORD_SUFFIXES = (".hea", ".dat", ".mat")
# Used when patient_column is not set and the CSV's header row has this column (the rule
# before the option existed): keeping a patient's records in one split is worth the guess.
_IMPLICIT_PATIENT_COLUMN = "patient_id"


@dataclass(frozen=True)
class _LabelRow:
    record_id: str
    label: str
    patient: str


class WfdbLabelledFolder:
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
    excluded as ``unlabelled_record``; every CSV row without a header as ``missing_file``.
    """

    dataset_name = "wfdb_labelled_folder"

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
    ) -> None:
        self.root = _require_folder(root, "labelled WFDB")
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
        for name, column in (("record_column", record_column), ("label_column", label_column),
                             ("patient_column", patient_column)):
            if column is not None and not isinstance(column, str | int):
                raise ValueError(f"{name} must be a column name or a 0-based position, got {column!r}")
        self.record_column = record_column
        self.label_column = label_column
        self.patient_column = patient_column
        if header not in (True, False, "auto"):
            raise ValueError(f"header must be true, false or auto, got {header!r}")
        self.header = header
        self.progress = progress

    @property
    def min_duration_s(self) -> float:
        return self.checks.min_duration_s

    def __repr__(self) -> str:
        return f"WfdbLabelledFolder(root={str(self.root)!r}, labels_csv={str(self.labels_csv)!r})"

    # ------------------------------------------------------------------ the labels CSV
    def labels(self) -> pd.DataFrame:
        """The CSV as columns ``record``, ``label``, ``patient`` (strings, blanks stripped).

        Raises ValueError naming the file and the columns it has when a named column is
        missing, or when ``header: auto`` cannot tell whether the first row is a header.
        """
        try:
            raw = pd.read_csv(
                self.labels_csv, header=None, dtype=str, keep_default_na=False,
                encoding="utf-8-sig",
            )
        except pd.errors.EmptyDataError:
            raise ValueError(f"{self.labels_csv}: the labels CSV is empty") from None
        raw = raw.apply(lambda column: column.str.strip())
        has_header = self._has_header(raw)
        if has_header:
            names = list(raw.iloc[0])
            body = raw.iloc[1:].reset_index(drop=True)
        else:
            names = None
            body = raw
        record = self._column(body, names, self.record_column, "record_column", 0)
        label = self._column(body, names, self.label_column, "label_column", 1)
        patient_column = self.patient_column
        if patient_column is None and has_header and _IMPLICIT_PATIENT_COLUMN in [
            name.lower() for name in names
        ]:
            patient_column = _IMPLICIT_PATIENT_COLUMN
        patient = (
            self._column(body, names, patient_column, "patient_column", None)
            if patient_column is not None else pd.Series([""] * len(body), dtype=str)
        )
        return pd.DataFrame({"record": record.to_numpy(), "label": label.to_numpy(),
                             "patient": patient.to_numpy()})

    def _has_header(self, raw: pd.DataFrame) -> bool:
        if self.header != "auto":
            return bool(self.header)
        if raw.empty:
            return False
        first_row = [str(cell) for cell in raw.iloc[0]]
        named = [c for c in (self.record_column, self.label_column, self.patient_column)
                 if isinstance(c, str)]
        lowered = {cell.lower() for cell in first_row}
        if named and all(name.lower() in lowered for name in named):
            return True
        if raw.shape[1] == 2 and self._resolve(_record_id(first_row[0]))[0] is not None:
            return False
        raise ValueError(
            f"{self.labels_csv}: cannot tell whether the first row {first_row} is a header: "
            f"it does not hold the column(s) {named}, and it is not a two-column row whose "
            f"first cell names a record under {self.root}. Set header: true (and "
            f"record_column / label_column to your column names) or header: false (and the "
            f"columns' 0-based positions)"
        )

    def _column(
        self, body: pd.DataFrame, names: list[str] | None, column: Column, option: str,
        headerless_default: int | None,
    ) -> pd.Series:
        found = names if names is not None else [f"position {i}" for i in range(body.shape[1])]
        if isinstance(column, int):
            position = column
        elif names is None:
            # Without a header row the default names stand for the first two columns.
            defaults = {"record_column": "record", "label_column": "label"}
            if headerless_default is None or column != defaults.get(option):
                raise ValueError(
                    f"{self.labels_csv}: the file has no header row, so {option}={column!r} "
                    f"names no column; give its 0-based position (columns: {found})"
                )
            position = headerless_default
        else:
            lowered = [name.lower() for name in names]
            if column.strip().lower() not in lowered:
                raise ValueError(
                    f"{self.labels_csv}: no column {column!r} ({option}); found columns {found}"
                )
            position = lowered.index(column.strip().lower())
        if not 0 <= position < body.shape[1]:
            raise ValueError(
                f"{self.labels_csv}: {option}={column!r} is out of range; found columns {found}"
            )
        return body.iloc[:, position].astype(str)

    # ------------------------------------------------------------------ records
    def _index(self) -> tuple[dict[str, Path], dict[str, list[Path]]]:
        headers = _headers(self.root)
        by_relative = {
            path.relative_to(self.root).with_suffix("").as_posix(): path for path in headers
        }
        by_stem: dict[str, list[Path]] = {}
        for path in headers:
            by_stem.setdefault(path.stem, []).append(path)
        return by_relative, by_stem

    def _resolve(self, record_id: str, index=None) -> tuple[Path | None, bool]:
        """The header a CSV record cell names, and whether a bare name was ambiguous."""
        by_relative, by_stem = index if index is not None else self._index()
        path = by_relative.get(record_id)
        if path is not None:
            return path, False
        matches = by_stem.get(record_id, [])
        return (matches[0], False) if len(matches) == 1 else (None, len(matches) > 1)

    def iter_records(self, exclusions: ExclusionLog) -> Iterator[EcgRecord]:
        labels = self.labels()
        index = self._index()
        by_relative, _ = index
        labelled: set[Path] = set()
        rows: list[tuple[_LabelRow, Path | None, bool]] = []
        for record, label, patient in labels.itertuples(index=False):
            row = _LabelRow(_record_id(record), label, patient)
            path, ambiguous = self._resolve(row.record_id, index)
            if path is not None:
                labelled.add(path)
            rows.append((row, path, ambiguous))
        unlabelled = [path for path in by_relative.values() if path not in labelled]

        def candidates() -> Iterator[Candidate]:
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
                relative = path.relative_to(self.root).with_suffix("").as_posix()
                yield Candidate(relative, str(path), lambda: self._unlabelled())

        yield from read_checked(
            self.dataset_name, candidates(), exclusions, self.checks, self.progress,
            len(rows) + len(unlabelled),
        )

    def _unlabelled(self) -> EcgRecord:
        raise Excluded("unlabelled_record", f"no row of {self.labels_csv} names this record")

    def label_of(self, raw_label: str) -> str:
        """The label a CSV cell gives after ``label_map``, or raise Excluded."""
        raw_label = raw_label.strip()
        if not raw_label:
            raise Excluded("unknown_label", f"{self.labels_csv}: empty label cell")
        label = self.label_map.get(raw_label, raw_label)
        if raw_label in self.exclude_labels or label in self.exclude_labels:
            shown = raw_label if label == raw_label else f"{raw_label} (mapped to {label})"
            raise Excluded("excluded_label", f"label {shown} is in exclude_labels")
        return label

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
        signal, fs, lead, comments = _read_one_lead(
            header_path, self.leads, self.allow_first_channel
        )
        patient = row.patient or patient_from_comments(comments) or Path(row.record_id).name
        return EcgRecord(row.record_id, patient, signal, fs, lead, label, str(header_path))


def _record_id(cell: str) -> str:
    record_id = str(cell).strip()
    for suffix in _RECORD_SUFFIXES:
        if record_id.lower().endswith(suffix):
            return record_id[: -len(suffix)]
    return record_id
