"""Pretraining: a tiny CAE trains on the tiny corpus; its encoder is published as tensors-only
weights plus a model card that the transfer arms check against their configuration."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from matplotlib.figure import Figure

from ecg_transfer.datasets import PretrainedEncoderDataset, TorchStateDictDataset
from ecg_transfer.models.cae import CaeConfig, Encoder
from ecg_transfer.models.weights import check_pretrained_encoder
from ecg_transfer.pipelines.pretraining.pipeline import create_pipeline
from tests.pipelines.conftest import make_catalog, run, shrunk_parameters, window_store

PRETRAIN = create_pipeline().from_nodes("pretrain_autoencoder").to_nodes("pretrain_autoencoder")
PRETRAIN_AND_PLOT = create_pipeline().from_nodes("pretrain_autoencoder").to_nodes("plot_reconstructions")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _catalog(tiny_windows, tmp_path, params):
    catalog = make_catalog(
        tmp_path, {k: params[k] for k in ("pretraining", "preprocessing")}, files=("run_checkpoints",),
        unlabelled_windows=window_store(tiny_windows, "unlabelled_windows"),
    )
    # The files kedro-mlflow wraps in conf/base/catalog.yml, without the MLflow wrapper.
    catalog["cae_weights"] = TorchStateDictDataset(filepath=str(tmp_path / "cae_weights.pt"))
    catalog["pretrained_encoder@saved"] = PretrainedEncoderDataset(
        weights_path=str(tmp_path / "encoder_weights.pt"), card_path=str(tmp_path / "model_card.json")
    )
    return catalog


@pytest.fixture(scope="module")
def pretrained(one_torch_thread, tiny_windows, tmp_path_factory):
    params = shrunk_parameters()
    root = tmp_path_factory.mktemp("pretraining")
    catalog = run(PRETRAIN_AND_PLOT, _catalog(tiny_windows, root, params))
    return catalog, params, root


def test_the_encoder_is_saved_weights_only_with_a_card_of_the_configured_architecture(pretrained):
    catalog, params, root = pretrained
    configured = params["pretraining"]["cae"]
    cfg = CaeConfig.from_dict(configured)

    state = torch.load(root / "encoder_weights.pt", map_location="cpu", weights_only=True)
    assert set(state) == set(Encoder(cfg).state_dict())
    assert all(isinstance(tensor, torch.Tensor) for tensor in state.values())
    card = json.loads((root / "model_card.json").read_text())
    # The card spells out every field of the architecture, defaults included.
    assert card["architecture"] == json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert {key: card["architecture"][key] for key in configured} == configured
    assert card["window_length"] == configured["window_length"] == 2048
    assert card["bottleneck_features"] == configured["bottleneck"]
    corpus = catalog.load("unlabelled_windows")
    assert card["data"]["train_windows"] == len(corpus.split_indices("train"))
    assert card["data"]["test_windows"] == len(corpus.split_indices("test"))
    assert card["training"]["epochs_run"] <= params["pretraining"]["training"]["epochs"]
    assert card["reconstruction"]["test_mse_per_sample"] > 0
    # What its inputs were, from the preprocessing parameters and the corpus's leads.
    assert card["sampling_rate_hz"] == params["preprocessing"]["signal"]["target_fs"]
    assert card["normalisation"] == "per-window z-score" and card["lead"] == "II"
    # What the fine-tuning arms will do with it: accepted as is.
    published = catalog.load("pretrained_encoder@saved")
    assert check_pretrained_encoder(published["weights"], card, cfg).keys() == state.keys()
    cae = torch.load(root / "cae_weights.pt", map_location="cpu", weights_only=True)
    assert {f"encoder.{k}" for k in state} < set(cae)


def test_the_history_holds_the_test_mse_and_one_mlflow_run_is_recorded(pretrained):
    catalog, params, _ = pretrained
    history = catalog.load("cae_history")
    epochs = params["pretraining"]["training"]["epochs"]
    assert {"epoch", "split", "loss", "mse", "sse_per_window"} <= set(history.columns)
    test = history[history["split"] == "test"]
    assert list(test["epoch"]) == list(range(1, epochs + 1))
    assert test["mse"].notna().all() and (test["mse"] > 0).all()
    card = catalog.load("pretrained_encoder@saved")["card"]
    assert card["reconstruction"]["test_mse_per_sample"] == pytest.approx(test["mse"].min())

    # One MLflow child run, opened when training started and fed every epoch as it ended.
    tracker = catalog.load("run_tracker")
    assert tracker.whole == [] and len(tracker.live) == 1
    (record,) = tracker.live
    assert record["tags"] == {"stage": "pretraining", "arm": "cae"}
    assert record["epochs"] == list(range(1, epochs + 1)) and record["status"] == "FINISHED"
    assert record["params"]["cae.channels"] == params["pretraining"]["cae"]["channels"]
    assert record["params"]["n_train"] == card["data"]["train_windows"] and record["params"]["device"] == "cpu"
    assert record["metrics"]["test_mse_per_sample"] == card["reconstruction"]["test_mse_per_sample"]
    model, saved = catalog.load("pretrained_encoder_model"), catalog.load("pretrained_encoder@saved")
    assert model["card"] == saved["card"]
    assert all(torch.equal(model["weights"][key], saved["weights"][key]) for key in saved["weights"])


def test_plot_reconstructions_returns_a_figure(pretrained):
    catalog, _, _ = pretrained
    figure = catalog.load("cae_reconstruction_figure")
    assert isinstance(figure, Figure)
    assert figure.axes and all(ax.lines for ax in figure.axes if ax.get_visible())


def test_an_unknown_architecture_key_is_refused_before_training(tiny_windows, tmp_path):
    params = shrunk_parameters()
    params["pretraining"]["cae"]["chanels"] = params["pretraining"]["cae"].pop("channels")
    catalog = _catalog(tiny_windows, tmp_path, params)
    with pytest.raises(ValueError, match=r"pretraining.cae: unknown parameter\(s\) \['chanels'\]"):
        run(PRETRAIN, catalog)
    assert not (tmp_path / "encoder_weights.pt").exists()
    assert not (tmp_path / "data/06_models/checkpoints").exists()
