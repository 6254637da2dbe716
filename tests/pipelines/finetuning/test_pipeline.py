"""Fine-tuning: the bootstrap samples all arms share, every arm trained on them from one
template, the encoder checks that keep a transfer arm from silently starting from random
weights or from an encoder made for other inputs, and resuming without retraining."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.runner import SequentialRunner

from ecg_transfer.models.cae import CaeConfig, Encoder
from ecg_transfer.models.classifier import build_feature_classifier
from ecg_transfer.models.weights import encoder_model_card
from ecg_transfer.pipelines.finetuning.pipeline import create_pipeline
from ecg_transfer.signals.window_store import WindowStore, WindowStoreWriter
from ecg_transfer.study.arms import arm_registry
from ecg_transfer.study.run_settings import check_arm_settings
from tests.pipelines.conftest import make_catalog, run, shrunk_parameters, window_store

ENCODER_ARMS = ("random", "transfer", "transfer_frozen")
PIPELINE = create_pipeline()
BOOTSTRAP = PIPELINE.only_nodes("draw_bootstrap_samples")
FINETUNING = PIPELINE.from_nodes("draw_bootstrap_samples").to_nodes(*(f"{arm}.train_arm" for arm in ENCODER_ARMS))
TRANSFER = PIPELINE.only_nodes("transfer.train_arm")
RANDOM = PIPELINE.only_nodes("random.train_arm")
IMAGE = PIPELINE.only_nodes("image.train_arm")
PARAMS = ("study", "pretraining", "finetuning", "preprocessing", "image_transfer")
HISTORY_COLUMNS = ["fraction", "arm", "trial", "epoch", "split", "loss", "f1_weighted", "f1_macro", "accuracy"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _encoder(params):
    """A pretrained encoder stand-in: seeded weights of the configured architecture and its card."""
    cfg = CaeConfig.from_dict(params["pretraining"]["cae"])
    torch.manual_seed(0)
    state = Encoder(cfg).state_dict()
    return state, encoder_model_card(state, cfg, {"data": {"corpus": "test"}})


def _catalog(tiny_windows, root, params, encoder=True, weights="ok", card="ok", **data):
    if encoder:
        good_state, good_card = _encoder(params)
        data.setdefault("pretrained_encoder@finetuning", {
            "weights": good_state if weights == "ok" else weights, "card": good_card if card == "ok" else card,
        })
    store = data.pop("labelled_windows", None) or window_store(tiny_windows, "labelled_windows")
    return make_catalog(
        root, {k: params[k] for k in PARAMS}, files=("run_checkpoints",),
        labelled_windows=store, label_classes=data.pop("label_classes", None) or list(store.classes), **data,
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
        history = catalog.load(f"{arm}.training_histories")
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


def test_one_live_mlflow_run_per_fraction_and_trial(finetuned):
    catalog, params, _ = finetuned
    samples = catalog.load("bootstrap_samples")
    store = catalog.load("labelled_windows")
    for arm in ENCODER_ARMS:
        records = [run for run in catalog.load("run_tracker").live if run["tags"]["arm"] == arm]
        keys = [(float(r["params"]["fraction"]), r["params"]["trial"]) for r in records]
        assert sorted(keys) == sorted(samples.groupby(["fraction", "trial"]).groups), arm
        for record in records:
            p = record["params"]
            sample = samples[(samples["fraction"] == float(p["fraction"])) & (samples["trial"] == p["trial"])]
            assert p["arm"] == arm and record["tags"]["stage"] == "finetuning"
            assert p["seed"] == sample["seed"].iloc[0]
            assert p["n_train"] == len(sample)
            assert p["n_test"] == len(store.split_indices("test"))
            assert p["train.lr"] == params["finetuning"]["training"]["lr"]
            assert {"best_test_f1_weighted", "honest_test_f1_weighted"} <= set(record["metrics"])
            epochs = params["finetuning"]["training"]["epochs"]
            assert record["epochs"] == list(range(1, epochs + 1)) and record["status"] == "FINISHED"


def test_a_second_run_reuses_the_finished_runs(finetuned, tiny_windows):
    catalog, params, root = finetuned
    results = sorted((root / "data/06_models/checkpoints").rglob("result.pt"))
    n_runs = len(params["study"]["fractions"]) * params["study"]["n_trials"]
    assert len(results) == len(ENCODER_ARMS) * n_runs
    stamps = {path: path.stat().st_mtime_ns for path in results}

    again = run(FINETUNING, _catalog(tiny_windows, root, params))
    tracker = again.load("run_tracker")
    assert tracker.live == [] and len(tracker.whole) == len(ENCODER_ARMS) * n_runs  # logged whole, not retrained

    assert {path: path.stat().st_mtime_ns for path in results} == stamps
    assert sorted((root / "data/06_models/checkpoints").rglob("result.pt")) == results
    for arm in ENCODER_ARMS:
        columns = [c for c in catalog.load(f"{arm}.training_histories").columns if c != "samples_per_s"]
        pd.testing.assert_frame_equal(again.load(f"{arm}.training_histories")[columns],
                                      catalog.load(f"{arm}.training_histories")[columns])


def test_the_random_arm_needs_no_encoder(tiny_windows, tmp_path, finetuned):
    assert "pretrained_encoder@finetuning" not in RANDOM.inputs()
    catalog, params, _ = finetuned
    samples = catalog.load("bootstrap_samples")
    one = samples[(samples["fraction"] == 0.5) & (samples["trial"] == 1)]
    fresh = run(RANDOM, _catalog(tiny_windows, tmp_path, params, encoder=False, bootstrap_samples=one))
    assert "pretrained_encoder@finetuning" not in fresh
    assert len(fresh.load("run_tracker").live) == 1


def test_every_arm_saves_its_predictions_and_the_settings_its_runs_were_made_under(finetuned):
    catalog, params, _ = finetuned
    store = catalog.load("labelled_windows")
    n_runs = len(params["study"]["fractions"]) * params["study"]["n_trials"]
    n_records = len(store.split_indices("val")) + len(store.split_indices("test"))
    settings = {}
    for arm in ENCODER_ARMS:
        predictions = catalog.load(f"{arm}.run_predictions")
        assert len(predictions) == n_runs * 2 * n_records  # (honest, best_test) x (val + test)
        assert [f"prob_{name}" for name in store.classes] == [c for c in predictions.columns if c.startswith("prob_")]
        assert set(predictions["label"]) <= set(store.classes)
        settings[arm] = catalog.load(f"{arm}.arm_settings")
        assert settings[arm]["arm"] == arm and settings[arm]["classes"] == list(store.classes)
        assert settings[arm]["n_trials"] == params["study"]["n_trials"]
        assert settings[arm]["training"]["lr"] == params["finetuning"]["training"]["lr"]
    assert settings["random"]["encoder_fingerprint"] is None
    assert settings["transfer"]["encoder_fingerprint"] == settings["transfer_frozen"]["encoder_fingerprint"]
    shared = ("bootstrap_fingerprint", "labelled_fingerprint", "fractions", "training")
    assert all(settings[arm][key] == settings["random"][key] for arm in ENCODER_ARMS for key in shared)


def test_the_spectrogram_arm_trains_on_features_matched_by_record_id_not_by_row(tiny_windows, tmp_path):
    params = shrunk_parameters()
    store = window_store(tiny_windows, "labelled_windows")
    features = _fake_features(store)
    shuffled = features.sample(frac=1.0, random_state=1).reset_index(drop=True)
    histories = []
    for name, table in (("in_order", features), ("shuffled", shuffled)):
        catalog = _catalog(tiny_windows, tmp_path / name, params, encoder=False,
                           bootstrap_samples=_one_sample(tiny_windows), image_spectrogram_features=table)
        run(IMAGE, catalog)
        histories.append(catalog.load("image.training_histories"))
        (record,) = catalog.load("run_tracker").live
        assert record["params"]["arm"] == "image" and record["params"]["n_train"] == len(_one_sample(tiny_windows))
    assert (histories[0]["arm"] == "image").all()
    columns = ["epoch", "split", "loss", "f1_weighted"]
    pd.testing.assert_frame_equal(histories[0][columns], histories[1][columns])


def test_stale_features_missing_a_record_are_refused(tiny_windows, tmp_path):
    params = shrunk_parameters()
    features = _fake_features(window_store(tiny_windows, "labelled_windows"))
    dropped = features["record_id"].iloc[7]
    catalog = _catalog(tiny_windows, tmp_path, params, encoder=False, bootstrap_samples=_one_sample(tiny_windows),
                       image_spectrogram_features=features.drop(index=7))
    with pytest.raises(ValueError, match="stale") as error:
        run(IMAGE, catalog)
    assert dropped in str(error.value)
    assert not (tmp_path / "data/06_models/checkpoints").exists()


def test_a_spectrogram_head_is_scaled_by_its_own_bootstrap_sample_only():
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 3.0, size=(40, 6)).astype(np.float32)
    model = build_feature_classifier(6, 3, seed=1, hidden=4, dropout=0.0)
    sample = np.array([0, 0, 3, 7, 9, 9, 9, 12])
    model.fit_input_scaling(train[sample])
    np.testing.assert_allclose(model.input_mean.numpy(), train[sample].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(model.input_sd.numpy(), train[sample].std(axis=0) + 1e-6, rtol=1e-6)
    far = train * 1000.0 + 1e6  # a test split on another scale never moves the scaling
    before = model.input_mean.clone()
    model.eval()(torch.from_numpy(far))
    assert torch.equal(model.input_mean, before)
    expected = model.layers((torch.from_numpy(far) - model.input_mean) / model.input_sd)
    assert torch.allclose(model(torch.from_numpy(far)), expected)


def _fake_features(store, seed=0, dim=12) -> pd.DataFrame:
    """Feature vectors that carry the label (so the head can learn), keyed by record id."""
    rng = np.random.default_rng(seed)
    codes = pd.Categorical(store.index["label"]).codes
    values = rng.normal(size=(len(store), dim)) + np.eye(dim)[codes % dim] * 3
    table = pd.DataFrame(values.astype(np.float32), columns=[f"fake_{i:04d}" for i in range(dim)])
    table.insert(0, "record_id", store.index["record_id"].to_numpy())
    return table


@pytest.mark.parametrize(
    "field, value", [("kernel_size", 17), ("channels", [3, 3, 3, 3, 3, 3, 3, 3, 3]), ("bottleneck", 59)]
)
def test_the_transfer_arm_refuses_an_encoder_of_another_architecture(tiny_windows, tmp_path, field, value):
    params = shrunk_parameters()
    state, card = _encoder(params)
    card["architecture"][field] = value
    catalog = _catalog(tiny_windows, tmp_path, params, card=card, bootstrap_samples=_one_sample(tiny_windows))
    with pytest.raises(ValueError, match=f"another architecture.*{field}"):
        run(TRANSFER, catalog)
    assert not (tmp_path / "data/06_models/checkpoints").exists()  # nothing was trained
    assert not catalog.exists("transfer.training_histories")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("sampling_rate_hz", 500.0, "sampling_rate_hz: card 500.0 vs data 250.0"),
        ("lead", "V5", "lead: card 'V5' vs data 'II'"),
        ("normalisation", "min-max", "normalisation: card 'min-max' vs data 'per-window z-score'"),
    ],
)
def test_the_transfer_arm_refuses_an_encoder_made_for_other_inputs(tiny_windows, tmp_path, field, value, message):
    params = shrunk_parameters()
    _, card = _encoder(params)
    card[field] = value
    catalog = _catalog(tiny_windows, tmp_path, params, card=card, bootstrap_samples=_one_sample(tiny_windows))
    with pytest.raises(ValueError, match=message):
        run(TRANSFER, catalog)
    assert not (tmp_path / "data/06_models/checkpoints").exists()


def test_other_encoder_weights_mean_other_runs_but_where_the_encoder_was_made_does_not(tiny_windows, tmp_path):
    """The encoder's weights and architecture are part of the run key; the card's corpus path,
    date and torch version are not (a moved project folder keeps its transfer runs)."""
    params = shrunk_parameters()
    state, card = _encoder(params)
    other = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    settings = []
    for weights, note, date in ((state, "/old/place", "2026-01-01"), (state, "/new/place", "2027-01-01"),
                                (other, "/new/place", "2027-01-01")):
        catalog = _catalog(tiny_windows, tmp_path, params, weights=weights,
                           card={**card, "data": {"corpus": note}, "date": date},
                           bootstrap_samples=_one_sample(tiny_windows))
        settings.append(run(TRANSFER, catalog).load("transfer.arm_settings"))
    assert settings[0]["encoder_fingerprint"] == settings[1]["encoder_fingerprint"] != settings[2]["encoder_fingerprint"]
    assert settings[0]["run_fingerprint"] == settings[1]["run_fingerprint"] != settings[2]["run_fingerprint"]
    assert len(list((tmp_path / "data/06_models/checkpoints").rglob("result.pt"))) == 2


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
    catalog = _catalog(tiny_windows, tmp_path, params, weights=weights, card=card,
                       bootstrap_samples=_one_sample(tiny_windows))
    with pytest.raises(ValueError, match=message):
        run(TRANSFER, catalog)
    assert not (tmp_path / "data/06_models/checkpoints").exists()


def test_the_transfer_arm_cannot_run_without_an_encoder(tiny_windows, tmp_path):
    params = shrunk_parameters()
    catalog = _catalog(tiny_windows, tmp_path, params, encoder=False, bootstrap_samples=_one_sample(tiny_windows))
    with pytest.raises(ValueError, match="pretrained_encoder@finetuning.*not found"):
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
        catalog = _catalog(tiny_windows, tmp_path, params, encoder=False, labelled_windows=store,
                           label_classes=list(original.classes), bootstrap_samples=_one_sample(tiny_windows))
        histories.append(run(RANDOM, catalog).load("random.training_histories"))
    assert not histories[0].equals(histories[1])


def test_arms_with_a_linear_head_or_a_partially_frozen_encoder_train_from_their_yaml_entry(tiny_windows, tmp_path):
    params = shrunk_parameters()
    params["study"]["arms"].update(
        transfer_linear={"init": "pretrained", "freeze": False, "input": "window", "head": "linear"},
        transfer_partial={"init": "pretrained", "freeze": 2, "input": "window"},
    )
    arms = arm_registry(params["study"]["arms"])
    pipeline = create_pipeline(arms=arms).only_nodes(
        *(f"{name}.train_arm" for name in ("transfer", "transfer_linear", "transfer_partial"))
    )
    catalog = run(pipeline, _catalog(tiny_windows, tmp_path, params, bootstrap_samples=_one_sample(tiny_windows)))
    settings = {name: catalog.load(f"{name}.arm_settings") for name in ("transfer", "transfer_linear", "transfer_partial")}
    assert settings["transfer_linear"]["spec"] == {"init": "pretrained", "freeze": False, "input": "window", "head": "linear",
                                                 "init_scheme": "cae"}
    assert settings["transfer_partial"]["spec"]["freeze"] == 2
    assert len({s["run_fingerprint"] for s in settings.values()}) == 3
    histories = [catalog.load(f"{name}.training_histories")["loss"].to_numpy() for name in settings]
    assert not np.array_equal(histories[0], histories[1]) and not np.array_equal(histories[0], histories[2])
    # Every arm read the same parameter groups under the same settings: the statistics combine them.
    check_arm_settings(list(settings.values()), list(settings))


def test_freeze_beyond_the_encoders_blocks_is_refused_naming_the_arm(tiny_windows, tmp_path):
    params = shrunk_parameters()
    n_blocks = params["pretraining"]["cae"]["n_blocks"]
    params["study"]["arms"]["too_deep"] = {"init": "random", "freeze": n_blocks + 1, "input": "window"}
    pipeline = create_pipeline(arms=arm_registry(params["study"]["arms"])).only_nodes("too_deep.train_arm")
    with pytest.raises(ValueError, match=f"study.arms.too_deep.freeze: {n_blocks + 1} residual blocks"):
        run(pipeline, _catalog(tiny_windows, tmp_path, params, encoder=False,
                               bootstrap_samples=_one_sample(tiny_windows)))
