"""Pretraining: a tiny CAE trains on the tiny corpus; its encoder is published as tensors-only
weights plus a model card that the transfer arms check against their configuration."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch
import yaml
from kedro.io import AbstractDataset
from matplotlib.figure import Figure

from ecg_transfer.datasets import PretrainedEncoderDataset, TorchStateDictDataset
from ecg_transfer.models.cae import CaeConfig, Encoder
from ecg_transfer.models.weights import check_pretrained_encoder
from ecg_transfer.pipelines.pretraining.pipeline import create_pipeline
from tests.pipelines.conftest import CONF, make_catalog, run, shrunk_parameters, window_store

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
    # The card spells out every field of the architecture, defaults included, except in_channels
    # at 1: a one-lead card is what it was before several leads existed (issue 19).
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "in_channels"}
    assert card["architecture"] == json.loads(json.dumps(fields)) and cfg.in_channels == 1
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


def test_every_pt_file_pretraining_writes_loads_weights_only(pretrained):
    """What held when probed (issue 20), kept: the weights, the encoder and every checkpoint and
    result file open with torch.load(weights_only=True), so no file of a run executes code."""
    _, _, root = pretrained
    written = sorted(root.rglob("*.pt"))
    names = {path.name for path in written}
    assert {"cae_weights.pt", "encoder_weights.pt", "checkpoint.pt", "result.pt"} <= names, names
    for path in written:
        torch.load(path, map_location="cpu", weights_only=True)


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


# ---------------------------------------------------------------- pretraining.methods

METHODS = ["simclr", "clocs", "masked"]


def _pretext(methods=METHODS):
    return create_pipeline(methods=methods, cae=False)


def _with_methods(params):
    params["pretraining"]["methods"] = {
        "cae": {"task": "reconstruct"},
        "simclr": {"task": "contrastive", "temperature": 0.2,
                   "augmentations": [{"name": "gaussian_noise", "max_std": 0.05}, {"name": "baseline_wander"}]},
        "clocs": {"task": "contrastive", "positives": "same_record"},
        "masked": {"task": "masked", "span_length": 64, "training": {"lr": 0.002}},
    }
    return params


def _pretext_catalog(tiny_windows, root, params, methods=METHODS):
    """The catalog with each method's encoder and history in the files conf/base/catalog.yml's
    factories name (under ``root``)."""
    catalog = _catalog(tiny_windows, root, params)
    entries = yaml.safe_load((CONF / "base" / "catalog.yml").read_text())
    for method in methods:
        for name in ("pretext_encoder", "pretext_history"):
            config = {k: (v.replace("{method}", method) if isinstance(v, str) else v)
                      for k, v in entries["{method}." + name].items() if k != "metadata"}
            for key in ("weights_path", "card_path", "filepath"):
                if key in config:
                    config[key] = str(root / config[key])
            catalog[f"{method}.{name}"] = AbstractDataset.from_config(f"{method}.{name}", config)
    return catalog


def test_the_default_configuration_has_no_pretext_node():
    assert {n.name for n in create_pipeline().nodes} == {"pretrain_autoencoder", "plot_reconstructions"}


def test_each_method_is_one_node_in_its_namespace():
    nodes = {n.name: n for n in _pretext().nodes}
    assert set(nodes) == {f"{m}.pretrain_pretext_encoder" for m in METHODS}
    assert set(nodes["simclr.pretrain_pretext_encoder"].outputs) == {
        "simclr.pretext_encoder", "simclr.pretext_history", "simclr.pretext_encoder_model"}
    assert "unlabelled_windows" in nodes["simclr.pretrain_pretext_encoder"].inputs


def test_listing_methods_leaves_the_cae_bit_identical(pretrained, tiny_windows, tmp_path):
    # The CAE's run key and numbers ignore pretraining.methods: same history, same weights.
    catalog, _, root = pretrained
    params = _with_methods(shrunk_parameters())
    again = run(PRETRAIN, _catalog(tiny_windows, tmp_path, params))
    keys = [sorted(p.name for p in (base / "data/06_models/checkpoints/pretraining/cae").iterdir())
            for base in (root, tmp_path)]
    assert keys[0] == keys[1] and len(keys[0]) == 1  # the same run key: its checkpoints are reused
    pd.testing.assert_frame_equal(again.load("cae_history").drop(columns="samples_per_s"),
                                  catalog.load("cae_history").drop(columns="samples_per_s"), check_exact=True)
    first, second = catalog.load("cae_weights"), again.load("cae_weights")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_every_listed_method_trains_the_caes_encoder_and_persists_it_with_a_card(tiny_windows, tmp_path, caplog):
    params = _with_methods(shrunk_parameters())
    with caplog.at_level("WARNING", logger="ecg_transfer.pipelines.pretraining.nodes"):
        catalog = run(_pretext(), _pretext_catalog(tiny_windows, tmp_path, params))
    corpus = catalog.load("unlabelled_windows")
    held_out_records = corpus.index["record_id"].iloc[corpus.split_indices("test")].nunique()
    cfg = CaeConfig.from_dict(params["pretraining"]["cae"])
    encoders = {}
    for name in METHODS:
        # Written to the catalog's files: a later run (or another session) reads them back.
        assert (tmp_path / f"data/06_models/pretext/{name}/encoder_weights.pt").is_file()
        encoders[name] = encoder = catalog.load(f"{name}.pretext_encoder")
        assert check_pretrained_encoder(encoder["weights"], encoder["card"], cfg).keys() == Encoder(cfg).state_dict().keys()
        assert encoder["card"]["pretext"]["method"] == name
        if name == "clocs" and held_out_records == 1:
            # The tiny corpus holds out one record: same_record has no negatives there (a
            # record's windows are none of each other's), so its held-out loss is 0, and the
            # node says so.
            assert encoder["card"]["held_out"]["test_loss"] == 0
            assert "clocs: the corpus's test split holds 1 record(s)" in caplog.text
        else:
            assert encoder["card"]["held_out"]["test_loss"] > 0
        model = catalog.load(f"{name}.pretext_encoder_model")  # what MLflow logs as the method's model
        assert model["card"] == encoder["card"]
        history = pd.read_csv(tmp_path / f"data/07_model_output/pretext/{name}_history.csv")
        assert set(history["method"]) == {name}
        assert (history.groupby("split").size() <= params["pretraining"]["training"]["epochs"]).all()
    assert encoders["simclr"]["card"]["pretext"]["options"]["temperature"] == 0.2
    assert encoders["masked"]["card"]["training"]["lr"] == 0.002
    runs = catalog.load("run_tracker").live
    assert sorted(r["tags"]["arm"] for r in runs) == sorted(METHODS)
    # A second run reuses the finished runs (checkpointed): the same encoders, not retrained.
    again = run(_pretext(), _pretext_catalog(tiny_windows, tmp_path, params))
    assert again.load("run_tracker").live == [] and len(again.load("run_tracker").whole) == len(METHODS)
    for n in METHODS:
        weights = again.load(f"{n}.pretext_encoder")["weights"]
        assert all(torch.equal(weights[k], encoders[n]["weights"][k]) for k in weights)


def test_a_pipeline_built_for_a_method_the_run_does_not_list_stops(tiny_windows, tmp_path):
    params = shrunk_parameters()  # the CAE alone
    with pytest.raises(ValueError, match=r"built for pretext method 'simclr'"):
        run(_pretext(["simclr"]), _pretext_catalog(tiny_windows, tmp_path, params, ["simclr"]))


@pytest.mark.parametrize(
    "methods, message",
    [({"rot": {"task": "rotate"}}, r"pretraining.methods.rot.task: must be one of"),
     ({"simclr": {"task": "contrastive", "positives": "same_patient"}}, "pretraining.methods.simclr: ContrastiveTask"),
     ({"cae": {"task": "reconstruct", "lr": 0.1}}, r"unknown option\(s\) \['lr'\] for task reconstruct")],
)
def test_a_bad_method_is_refused_naming_it(tiny_windows, tmp_path, methods, message):
    params = shrunk_parameters()
    params["pretraining"]["methods"] = methods
    with pytest.raises(ValueError, match=message):
        run(_pretext([name for name in methods if methods[name]["task"] != "reconstruct"] or ["simclr"]),
            _catalog(tiny_windows, tmp_path, params))


def test_every_pretext_method_pretrains_on_windows_of_three_leads_and_its_card_names_them(tmp_path):
    # Issue 19: every pretext task takes C input channels; the card records the leads in order.
    from dataclasses import asdict

    import numpy as np

    from ecg_transfer.pipelines.pretraining.nodes import pretrain_pretext_encoder
    from ecg_transfer.signals.window_store import WindowStore, WindowStoreWriter
    from ecg_transfer.tracking import NullTracker
    from ecg_transfer.training.checkpoints import CheckpointStore
    from tests.synthetic_windows import synthetic_windows
    from tests.tiny import TINY_CAE

    x, _, records = synthetic_windows(12, seed=3, leads=("I", "II", "V1"))
    index = pd.DataFrame({"record_id": records, "patient_id": records, "label": [None] * len(x),
                          "split": ["train"] * 16 + ["test"] * 8, "lead": ["I,II,V1"] * len(x)})
    with WindowStoreWriter(tmp_path / "windows") as writer:
        writer.append(x, index)
    methods = {"simclr": {"task": "contrastive"}, "clocs": {"task": "contrastive", "positives": "same_record"},
               "masked": {"task": "masked", "span_length": 16}}
    cae = {k: v for k, v in asdict(TINY_CAE).items() if k != "in_channels"}  # the windows decide it
    pretraining = {"cae": cae, "progress": False, "methods": methods,
                   "training": {"epochs": 2, "batch_size": 8, "lr": 0.003, "seed": 1, "device": "cpu"}}
    for name in methods:
        encoder, history, _ = pretrain_pretext_encoder(
            name, WindowStore(tmp_path / "windows"), CheckpointStore(tmp_path / "checkpoints"), NullTracker(),
            pretraining, {"signal": {"target_fs": 62.5}})
        card = encoder["card"]
        assert card["lead"] == "I,II,V1" and card["architecture"]["in_channels"] == 3, name
        assert encoder["weights"]["blocks.0.conv1.weight"].shape[1] == 3, name
        assert np.isfinite(history["loss"]).all() and card["held_out"]["test_loss"] > 0, name
