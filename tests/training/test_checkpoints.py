import pandas as pd
import pytest
import torch

from ecg_transfer.training.checkpoints import CheckpointStore


def test_save_load_round_trip_leaves_no_temporary_files(tmp_path):
    store = CheckpointStore(tmp_path / "ckpt")
    assert store.load("f=0.25/transfer/trial=3") is None
    store.save("f=0.25/transfer/trial=3", {"epoch": 2, "w": torch.arange(3)})
    store.save("f=0.25/transfer/trial=3", {"epoch": 3, "w": torch.arange(4)})
    payload = store.load("f=0.25/transfer/trial=3")
    assert payload["epoch"] == 3 and torch.equal(payload["w"], torch.arange(4))
    files = sorted(p.name for p in (tmp_path / "ckpt" / "f=0.25" / "transfer" / "trial=3").iterdir())
    assert files == ["checkpoint.pt"]


def test_done_marker_and_result(tmp_path):
    store = CheckpointStore(tmp_path)
    assert not store.is_done("run")
    with pytest.raises(KeyError, match="not done"):
        store.load_result("run")
    history = pd.DataFrame({"epoch": [1, 2], "loss": [0.5, 0.25]})
    store.mark_done("run", {"history": history})
    assert store.is_done("run")
    pd.testing.assert_frame_equal(store.load_result("run")["history"], history)
    store.clear("run")
    assert not store.is_done("run") and store.load("run") is None


@pytest.mark.parametrize("key", ["", "../escape", "a//b", "a/./b", "sp ace", "/abs"])
def test_unsafe_run_keys_are_refused(tmp_path, key):
    with pytest.raises(ValueError, match="run key"):
        CheckpointStore(tmp_path).save(key, {})


def test_corrupt_checkpoint_names_the_file(tmp_path):
    store = CheckpointStore(tmp_path)
    store.run_dir("r").mkdir(parents=True)
    (store.run_dir("r") / "checkpoint.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="checkpoint.pt"):
        store.load("r")
