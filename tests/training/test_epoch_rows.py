"""One window per group and epoch (training/loop.py ``epoch_rows``, fit's and fit_trials'
``train_groups``): each epoch trains one random row of every group, drawn from the run's
(seed, epoch) generator; without groups the epoch is the permutation it always was."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from ecg_transfer.models.classifier import build_classifier, build_feature_classifier
from ecg_transfer.training.batched import fit_trials
from ecg_transfer.training.checkpoints import CheckpointStore
from ecg_transfer.training.engine import TrainConfig, fit
from ecg_transfer.training.loop import RowGroups, epoch_rows
from ecg_transfer.training.tasks import ClassificationTask
from tests.tiny import TINY_CAE

TASK = ClassificationTask(("a", "b", "c"))
CFG = TrainConfig(epochs=4, batch_size=8, lr=0.005, device="cpu", monitor_split="val", seed=5)
SEEDS = (11, 22, 33)


def _groups(n_groups=12, seed=0):
    """Group ids of 3 to 5 rows per group, in shuffled row order (group g's rows are not contiguous)."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n_groups), rng.integers(3, 6, n_groups))
    return rng.permutation(ids)


def _features(n, seed=0):
    """Feature rows whose last column is the row's own index, so a model can tell which rows it saw."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.standard_normal((n, 6)) + y[:, None]).astype(np.float32)
    return np.concatenate([x, np.arange(n, dtype=np.float32)[:, None]], axis=1), y


def _evals():
    x, y = _features(15, seed=1)
    return {"val": (x, y), "test": _features(15, seed=2)}


def _numbers(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns="samples_per_s").reset_index(drop=True)


def test_without_groups_an_epoch_is_the_permutation_it_always_was():
    for seed, epoch in ((0, 1), (7, 3), (123, 10)):
        assert np.array_equal(epoch_rows(seed, epoch, 50), np.random.default_rng([seed, epoch]).permutation(50))


def test_an_epoch_trains_one_random_row_of_every_group():
    ids = _groups()
    groups = RowGroups.build(ids, ids.size, "test")
    seen = set()
    for epoch in range(1, 41):
        rows = epoch_rows(3, epoch, ids.size, groups)
        assert rows.size == 12 and sorted(ids[rows]) == list(range(12))  # each group once
        assert np.array_equal(rows, epoch_rows(3, epoch, ids.size, groups))  # from (seed, epoch) alone
        seen.update(rows.tolist())
    assert seen == set(range(ids.size))  # the draw reaches every row of every group
    assert not np.array_equal(epoch_rows(3, 1, ids.size, groups), epoch_rows(4, 1, ids.size, groups))
    with pytest.raises(ValueError, match="one group id per training row"):
        RowGroups.build(ids[:-1], ids.size, "fit[x]")


def test_fit_feeds_one_row_per_group_each_epoch():
    ids = _groups()
    x, y = _features(ids.size)
    model = build_feature_classifier(x.shape[1], 3, 0, hidden=8, dropout=0.0)
    fed = []
    model.register_forward_pre_hook(lambda m, args: fed.append(args[0][:, -1].long().tolist()) if m.training else None)
    epochs = {}
    result = fit(model, TASK, x, y, _evals(), CFG, progress=False, train_groups=ids,
                 on_epoch_end=lambda epoch, _h: epochs.setdefault(epoch, sum(fed, [])) and fed.clear())
    assert sorted(epochs) == [1, 2, 3, 4]
    for epoch, rows in epochs.items():
        assert sorted(ids[rows]) == list(range(12)), epoch  # exactly one window of every group
        assert np.array_equal(np.sort(rows), np.sort(epoch_rows(CFG.seed, epoch, ids.size, RowGroups.build(ids, ids.size, ""))))
    assert len({tuple(sorted(rows)) for rows in epochs.values()}) > 1  # other windows in other epochs
    train = result.history[result.history["split"] == "train"]
    plain = fit(build_feature_classifier(x.shape[1], 3, 0, hidden=8, dropout=0.0), TASK, x, y, _evals(), CFG,
                progress=False)
    assert not np.allclose(train["loss"], plain.history[plain.history["split"] == "train"]["loss"])


def test_a_resumed_run_with_groups_equals_an_uninterrupted_one(tmp_path):
    ids = _groups()
    x, y = _features(ids.size)

    def model():
        return build_feature_classifier(x.shape[1], 3, 0, hidden=8, dropout=0.3)

    reference = fit(model(), TASK, x, y, _evals(), CFG, progress=False, train_groups=ids)
    store = CheckpointStore(tmp_path)

    def interrupt(epoch, _history):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(model(), TASK, x, y, _evals(), CFG, store, "run", progress=False, on_epoch_end=interrupt, train_groups=ids)
    resumed = fit(model(), TASK, x, y, _evals(), CFG, store, "run", progress=False, train_groups=ids)
    assert resumed.resumed_from_epoch == 2
    pd.testing.assert_frame_equal(_numbers(resumed.history), _numbers(reference.history), check_exact=True)


@pytest.fixture
def native_convolutions():
    """PyTorch's own convolution kernels, as test_batched.py's fixture of the same name says why."""
    with torch.backends.mkldnn.flags(enabled=False):
        yield


def test_stacked_trials_with_groups_match_one_at_a_time_fit(native_convolutions):
    rng = np.random.default_rng(0)
    n_pool = 48
    x = rng.standard_normal((n_pool, 256)).astype(np.float32)
    y = np.repeat(rng.integers(0, 3, n_pool // 4), 4)  # records of 4 windows, one label each
    x += y[:, None]
    rows = [np.sort(np.random.default_rng(s).integers(0, n_pool, 60)) for s in SEEDS]
    # Groups of each trial's rows, numbered differently per trial; the same count (30) in each.
    groups = [np.arange(60) // 2 + 100 * k for k in range(3)]
    val = rng.standard_normal((12, 256)).astype(np.float32), rng.integers(0, 3, 12)
    evals = {"val": val, "test": val}
    cfg = replace(CFG, epochs=3, batch_size=16)  # tiny batches amplify rounding (test_batched.py)

    def model(seed):
        return build_classifier(TINY_CAE, 3, seed, dropout=0.2)

    sequential = [fit(model(s), TASK, x[r], y[r], evals, replace(cfg, seed=s), progress=False, train_groups=g)
                  for s, r, g in zip(SEEDS, rows, groups)]
    stacked = fit_trials([model(s) for s in SEEDS], TASK, x, y, rows, evals, cfg, SEEDS, progress=False,
                         train_groups=groups)
    for one, other in zip(sequential, stacked):
        pd.testing.assert_frame_equal(_numbers(one.history), _numbers(other.history), check_exact=False, atol=1e-5,
                                      rtol=0)
    ungrouped = fit(model(SEEDS[0]), TASK, x[rows[0]], y[rows[0]], evals, replace(cfg, seed=SEEDS[0]), progress=False)
    assert not np.allclose(_numbers(ungrouped.history)["loss"], _numbers(sequential[0].history)["loss"])
    with pytest.raises(ValueError, match="same number of training groups"):
        fit_trials([model(s) for s in SEEDS], TASK, x, y, rows, evals, cfg, SEEDS, progress=False,
                   train_groups=[groups[0], groups[1], np.arange(60) // 5])
