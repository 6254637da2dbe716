import numpy as np
import pytest
import scipy.signal
import torch

from ecg_transfer.models.spectrogram import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SpectrogramConfig,
    spectrogram,
    spectrogram_axes,
    spectrogram_images,
)

CFG = SpectrogramConfig()


def _sine(freq_hz: float, cfg: SpectrogramConfig = CFG, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(cfg.window_length) / cfg.fs
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def test_axes_match_the_stft_geometry():
    freqs, times = spectrogram_axes(CFG)
    # nfft=256 at 250 Hz: bins every 250/256 Hz; 0.5-40 Hz keeps bins 1..40.
    np.testing.assert_allclose(freqs, np.arange(1, 41) * 250 / 256)
    # (2048 - 128) / 16 + 1 segments, centred on segment midpoints.
    assert times.shape == (121,)
    assert times[0] == pytest.approx(64 / 250)
    assert times[-1] == pytest.approx((120 * 16 + 64) / 250)


def test_ten_hz_sine_puts_its_energy_at_ten_hz():
    freqs, times = spectrogram_axes(CFG)
    power_db = spectrogram(_sine(10.0), CFG)
    assert power_db.shape == (freqs.size, times.size)
    peak_rows = power_db.argmax(axis=0)
    assert np.all(np.abs(freqs[peak_rows] - 10.0) <= 250 / 256 / 2)


def test_matches_a_hand_computed_hann_dft():
    window = np.random.default_rng(3).standard_normal(CFG.window_length)
    power_db = spectrogram(window, CFG)
    # Segment 5 by hand: periodic Hann (scipy's default for spectral analysis), rfft of 256,
    # one-sided density scaling: 2 |X|^2 / (fs * sum(w^2)) for bins other than DC/Nyquist.
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(128) / 128)
    segment = window[5 * 16 : 5 * 16 + 128] * hann
    spectrum = np.abs(np.fft.rfft(segment, n=256)) ** 2 * 2 / (250 * np.sum(hann**2))
    np.testing.assert_allclose(power_db[:, 5], 10 * np.log10(spectrum[1:41]), rtol=1e-9, atol=1e-9)


def test_matches_scipy_spectrogram():
    window = np.random.default_rng(4).standard_normal(CFG.window_length)
    freqs, _, power = scipy.signal.spectrogram(
        window, fs=250, window="hann", nperseg=128, noverlap=112, nfft=256, detrend=False
    )
    keep = (freqs >= 0.5) & (freqs <= 40)
    np.testing.assert_allclose(spectrogram(window, CFG), 10 * np.log10(power[keep]), rtol=1e-9)


def test_images_shape_dtype_and_normalisation_of_grey_levels():
    cfg = SpectrogramConfig(colormap=None)
    windows = np.stack([np.zeros(cfg.window_length, np.float32), _sine(300 / 60)])
    images = spectrogram_images(windows, cfg, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert images.shape == (2, 3, 224, 224) and images.dtype == torch.float32
    # A flat window sits at the power floor -> pixel 0 -> (0 - 0.5) / 0.25 = -2 everywhere.
    torch.testing.assert_close(images[0], torch.full((3, 224, 224), -2.0))
    # Grey: the three channels are copies.
    torch.testing.assert_close(images[1, 0], images[1, 2])
    assert images[1].max() > -2.0


def test_images_fixed_db_range_maps_levels_linearly():
    # A 20 Hz sine of amplitude a has a PSD peak that scales with a^2: 20 dB per factor 10.
    cfg = SpectrogramConfig(colormap=None, db_max=40.0, db_range=100.0)
    loud, quiet = _sine(20.0, cfg, 10.0), _sine(20.0, cfg, 1.0)
    images = spectrogram_images(np.stack([loud, quiet]), cfg, mean=(0, 0, 0), std=(1, 1, 1))
    # Fixed range (not per-image min-max): the louder sine is brighter by 20 dB / 100 dB = 0.2.
    assert (images[0].max() - images[1].max()).item() == pytest.approx(0.2, abs=0.01)


def test_low_frequencies_are_at_the_bottom_of_the_image():
    cfg = SpectrogramConfig(colormap=None)
    images = spectrogram_images(_sine(2.0)[None], cfg, mean=(0, 0, 0), std=(1, 1, 1))
    brightest_row = images[0, 0].mean(dim=1).argmax().item()
    assert brightest_row > 200  # 2 Hz of a 0.5-40 Hz axis, drawn bottom-up


def test_colormap_images_use_the_colormap_and_default_imagenet_normalisation():
    from matplotlib import colormaps

    images = spectrogram_images(np.zeros((1, CFG.window_length)), CFG)
    floor_rgb = torch.tensor(colormaps["viridis"](0.0)[:3], dtype=torch.float32)
    expected = (floor_rgb - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(images[0, :, 100, 100], expected)


def test_batch_images_equal_one_at_a_time():
    windows = np.random.default_rng(5).standard_normal((3, CFG.window_length)).astype(np.float32)
    together = spectrogram_images(windows, CFG)
    alone = torch.cat([spectrogram_images(w[None], CFG) for w in windows])
    torch.testing.assert_close(together, alone)


@pytest.mark.parametrize(
    "windows, message",
    [
        (np.zeros((2, 2000), np.float32), "2000 samples"),
        (np.zeros((2, 3, 2048), np.float32), "shape"),
        (np.where(np.arange(2048) == 7, np.nan, 0.0)[None].repeat(2, 0), "NaN"),
    ],
)
def test_bad_windows_raise_clearly(windows, message):
    with pytest.raises(ValueError, match=message):
        spectrogram_images(windows, CFG)


def test_spectrogram_rejects_a_batch_and_nan():
    with pytest.raises(ValueError, match="1-D"):
        spectrogram(np.zeros((2, 2048)), CFG)
    with pytest.raises(ValueError, match="NaN"):
        spectrogram(np.full(2048, np.nan), CFG)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"noverlap": 128}, "noverlap"),
        ({"nfft": 64}, "nfft"),
        ({"fmax": 200.0}, "fmax"),
        ({"db_range": 0.0}, "db_range"),
    ],
)
def test_config_rejects_impossible_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpectrogramConfig(**kwargs)


def test_unknown_colormap_is_named():
    with pytest.raises(ValueError, match="not_a_map"):
        spectrogram_images(np.zeros((1, 2048)), SpectrogramConfig(colormap="not_a_map"))


def test_windows_of_several_leads_show_lead_ii_else_the_first_lead():
    from ecg_transfer.models.spectrogram import spectrogram_lead

    windows = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    shown, lead = spectrogram_lead(windows, ["I", "II", "V1"])
    assert lead == "II" and np.array_equal(shown, windows[:, 1])
    shown, lead = spectrogram_lead(windows, ["V1", "V2", "V3"])
    assert lead == "V1" and np.array_equal(shown, windows[:, 0])
    one = windows[:, 0]
    assert spectrogram_lead(one, ["II"])[0] is one  # one-lead windows pass unchanged
    with pytest.raises(ValueError, match="3 channels but 2 lead names"):
        spectrogram_lead(windows, ["I", "II"])
