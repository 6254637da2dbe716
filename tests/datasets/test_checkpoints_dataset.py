import pytest
from kedro.io import DataCatalog
from kedro.io.core import DatasetError

from ecg_transfer.datasets import CheckpointDirectoryDataset
from ecg_transfer.training.checkpoints import CheckpointStore


def test_load_gives_a_store_rooted_at_the_path(tmp_path):
    store = CheckpointDirectoryDataset(str(tmp_path / "runs")).load()
    assert isinstance(store, CheckpointStore)
    store.save("a", {"epoch": 1})
    assert (tmp_path / "runs" / "a" / "checkpoint.pt").is_file()


def test_save_is_refused():
    with pytest.raises(DatasetError, match="load-only"):
        CheckpointDirectoryDataset("data/06_models/checkpoints").save(object())


def test_catalog_entry(tmp_path):
    catalog = DataCatalog.from_config(
        {"training_checkpoints": {"type": "ecg_transfer.datasets.CheckpointDirectoryDataset", "path": str(tmp_path)}}
    )
    assert catalog.load("training_checkpoints").root == tmp_path
