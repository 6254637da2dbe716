"""Batched trials (training/batched.py) against the sequential engine they replace."""

import logging
import os
import threading
import time
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from ecg_transfer.models.cae import Encoder
from ecg_transfer.models.classifier import build_classifier, build_feature_classifier
from ecg_transfer.study.experiment import ArmData, run_arm, run_key
from ecg_transfer.training.batched import (
    auto_batch_trials,
    fit_trials,
    parse_batch_trials,
    run_groups_once,
    trial_memory_bytes,
    unsupported_reason,
)
from ecg_transfer.training.checkpoints import CheckpointStore
from ecg_transfer.training.engine import TrainConfig, fit
from ecg_transfer.training.tasks import ClassificationTask
from tests.tiny import TINY_CAE

TINY = TINY_CAE
TASK = ClassificationTask(("a", "b", "c"))
SEEDS = (11, 22, 33)
WINDOW_CFG = TrainConfig(epochs=4, batch_size=16, lr=0.005, device="cpu", monitor_split="val")
HEAD_CFG = TrainConfig(epochs=4, batch_size=16, lr=0.005, device="cpu", monitor_split="val")


@pytest.fixture
def native_convolutions():
    """PyTorch's own convolution kernels instead of oneDNN's. oneDNN computes a grouped
    convolution (K trials at once) with other kernels than a single one, rounding a few ulp
    differently; this architecture amplifies that (Adam turns the rounding noise of the
    near-zero gradients of BatchNorm-invariant weights into full steps) to ~1e-4..1e-3 in
    the validation loss after a few epochs, as much as the engine's own 1- vs 2-thread
    difference. With the native kernels both paths round alike and agree to ~1e-7, which
    tests the batching itself (docs/models_and_training.md, "Batched trials")."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def _windows(n, length=256, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.standard_normal((n, length)) + y[:, None]).astype(np.float32)
    return x, y


def _rows(n_pool, size):
    return [np.sort(np.random.default_rng(seed).integers(0, n_pool, size)) for seed in SEEDS]


def _evals(length=256):
    val_x, val_y = _windows(20, length, seed=1)
    test_x, test_y = _windows(20, length, seed=2)
    test_y = test_y[np.arange(20) // 2 * 2]  # records of two windows, one label each
    records = np.array([f"r{i // 2}" for i in range(20)], dtype=object)
    return {"val": (val_x, val_y), "test": (test_x, test_y, records)}


def _numbers(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns="samples_per_s").reset_index(drop=True)


def _assert_same_runs(sequential, batched, atol):
    for one, other in zip(sequential, batched):
        pd.testing.assert_frame_equal(_numbers(one.history), _numbers(other.history), check_exact=False, atol=atol, rtol=0)
        assert (one.best_epoch, one.stopped_early, one.epochs_run) == (other.best_epoch, other.stopped_early, other.epochs_run)
        assert one.predictions.keys() == other.predictions.keys()
        for selection, kept in one.predictions.items():
            assert kept["epoch"] == other.predictions[selection]["epoch"]
            for key in ("val", "test", "test_record"):
                np.testing.assert_allclose(kept[key], other.predictions[selection][key], atol=atol, rtol=0)
            assert list(kept["test_record_ids"]) == list(other.predictions[selection]["test_record_ids"])


def _sequential(make_model, x, y, rows, evals, cfg, **kwargs):
    return [fit(make_model(seed), TASK, x[r], y[r], evals, replace(cfg, seed=seed), progress=False, **kwargs)
            for seed, r in zip(SEEDS, rows)]


def _window_model(seed, dropout=0.2):
    return build_classifier(TINY, 3, seed, dropout=dropout)


def test_window_classifier_trials_match_sequential_fit(native_convolutions):
    x, y = _windows(60)
    rows, evals = _rows(60, 40), _evals()
    sequential = _sequential(_window_model, x, y, rows, evals, WINDOW_CFG)
    models = [_window_model(seed) for seed in SEEDS]
    batched = fit_trials(models, TASK, x, y, rows, evals, WINDOW_CFG, SEEDS, progress=False)
    assert {"train", "val", "test", "test_record"} == set(batched[0].history["split"])
    _assert_same_runs(sequential, batched, atol=1e-5)
    # the models end with their best weights, as fit leaves them
    for model, result in zip(models, batched):
        for key, value in result.best_state.items():
            assert torch.equal(model.state_dict()[key], value)


def test_default_kernels_agree_to_rounding_early_in_training():
    x, y = _windows(60)
    rows, evals = _rows(60, 40), _evals()
    cfg = replace(WINDOW_CFG, epochs=2, lr=0.001)
    sequential = _sequential(_window_model, x, y, rows, evals, cfg)
    batched = fit_trials([_window_model(s) for s in SEEDS], TASK, x, y, rows, evals, cfg, SEEDS, progress=False)
    for one, other in zip(sequential, batched):
        train = one.history["split"] == "train"
        np.testing.assert_allclose(one.history["loss"][train], other.history["loss"][train], atol=1e-5, rtol=0)
        np.testing.assert_allclose(one.history["loss"], other.history["loss"], atol=1e-3, rtol=0)


def test_feature_head_trials_match_sequential_fit_with_dropout():
    x, y = _windows(60, length=12)
    rows, evals = _rows(60, 40), _evals(length=12)

    def head(seed):
        return build_feature_classifier(12, 3, seed, hidden=16, dropout=0.3)

    sequential = _sequential(head, x, y, rows, evals, HEAD_CFG)
    batched = fit_trials([head(s) for s in SEEDS], TASK, x, y, rows, evals, HEAD_CFG, SEEDS, progress=False)
    # same dropout masks (each trial's own generator), so only float rounding differs
    _assert_same_runs(sequential, batched, atol=1e-5)


def test_frozen_pretrained_encoder_is_shared_and_matches(native_convolutions):
    x, y = _windows(60)
    rows, evals = _rows(60, 40), _evals()
    with torch.random.fork_rng():
        torch.manual_seed(5)
        encoder = Encoder(TINY)
        encoder.train()
        encoder(torch.randn(32, 1, 256))  # non-trivial running stats
    state = encoder.state_dict()

    def frozen(seed):
        return build_classifier(TINY, 3, seed, init="pretrained", freeze=True, encoder_state=state)

    sequential = _sequential(frozen, x, y, rows, evals, HEAD_CFG)
    batched = fit_trials([frozen(s) for s in SEEDS], TASK, x, y, rows, evals, HEAD_CFG, SEEDS, progress=False)
    _assert_same_runs(sequential, batched, atol=1e-5)


def test_each_trial_stops_early_on_its_own(native_convolutions):
    x, y = _windows(60)
    rows, evals = _rows(60, 40), _evals()
    cfg = replace(WINDOW_CFG, epochs=8, patience=1)
    sequential = _sequential(_window_model, x, y, rows, evals, cfg)
    batched = fit_trials([_window_model(s) for s in SEEDS], TASK, x, y, rows, evals, cfg, SEEDS, progress=False)
    assert any(result.stopped_early for result in sequential)
    assert len({result.epochs_run for result in sequential}) > 1  # trials stop at different epochs
    _assert_same_runs(sequential, batched, atol=1e-4)


def test_checkpoints_are_shared_with_the_sequential_path(tmp_path, native_convolutions):
    x, y = _windows(60)
    rows, evals = _rows(60, 40), _evals()
    keys = [f"arm/trial={seed}" for seed in SEEDS]
    reference = _sequential(_window_model, x, y, rows, evals, WINDOW_CFG)

    def interrupt(epoch, *_):
        if epoch == 2:
            raise KeyboardInterrupt

    # Batched, interrupted after epoch 2: fit resumes each run from the batched checkpoint.
    store = CheckpointStore(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        fit_trials([_window_model(s) for s in SEEDS], TASK, x, y, rows, evals, WINDOW_CFG, SEEDS,
                   store, keys, progress=False, on_epoch_end=interrupt)
    sequential_store = CheckpointStore(tmp_path / "layout")
    with pytest.raises(KeyboardInterrupt):
        fit(_window_model(SEEDS[0]), TASK, x[rows[0]], y[rows[0]], evals, replace(WINDOW_CFG, seed=SEEDS[0]),
            sequential_store, keys[0], progress=False, on_epoch_end=interrupt)
    written, expected = store.load(keys[0]), sequential_store.load(keys[0])
    assert written.keys() == expected.keys() and written["model"].keys() == expected["model"].keys()
    assert written["optimizer"]["param_groups"] == expected["optimizer"]["param_groups"]
    assert torch.equal(written["torch_rng"], expected["torch_rng"])  # the same dropout draws so far
    resumed = [fit(_window_model(7), TASK, x[r], y[r], evals, replace(WINDOW_CFG, seed=seed), store, key, progress=False)
               for seed, r, key in zip(SEEDS, rows, keys)]
    assert all(result.resumed_from_epoch == 2 for result in resumed)
    _assert_same_runs(reference, resumed, atol=1e-4)

    # Sequential runs interrupted at different epochs: the batched loop resumes each group.
    store = CheckpointStore(tmp_path / "b")
    for seed, r, key, stop in zip(SEEDS, rows, keys, (1, 2, 2)):
        with pytest.raises(KeyboardInterrupt):
            fit(_window_model(seed), TASK, x[r], y[r], evals, replace(WINDOW_CFG, seed=seed), store, key,
                progress=False, on_epoch_end=lambda epoch, _, stop=stop: (_ for _ in ()).throw(KeyboardInterrupt)
                if epoch == stop else None)
    batched = fit_trials([_window_model(7) for _ in SEEDS], TASK, x, y, rows, evals, WINDOW_CFG, SEEDS, store, keys,
                         progress=False)
    assert [result.resumed_from_epoch for result in batched] == [1, 2, 2]
    _assert_same_runs(reference, batched, atol=1e-4)

    # Finished runs are reused by either path, without training.
    calls = []
    again = fit_trials([_window_model(7) for _ in SEEDS], TASK, x, y, rows, evals, WINDOW_CFG, SEEDS, store, keys,
                       progress=False, on_epoch_end=calls.append)
    reused = fit(_window_model(7), TASK, x[rows[1]], y[rows[1]], evals, replace(WINDOW_CFG, seed=SEEDS[1]), store,
                 keys[1], progress=False, on_epoch_end=lambda *a: calls.append(a))
    assert calls == []
    pd.testing.assert_frame_equal(again[1].history, batched[1].history)
    pd.testing.assert_frame_equal(reused.history, batched[1].history)


def test_bad_groups_and_models_are_refused():
    x, y = _windows(30)
    evals = _evals()
    models = [_window_model(s) for s in SEEDS]
    with pytest.raises(ValueError, match="same, non-zero number of training rows"):
        fit_trials(models, TASK, x, y, [np.arange(10), np.arange(10), np.arange(12)], evals, WINDOW_CFG, SEEDS)
    with pytest.raises(ValueError, match="3 models, 2 seeds"):
        fit_trials(models, TASK, x, y, [np.arange(10)] * 3, evals, WINDOW_CFG, SEEDS[:2])
    odd = torch.nn.Sequential(torch.nn.Linear(12, 3), torch.nn.AlphaDropout(0.1))
    assert "AlphaDropout" in unsupported_reason(odd)
    assert unsupported_reason(models[0]) is None


def test_batch_trials_setting_and_the_memory_estimate():
    assert parse_batch_trials("auto") == "auto" and parse_batch_trials(4) == 4 and parse_batch_trials("2") == 2
    for bad in (0, -1, "two", 1.5, None):
        with pytest.raises(ValueError, match="batch_trials"):
            parse_batch_trials(bad)
    model = build_classifier(TINY, 3, 0)
    per_trial = trial_memory_bytes(model, 256, WINDOW_CFG)
    assert per_trial > 4 * sum(p.numel() for p in model.parameters())
    assert auto_batch_trials(model, 256, WINDOW_CFG, n_trials=5) == 5  # tiny: all trials of a fraction


def _arm_data():
    def split(n, seed):
        rng = np.random.default_rng(seed)
        y = np.arange(n) % 3
        return (rng.standard_normal((n, 6)) + y[:, None]).astype(np.float32), y.astype(np.int64)

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split(30, 0), split(12, 1), split(12, 2)
    records = np.array([f"r{i:02d}" for i in range(12)], dtype=object)
    return ArmData(train_x, train_y, val_x, val_y, test_x, test_y, records, records.copy())


def _samples():
    rows = []
    for fraction, size in ((1.0, 30), (0.5, 15)):
        for trial, seed in ((1, 101), (2, 202), (3, 303)):
            positions = np.random.default_rng(seed).integers(0, 30, size)
            rows.append(pd.DataFrame({"fraction": fraction, "trial": trial, "seed": seed, "position": positions}))
    return pd.concat(rows, ignore_index=True)


def test_run_arm_batched_equals_sequential_and_shares_finished_runs(tmp_path, caplog):
    data, samples = _arm_data(), _samples()
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.01, device="cpu", monitor_split="val")
    seeds_seen = []

    def make_model(seed):
        seeds_seen.append(seed)
        return build_feature_classifier(6, 3, seed, hidden=8, dropout=0.2)

    sequential = run_arm("image", make_model, data, samples, cfg, TASK.classes, None, "abc", progress=False)
    store = CheckpointStore(tmp_path)
    seeds_seen.clear()
    with caplog.at_level(logging.INFO, logger="ecg_transfer.study.experiment"):
        batched = run_arm("image", make_model, data, samples, cfg, TASK.classes, store, "abc", progress=False,
                          batch_trials=2)
    assert "image: reused 0 finished runs, resumed 0, trained 6" in caplog.text
    assert seeds_seen == [101, 202, 303, 101, 202, 303]
    columns = [c for c in sequential.histories.columns if c != "samples_per_s"]
    pd.testing.assert_frame_equal(sequential.histories[columns], batched.histories[columns], atol=1e-5, rtol=0)
    pd.testing.assert_frame_equal(sequential.predictions, batched.predictions, atol=1e-5, rtol=0)
    assert [r["run_name"] for r in sequential.records] == [r["run_name"] for r in batched.records]
    auto = run_arm("image", make_model, data, samples, cfg, TASK.classes, None, "abc", progress=False,
                   batch_trials="auto")
    pd.testing.assert_frame_equal(sequential.histories[columns], auto.histories[columns], atol=1e-5, rtol=0)
    assert store.is_done(run_key("image", 0.5, 3, "abc"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ecg_transfer.study.experiment"):
        again = run_arm("image", make_model, data, samples, cfg, TASK.classes, store, "abc", progress=False)
    assert "image: reused 6 finished runs, resumed 0, trained 0" in caplog.text
    pd.testing.assert_frame_equal(again.predictions, batched.predictions)


def test_run_groups_once_waits_for_runs_another_worker_holds(tmp_path):
    store = CheckpointStore(tmp_path)
    keys = ["r/0", "r/1", "r/2"]
    other = CheckpointStore(tmp_path)
    assert other.acquire(keys[1])  # a live worker of this process holds run 1
    claim = (tmp_path / "r" / "1" / "claim.json")
    text = claim.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {os.getppid()}')
    claim.write_text(text)  # held by a live process other than this one
    calls = []

    def run_group(indices):
        calls.append(list(indices))
        for index in indices:
            store.mark_done(keys[index], {"index": index})
        return [f"run {index}" for index in indices]

    def finish_elsewhere():
        time.sleep(0.3)
        store.mark_done(keys[1], {"index": 1})
        claim.unlink()

    worker = threading.Thread(target=finish_elsewhere)
    worker.start()
    results = run_groups_once(store, keys, [[0, 1, 2]], run_group, poll_s=0.05)
    worker.join()
    assert results == ["run 0", "run 1", "run 2"]
    assert calls == [[0, 2], [1]]  # trained together, then the other worker's run collected


def _three_lead(x):
    """(N, L) windows as three leads: the trace, its negative and a scaled copy plus noise."""
    noise = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    return np.stack([x, -x, 0.5 * x + noise], axis=1)


def test_windows_of_three_leads_train_stacked_as_one_at_a_time(native_convolutions):
    three = replace(TINY, in_channels=3)
    x, y = _windows(60)
    x = _three_lead(x)
    rows = _rows(60, 40)
    evals = {name: (_three_lead(split[0]), *split[1:]) for name, split in _evals().items()}

    def model(seed):
        return build_classifier(three, 3, seed)

    sequential = _sequential(model, x, y, rows, evals, WINDOW_CFG)
    batched = fit_trials([model(seed) for seed in SEEDS], TASK, x, y, rows, evals, WINDOW_CFG, SEEDS, progress=False)
    _assert_same_runs(sequential, batched, atol=1e-5)
    assert trial_memory_bytes(model(0), (3, 256), WINDOW_CFG) > trial_memory_bytes(_window_model(0), 256, WINDOW_CFG)
