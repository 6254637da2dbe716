import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from ecg_transfer.models.image_backbones import load_backbone
from ecg_transfer.models.image_features import extract_image_features, spectrogram_figure
from ecg_transfer.models.spectrogram import SpectrogramConfig, spectrogram_images

CFG = SpectrogramConfig()


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def windows():
    rng = np.random.default_rng(11)
    t = np.arange(CFG.window_length) / CFG.fs
    # Spiky "beats" at different rates, plus noise: different images, different features.
    rates = np.array([1.0, 1.5, 2.5])
    beats = np.cos(np.pi * rates[:, None] * t[None, :]) ** 40
    x = beats + 0.05 * rng.standard_normal(beats.shape)
    return ((x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def features_one_batch(windows, lite0):
    return extract_image_features(windows, CFG, lite0, batch_size=len(windows), progress=False)


def test_features_shape_dtype_and_values(features_one_batch, windows, lite0):
    assert features_one_batch.shape == (len(windows), 1280)
    assert features_one_batch.dtype == np.float32
    assert np.isfinite(features_one_batch).all()
    # Reference: the backbone applied by hand to the same images.
    with torch.inference_mode():
        by_hand = lite0.module(spectrogram_images(windows[:1], CFG, mean=lite0.mean, std=lite0.std))
    np.testing.assert_allclose(features_one_batch[:1], by_hand.numpy(), rtol=1e-4, atol=1e-5)
    # Different rhythms give different features.
    assert np.abs(features_one_batch[0] - features_one_batch[2]).max() > 1e-2


def test_batching_and_repetition_give_the_same_features(features_one_batch, windows, lite0):
    in_pairs = extract_image_features(windows, CFG, lite0, batch_size=2, progress=False)  # 2 + 1
    np.testing.assert_allclose(in_pairs, features_one_batch, rtol=1e-4, atol=1e-5)
    again = extract_image_features(windows, CFG, lite0, batch_size=len(windows), progress=False)
    np.testing.assert_array_equal(again, features_one_batch)


def test_reads_a_memmap(tmp_path, windows, features_one_batch, lite0):
    path = tmp_path / "windows.f32"
    stored = np.memmap(path, dtype=np.float32, mode="w+", shape=windows.shape)
    stored[:] = windows
    stored.flush()
    lazy = np.memmap(path, dtype=np.float32, mode="r", shape=windows.shape)
    features = extract_image_features(lazy[1:3], CFG, lite0, batch_size=1, progress=False)
    np.testing.assert_allclose(features, features_one_batch[1:3], rtol=1e-4, atol=1e-5)


def test_nan_window_is_located(windows, lite0):
    broken = windows.copy()
    broken[2, 100] = np.nan
    with pytest.raises(ValueError, match=r"windows\[2:3\].*NaN"):
        extract_image_features(broken, CFG, lite0, batch_size=2, progress=False)


def test_wrong_length_and_image_size_are_refused(windows, lite0):
    with pytest.raises(ValueError, match="2000 samples"):
        extract_image_features(windows[:, :2000], CFG, lite0, progress=False)
    with pytest.raises(ValueError, match="image_size=128"):
        extract_image_features(windows, SpectrogramConfig(image_size=128), lite0, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        extract_image_features(windows, CFG, lite0, batch_size=0, progress=False)


def test_spectrogram_figure_has_one_row_per_class_present(windows):
    labels = ["SR", "AFIB", "SB"]
    figure = spectrogram_figure(windows, labels, CFG, class_order=("SB", "SR", "AFIB", "ST"))
    assert isinstance(figure, Figure)
    axes = figure.get_axes()
    wave_axes = [ax for ax in axes if ax.get_ylabel().endswith("z-score")]
    assert [ax.get_ylabel().split("\n")[0] for ax in wave_axes] == ["SB", "SR", "AFIB"]
    # The SR row shows the first SR window.
    np.testing.assert_allclose(wave_axes[1].lines[0].get_ydata(), windows[0])
    with pytest.raises(ValueError, match="3 windows but 2 labels"):
        spectrogram_figure(windows, labels[:2], CFG)
