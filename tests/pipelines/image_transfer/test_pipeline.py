"""The image-transfer features: frozen EfficientNet-Lite0 features of spectrogram images, keyed
by record (the spectrogram arms' heads train in fine-tuning: tests/pipelines/finetuning)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ecg_transfer.pipelines.image_transfer.nodes import _example_rows
from ecg_transfer.pipelines.image_transfer.pipeline import create_pipeline
from ecg_transfer.signals.window_store import WindowStore, WindowStoreWriter
from tests.pipelines.conftest import make_catalog, run, shrunk_parameters, window_store

FEATURES = create_pipeline().only_nodes("extract_spectrogram_features")
EXAMPLES = create_pipeline().only_nodes("plot_spectrogram_examples")
N_FEATURE_WINDOWS = 5  # EfficientNet-Lite0 makes about 20 features a second on 2 CPU cores

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _small_store(tiny_windows, path, n):
    """The first ``n`` labelled windows as a store of their own."""
    store = window_store(tiny_windows, "labelled_windows")
    with WindowStoreWriter(path) as writer:
        writer.append(np.asarray(store.windows[:n]), store.index.iloc[:n])
    return WindowStore(path)


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


def test_spectrogram_examples_show_one_window_per_class(tiny_windows, tmp_path):
    params = shrunk_parameters()
    store = _small_store(tiny_windows, tmp_path / "windows", N_FEATURE_WINDOWS)
    catalog = run(EXAMPLES, make_catalog(tmp_path, {"image_transfer": params["image_transfer"]}, files=(),
                                         labelled_windows=store,
                                         label_classes=list(window_store(tiny_windows, "labelled_windows").classes)))
    figure = catalog.load("image_spectrogram_examples_figure")
    assert isinstance(figure, Figure)
    n_rhythms = store.index["label"].nunique()
    assert len([ax for ax in figure.axes if ax.get_subplotspec() is not None]) == 2 * n_rhythms  # wave + image


def test_multilabel_spectrogram_examples_show_each_label_preferably_alone(tmp_path):
    # Label A only ever appears beside B: its example is the first window carrying it.
    sets = ["A;B", "B", "A;B", "C", "B;C"]
    index = pd.DataFrame({"record_id": [f"r{i}" for i in range(5)], "patient_id": [f"p{i}" for i in range(5)],
                          "label": sets, "split": "train", "window_in_record": 0, "lead": "II"})
    windows = np.random.default_rng(0).normal(size=(5, 2048)).astype(np.float32)
    with WindowStoreWriter(tmp_path / "windows", meta={"classes": ["A", "B", "C"], "task": "multilabel"}) as writer:
        writer.append(windows, index)
    store = WindowStore(tmp_path / "windows")
    assert _example_rows(store, ["A", "B", "C"]) == ([0, 1, 3], ["A", "B", "C"])
    params = shrunk_parameters()
    catalog = run(EXAMPLES, make_catalog(tmp_path, {"image_transfer": params["image_transfer"]}, files=(),
                                         labelled_windows=store, label_classes=["A", "B", "C"]))
    figure = catalog.load("image_spectrogram_examples_figure")
    assert len([ax for ax in figure.axes if ax.get_subplotspec() is not None]) == 2 * 3
