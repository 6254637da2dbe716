"""The readers' base: what a reader class says about its folders is what the catalog uses."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from kedro.io import DatasetError

from ecg_transfer.datasets import RawEcgDataset
from ecg_transfer.signals.chapman import CHAPMAN_LEADS, write_chapman_release
from ecg_transfer.signals.folder_reader import FolderReader
from ecg_transfer.signals.readers import READERS
from ecg_transfer.signals.records import Candidate, EcgRecord, ExclusionLog, SignalChecks


class TextFolder(FolderReader):
    """A new format in one class: one record per ``*.txt`` file of numbers at 100 Hz."""

    reader_name = "text_folder"
    dataset_name = "text_folder"
    folder_kind = "text ECG"
    why_read_only = "text folders come from the ward's exporter"

    def __init__(self, root, min_duration_s: float = 0.05, progress: bool = False):
        super().__init__(root, progress)
        self.checks = SignalChecks(min_duration_s)

    @classmethod
    def folder_exists(cls, root: Path, options) -> bool:
        return root.is_dir() and any(root.glob("*.txt"))

    def candidates(self):
        paths = sorted(self.root.glob("*.txt"))
        return (Candidate(p.stem, str(p), lambda p=p: self._read(p)) for p in paths), len(paths)

    def _read(self, path: Path) -> EcgRecord:
        signal = np.loadtxt(path, ndmin=1)
        return EcgRecord(path.stem, path.stem, signal, 100.0, "II", "text", str(path))


def test_the_named_readers_are_the_reader_classes_under_their_own_names():
    assert sorted(READERS) == ["chapman", "physionet_wfdb", "wfdb_folder", "wfdb_labelled_folder"]
    for name, reader in READERS.items():
        assert issubclass(reader, FolderReader) and reader.reader_name == name
    assert {name for name, reader in READERS.items() if reader.writable} == {"chapman", "wfdb_folder"}


def test_a_folder_reader_is_one_class_and_the_dataset_asks_it_about_its_folders(tmp_path):
    dataset = RawEcgDataset(str(tmp_path), reader=f"{__name__}.TextFolder", min_duration_s=0.02)
    assert not dataset.exists()  # the class's own test: no .txt yet, though the folder exists
    (tmp_path / "a.txt").write_text("0.1\n0.3\n-0.2\n0.0\n0.5\n0.1\n")
    (tmp_path / "b.txt").write_text("1e3\n0\n0\n0\n0\n0\n")  # a unit error: 1,000 mV
    assert dataset.exists()
    log = ExclusionLog()
    records = list(dataset.load().iter_records(log))
    assert [r.record_id for r in records] == ["a"]
    assert log.to_frame()[["dataset", "record_id", "reason"]].values.tolist() == [
        ["text_folder", "b", "implausible_amplitude"]]
    with pytest.raises(DatasetError, match="read-only: text folders come from the ward's exporter"):
        dataset.save(records)
    with pytest.raises(FileNotFoundError, match="text ECG folder does not exist"):
        TextFolder(tmp_path / "nowhere")


# ---------------------------------------------------------------- the checks hold at every reader
def _wfdb_records(root: Path, comments: list[str]) -> dict[str, str]:
    """Three 10-s lead-II records: clean, with two invalid (NaN) samples, with a 100 mV spike."""
    root.mkdir(parents=True, exist_ok=True)
    signal = np.sin(np.arange(5000) / 30.0)
    gap, spike = signal.copy(), signal.copy()
    gap[[10, 11]] = np.nan
    spike[100] = 100.0
    for name, samples in (("clean", signal), ("gap", gap), ("spike", spike)):
        wfdb.wrsamp(name, fs=500, units=["mV"], sig_name=["II"], p_signal=samples.reshape(-1, 1),
                    fmt=["16"], comments=comments, write_dir=str(root))
    return {"gap": "non_finite", "spike": "implausible_amplitude"}


def _chapman(root: Path):
    good = np.tile(1000 * np.sin(np.arange(5000) / 30.0)[:, None], (1, len(CHAPMAN_LEADS)))
    ii = CHAPMAN_LEADS.index("II")
    gap, inf, spike = good.copy(), good.copy(), good.copy()
    gap[[10, 11], ii] = np.nan
    inf[10, ii] = np.inf
    spike[100, ii] = 100_000.0  # microvolts: 100 mV
    names = ["clean", "gap", "inf", "spike"]
    write_chapman_release(root, pd.DataFrame({"FileName": names, "Rhythm": "SR"}),
                          zip(names, (good, gap, inf, spike)), progress=False)
    return {"gap": "non_finite", "inf": "non_finite", "spike": "implausible_amplitude"}


@pytest.mark.parametrize("name", sorted(READERS))
def test_non_finite_and_implausible_samples_are_excluded_at_every_reader(tmp_path, name):
    root = tmp_path / name
    options: dict = {"progress": False}
    if name == "chapman":
        expected = _chapman(root)
    else:
        expected = _wfdb_records(root, ["Dx: 426783006", "patient: p1"])
    if name == "wfdb_folder":
        options["allow_nan_gaps"] = False  # its default lets short NaN gaps through (tested apart)
    if name == "wfdb_labelled_folder":
        (tmp_path / "labels.csv").write_text("record,label\nclean,N\ngap,N\nspike,N\n")
        options["labels_csv"] = tmp_path / "labels.csv"
    log = ExclusionLog()
    records = list(READERS[name](root, **options).iter_records(log))
    assert [r.record_id for r in records] == ["clean"]
    assert log.to_frame().set_index("record_id")["reason"].to_dict() == expected
