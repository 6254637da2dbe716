"""Shared stage outputs are written atomically and left alone when unchanged (issue 20 item 6:
a second `kedro run` rewrote labelled_manifest.parquet while the first one read it)."""

import os

import pandas as pd
import pytest
from kedro.io import DatasetError

from ecg_transfer.datasets import AtomicFileDataset


def _dataset(path):
    return AtomicFileDataset({"type": "pandas.ParquetDataset", "filepath": str(path)})


def test_saves_and_loads_like_the_wrapped_dataset_and_leaves_no_temporary_file(tmp_path):
    frame = pd.DataFrame({"record_id": ["a", "b"], "label": ["~", "AF+flutter"]})
    dataset = _dataset(tmp_path / "sub" / "manifest.parquet")
    assert not dataset.exists()
    dataset.save(frame)
    pd.testing.assert_frame_equal(dataset.load(), frame)
    assert dataset.exists()
    assert os.listdir(tmp_path / "sub") == ["manifest.parquet"]


def test_the_same_content_is_not_rewritten_and_new_content_replaces_the_file(tmp_path):
    path = tmp_path / "manifest.parquet"
    frame = pd.DataFrame({"record_id": ["a", "b"], "label": ["x", "y"]})
    _dataset(path).save(frame)
    before = os.stat(path)
    _dataset(path).save(frame.copy())  # another run, same deterministic output
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    _dataset(path).save(frame.assign(label=["x", "z"]))
    assert os.stat(path).st_ino != before.st_ino  # a new file renamed over it, never written in place
    assert _dataset(path).load()["label"].tolist() == ["x", "z"]
    assert os.listdir(tmp_path) == ["manifest.parquet"]


def test_a_reader_holding_the_old_file_still_reads_it_whole(tmp_path):
    path = tmp_path / "samples.json"
    dataset = AtomicFileDataset({"type": "json.JSONDataset", "filepath": str(path)})
    dataset.save({"n": list(range(1000))})
    with open(path, "rb") as reader:  # open while another run replaces the file
        dataset.save({"n": [1]})
        assert reader.read().count(b",") == 999


def test_a_dataset_without_a_filepath_is_refused():
    with pytest.raises(DatasetError, match="filepath"):
        AtomicFileDataset({"type": "pandas.ParquetDataset"})
