"""Pretext pretraining under DDP on 2 CPU processes (gloo, TCP on a free loopback port), as the
CAE's (tests/training/test_distributed.py): contrastive (negatives gathered across ranks,
``same_window`` and ``same_record``) and masked. The ranks end with identical weights, the
loss is close to one process's, an interrupted 2-rank run resumes to the uninterrupted one
(the per-rank augmentation and mask generators are seeded from the checkpointed default
generator), and the Kedro node's ``nproc: 2`` path (torchrun) gives the in-process ranks' run."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from ecg_transfer.pipelines.pretraining.nodes import pretrain_pretext_encoder
from ecg_transfer.signals.window_store import WindowStore, WindowStoreWriter
from ecg_transfer.tracking import NullTracker
from ecg_transfer.training.checkpoints import CheckpointStore
from ecg_transfer.training.engine import TrainConfig, fit
from ecg_transfer.training.launcher import StoreSplit
from ecg_transfer.training.pretext_methods import PretextMethod
from tests.conftest import free_port
from tests.synthetic_windows import synthetic_windows
from tests.tiny import TINY_CAE
from tests.training.two_ranks import Interrupt, join_as_rank, stop_at_epoch_2

FS = 62.5
METHODS = {
    "simclr": {"task": "contrastive", "temperature": 0.2},
    "clocs": {"task": "contrastive", "temperature": 0.2, "positives": "same_record"},
    "masked": {"task": "masked", "mask_ratio": 0.25, "span_length": 16},
}
# 20 records: 32 training windows in global batches of 16 (8 per rank), 8 held out.
N_RECORDS, N_TRAIN = 20, 32
CFG = TrainConfig(epochs=3, batch_size=16, lr=0.003, seed=4, device="cpu", eval_batch_size=8)
# One process and two ranks draw different augmentations and masks (each rank its own stream)
# and normalise BatchNorm over different batches, so their losses agree only statistically.
# Measured at these sizes, mean training loss over the epochs, two ranks vs one process:
# +5.0 % (simclr), -0.6 % (clocs), +0.6 % (masked); the tolerance leaves room for other CPUs.
# The held-out losses are not compared: each rank scores its half of the held-out split in its
# own batches (contrastive: fewer negatives per batch, so a lower chance level) with views and
# masks drawn from eval_seed on each rank (docs/pretext_tasks.md, "Under DDP").
LOSS_RTOL = 0.2



def _method(name: str) -> PretextMethod:
    return PretextMethod.from_params(name, METHODS[name])


def _model(name: str):
    with torch.random.fork_rng():
        torch.manual_seed(CFG.seed)
        return _method(name).build(TINY_CAE, FS)


def _splits(store_path: str, name: str) -> tuple[StoreSplit, StoreSplit]:
    """The node's splits: same_record pairs from seed (train) and seed + 1 (test)."""
    paired = _method(name).paired
    return (StoreSplit(store_path, "train", CFG.seed if paired else None),
            StoreSplit(store_path, "test", CFG.seed + 1 if paired else None))


def _fit(name: str, store_path: str, model, **kwargs):
    train, test = _splits(store_path, name)
    return fit(model, _method(name).task_strategy(), train.open(), train.labels(), {"test": (test.open(), test.labels())},
               CFG, progress=False, **kwargs)



def _rank(rank: int, port: int, store_path: str, out: str) -> None:
    context = join_as_rank(rank, port)
    store = CheckpointStore(os.path.join(out, "checkpoints"))
    try:
        # The same window and seed on both ranks: each rank's own training draws.
        masked = _model("masked").train()
        torch.manual_seed(0)
        drawn = masked(torch.ones(2, 1, TINY_CAE.window_length))[:, 1]
        torch.save({"mask": drawn, "rng": torch.get_rng_state()}, os.path.join(out, f"draws-{rank}.pt"))
        for name in METHODS:
            model = _model(name)
            result = _fit(name, store_path, model, distributed=context, checkpoints=store, run_key=f"full-{name}")
            torch.save({"state": model.state_dict(), "history": result.history.to_dict("list")},
                       os.path.join(out, f"{name}-{rank}.pt"))
        with pytest.raises(Interrupt):
            _fit("simclr", store_path, _model("simclr"), distributed=context, checkpoints=store, run_key="cut",
                 on_epoch_end=stop_at_epoch_2)
        resumed = _model("simclr")
        result = _fit("simclr", store_path, resumed, distributed=context, checkpoints=store, run_key="cut")
        torch.save({"state": resumed.state_dict(), "history": result.history.to_dict("list"),
                    "resumed_from": result.resumed_from_epoch}, os.path.join(out, f"cut-{rank}.pt"))
    finally:
        context.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    x, _, records = synthetic_windows(N_RECORDS, seed=10)
    index = pd.DataFrame({"record_id": records, "patient_id": records, "label": [None] * len(x),
                          "split": ["train"] * N_TRAIN + ["test"] * (len(x) - N_TRAIN), "lead": ["II"] * len(x)})
    path = tmp_path_factory.mktemp("pretext_ddp") / "windows"
    with WindowStoreWriter(path) as writer:
        writer.append(x, index)
    return path


@pytest.fixture(scope="module")
def ranks(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretext_ranks")
    mp.spawn(_rank, args=(free_port(), str(corpus), str(out)), nprocs=2, join=True)
    return {name: [torch.load(out / f"{name}-{r}.pt", weights_only=False) for r in (0, 1)]
            for name in (*METHODS, "cut", "draws")}


def test_each_rank_draws_its_own_masks_and_the_default_generator_stays_in_step(ranks):
    # Without a generator per rank both ranks would mask their shards alike (same seed); the
    # default generator stays the same on both, which is why rank 0's checkpoint resumes both.
    draws = ranks["draws"]
    assert not torch.equal(draws[0]["mask"], draws[1]["mask"])
    assert torch.equal(draws[0]["rng"], draws[1]["rng"])


def _history(run) -> pd.DataFrame:
    return pd.DataFrame(run["history"]).drop(columns="samples_per_s")


@pytest.mark.parametrize("name", list(METHODS))
def test_ranks_end_with_identical_weights_and_a_loss_close_to_one_process(corpus, ranks, name):
    both = ranks[name]
    for key, value in both[0]["state"].items():
        assert torch.equal(value, both[1]["state"][key]), key  # parameters and BatchNorm buffers
    pd.testing.assert_frame_equal(_history(both[0]), _history(both[1]), check_exact=True)
    two = _history(both[0])
    assert np.isfinite(two.loss).all()
    one = _fit(name, str(corpus), _model(name)).history
    assert list(zip(two.epoch, two.split)) == list(zip(one.epoch, one.split))
    train_two, train_one = two[two.split == "train"].loss.mean(), one[one.split == "train"].loss.mean()
    assert train_two == pytest.approx(train_one, rel=LOSS_RTOL), (train_two, train_one)
    # The ranks drew their own augmentations: rank 1's views are not rank 0's (same seed).
    assert not two.loss.equals(one.loss)


def test_an_interrupted_two_rank_contrastive_run_resumes_to_the_uninterrupted_one(ranks):
    for rank in (0, 1):
        assert ranks["cut"][rank]["resumed_from"] == 2
        pd.testing.assert_frame_equal(_history(ranks["cut"][rank]), _history(ranks["simclr"][rank]), check_exact=True)
        for key, value in ranks["simclr"][rank]["state"].items():
            assert torch.equal(value, ranks["cut"][rank]["state"][key]), key


def test_the_node_with_nproc_2_runs_torchrun_and_matches_the_in_process_ranks(corpus, ranks, tmp_path):
    # same_record: the worker rebuilds the paired model from its spec and the pairs from the seed.
    pretraining = {"cae": asdict(TINY_CAE), "training": {**asdict(CFG), "nproc": 2}, "progress": False,
                   "methods": {"clocs": METHODS["clocs"]}}
    tracker = NullTracker()
    encoder, history, _ = pretrain_pretext_encoder("clocs", WindowStore(corpus), CheckpointStore(tmp_path), tracker,
                                                   pretraining, {"signal": {"target_fs": FS}})
    expected = _history(ranks["clocs"][0])
    pd.testing.assert_frame_equal(history.drop(columns=["method", "samples_per_s"]), expected, check_exact=True)
    state = ranks["clocs"][0]["state"]
    for key, value in encoder["weights"].items():
        assert torch.equal(value, state[f"encoder.{key}"]), key
    assert encoder["card"]["pretext"]["method"] == "clocs"
    assert json.loads(next(tmp_path.rglob("ranks.json")).read_text())["world_size"] == 2
