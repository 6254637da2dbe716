import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, DatasetError
from kedro.pipeline import node, pipeline
from kedro.runner import SequentialRunner

from ecg_transfer.atomic_files import this_host
from ecg_transfer.datasets import WindowStoreDataset
from ecg_transfer.signals.preprocess import PreprocessConfig, windows_from_unlabelled_records
from ecg_transfer.signals.records import EcgRecord
from ecg_transfer.signals.window_store import WindowStore

L = 32


def _chunks(n_chunks: int, k: int):
    for c in range(n_chunks):
        windows = np.full((k, L), c, dtype=np.float32)
        index = pd.DataFrame({"record_id": [f"r{c}_{i}" for i in range(k)], "patient_id": f"p{c}", "label": None})
        yield windows, index


def test_save_streams_an_iterator_and_load_gives_a_store(tmp_path):
    ds = WindowStoreDataset(path=str(tmp_path / "store"), window_length=L)
    assert not ds.exists()
    ds.save(_chunks(3, 4))
    assert ds.exists()
    store = ds.load()
    assert isinstance(store, WindowStore) and len(store) == 12
    np.testing.assert_array_equal(store.windows[:, 0], np.repeat([0, 1, 2], 4))


def test_save_copies_a_store_from_elsewhere(tmp_path):
    source = WindowStoreDataset(path=str(tmp_path / "a"), window_length=L)
    source.save(_chunks(2, 3))
    target = WindowStoreDataset(path=str(tmp_path / "b"), window_length=L)
    target.save(source.load())
    copied = target.load()
    np.testing.assert_array_equal(copied.windows, source.load().windows)
    assert list(copied.index["record_id"]) == list(source.load().index["record_id"])


def test_save_rejects_a_single_chunk_and_wrong_types(tmp_path):
    ds = WindowStoreDataset(path=str(tmp_path / "store"), window_length=L)
    with pytest.raises(DatasetError, match="single \\(windows, index\\) chunk"):
        ds.save(next(_chunks(1, 2)))
    with pytest.raises(DatasetError, match="expected a WindowStore"):
        ds.save(42)
    with pytest.raises(DatasetError, match="chunk 0 is a"):
        ds.save([np.zeros((2, L), np.float32)])
    assert not ds.exists()


def test_load_of_a_missing_store_names_the_path(tmp_path):
    with pytest.raises(DatasetError, match="nothing_here"):
        WindowStoreDataset(path=str(tmp_path / "nothing_here")).load()


def test_describe():
    assert "data/x" in str(WindowStoreDataset(path="data/x"))
    assert "window_length=2048" in str(WindowStoreDataset(path="data/x", window_length=2048))


class _StreamWithMeta:
    """Chunks plus a ``meta`` known only once they are exhausted, like the preprocessing nodes' streams."""

    def __init__(self):
        self.n = 0

    def __iter__(self):
        for windows, index in _chunks(2, 3):
            self.n += len(windows)
            yield windows, index

    @property
    def meta(self):
        return {"classes": ["A", "B"], "stats": {"windows": self.n}}


def test_save_stores_the_meta_of_the_stream_and_a_copy_keeps_it(tmp_path):
    ds = WindowStoreDataset(path=str(tmp_path / "store"))
    ds.save(_StreamWithMeta())
    store = ds.load()
    assert store.classes == ("A", "B") and store.meta["stats"] == {"windows": 6}
    assert store.window_length == L  # taken from the windows when the entry does not say
    copy = WindowStoreDataset(path=str(tmp_path / "copy"))
    copy.save(store)
    assert copy.load().classes == ("A", "B")
    assert copy.load().meta["windows_sha1"] == store.meta["windows_sha1"]


def test_save_removes_the_partial_of_a_dead_writer(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".store.partial-{this_host()}-{dead.pid}-{'a' * 12}"
    stale.mkdir()
    (stale / "windows.f32").write_bytes(b"half")
    WindowStoreDataset(path=str(tmp_path / "store")).save(_chunks(1, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_pipeline_node_returning_the_chunk_iterator(tmp_path):
    def make_windows(records: list[EcgRecord]):
        return windows_from_unlabelled_records(
            records, PreprocessConfig(windows_per_recording=3), seed=0, chunk_size=2, progress=False
        )

    rng = np.random.default_rng(0)
    records = [
        EcgRecord(f"r{i}", f"p{i}", rng.standard_normal(30 * 250), 250.0, "II", None, f"/x/r{i}") for i in range(3)
    ]
    catalog = DataCatalog(
        {"windows": WindowStoreDataset(path=str(tmp_path / "store"))},
    )
    catalog["records"] = records
    SequentialRunner().run(pipeline([node(make_windows, "records", "windows")]), catalog)
    store = WindowStore(tmp_path / "store")
    assert len(store) == 9 and store.window_length == 2048
