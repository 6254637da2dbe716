"""Everything WFDB in one import: the format (decode, write) and the three WFDB readers.

The code lives in :mod:`~ecg_transfer.signals.wfdb_format` (decoding one lead of a record,
the lenient fallback parser, the strict sampling-rate check, the writer),
:mod:`~ecg_transfer.signals.wfdb_readers` (:class:`WfdbFolder`, a user's unlabelled corpus;
:class:`WfdbLabelledFolder`, a user's records plus a labels CSV) and
:mod:`~ecg_transfer.signals.physionet` (:class:`PhysioNetLabelledWfdb` and its SNOMED-CT
table). This module names them together for callers that read or write WFDB folders.
"""

from ecg_transfer.signals.physionet import (
    AMBIGUOUS_SAAWR_CODE,
    RHYTHM_SNOMED_CODES,
    PhysioNetLabelledWfdb,
)
from ecg_transfer.signals.wfdb_format import (
    DEFAULT_LEAD_NAMES,
    WfdbSignals,
    header_sampling_rate,
    patient_from_comments,
    read_one_lead,
    read_wfdb_minimal,
    write_wfdb_records,
)
from ecg_transfer.signals.wfdb_readers import WfdbFolder, WfdbLabelledFolder

__all__ = [
    "AMBIGUOUS_SAAWR_CODE",
    "DEFAULT_LEAD_NAMES",
    "RHYTHM_SNOMED_CODES",
    "PhysioNetLabelledWfdb",
    "WfdbFolder",
    "WfdbLabelledFolder",
    "WfdbSignals",
    "header_sampling_rate",
    "patient_from_comments",
    "read_one_lead",
    "read_wfdb_minimal",
    "write_wfdb_records",
]
