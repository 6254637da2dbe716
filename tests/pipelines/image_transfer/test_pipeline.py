"""The image-transfer arm: frozen EfficientNet-Lite0 features of spectrogram images, keyed by
record, and a head trained on them exactly like the encoder arms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ecg_transfer.pipelines.image_transfer.nodes import _standardise
from ecg_transfer.pipelines.image_transfer.pipeline import create_pipeline
from ecg_transfer.signals.window_store import WindowStore, WindowStoreWriter
from ecg_transfer.study.experiment import ArmData
from tests.pipelines.conftest import make_catalog, run, shrunk_parameters, window_store

FEATURES = create_pipeline().from_nodes("image.extract_spectrogram_features").to_nodes(
    "image.extract_spectrogram_features"
)
EXAMPLES = create_pipeline().only_nodes("image.plot_spectrogram_examples")
TRAIN = create_pipeline().from_nodes("image.train_image_arm").to_nodes("image.train_image_arm")
N_FEATURE_WINDOWS = 5  # EfficientNet-Lite0 makes about 20 features a second on 2 CPU cores

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _small_store(tiny_windows, path, n):
    """The first ``n`` labelled windows as a store of their own."""
    store = window_store(tiny_windows, "labelled_windows")
    with WindowStoreWriter(path) as writer:
        writer.append(np.asarray(store.windows[:n]), store.index.iloc[:n])
    return WindowStore(path)


def _fake_features(store, seed=0, dim=12) -> pd.DataFrame:
    """Feature vectors that carry the label (so the head can learn), keyed by record id."""
    rng = np.random.default_rng(seed)
    codes = pd.Categorical(store.index["label"]).codes
    values = rng.normal(size=(len(store), dim)) + np.eye(dim)[codes % dim] * 3
    table = pd.DataFrame(values.astype(np.float32), columns=[f"fake_{i:04d}" for i in range(dim)])
    table.insert(0, "record_id", store.index["record_id"].to_numpy())
    return table


def _one_sample(store) -> pd.DataFrame:
    n_train = len(store.split_indices("train"))
    return pd.DataFrame({"fraction": 1.0, "trial": 1, "seed": 3, "position": np.arange(n_train)})


def test_features_are_one_row_per_labelled_record_keyed_by_record_id(tiny_windows, tmp_path):
    params = shrunk_parameters()
    store = _small_store(tiny_windows, tmp_path / "windows", N_FEATURE_WINDOWS)
    catalog = run(FEATURES, make_catalog(tmp_path, {"image_transfer": params["image_transfer"]}, files=(),
                                         labelled_windows=store))
    features = catalog.load("image_spectrogram_features")

    assert list(features["record_id"]) == list(store.index["record_id"])
    values = features.drop(columns="record_id")
    backbone = params["image_transfer"]["backbone"]["name"]
    assert values.shape == (N_FEATURE_WINDOWS, 1280)  # EfficientNet-Lite0's pooled features
    assert all(column.startswith(f"{backbone}_") for column in values.columns)
    assert np.isfinite(values.to_numpy()).all()
    assert (values.to_numpy().std(axis=0) > 0).any()  # different windows, different features


def test_spectrogram_examples_show_one_window_per_rhythm(tiny_windows, tmp_path):
    params = shrunk_parameters()
    store = _small_store(tiny_windows, tmp_path / "windows", N_FEATURE_WINDOWS)
    catalog = run(EXAMPLES, make_catalog(tmp_path, {"image_transfer": params["image_transfer"]}, files=(),
                                         labelled_windows=store))
    figure = catalog.load("image_spectrogram_examples_figure")
    assert isinstance(figure, Figure)
    n_rhythms = store.index["label"].nunique()
    assert len([ax for ax in figure.axes if ax.get_subplotspec() is not None]) == 2 * n_rhythms  # wave + image


def test_the_head_trains_on_features_matched_by_record_id_not_by_row(tiny_windows, tmp_path):
    params = shrunk_parameters()
    store = window_store(tiny_windows, "labelled_windows")
    features = _fake_features(store)
    shuffled = features.sample(frac=1.0, random_state=1).reset_index(drop=True)

    histories = []
    for name, table in (("in_order", features), ("shuffled", shuffled)):
        catalog = make_catalog(
            tmp_path / name, {k: params[k] for k in ("image_transfer", "finetuning")}, files=("run_checkpoints",),
            labelled_windows=store, bootstrap_samples=_one_sample(store), image_spectrogram_features=table,
        )
        run(TRAIN, catalog)
        histories.append(catalog.load("image_training_histories"))
        (record,) = catalog.load("image_mlflow_runs")
        assert record["params"]["arm"] == "image" and record["params"]["n_train"] == len(_one_sample(store))

    history = histories[0]
    assert (history["arm"] == "image").all()
    assert {"fraction", "arm", "trial", "epoch", "split", "loss", "f1_weighted", "f1_macro"} <= set(history.columns)
    columns = ["epoch", "split", "loss", "f1_weighted"]
    pd.testing.assert_frame_equal(histories[0][columns], histories[1][columns])


def test_stale_features_missing_a_record_are_refused(tiny_windows, tmp_path):
    params = shrunk_parameters()
    store = window_store(tiny_windows, "labelled_windows")
    features = _fake_features(store)
    dropped = features["record_id"].iloc[7]
    catalog = make_catalog(
        tmp_path, {k: params[k] for k in ("image_transfer", "finetuning")}, files=("run_checkpoints",),
        labelled_windows=store, bootstrap_samples=_one_sample(store),
        image_spectrogram_features=features.drop(index=7),
    )
    with pytest.raises(ValueError, match="stale") as error:
        run(TRAIN, catalog)
    assert dropped in str(error.value)
    assert not (tmp_path / "data/06_models/checkpoints").exists()


def test_standardise_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 3.0, size=(40, 6)).astype(np.float32)
    val = rng.normal(5.0, 3.0, size=(10, 6)).astype(np.float32)
    test = rng.normal(5.0, 3.0, size=(10, 6)).astype(np.float32)
    labels = np.zeros(40, dtype=int), np.zeros(10, dtype=int), np.zeros(10, dtype=int)

    scaled = _standardise(ArmData(train, labels[0], val, labels[1], test, labels[2]))
    far_test = test * 1000.0 + 1e6
    rescaled = _standardise(ArmData(train, labels[0], val, labels[1], far_test, labels[2]))

    assert np.allclose(scaled.train_x.mean(axis=0), 0.0, atol=1e-5)
    assert np.allclose(scaled.train_x.std(axis=0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(scaled.train_x, rescaled.train_x)
    np.testing.assert_array_equal(scaled.val_x, rescaled.val_x)
    mean, sd = train.mean(axis=0), train.std(axis=0) + 1e-6
    np.testing.assert_allclose(rescaled.test_x, (far_test - mean) / sd, rtol=1e-5)
    assert scaled.train_x.dtype == scaled.test_x.dtype == np.float32
