"""The WFDB format (``.hea`` header + ``.dat`` or ``.mat`` signal file): decoding one lead of
a record, and writing records. No reader policy lives here (which folder, which labels): the
readers of :mod:`ecg_transfer.signals.wfdb_readers` and :mod:`ecg_transfer.signals.physionet`
call :func:`read_one_lead` for every record.

Real headers vary. The ``wfdb`` package reads most of them; where it raises, a small
lenient parser (:func:`read_wfdb_minimal`) reads formats 16, 212 and ``.mat`` itself, and
where that fails too the record is ``unreadable`` with the file and the reason, so one bad
file never stops a corpus of thousands. A header whose sampling frequency is missing, not a
number or not positive is ``unreadable`` too: wfdb would silently read such a record at
250 Hz.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import wfdb

from ecg_transfer.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere
from ecg_transfer.signals.leads import (
    LEAD_II_NAMES,
    joined,
    lead_aliases,
    normalise_lead_name,
    split_leads,
)
from ecg_transfer.signals.records import EcgRecord, Excluded

# Lead II under the names monitors and databases give it (MIT-BIH says MLII).
DEFAULT_LEAD_NAMES: tuple[str, ...] = LEAD_II_NAMES

# Physical units to millivolts. WFDB's spec makes an omitted unit mean millivolts.
_UNIT_TO_MILLIVOLTS = {"mv": 1.0, "": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}
_PATIENT_COMMENT = re.compile(r"^\s*patient(?:[ _-]?id)?\s*[:=]\s*(\S.*?)\s*$", re.IGNORECASE)
_RECORD_NAME = re.compile(r"^[-\w]+$")
_MISSPLIT_SIGNAL_LINE = re.compile(r"^,\d|\(-?\d+\)/|/mV\b")
_GAIN_FIELD = re.compile(r"^([-+0-9.,eE]+)(?:\(([-+0-9]+)\))?(?:/(.*))?$")


@dataclass(frozen=True)
class WfdbSignals:
    """What any of the two read paths produces: physical signals and the header facts we use."""

    signals: np.ndarray  # (n_samples, n_channels), physical units
    fs: float
    sig_names: list[str]
    units: list[str]
    comments: list[str]


def header_paths(root: Path) -> list[Path]:
    """Every ``.hea`` file under ``root`` (recursive), in a fixed order."""
    return sorted(path for path in root.rglob("*.hea") if path.is_file())


def patient_from_comments(comments: Iterable[str]) -> str | None:
    """The patient id from a ``patient: X`` (or ``patient_id = X``) header comment, if any."""
    for comment in comments:
        match = _PATIENT_COMMENT.match(comment)
        if match:
            return match.group(1)
    return None


_normalise_lead_name = normalise_lead_name


def _channel_of(sig_names: Sequence[str | None], names: Sequence[str]) -> int | None:
    """Index of the first of ``names`` among ``sig_names`` (case- and spacing-insensitive)."""
    present = [_normalise_lead_name(name) for name in sig_names]
    for name in names:
        key = _normalise_lead_name(name)
        if key in present:
            return present.index(key)
    return None


def _choose_channels(sig_names: Sequence[str | None], leads: Sequence[str], header_path: Path) -> list[int]:
    """The channel of each of ``leads`` (each matched by its names), or Excluded ``missing_lead``
    naming the first lead the record lacks."""
    channels = []
    for lead in leads:
        channel = _channel_of(sig_names, lead_aliases(lead))
        if channel is None:
            raise Excluded(
                "missing_lead",
                f"{header_path}: lead {lead} (as any of {list(lead_aliases(lead))}) is not among "
                f"{list(sig_names)}",
            )
        channels.append(channel)
    return channels


def _choose_channel(
    sig_names: Sequence[str | None], wanted: Sequence[str], allow_first_channel: bool,
    header_path: Path,
) -> int:
    """Index of the first wanted lead present (case- and spacing-insensitive)."""
    channel = _channel_of(sig_names, wanted)
    if channel is not None:
        return channel
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


@dataclass(frozen=True)
class _SignalLine:
    """One signal line of a header: ``file fmt [gain[(baseline)][/units]] ... [description]``."""

    file: str
    format: str
    gain: float
    baseline: float
    unit: str
    name: str


def _signal_line(line: str, header_path: Path) -> _SignalLine:
    fields = line.split()
    if len(fields) < 2:
        raise ValueError(f"{header_path}: signal line {line!r} lacks a format")
    gain, baseline, unit = 200.0, 0.0, "mV"  # WFDB defaults when the field is absent
    if len(fields) >= 3:
        match = _GAIN_FIELD.match(fields[2])
        if match is None:
            raise ValueError(f"{header_path}: cannot read gain field {fields[2]!r}")
        gain = _parse_number(match.group(1), "a gain", header_path) or 200.0
        baseline = float(match.group(2)) if match.group(2) else 0.0
        unit = match.group(3) if match.group(3) is not None else "mV"
    name = " ".join(fields[8:]) if len(fields) > 8 else ""
    return _SignalLine(fields[0], re.split(r"[x:+]", fields[1])[0], gain, baseline, unit, name)


def _record_line(lines: list[str], header_path: Path) -> tuple[list[str], int, float]:
    """The record line's fields, its number of signals and its sampling frequency."""
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
    return record_fields, n_signals, _parse_number(fs_text, "the sampling frequency", header_path)


def _read_mat(data_path: Path, n_signals: int) -> np.ndarray:
    """Digital samples (samples x channels) of a ``.mat`` file's ``val`` variable."""
    content = scipy.io.loadmat(data_path)
    if "val" not in content:
        raise ValueError(f"{data_path}: no variable 'val' in the .mat file")
    digital = np.asarray(content["val"], dtype=np.float64)
    if digital.shape[0] != n_signals and digital.shape[1] == n_signals:
        digital = digital.T
    return digital.T  # samples x channels


def _read_dat(data_path: Path, formats: set[str], n_signals: int, header_path: Path) -> np.ndarray:
    """Digital samples (samples x channels) of a format 16 or 212 file; invalid samples are NaN."""
    raw = data_path.read_bytes()
    if formats == {"16"}:
        flat = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.int32)
        invalid = -32768
    elif formats == {"212"}:
        flat = _decode_212(raw, len(raw) * 2 // 3)
        invalid = -2048
    else:
        raise ValueError(
            f"{header_path}: storage format {sorted(formats)} not supported by the fallback "
            f"reader (16 and 212 are)"
        )
    n_samples = len(flat) // n_signals
    interleaved = flat[: n_samples * n_signals].reshape(n_samples, n_signals)
    digital = interleaved.astype(np.float64)
    digital[interleaved == invalid] = np.nan
    return digital


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
    record_fields, n_signals, fs = _record_line(lines, header_path)
    signal_lines = lines[1 : 1 + n_signals]
    if len(signal_lines) != n_signals:
        raise ValueError(
            f"{header_path}: record line declares {n_signals} signals but "
            f"{len(signal_lines)} signal lines follow"
        )
    signals = [_signal_line(line, header_path) for line in signal_lines]
    files = {signal.file for signal in signals}
    if len(files) != 1:
        raise ValueError(f"{header_path}: signals spread over several files {sorted(files)}")
    data_path = header_path.parent / signals[0].file
    if not data_path.is_file():
        raise ValueError(f"{header_path}: signal file {data_path} does not exist")
    if data_path.suffix.lower() == ".mat":
        digital = _read_mat(data_path, n_signals)
    else:
        digital = _read_dat(data_path, {signal.format for signal in signals}, n_signals, header_path)
    if len(record_fields) >= 4:
        declared = int(_parse_number(record_fields[3], "the number of samples", header_path))
        if declared > digital.shape[0]:
            raise ValueError(
                f"{header_path}: header declares {declared} samples but {data_path.name} "
                f"holds {digital.shape[0]}"
            )
        digital = digital[:declared]
    baselines = np.asarray([signal.baseline for signal in signals])
    physical = (digital - baselines) / np.asarray([signal.gain for signal in signals])
    return WfdbSignals(
        physical, fs, [signal.name for signal in signals], [signal.unit for signal in signals], comments
    )


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


def _read_with_wfdb(
    header_path: Path, wanted: Sequence[str], allow_first_channel: bool
) -> tuple[np.ndarray, str, list[str]]:
    """Signal (mV), lead name and comments read by the wfdb package (only the chosen channel:
    Holter files are large); raises whatever wfdb raises on an odd header."""
    names = _wfdb_signal_names(header_path)
    channel = _choose_channel(names, wanted, allow_first_channel, header_path)
    signals, comments = _wfdb_channels(header_path, [channel])
    return signals[0], names[channel] or f"channel {channel}", comments


def _wfdb_signal_names(header_path: Path) -> list[str | None]:
    """The signal names of a header read by wfdb; raises on what wfdb mis-reads."""
    header = wfdb.rdheader(str(header_path.with_suffix("")))
    if header.n_sig is None or header.n_sig < 1 or header.fs is None:
        raise ValueError("header has no signals or no sampling frequency")
    names = list(header.sig_name or [None] * header.n_sig)
    if any(name and _MISSPLIT_SIGNAL_LINE.search(name) for name in names):
        # A decimal comma in a gain makes wfdb read the rest of the line as the lead
        # name and the gain wrong, silently; the fallback parser reads such lines.
        raise ValueError(f"wfdb mis-split the signal lines into names {names}")
    return names


def _wfdb_channels(header_path: Path, channels: list[int]) -> tuple[np.ndarray, list[str]]:
    """(channels, samples) in mV of the given channels, and the header comments."""
    record = wfdb.rdrecord(str(header_path.with_suffix("")), channels=channels)
    units = record.units or ["mV"] * len(channels)
    signals = np.stack([
        _to_millivolts(record.p_signal[:, i], units[i], header_path) for i in range(len(channels))
    ])
    return signals, list(record.comments or [])


def read_one_lead(
    header_path: Path, wanted: Sequence[str], allow_first_channel: bool
) -> tuple[np.ndarray, float, str, list[str]]:
    """Signal (mV), fs, lead name and header comments of one record, or raise Excluded.

    The wfdb package is tried first; if it raises, :func:`read_wfdb_minimal` is tried; if
    that raises too, the record is ``unreadable`` with both messages, naming the file. The
    sampling rate is the one :func:`header_sampling_rate` read and checked from the header text.
    """
    fs = header_sampling_rate(header_path)
    try:
        signal, lead, comments = _read_with_wfdb(header_path, wanted, allow_first_channel)
        return signal, fs, lead, comments
    except Excluded:
        raise
    except Exception as wfdb_error:  # wfdb raises many types on odd headers
        fallback = _fallback(header_path, wfdb_error)
        channel = _choose_channel(fallback.sig_names, wanted, allow_first_channel, header_path)
        return (
            _to_millivolts(fallback.signals[:, channel], fallback.units[channel], header_path),
            fs,
            fallback.sig_names[channel] or f"channel {channel}",
            fallback.comments,
        )


def read_leads(header_path: Path, leads: Sequence[str]) -> tuple[np.ndarray, float, str, list[str]]:
    """Signal (C, samples) in mV of ``leads`` in that order (each matched by its names, see
    :func:`~ecg_transfer.signals.leads.lead_aliases`), fs, the ``lead`` field (the names
    joined by ',') and the header comments; or raise Excluded (``missing_lead`` naming the
    lead a record lacks, ``unreadable`` as :func:`read_one_lead`)."""
    fs = header_sampling_rate(header_path)
    try:
        names = _wfdb_signal_names(header_path)
        signals, comments = _wfdb_channels(header_path, _choose_channels(names, leads, header_path))
        return signals, fs, joined(leads), comments
    except Excluded:
        raise
    except Exception as wfdb_error:  # wfdb raises many types on odd headers
        fallback = _fallback(header_path, wfdb_error)
        channels = _choose_channels(fallback.sig_names, leads, header_path)
        signals = np.stack([
            _to_millivolts(fallback.signals[:, c], fallback.units[c], header_path) for c in channels
        ])
        return signals, fs, joined(leads), fallback.comments


def signal_names(header_path: Path) -> list[str]:
    """The signal (lead) names a header declares, or Excluded ``unreadable``."""
    try:
        return [name or "" for name in _wfdb_signal_names(header_path)]
    except Exception as wfdb_error:
        return [name or "" for name in _fallback(header_path, wfdb_error).sig_names]


def _fallback(header_path: Path, wfdb_error: Exception) -> WfdbSignals:
    try:
        return read_wfdb_minimal(header_path)
    except Exception as fallback_error:
        raise Excluded(
            "unreadable",
            f"{header_path}: wfdb could not read it ({type(wfdb_error).__name__}: "
            f"{wfdb_error}) nor could the fallback reader ({fallback_error})",
        ) from fallback_error


# ----------------------------------------------------------------------------- writer
def write_wfdb_records(
    root: str | Path, records: Iterable[EcgRecord], progress: bool = True
) -> int:
    """Write each record as one WFDB record (format 16, units mV, one signal per lead) so
    WfdbFolder reads it back.

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
        signal = np.asarray(record.signal, dtype=np.float64)
        leads = split_leads(record.lead) if signal.ndim == 2 else (record.lead,)
        wfdb.wrsamp(
            record.record_id,
            fs=float(record.fs),
            units=["mV"] * len(leads),
            sig_name=list(leads),
            p_signal=signal.T if signal.ndim == 2 else signal.reshape(-1, 1),
            fmt=["16"] * len(leads),
            comments=comments,
            write_dir=str(root),
        )
        written.add(record.record_id)
    return len(written)
