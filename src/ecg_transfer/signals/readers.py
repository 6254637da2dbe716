"""The readers the catalog knows by name (``reader: chapman`` ...). Any other
:class:`~ecg_transfer.signals.records.RecordSource` is named by its dotted path instead."""

from __future__ import annotations

from ecg_transfer.signals.chapman import ChapmanRelease
from ecg_transfer.signals.folder_reader import FolderReader
from ecg_transfer.signals.physionet import PhysioNetLabelledWfdb
from ecg_transfer.signals.wfdb_readers import WfdbFolder, WfdbLabelledFolder

READERS: dict[str, type[FolderReader]] = {
    reader.reader_name: reader
    for reader in (ChapmanRelease, WfdbFolder, PhysioNetLabelledWfdb, WfdbLabelledFolder)
}
