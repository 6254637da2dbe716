"""DDP pretraining on 2 CPU processes (gloo): the ranks agree, the loss is close to one process
with the same global batch, resume works, and the Kedro node's ``nproc: 2`` path (torchrun)
gives the same run as the in-process ranks."""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from ecg_transfer.models.cae import ConvAutoencoder
from ecg_transfer.pipelines.pretraining.nodes import pretrain_autoencoder
from ecg_transfer.signals.window_store import WindowStore, WindowStoreWriter
from ecg_transfer.tracking import NullTracker
from ecg_transfer.training.checkpoints import CheckpointStore
from ecg_transfer.training.distributed import DistributedContext
from ecg_transfer.training.engine import TrainConfig, fit
from ecg_transfer.training.launcher import LaunchConfig, StoreSplit, fit_distributed
from ecg_transfer.training.tasks import ClassificationTask, ReconstructionTask
from tests.conftest import free_port
from tests.tiny import TINY_CAE
from tests.training.two_ranks import Interrupt, join_as_rank, stop_at_epoch_2

TINY = TINY_CAE
# 41 training windows in batches of 8: the last global batch has one row, so one rank runs a
# weight-0 placeholder row (the uneven-shard path).
N_TRAIN, N_TEST = 41, 12
CFG = TrainConfig(epochs=3, batch_size=8, lr=0.005, seed=5, device="cpu", eval_batch_size=8)
# Without BatchNorm the sharded steps are the single-process steps up to float rounding
# (measured: 7e-8 relative on every history value). With it, one process normalises each batch
# of 8 windows with that batch's statistics and two ranks each with their own 4 (SyncBatchNorm
# refuses CPU tensors), and the running statistics used in eval are averages over ranks that
# miss the between-rank part of the variance. Measured on this data: train loss within 0.4 %,
# final test MSE 3.6 % apart (0.198 vs 0.191); the tolerances leave room for other CPUs.
EXACT_RTOL = 1e-5
TRAIN_LOSS_RTOL = 0.02
TEST_MSE_RTOL = 0.10


def _model() -> ConvAutoencoder:
    with torch.random.fork_rng():
        torch.manual_seed(CFG.seed)
        return ConvAutoencoder(TINY)


class _Affine(nn.Module):
    """A per-channel scale in place of BatchNorm: no batch statistics, so no rank effect."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1)


def _model_without_batchnorm() -> ConvAutoencoder:
    model = _model()
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm1d):
                setattr(module, name, _Affine(child.num_features))
    return model


def _comparable(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns="samples_per_s").reset_index(drop=True)




def _rank(rank: int, port: int, store_path: str, out: str) -> None:
    """One rank of the in-process runs: uninterrupted, interrupted + resumed, interrupted only."""
    context = join_as_rank(rank, port)
    train, test = StoreSplit(store_path, "train").open(), StoreSplit(store_path, "test").open()
    store = CheckpointStore(os.path.join(out, "checkpoints"))
    try:
        def run(key, model, **kwargs):
            return fit(model, ReconstructionTask(), train, None, {"test": (test, None)}, CFG, checkpoints=store,
                       run_key=key, progress=False, distributed=context, **kwargs)

        model = _model()
        result = run("full", model)
        torch.save({"state": model.state_dict(), "history": result.history.to_dict("list")},
                   os.path.join(out, f"full-{rank}.pt"))
        with pytest.raises(Interrupt):
            run("cut", _model(), on_epoch_end=stop_at_epoch_2)
        with torch.random.fork_rng():
            torch.manual_seed(99)  # the resumed run must take its weights from the checkpoint
            resumed = ConvAutoencoder(TINY)
        result = run("cut", resumed)
        torch.save({"state": resumed.state_dict(), "history": result.history.to_dict("list"),
                    "resumed_from": result.resumed_from_epoch}, os.path.join(out, f"cut-{rank}.pt"))
        with pytest.raises(Interrupt):
            run("elastic", _model(), on_epoch_end=stop_at_epoch_2)
        result = run("affine", _model_without_batchnorm())
        torch.save({"history": result.history.to_dict("list")}, os.path.join(out, f"affine-{rank}.pt"))
    finally:
        context.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    rng = np.random.default_rng(0)
    t = np.arange(TINY.window_length) / 250.0
    n = N_TRAIN + N_TEST
    windows = (np.sin(2 * np.pi * rng.uniform(0.8, 2.0, (n, 1)) * t) + 0.3 * rng.standard_normal((n, t.size)))
    index = pd.DataFrame({
        "record_id": [f"r{i // 4}" for i in range(n)], "patient_id": [f"p{i // 8}" for i in range(n)],
        "label": [None] * n, "split": ["train"] * N_TRAIN + ["test"] * N_TEST, "lead": ["II"] * n,
    })
    with WindowStoreWriter(root / "windows") as writer:
        writer.append(windows.astype(np.float32), index)
    return root / "windows"


@pytest.fixture(scope="module")
def ranks(corpus, tmp_path_factory):
    """The 2-rank runs (one spawn, both ranks in this machine's loopback) and their outputs."""
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_rank, args=(free_port(), str(corpus), str(out)), nprocs=2, join=True)
    loaded = {name: [torch.load(out / f"{name}-{r}.pt", weights_only=False) for r in (0, 1)] for name in ("full", "cut", "affine")}
    return loaded, CheckpointStore(out / "checkpoints")


def _single_process(corpus, model=None):
    model = model or _model()
    train, test = StoreSplit(str(corpus), "train").open(), StoreSplit(str(corpus), "test").open()
    result = fit(model, ReconstructionTask(), train, None, {"test": (test, None)}, CFG, progress=False)
    return model, result


def test_ranks_end_with_identical_weights_and_a_loss_close_to_one_process(corpus, ranks):
    runs, _ = ranks
    full = runs["full"]
    for key, value in full[0]["state"].items():
        assert torch.equal(value, full[1]["state"][key]), key  # parameters and BatchNorm buffers
    pd.testing.assert_frame_equal(_comparable(pd.DataFrame(full[0]["history"])),
                                  _comparable(pd.DataFrame(full[1]["history"])), check_exact=True)

    _, single = _single_process(corpus)
    two = pd.DataFrame(full[0]["history"])
    one = single.history
    assert list(zip(two.epoch, two.split)) == list(zip(one.epoch, one.split))
    train_two, train_one = two[two.split == "train"].loss.to_numpy(), one[one.split == "train"].loss.to_numpy()
    np.testing.assert_allclose(train_two, train_one, rtol=TRAIN_LOSS_RTOL)
    final_two = two[(two.split == "test") & (two.epoch == CFG.epochs)].mse.item()
    final_one = one[(one.split == "test") & (one.epoch == CFG.epochs)].mse.item()
    assert final_two == pytest.approx(final_one, rel=TEST_MSE_RTOL)


def test_without_batchnorm_two_ranks_take_exactly_the_single_process_steps(corpus, ranks):
    runs, _ = ranks
    _, single = _single_process(corpus, _model_without_batchnorm())
    two = pd.DataFrame(runs["affine"][0]["history"])
    np.testing.assert_allclose(two[["loss", "mse"]].to_numpy(), single.history[["loss", "mse"]].to_numpy(),
                               rtol=EXACT_RTOL)


def test_an_interrupted_distributed_run_resumes_to_the_uninterrupted_result(ranks):
    runs, _ = ranks
    for rank in (0, 1):
        assert runs["cut"][rank]["resumed_from"] == 2
        pd.testing.assert_frame_equal(_comparable(pd.DataFrame(runs["cut"][rank]["history"])),
                                      _comparable(pd.DataFrame(runs["full"][rank]["history"])), check_exact=True)
        for key, value in runs["full"][rank]["state"].items():
            assert torch.equal(value, runs["cut"][rank]["state"][key]), key


def test_a_two_rank_checkpoint_resumes_in_one_process(corpus, ranks):
    _, store = ranks
    assert store.load("elastic")["epoch"] == 2 and not store.is_done("elastic")
    train, test = StoreSplit(str(corpus), "train").open(), StoreSplit(str(corpus), "test").open()
    result = fit(_model(), ReconstructionTask(), train, None, {"test": (test, None)}, CFG, checkpoints=store,
                 run_key="elastic", progress=False)
    assert result.resumed_from_epoch == 2 and result.epochs_run == CFG.epochs
    assert list(result.history.epoch.unique()) == [1, 2, 3]


def test_the_node_with_nproc_2_runs_torchrun_and_matches_the_in_process_ranks(corpus, ranks, tmp_path, monkeypatch):
    runs, _ = ranks
    pretraining = {"cae": asdict(TINY), "training": {**asdict(CFG), "nproc": 2}, "progress": False}
    store = CheckpointStore(tmp_path / "checkpoints")
    cae_state, history, encoder, _ = pretrain_autoencoder(
        WindowStore(corpus), store, NullTracker(), pretraining, {"signal": {"target_fs": 250.0}}
    )
    pd.testing.assert_frame_equal(_comparable(history), _comparable(pd.DataFrame(runs["full"][0]["history"])),
                                  check_exact=True)
    for key, value in runs["full"][0]["state"].items():
        assert torch.equal(cae_state[key], value), key
    assert encoder["card"]["training"]["nproc"] == 2
    (job_dir,) = [path.parent for path in (tmp_path / "checkpoints").rglob("job.json")]
    assert (job_dir / "ranks.json").is_file()
    run_key = job_dir.parent.relative_to(store.root).as_posix()

    # A finished run is read back without launching anything; nproc is not part of the run key.
    def no_launch(*args, **kwargs):
        raise AssertionError("a finished run must not be relaunched")

    monkeypatch.setattr(subprocess, "run", no_launch)
    again = fit_distributed(_model(), ReconstructionTask(), StoreSplit(str(corpus), "train"),
                            {"test": StoreSplit(str(corpus), "test")}, CFG, LaunchConfig(nproc=4),
                            checkpoints=store, run_key=run_key)
    pd.testing.assert_frame_equal(_comparable(again.history), _comparable(history), check_exact=True)
    pretraining["training"]["nproc"] = 1
    _, one_history, _, _ = pretrain_autoencoder(
        WindowStore(corpus), store, NullTracker(), pretraining, {"signal": {"target_fs": 250.0}}
    )
    pd.testing.assert_frame_equal(one_history, history)  # same key: the 2-process result is reused


def test_shards_cover_each_global_batch_once_and_eval_ranges_tile_the_split():
    contexts = [DistributedContext(rank, 3, rank, torch.device("cpu")) for rank in range(3)]
    rows = np.arange(10, 17)
    parts = [context.shard(rows) for context in contexts]
    assert np.concatenate([part for part, _ in parts]).tolist() == rows.tolist()
    assert [share for _, share in parts] == [2, 2, 3]
    short = [context.shard(np.array([4])) for context in contexts]
    assert [(part.tolist(), share) for part, share in short] == [([4], 0), ([4], 0), ([4], 1)]
    assert [context.eval_range(7) for context in contexts] == [(0, 2), (2, 4), (4, 7)]


def test_launch_settings_are_checked():
    assert LaunchConfig.from_params(2, {"max_restarts": 1}) == LaunchConfig(nproc=2, max_restarts=1)
    assert not LaunchConfig().distributed and LaunchConfig(nproc=2).distributed
    with pytest.raises(ValueError, match="pretraining.distributed: unknown parameter.*nprocs"):
        LaunchConfig.from_params(2, {"nprocs": 2})
    with pytest.raises(ValueError, match="nproc must be"):
        LaunchConfig(nproc=0)
    with pytest.raises(ValueError, match="ReconstructionTask"):
        fit_distributed(_model(), ClassificationTask(["a", "b"]), StoreSplit("x", "train"), {}, CFG, LaunchConfig())


def test_sync_batchnorm_is_refused_on_cpu(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(ValueError, match="sync_batchnorm needs CUDA"):
        DistributedContext.from_env("cpu", sync_batchnorm=True)


def test_the_launcher_is_its_own_module_and_the_rank_does_not_import_it():
    """One direction only: the launcher uses the rank's context; the rank knows nothing of the
    launcher (no import circle, not even a lazy one)."""
    import ast
    from pathlib import Path

    from ecg_transfer.training import distributed, launcher

    tree = ast.parse(Path(distributed.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not any("launcher" in name for name in imported if name)
    assert not hasattr(distributed, "fit_distributed")
    command = launcher.torchrun_command("job.json", LaunchConfig(nproc=2))
    assert command[-3:] == ["-m", "ecg_transfer.training.launcher", "job.json"]


def test_the_task_says_whether_it_runs_distributed():
    from ecg_transfer.training.tasks import task_from_description

    assert ReconstructionTask().distributable and not ClassificationTask(("a", "b")).distributable
    for task in (ReconstructionTask(), ClassificationTask(("a", "b"))):
        rebuilt = task_from_description(task.describe())
        assert type(rebuilt) is type(task) and rebuilt.describe() == task.describe()
    with pytest.raises(ValueError, match="unknown task description"):
        task_from_description({"name": "regression"})
