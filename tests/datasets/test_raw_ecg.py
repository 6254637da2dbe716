"""Kedro datasets for raw ECG folders: lazy loads, round trips, and never overwriting real data."""

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from ecg_transfer.datasets import (
    ChapmanReleaseDataset,
    PhysioNetWfdbDataset,
    WfdbFolderDataset,
    WfdbLabelledFolderDataset,
)
from ecg_transfer.datasets.raw_ecg import content_digest
from ecg_transfer.signals.chapman import ChapmanRelease
from ecg_transfer.signals.records import EcgRecord, ExclusionLog
from ecg_transfer.signals.wfdb_records import PhysioNetLabelledWfdb, WfdbFolder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MARKER = ".ecg_transfer_synthetic.json"


class _Release:
    """Stands in for the synthetic release: the two attributes the dataset saves."""

    def __init__(self, names, rhythms, seed):
        self.diagnostics = pd.DataFrame({"FileName": names, "Rhythm": rhythms})
        self._rng_seed = seed

    def iter_waveforms(self):
        rng = np.random.default_rng(self._rng_seed)
        for name in self.diagnostics["FileName"]:
            yield name, rng.normal(0, 200, size=(5000, 12))


class _Corpus:
    def __init__(self, ids, seed):
        self._ids, self._seed = ids, seed

    def iter_records(self):
        rng = np.random.default_rng(self._seed)
        for record_id in self._ids:
            yield EcgRecord(record_id, f"pt_{record_id}", rng.normal(size=2500), 250.0, "II",
                            None, "simulated")


def test_chapman_dataset_round_trip_and_rewrite(tmp_path):
    dataset = ChapmanReleaseDataset(path=str(tmp_path / "chapman"), progress=False)
    assert not dataset.exists()
    dataset.save(_Release(["A1", "A2", "A3"], ["SR", "SI", "AFIB"], seed=0))
    assert dataset.exists()
    marker = json.loads((tmp_path / "chapman" / MARKER).read_text())
    assert marker["n_records"] == 3
    release = dataset.load()
    assert isinstance(release, ChapmanRelease)
    records = list(release.iter_records(ExclusionLog()))
    assert [(r.record_id, r.label) for r in records] == [("A1", "SR"), ("A2", "SA"), ("A3", "AFIB")]
    # a rewrite with fewer records leaves no stale CSV behind
    dataset.save(_Release(["B1"], ["SB"], seed=1))
    csvs = sorted(p.name for p in (tmp_path / "chapman" / "ECGDataDenoised").glob("*.csv"))
    assert csvs == ["B1.csv"]
    assert [r.record_id for r in dataset.load().iter_records(ExclusionLog())] == ["B1"]


def test_two_saves_started_together_on_an_empty_folder_both_succeed(tmp_path):
    """Issue 20 item 6: two `starvation` runs on a fresh project both write the bundled data.
    Before, the second saw the first's half-written folder (no marker yet) and refused it."""
    target = tmp_path / "chapman"
    barrier = threading.Barrier(4)
    errors = []

    def save():
        try:
            barrier.wait()
            ChapmanReleaseDataset(path=str(target), progress=False).save(
                _Release([f"A{i}" for i in range(40)], ["SR"] * 40, seed=0))
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=save) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(list((target / "ECGDataDenoised").glob("*.csv"))) == 40
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name] == []


def test_a_save_of_the_same_content_leaves_the_folder_untouched(tmp_path):
    """Diagnostics.xlsx carries its write time, yet the same data is recognised as unchanged,
    so a run reading the folder never sees it rewritten under it; other data replaces it,
    keeping a file of the user's that the format does not write."""
    target = tmp_path / "chapman"
    dataset = ChapmanReleaseDataset(path=str(target), progress=False)
    dataset.save(_Release(["A1", "A2"], ["SR", "AFIB"], seed=0))
    (target / "notes.txt").write_text("mine")

    def written_at():
        return sorted(p.stat().st_mtime_ns for p in target.rglob("*") if p.is_file() and p.name != "notes.txt")

    before = written_at()
    time.sleep(1.1)  # the xlsx's own timestamp has a resolution of one second
    dataset.save(_Release(["A1", "A2"], ["SR", "AFIB"], seed=0))
    assert written_at() == before
    dataset.save(_Release(["B1"], ["SB"], seed=1))
    assert (target / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (target / "ECGDataDenoised").glob("*.csv")) == ["B1.csv"]
    # the digest is of what the save wrote: the user's file does not make the same data "changed"
    before = written_at()
    dataset.save(_Release(["B1"], ["SB"], seed=1))
    assert written_at() == before
    (target / "notes.txt").unlink()
    assert json.loads((target / MARKER).read_text())["content_sha256"] == content_digest(target)


def test_chapman_dataset_refuses_to_overwrite_a_real_release(tmp_path):
    real = tmp_path / "real"
    shutil.copytree(FIXTURES / "chapman_release", real)
    before = sorted(p.name for p in real.rglob("*"))
    dataset = ChapmanReleaseDataset(path=str(real), progress=False)
    with pytest.raises(DatasetError, match=f"refusing to write.*{real}.*{MARKER}"):
        dataset.save(_Release(["A1"], ["SR"], seed=0))
    assert sorted(p.name for p in real.rglob("*")) == before
    with pytest.raises(DatasetError, match="iter_waveforms"):
        ChapmanReleaseDataset(path=str(tmp_path / "new")).save(pd.DataFrame())


def test_chapman_dataset_load_is_lazy_but_names_a_missing_folder(tmp_path):
    missing = tmp_path / "not_downloaded"
    with pytest.raises(DatasetError, match=str(missing)):
        ChapmanReleaseDataset(path=str(missing)).load()
    dataset = ChapmanReleaseDataset(path=str(FIXTURES / "chapman_release"), lead="V2")
    assert dataset._describe()["lead"] == "V2"
    log = ExclusionLog()
    kept = [r.record_id for r in dataset.load().iter_records(log)]
    assert kept == ["JS20011"] and log.counts()["reason"].tolist() == ["flat_lead"]


def test_wfdb_folder_dataset_round_trip_and_refusal(tmp_path):
    dataset = WfdbFolderDataset(path=str(tmp_path / "corpus"), progress=False)
    assert not dataset.exists()
    dataset.save(_Corpus(["m1", "m2"], seed=0))
    corpus = dataset.load()
    assert isinstance(corpus, WfdbFolder)
    records = list(corpus.iter_records(ExclusionLog()))
    assert [(r.record_id, r.patient_id, r.fs) for r in records] == [("m1", "pt_m1", 250.0),
                                                                   ("m2", "pt_m2", 250.0)]
    dataset.save(_Corpus(["m3"], seed=1))
    assert sorted(p.name for p in (tmp_path / "corpus").glob("*.hea")) == ["m3.hea"]
    real = tmp_path / "cpsc"
    shutil.copytree(FIXTURES / "cpsc2021", real)
    with pytest.raises(DatasetError, match="refusing to write"):
        WfdbFolderDataset(path=str(real)).save(_Corpus(["x"], seed=0))
    assert sorted(p.name for p in real.iterdir()) == ["data_8_4.dat", "data_8_4.hea"]


def test_wfdb_folder_dataset_reads_the_real_cpsc_record():
    dataset = WfdbFolderDataset(path=str(FIXTURES / "cpsc2021"), leads=["MLII", "II"],
                                progress=False)
    assert dataset.exists()
    (record,) = list(dataset.load().iter_records(ExclusionLog()))
    assert (record.fs, record.lead) == (200.0, "II")


def test_nan_gaps_are_an_option_of_the_unlabelled_corpus_only(tmp_path):
    folder = str(FIXTURES / "cpsc2021")
    assert WfdbFolderDataset(path=folder, progress=False).load().checks.allow_nan_gaps
    strict = WfdbFolderDataset(path=folder, allow_nan_gaps=False, progress=False)
    assert not strict.load().checks.allow_nan_gaps
    assert strict._describe()["allow_nan_gaps"] is False
    # a labelled record's windows are cut from the whole record: no gaps there
    with pytest.raises(DatasetError, match=r"\['allow_nan_gaps'\] are not options of the 'chapman'"):
        ChapmanReleaseDataset(path=str(tmp_path), allow_nan_gaps=True)
    assert not ChapmanReleaseDataset(
        path=str(FIXTURES / "chapman_release"), progress=False).load().checks.allow_nan_gaps


def test_read_only_datasets_load_and_refuse_to_save(tmp_path):
    physionet = PhysioNetWfdbDataset(path=str(FIXTURES / "physionet_wfdb"), progress=False)
    assert physionet.exists()
    reader = physionet.load()
    assert isinstance(reader, PhysioNetLabelledWfdb)
    assert sorted(r.label for r in reader.iter_records(ExclusionLog())) == ["SA", "SB", "ST"]
    with pytest.raises(DatasetError, match="read-only"):
        physionet.save(reader)
    (tmp_path / "labels.csv").write_text("record,label\nJS20008,SA\n")
    labelled = WfdbLabelledFolderDataset(path=str(FIXTURES / "physionet_wfdb"),
                                         labels_csv=str(tmp_path / "labels.csv"), progress=False)
    assert [r.label for r in labelled.load().iter_records(ExclusionLog())] == ["SA"]
    with pytest.raises(DatasetError, match="read-only"):
        labelled.save(object())


def test_catalog_entries_as_documented(tmp_path):
    from kedro.io import DataCatalog

    (tmp_path / "labels.csv").write_text("record,label\nJS20004,ST\n")
    catalog = DataCatalog.from_config({
        "chapman_release": {"type": "ecg_transfer.datasets.ChapmanReleaseDataset",
                            "path": str(FIXTURES / "chapman_release"), "lead": "II",
                            "progress": False},
        "monitor_corpus": {"type": "ecg_transfer.datasets.WfdbFolderDataset",
                           "path": str(FIXTURES / "cpsc2021"), "leads": ["II", "MLII"],
                           "progress": False},
        "physionet": {"type": "ecg_transfer.datasets.PhysioNetWfdbDataset",
                      "path": str(FIXTURES / "physionet_wfdb"),
                      "rhythm_priority": ["AT", "ST"], "progress": False},
        "mine": {"type": "ecg_transfer.datasets.WfdbLabelledFolderDataset",
                 "path": str(FIXTURES / "physionet_wfdb"),
                 "labels_csv": str(tmp_path / "labels.csv"), "progress": False},
    })
    counts = {name: len(list(catalog.load(name).iter_records(ExclusionLog())))
              for name in ("chapman_release", "monitor_corpus", "physionet", "mine")}
    # with AT before ST, JS20012 (ST+AT) is kept as AT and HR06003 (SR+ST) as ST;
    # E07504 has no rhythm code
    assert counts == {"chapman_release": 2, "monitor_corpus": 1, "physionet": 5, "mine": 1}


def test_one_generic_dataset_behind_every_reader(tmp_path):
    from ecg_transfer.datasets import RawEcgDataset

    # the named datasets are the generic one with the reader fixed
    assert issubclass(WfdbLabelledFolderDataset, RawEcgDataset)
    generic = RawEcgDataset(path=str(FIXTURES / "physionet_wfdb"), reader="physionet_wfdb",
                            lead="II", progress=False)
    assert isinstance(generic.load(), PhysioNetLabelledWfdb)
    assert generic._describe() == {"path": str(FIXTURES / "physionet_wfdb"),
                                   "reader": "physionet_wfdb", "lead": "II"}
    # options are the reader's: a typo fails when the catalog is built, listing the real ones
    with pytest.raises(DatasetError, match=r"\['lable_map'\].*'wfdb_labelled_folder'.*'label_map'"):
        WfdbLabelledFolderDataset(path=str(tmp_path), labels_csv="x.csv", lable_map={})
    with pytest.raises(DatasetError, match="give `reader:`"):
        RawEcgDataset(path=str(tmp_path))
    with pytest.raises(DatasetError, match="always uses the reader 'chapman'"):
        ChapmanReleaseDataset(path=str(tmp_path), reader="wfdb_folder")
    with pytest.raises(DatasetError, match="no_such_module.Reader"):
        RawEcgDataset(path=str(tmp_path), reader="no_such_module.Reader")
    with pytest.raises(DatasetError, match="remote"):
        RawEcgDataset(path="s3://bucket/ecgs", reader="wfdb_folder")


class ListedReader:
    """A user's own reader: a class with ``root`` and ``iter_records``, nothing else."""

    def __init__(self, root, scale: float = 1.0):
        self.root = Path(root)
        self.scale = scale

    def iter_records(self, exclusions):
        yield EcgRecord("one", "p1", self.scale * np.ones(10), 1.0, "II", "mine", str(self.root))


def test_a_new_reader_is_one_class_and_one_catalog_entry(tmp_path):
    from kedro.io import DataCatalog

    from ecg_transfer.signals.records import RecordSource

    catalog = DataCatalog.from_config({"labelled_recordings": {
        "type": "ecg_transfer.datasets.RawEcgDataset",
        "reader": f"{__name__}.ListedReader", "path": str(tmp_path), "scale": 2.0}})
    reader = catalog.load("labelled_recordings")
    assert isinstance(reader, RecordSource) and reader.scale == 2.0
    assert [r.label for r in reader.iter_records(ExclusionLog())] == ["mine"]
    with pytest.raises(DatasetError, match="read-only"):
        catalog.save("labelled_recordings", reader)
