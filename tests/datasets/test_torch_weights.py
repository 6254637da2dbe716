import pytest
import torch
from kedro.io import DatasetError

from ecg_transfer.datasets import TorchStateDictDataset


def test_round_trip_is_weights_only_loadable(tmp_path):
    path = tmp_path / "w" / "encoder.pt"
    state = {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.zeros(2)}
    dataset = TorchStateDictDataset(filepath=str(path))
    assert not dataset.exists()
    dataset.save(state)
    assert dataset.exists()
    plain = torch.load(path, weights_only=True)
    loaded = dataset.load()
    assert plain.keys() == loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_refuses_what_is_not_a_state_dict_and_names_the_file(tmp_path):
    dataset = TorchStateDictDataset(filepath=str(tmp_path / "x.pt"))
    with pytest.raises(DatasetError, match="dict of tensors"):
        dataset.save({"model": torch.nn.Linear(2, 2)})
    with pytest.raises(DatasetError, match="x.pt"):
        dataset.load()
    (tmp_path / "x.pt").write_bytes(b"not a torch file")
    with pytest.raises(DatasetError, match="weights-only"):
        dataset.load()
