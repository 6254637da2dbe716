import numpy as np
import pandas as pd
import torch

from ecg_transfer.models.classifier import FeatureClassifier
from ecg_transfer.study.experiment import ArmData, fingerprint, run_arm, run_key
from ecg_transfer.training.checkpoints import CheckpointStore


def test_fingerprint_is_stable_for_equal_content_and_changes_with_it():
    labels = np.array(["SR", "SB", None], dtype=object)
    same = np.array(["SR", "SB", None], dtype=object)  # other objects, same strings
    assert fingerprint({"lr": 0.005}, labels, np.arange(3)) == fingerprint({"lr": 0.005}, same, np.arange(3))
    assert fingerprint(labels) != fingerprint(np.array(["SR", "SB", "AF"], dtype=object))
    assert fingerprint(np.arange(3)) != fingerprint(np.arange(3).astype(np.int32))  # dtype counts
    assert fingerprint({"lr": 0.005}) != fingerprint({"lr": 0.001})
    weights = {"w": torch.ones(2)}
    assert fingerprint(weights) == fingerprint({"w": torch.ones(2)}) != fingerprint({"w": torch.zeros(2)})


def _data(rng, n_features=6):
    def split(n):
        y = np.arange(n) % 3
        x = (rng.standard_normal((n, n_features)) + y[:, None]).astype(np.float32)
        return x, y.astype(np.int64)
    return ArmData(*split(30), *split(12), *split(12))


def _samples():
    rows = []
    for fraction, size in ((1.0, 30), (0.5, 15)):
        for trial, seed in ((1, 101), (2, 202)):
            positions = np.random.default_rng(seed).integers(0, 30, size)
            rows.append(pd.DataFrame({"fraction": fraction, "trial": trial, "seed": seed, "position": positions}))
    return pd.concat(rows, ignore_index=True)


def test_run_arm_trains_every_fraction_and_trial_and_reuses_finished_runs(tmp_path):
    data = _data(np.random.default_rng(0))
    seeds_seen = []

    def make_model(seed):
        seeds_seen.append(seed)
        torch.manual_seed(seed)
        return FeatureClassifier(6, 3, hidden=8, dropout=0.0)

    config = {"epochs": 2, "batch_size": 8, "lr": 0.01, "n_classes": 3, "device": "cpu", "monitor_split": "val"}
    store = CheckpointStore(tmp_path)
    history, records = run_arm("image", make_model, data, _samples(), config, store, "abc", progress=False)
    assert seeds_seen == [101, 202, 101, 202]  # the trial's seed, at every fraction
    assert list(history.columns[:3]) == ["fraction", "arm", "trial"]
    assert set(history["split"]) == {"train", "val", "test"}
    assert len(history) == 4 * 2 * 3  # runs x epochs x splits
    assert [r["params"]["n_train"] for r in records] == [30, 30, 15, 15]
    assert {r["tags"]["arm"] for r in records} == {"image"}
    assert store.is_done(run_key("image", 0.5, 2, "abc"))
    again, _ = run_arm("image", make_model, data, _samples(), config, store, "abc", progress=False)
    pd.testing.assert_frame_equal(history.drop(columns="samples_per_s"), again.drop(columns="samples_per_s"))
