"""Fine-tuning: the bootstrap samples all arms share, the three encoder arms trained on them,
the encoder check that keeps a transfer arm from silently starting from random weights, and
resuming from the checkpoint store without retraining."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.runner import SequentialRunner

from ecg_transfer.models.cae import CaeConfig, Encoder
from ecg_transfer.models.weights import encoder_model_card
from ecg_transfer.pipelines.finetuning.pipeline import create_pipeline
from ecg_transfer.signals.window_store import WindowStore, WindowStoreWriter
from tests.pipelines.conftest import make_catalog, run, shrunk_parameters, window_store

ENCODER_ARMS = ("random", "transfer", "transfer_frozen")
BOOTSTRAP = create_pipeline().from_nodes("draw_bootstrap_samples").to_nodes("draw_bootstrap_samples")
FINETUNING = create_pipeline().from_nodes("draw_bootstrap_samples").to_nodes(
    *(f"{arm}.train_{arm}_arm" for arm in ENCODER_ARMS)
)
TRANSFER = create_pipeline().only_nodes("transfer.train_transfer_arm")
RANDOM = create_pipeline().only_nodes("random.train_random_arm")
HISTORY_COLUMNS = ["fraction", "arm", "trial", "epoch", "split", "loss", "f1_weighted", "f1_macro", "accuracy"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _encoder(params):
    """A pretrained encoder stand-in: seeded weights of the configured architecture and its card."""
    cfg = CaeConfig.from_dict(params["pretraining"]["cae"])
    torch.manual_seed(0)
    state = Encoder(cfg).state_dict()
    return state, encoder_model_card(state, cfg, {"data": {"corpus": "test"}})


def _catalog(tiny_windows, root, params, encoder=True, **data):
    if encoder:
        state, card = _encoder(params)
        data.setdefault("pretrained_encoder_weights", state)
        data.setdefault("pretrained_encoder_card", card)
    return make_catalog(
        root, {k: params[k] for k in ("study", "pretraining", "finetuning")}, files=("run_checkpoints",),
        labelled_windows=window_store(tiny_windows, "labelled_windows"), **data,
    )


@pytest.fixture(scope="module")
def finetuned(one_torch_thread, tiny_windows, tmp_path_factory):
    params = shrunk_parameters()
    root = tmp_path_factory.mktemp("finetuning")
    catalog = run(FINETUNING, _catalog(tiny_windows, root, params))
    return catalog, params, root


def test_bootstrap_samples_cover_every_fraction_trial_and_class(tiny_windows, tmp_path):
    params = shrunk_parameters()
    catalog = run(BOOTSTRAP, _catalog(tiny_windows, tmp_path, params, encoder=False))
    samples = catalog.load("bootstrap_samples")
    store = catalog.load("labelled_windows")
    train_labels = store.index["label"].to_numpy(dtype=object)[store.split_indices("train")]
    study = params["study"]

    groups = samples.groupby(["fraction", "trial"])
    assert sorted(groups.groups) == sorted(
        (float(f), t) for f in study["fractions"] for t in range(1, study["n_trials"] + 1)
    )
    for (fraction, _), sample in groups:
        assert len(sample) == round(fraction * train_labels.size)
        assert sample["position"].between(0, train_labels.size - 1).all()
        assert set(train_labels[sample["position"]]) == set(train_labels)
    # One seed per trial, shared by every fraction (and so by every arm).
    assert (samples.groupby("trial")["seed"].nunique() == 1).all()
    assert samples.groupby("trial")["seed"].first().is_unique


def test_every_arm_writes_the_documented_history(finetuned):
    catalog, params, _ = finetuned
    epochs = params["finetuning"]["training"]["epochs"]
    n_runs = len(params["study"]["fractions"]) * params["study"]["n_trials"]
    for arm in ENCODER_ARMS:
        history = catalog.load(f"{arm}_training_histories")
        assert list(history.columns[:5]) == HISTORY_COLUMNS[:5], arm
        assert set(HISTORY_COLUMNS) <= set(history.columns), arm
        assert (history["arm"] == arm).all()
        runs = history.groupby(["fraction", "trial"])
        assert runs.ngroups == n_runs
        for _, one in runs:
            assert sorted(one.loc[one["split"] == "test", "epoch"]) == list(range(1, epochs + 1))
            assert set(one["split"]) == {"train", "val", "test"}
        evaluated = history[history["split"] != "train"]
        assert evaluated[["f1_weighted", "f1_macro", "accuracy"]].stack().between(0, 1).all()
        assert history["loss"].notna().all()


def test_one_mlflow_record_per_fraction_and_trial(finetuned):
    catalog, params, _ = finetuned
    samples = catalog.load("bootstrap_samples")
    store = catalog.load("labelled_windows")
    for arm in ENCODER_ARMS:
        records = catalog.load(f"{arm}_mlflow_runs")
        keys = [(r["params"]["fraction"], r["params"]["trial"]) for r in records]
        assert sorted(keys) == sorted(samples.groupby(["fraction", "trial"]).groups), arm
        for record in records:
            p = record["params"]
            sample = samples[(samples["fraction"] == p["fraction"]) & (samples["trial"] == p["trial"])]
            assert p["arm"] == arm and record["tags"]["stage"] == "finetuning"
            assert p["seed"] == sample["seed"].iloc[0]
            assert p["n_train"] == len(sample)
            assert p["n_test"] == len(store.split_indices("test"))
            assert p["train.lr"] == params["finetuning"]["training"]["lr"]
            assert {"best_test_f1_weighted", "honest_test_f1_weighted"} <= set(record["metrics"])


def test_a_second_run_reuses_the_finished_runs(finetuned, tiny_windows):
    catalog, params, root = finetuned
    results = sorted((root / "data/06_models/checkpoints").rglob("result.pt"))
    n_runs = len(params["study"]["fractions"]) * params["study"]["n_trials"]
    assert len(results) == len(ENCODER_ARMS) * n_runs
    stamps = {path: path.stat().st_mtime_ns for path in results}

    again = run(FINETUNING, _catalog(tiny_windows, root, params))

    assert {path: path.stat().st_mtime_ns for path in results} == stamps
    assert sorted((root / "data/06_models/checkpoints").rglob("result.pt")) == results
    for arm in ENCODER_ARMS:
        pd.testing.assert_frame_equal(again.load(f"{arm}_training_histories"), catalog.load(f"{arm}_training_histories"))


def test_the_random_arm_needs_no_encoder(tiny_windows, tmp_path, finetuned):
    assert not {"pretrained_encoder_weights", "pretrained_encoder_card"} & RANDOM.inputs()
    catalog, params, _ = finetuned
    samples = catalog.load("bootstrap_samples")
    one = samples[(samples["fraction"] == 0.5) & (samples["trial"] == 1)]
    fresh = run(RANDOM, _catalog(tiny_windows, tmp_path, params, encoder=False, bootstrap_samples=one))
    assert "pretrained_encoder_weights" not in fresh
    assert len(fresh.load("random_mlflow_runs")) == 1


@pytest.mark.parametrize(
    "field, value", [("kernel_size", 17), ("channels", [3, 3, 3, 3, 3, 3, 3, 3, 3]), ("bottleneck", 59)]
)
def test_the_transfer_arm_refuses_an_encoder_of_another_architecture(tiny_windows, tmp_path, field, value):
    params = shrunk_parameters()
    state, card = _encoder(params)
    card["architecture"][field] = value
    catalog = _catalog(tiny_windows, tmp_path, params, pretrained_encoder_card=card,
                       bootstrap_samples=_one_sample(tiny_windows))
    with pytest.raises(ValueError, match=f"another architecture.*{field}"):
        run(TRANSFER, catalog)
    assert not (tmp_path / "data/06_models/checkpoints").exists()  # nothing was trained
    assert not catalog.exists("transfer_training_histories")


@pytest.mark.parametrize(
    "weights, card, message",
    [
        ({}, "ok", "missing keys"),
        (None, "ok", "not a state_dict"),
        ("ok", {}, "no 'architecture'"),
        ("ok", None, "no 'architecture'"),
        ("truncated", "ok", "shape mismatches"),
    ],
)
def test_the_transfer_arm_never_trains_from_random_on_a_broken_encoder(tiny_windows, tmp_path, weights, card, message):
    params = shrunk_parameters()
    good_state, good_card = _encoder(params)
    if weights == "ok":
        weights = good_state
    elif weights == "truncated":
        weights = {k: v[..., :1] if v.ndim else v for k, v in good_state.items()}
    card = good_card if card == "ok" else card
    catalog = _catalog(tiny_windows, tmp_path, params, pretrained_encoder_weights=weights,
                       pretrained_encoder_card=card, bootstrap_samples=_one_sample(tiny_windows))
    with pytest.raises(ValueError, match=message):
        run(TRANSFER, catalog)
    assert not (tmp_path / "data/06_models/checkpoints").exists()


def test_the_transfer_arm_cannot_run_without_an_encoder(tiny_windows, tmp_path):
    params = shrunk_parameters()
    catalog = _catalog(tiny_windows, tmp_path, params, encoder=False, bootstrap_samples=_one_sample(tiny_windows))
    with pytest.raises(ValueError, match="pretrained_encoder_card.*not found|pretrained_encoder_weights.*not found"):
        SequentialRunner().run(TRANSFER, catalog)
    assert not (tmp_path / "data/06_models/checkpoints").exists()


def _one_sample(tiny_windows) -> pd.DataFrame:
    """A one-run bootstrap table (fraction 1, trial 1) over the whole training split."""
    n_train = len(window_store(tiny_windows, "labelled_windows").split_indices("train"))
    return pd.DataFrame({"fraction": 1.0, "trial": 1, "seed": 3, "position": np.arange(n_train)})


def test_a_finished_run_is_not_reused_once_the_windows_changed(tiny_windows, tmp_path):
    """E.g. after a change to params:preprocessing (high-pass, placement): same records, labels
    and splits, other windows. The checkpoint store must not hand back the old result."""
    params = shrunk_parameters()
    original = window_store(tiny_windows, "labelled_windows")
    with WindowStoreWriter(tmp_path / "flipped") as writer:
        writer.append(np.ascontiguousarray(-np.asarray(original.windows)[:, ::-1]), original.index)
    histories = []
    for store in (original, WindowStore(tmp_path / "flipped")):
        catalog = make_catalog(
            tmp_path, {k: params[k] for k in ("pretraining", "finetuning")}, files=("run_checkpoints",),
            labelled_windows=store, bootstrap_samples=_one_sample(tiny_windows),
        )
        histories.append(run(RANDOM, catalog).load("random_training_histories"))
    assert not histories[0].equals(histories[1])
