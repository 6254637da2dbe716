"""The PhysioNet WFDB release of Chapman/Ningbo and the PhysioNet/CinC 2020/2021 challenge
folders: records labelled by SNOMED-CT codes on their ``# Dx:`` header line."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ecg_transfer.signals.chapman import RHYTHMS
from ecg_transfer.signals.classes import LABEL_SEPARATOR, join_label_set
from ecg_transfer.signals.folder_reader import FolderReader, has_headers
from ecg_transfer.signals.records import (
    DEFAULT_MAX_AMPLITUDE_MV,
    DEFAULT_MIN_DURATION_S,
    Candidate,
    EcgRecord,
    Excluded,
    SignalChecks,
)
from ecg_transfer.signals.wfdb_format import header_paths, patient_from_comments
from ecg_transfer.signals.wfdb_readers import header_lead_names, read_record_leads

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

_DX_COMMENT = re.compile(r"^\s*dx\s*:\s*(.*)$", re.IGNORECASE)


def dx_codes(comments: Iterable[str]) -> list[str]:
    """Every code on the ``# Dx:`` comment line(s) of a header, in order."""
    codes: list[str] = []
    for comment in comments:
        match = _DX_COMMENT.match(comment)
        if match:
            codes.extend(code.strip() for code in match.group(1).split(",") if code.strip())
    return codes


class PhysioNetLabelledWfdb(FolderReader):
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

    ``label_set``: ``"rhythms"`` (the default: the 11 rhythm codes above) or a mapping of
    SNOMED-CT code -> label of your own (codes mapped to one label are merged; codes not in it
    are ignored). ``task``: ``"single"`` (the rule above, for any label set) or
    ``"multilabel"``: a record keeps *every* label its codes map to, as the ``;``-joined sorted
    set (``"AF;LBBB"``, :func:`~ecg_transfer.signals.classes.join_label_set`), and no record is
    excluded for carrying several; one without a mapped code is still ``no_rhythm_code``.
    Pair ``task: multilabel`` here with ``preprocessing.task: multilabel``.
    """

    reader_name = "physionet_wfdb"
    dataset_name = "physionet_wfdb"
    folder_kind = "PhysioNet WFDB"
    why_read_only = "it points at a downloaded PhysioNet release, which this project never writes"

    def __init__(
        self,
        root: str | Path,
        lead: str = "II",
        min_duration_s: float = DEFAULT_MIN_DURATION_S,
        rhythm_priority: Sequence[str] | None = None,
        accept_ambiguous_saawr: bool = True,
        max_amplitude_mv: float = DEFAULT_MAX_AMPLITUDE_MV,
        progress: bool = True,
        task: str = "single",
        label_set: str | Mapping[str, str] = "rhythms",
    ) -> None:
        super().__init__(root, progress)
        self.lead = lead
        self.checks = SignalChecks(float(min_duration_s), float(max_amplitude_mv))
        if rhythm_priority is not None:
            unknown = [name for name in rhythm_priority if name not in RHYTHMS]
            if unknown:
                raise ValueError(f"rhythm_priority holds {unknown}, not among {RHYTHMS}")
        self.rhythm_priority = tuple(rhythm_priority) if rhythm_priority is not None else None
        self.accept_ambiguous_saawr = accept_ambiguous_saawr
        if task not in ("single", "multilabel"):
            raise ValueError(f"task must be single or multilabel, got {task!r}")
        self.task = task
        self.code_labels = _code_labels(label_set)

    def __repr__(self) -> str:
        return f"PhysioNetLabelledWfdb(root={str(self.root)!r}, lead={self.read_leads or self.lead!r})"

    @property
    def lead_names(self) -> tuple[str, ...]:
        return (self.lead,)

    def record_lead_names(self) -> list[tuple[str, ...]]:
        return header_lead_names(self.root)

    @classmethod
    def folder_exists(cls, root: Path, options: Mapping[str, Any]) -> bool:
        return has_headers(root, options)

    def rhythm_label(self, comments: Iterable[str], source: str) -> str:
        """The record's label from its Dx comment (one rhythm, or under ``task: multilabel``
        the ``;``-joined set of mapped labels), or raise Excluded per the rule."""
        codes = dx_codes(comments)
        rhythms = []
        for code in codes:
            if code == AMBIGUOUS_SAAWR_CODE and not self.accept_ambiguous_saawr:
                continue
            rhythm = self.code_labels.get(code)
            if rhythm is not None and rhythm not in rhythms:
                rhythms.append(rhythm)
        if not rhythms:
            named = "the 11 rhythms" if self.code_labels is RHYTHM_SNOMED_CODES else "the codes of label_set"
            raise Excluded(
                "no_rhythm_code", f"{source}: Dx codes {codes} hold none of {named}"
            )
        if self.task == "multilabel":
            return join_label_set(rhythms)
        if len(rhythms) == 1:
            return rhythms[0]
        if self.rhythm_priority is not None:
            for rhythm in self.rhythm_priority:
                if rhythm in rhythms:
                    return rhythm
        raise Excluded(
            "multiple_rhythm_codes", f"{source}: Dx codes {codes} give rhythms {rhythms}"
        )

    def candidates(self) -> tuple[Iterator[Candidate], int]:
        headers = header_paths(self.root)

        def candidates() -> Iterator[Candidate]:
            seen: set[str] = set()
            for path in headers:
                duplicate = path.stem in seen
                seen.add(path.stem)
                yield Candidate(
                    path.stem, str(path), lambda path=path, dup=duplicate: self._read(path, dup)
                )

        return candidates(), len(headers)

    def _read(self, header_path: Path, duplicate: bool) -> EcgRecord:
        if duplicate:
            raise Excluded("duplicate_id", f"{header_path}: record name seen before")
        signal, fs, lead, comments = read_record_leads(self, header_path)
        label = self.rhythm_label(comments, str(header_path))
        patient = patient_from_comments(comments) or header_path.stem
        return EcgRecord(header_path.stem, patient, signal, fs, lead, label, str(header_path))


def _code_labels(label_set: str | Mapping[str, str]) -> Mapping[str, str]:
    """SNOMED code -> label of a ``label_set`` option (see :class:`PhysioNetLabelledWfdb`)."""
    if label_set == "rhythms":
        return RHYTHM_SNOMED_CODES
    if not isinstance(label_set, Mapping) or not label_set:
        raise ValueError(f"label_set must be 'rhythms' or a non-empty mapping of SNOMED code -> label, got {label_set!r}")
    mapping = {str(code).strip(): str(label).strip() for code, label in label_set.items()}
    bad = sorted(label for label in mapping.values() if not label or LABEL_SEPARATOR in label)
    if bad or "" in mapping:
        raise ValueError(f"label_set: empty codes or labels, or labels holding {LABEL_SEPARATOR!r}: {bad}")
    return mapping
