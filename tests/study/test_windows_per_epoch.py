"""``finetuning.windows_per_epoch`` (study/experiment.py): "one_per_record" makes each epoch of
a run train one random window per drawn record copy; "all" (the default) trains every window."""

import numpy as np
import pandas as pd
import pytest
import torch

from ecg_transfer.models.classifier import FeatureClassifier
from ecg_transfer.study.experiment import (
    ArmData,
    FinetuningConfig,
    plan_runs,
    record_copies,
    run_arm,
    trial_groups,
)
from ecg_transfer.training.engine import TrainConfig

CLASSES = ("a", "b", "c")
CONFIG = TrainConfig(epochs=3, batch_size=4, lr=0.01, device="cpu", monitor_split="val")
# 12 training records of 1 to 3 windows (as `labelled_placement: spread` gives), one label each.
WINDOWS = np.array([1, 2, 3] * 4)
TRAIN_RECORDS = np.repeat(np.array([f"t{i:02d}" for i in range(12)], dtype=object), WINDOWS)


def _data(rng) -> ArmData:
    train_y = np.repeat(np.arange(12) % 3, WINDOWS).astype(np.int64)
    n = train_y.size
    # Feature rows: the last column is the row's position, so a model can say which rows it saw.
    train_x = np.concatenate([(rng.standard_normal((n, 5)) + train_y[:, None]).astype(np.float32),
                              np.arange(n, dtype=np.float32)[:, None]], axis=1)
    val_y = np.arange(9) % 3
    val_x = np.concatenate([(rng.standard_normal((9, 5)) + val_y[:, None]), np.zeros((9, 1))], axis=1).astype(np.float32)
    records = np.array([f"r{i}" for i in range(9)], dtype=object)
    return ArmData(train_x, train_y, val_x, val_y, val_x.copy(), val_y.copy(), records, records.copy(), TRAIN_RECORDS)


def _positions(record_draws):
    """The bootstrap positions of drawn records (a record drawn twice brings its windows twice)."""
    starts = np.concatenate([[0], np.cumsum(WINDOWS)[:-1]])
    return np.sort(np.concatenate([np.arange(starts[r], starts[r] + WINDOWS[r]) for r in record_draws]))


def _samples():
    draws = {(1, 11): [0, 1, 2, 2, 4, 5, 7, 8], (2, 22): [1, 1, 3, 5, 6, 8, 9, 11]}  # 8 records drawn each
    return pd.concat([pd.DataFrame({"fraction": 1.0, "trial": t, "seed": s, "position": _positions(d)})
                      for (t, s), d in draws.items()], ignore_index=True), draws


def test_each_drawn_copy_of_a_record_is_one_group_holding_each_of_its_windows_once():
    positions = _positions([2, 2, 0, 5])  # record t02 (3 windows) drawn twice
    groups = record_copies(TRAIN_RECORDS, positions)
    assert np.unique(groups).size == 4  # one group per drawn copy
    for group in np.unique(groups):
        members = positions[groups == group]
        assert np.unique(TRAIN_RECORDS[members]).size == 1  # one record
        assert np.unique(members).size == members.size == WINDOWS[int(TRAIN_RECORDS[members[0]][1:])]


def test_the_plan_carries_groups_only_for_one_window_per_record():
    samples, draws = _samples()
    plain = plan_runs("arm", samples, "fp")
    assert all(run.groups is None and run.epoch_size == run.positions.size for run in plain)
    grouped = plan_runs("arm", samples, "fp", TRAIN_RECORDS)
    assert [run.epoch_size for run in grouped] == [8, 8]  # records drawn, not windows
    assert [run.positions.size for run in grouped] == [run.positions.size for run in plain]
    assert trial_groups(grouped, 2) == [[0], [1]]  # different window counts: never stacked
    same = pd.concat([samples[samples["trial"] == 1], samples[samples["trial"] == 1].assign(trial=2, seed=22)])
    assert trial_groups(plan_runs("arm", same, "fp", TRAIN_RECORDS), 2) == [[0, 1]]


def _model_recording(fed):
    def make_model(seed):
        torch.manual_seed(seed)
        model = FeatureClassifier(6, 3, hidden=8, dropout=0.0)
        if fed is not None:  # a plain model only: the stacked one runs under vmap
            model.register_forward_pre_hook(
                lambda m, args: fed.setdefault(seed, []).append(args[0][:, -1].long().tolist()) if m.training else None)
        return model
    return make_model


def test_one_per_record_trains_one_window_of_every_drawn_record_copy_each_epoch():
    data = _data(np.random.default_rng(0))
    samples, draws = _samples()
    fed = {}
    runs = run_arm("arm", _model_recording(fed), data, samples, CONFIG, CLASSES, None, "fp", progress=False,
                   windows_per_epoch="one_per_record", batch_trials=1)
    assert len(runs.histories) == 2 * 3 * 3
    for (trial, seed), drawn in draws.items():
        batches = fed[seed]
        per_epoch = [sum(batches[i : i + 2], []) for i in range(0, len(batches), 2)]  # 8 rows: 2 batches of 4
        assert len(per_epoch) == 3
        for rows in per_epoch:  # one window of every drawn copy (t02 drawn twice: two of its windows)
            assert sorted(int(TRAIN_RECORDS[r][1:]) for r in rows) == sorted(drawn)


def test_stacked_and_one_at_a_time_agree_with_one_window_per_record():
    data = _data(np.random.default_rng(0))
    samples, _ = _samples()
    same = pd.concat([samples[samples["trial"] == 1], samples[samples["trial"] == 1].assign(trial=2, seed=22)])
    kwargs = dict(progress=False, windows_per_epoch="one_per_record")
    alone = run_arm("arm", _model_recording(None), data, same, CONFIG, CLASSES, None, "fp", batch_trials=1, **kwargs)
    stacked = run_arm("arm", _model_recording(None), data, same, CONFIG, CLASSES, None, "fp", batch_trials=2, **kwargs)
    columns = [c for c in alone.histories.columns if c != "samples_per_s"]
    pd.testing.assert_frame_equal(alone.histories[columns], stacked.histories[columns], check_exact=False, atol=1e-6)
    every = run_arm("arm", _model_recording(None), data, same, CONFIG, CLASSES, None, "fp", batch_trials=1,
                    progress=False)
    assert not np.allclose(every.histories["loss"], alone.histories["loss"])


def test_the_setting_is_checked_and_needs_the_training_records():
    assert FinetuningConfig.from_params({}).windows_per_epoch == "all"
    assert FinetuningConfig.from_params({"windows_per_epoch": "one_per_record"}).windows_per_epoch == "one_per_record"
    with pytest.raises(ValueError, match="finetuning.windows_per_epoch must be one of"):
        FinetuningConfig.from_params({"windows_per_epoch": "one"})
    data = _data(np.random.default_rng(0))
    without = ArmData(data.train_x, data.train_y, data.val_x, data.val_y, data.test_x, data.test_y)
    with pytest.raises(ValueError, match="one_per_record needs the record id of every training window"):
        run_arm("arm", _model_recording(None), without, _samples()[0], CONFIG, CLASSES, None, "fp", progress=False,
                windows_per_epoch="one_per_record")
