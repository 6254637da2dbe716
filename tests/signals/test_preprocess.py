import numpy as np
import pandas as pd
import pytest
from scipy import signal as sps

from ecg_transfer.signals.preprocess import (
    PreprocessConfig,
    cut_windows,
    highpass_sos,
    labelled_window,
    labelled_window_start,
    preprocess_signal,
    random_window_starts,
    remove_baseline,
    resample,
    resampling_ratio,
    unlabelled_windows,
    windows_from_labelled_records,
    windows_from_unlabelled_records,
    zscore,
)
from ecg_transfer.signals.records import EcgRecord, ExclusionLog

CFG = PreprocessConfig()


def _amplitude_at(x: np.ndarray, fs: float, f: float) -> float:
    """Amplitude of the f-Hz component by projection on sin/cos (exact for whole periods)."""
    t = np.arange(x.size) / fs
    return float(np.hypot(2 * np.mean(x * np.sin(2 * np.pi * f * t)), 2 * np.mean(x * np.cos(2 * np.pi * f * t))))


@pytest.mark.parametrize(
    ("fs_in", "expected"),
    [(500, (1, 2)), (250, (1, 1)), (200, (5, 4)), (360, (25, 36)), (1000, (1, 4)), (128, (125, 64))],
)
def test_resampling_ratio_is_the_exact_fraction(fs_in, expected):
    assert resampling_ratio(fs_in, 250.0) == expected


@pytest.mark.parametrize("fs_in", [500, 200, 360, 1000, 128])
def test_resampled_length_is_exact(fs_in):
    # 10 s at any rate is 2,500 samples at 250 Hz.
    assert resample(np.zeros(int(10 * fs_in)), fs_in, 250.0).size == 2500


def test_resampling_keeps_frequency_and_amplitude_of_a_10_hz_sine():
    fs_in, seconds = 500.0, 10.0
    t_in = np.arange(int(fs_in * seconds)) / fs_in
    y = resample(1.5 * np.sin(2 * np.pi * 10.0 * t_in), fs_in, 250.0)
    assert y.size == 2500
    core = y[250:-250]  # away from the edges, whole periods (8 s)
    assert _amplitude_at(core, 250.0, 10.0) == pytest.approx(1.5, rel=1e-3)
    spectrum = np.abs(np.fft.rfft(core))
    freqs = np.fft.rfftfreq(core.size, 1 / 250.0)
    assert freqs[np.argmax(spectrum)] == pytest.approx(10.0)
    # Sample-by-sample it is the same sine at the new rate.
    t_out = np.arange(2500) / 250.0
    np.testing.assert_allclose(core, 1.5 * np.sin(2 * np.pi * 10.0 * t_out)[250:-250], atol=5e-3)


def test_resampling_removes_content_above_the_new_nyquist():
    # 180 Hz at 500 Hz would alias to 70 Hz at 250 Hz without the anti-aliasing filter.
    t = np.arange(5000) / 500.0
    y = resample(np.sin(2 * np.pi * 180.0 * t), 500.0, 250.0)
    assert _amplitude_at(y[250:-250], 250.0, 70.0) < 1e-3


def test_highpass_attenuates_wander_as_designed_and_keeps_10_hz():
    fs, seconds = 250.0, 200.0
    t = np.arange(int(fs * seconds)) / fs
    x = 2.0 * np.sin(2 * np.pi * 0.1 * t) + 1.0 * np.sin(2 * np.pi * 10.0 * t)
    y = remove_baseline(x, CFG)
    core = y[int(50 * fs) : int(150 * fs)]  # 100 s: 10 whole periods of 0.1 Hz, steady state
    # Forward-backward filtering squares the magnitude response of the designed filter.
    _, h = sps.sosfreqz(highpass_sos(CFG), worN=[0.1, 10.0], fs=fs)
    designed = np.abs(h) ** 2
    assert designed[0] < 0.01  # order 2 at 0.5 Hz: about -56 dB at 0.1 Hz
    assert _amplitude_at(core, fs, 0.1) / 2.0 == pytest.approx(designed[0], rel=0.05)
    assert _amplitude_at(core, fs, 10.0) == pytest.approx(designed[1], rel=1e-3)
    assert designed[1] > 0.999


def test_highpass_is_zero_phase():
    x = np.zeros(2500)
    peak = 1234
    x[peak - 5 : peak + 6] = np.hanning(11)  # a QRS-like bump
    y = remove_baseline(x, CFG)
    assert int(np.argmax(y)) == peak
    # And a symmetric input stays symmetric about the peak.
    np.testing.assert_allclose(y[peak - 50 : peak], y[peak + 50 : peak : -1], atol=1e-9)


def test_preprocess_signal_removes_a_dc_offset_and_wander_at_500_hz():
    t = np.arange(5000) / 500.0
    x = 5.0 + 0.8 * np.sin(2 * np.pi * 0.1 * t) + np.sin(2 * np.pi * 10.0 * t)
    y = preprocess_signal(x, 500.0, CFG)
    assert y.size == 2500
    assert abs(np.mean(y[250:-250])) < 0.05


def test_labelled_window_placement():
    assert labelled_window_start(2500, CFG) == 226
    assert labelled_window_start(2500, PreprocessConfig(labelled_placement="start")) == 0
    assert labelled_window_start(2500, PreprocessConfig(labelled_placement="end")) == 452
    assert labelled_window_start(2048, CFG) == 0
    with pytest.raises(ValueError, match="fewer than window_length"):
        labelled_window_start(2047, CFG)


def test_labelled_window_is_centred_and_zscored():
    # A ramp survives no filter, so use a marker: one spike in the middle of a 10 s record.
    x = np.zeros(5000)
    x[2500] = 1.0  # at 500 Hz -> sample 1250 at 250 Hz -> 1250 - 226 = 1024 in the window
    w = labelled_window(x, 500.0, CFG)
    assert w.shape == (2048,) and w.dtype == np.float32
    assert int(np.argmax(w)) == 1024
    assert float(w.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(w.std()) == pytest.approx(1.0, abs=1e-5)


def test_zscore_hand_values_and_flat_window():
    w = zscore(np.array([[1.0, 2.0, 3.0, 4.0], [7.0, 7.0, 7.0, 7.0]]), eps=1e-6)
    sd = np.sqrt(1.25)
    np.testing.assert_allclose(w[0], [-1.5 / sd, -0.5 / sd, 0.5 / sd, 1.5 / sd], rtol=1e-6)
    np.testing.assert_array_equal(w[1], np.zeros(4, dtype=np.float32))
    assert w.dtype == np.float32


def test_random_window_starts_are_non_overlapping_in_range_and_seeded():
    starts = random_window_starts(100_000, 30, 2048, np.random.default_rng(1))
    assert starts.size == 30
    assert starts.min() >= 0 and starts.max() + 2048 <= 100_000
    assert np.all(np.diff(starts) >= 2048)
    np.testing.assert_array_equal(starts, random_window_starts(100_000, 30, 2048, np.random.default_rng(1)))
    assert not np.array_equal(starts, random_window_starts(100_000, 30, 2048, np.random.default_rng(2)))


def test_random_window_starts_takes_as_many_as_fit():
    starts = random_window_starts(3 * 2048 + 100, 100, 2048, np.random.default_rng(0))
    assert starts.size == 3
    assert np.all(np.diff(starts) >= 2048) and starts[-1] + 2048 <= 3 * 2048 + 100
    assert random_window_starts(2047, 5, 2048, np.random.default_rng(0)).size == 0


def test_unlabelled_windows_shape_and_zscore():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(60 * 500)  # 60 s at 500 Hz -> 15,000 samples -> 7 windows fit
    w = unlabelled_windows(x, 500.0, PreprocessConfig(windows_per_recording=5), np.random.default_rng(3))
    assert w.shape == (5, 2048) and w.dtype == np.float32
    np.testing.assert_allclose(w.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(w.std(axis=1), 1.0, atol=1e-5)
    w_all = unlabelled_windows(x, 500.0, CFG, np.random.default_rng(3))
    assert w_all.shape == (7, 2048)


def test_cut_windows_rejects_out_of_range_starts():
    with pytest.raises(ValueError, match="window starts"):
        cut_windows(np.zeros(3000), np.array([1000]), CFG)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((2, 100)), "1-D"),
        (np.array([0.0, np.nan, 1.0]), "NaN"),
        (np.zeros(1), "too short"),
    ],
)
def test_preprocess_signal_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        preprocess_signal(bad, 500.0, CFG)


def test_bad_sampling_rate_and_config():
    with pytest.raises(ValueError, match="sampling rate"):
        preprocess_signal(np.zeros(100), 0.0, CFG)
    with pytest.raises(ValueError, match="highpass_hz"):
        PreprocessConfig(highpass_hz=200.0)
    with pytest.raises(ValueError, match="labelled_placement"):
        PreprocessConfig(labelled_placement="middle")


def _record(i: int, seconds: float, fs: float, label: str | None, patient: str | None = None) -> EcgRecord:
    rng = np.random.default_rng(i)
    return EcgRecord(
        record_id=f"r{i}",
        patient_id=patient or f"p{i}",
        signal=rng.standard_normal(int(seconds * fs)),
        fs=fs,
        lead="II",
        label=label,
        source=f"/data/r{i}.hea",
    )


def test_windows_from_labelled_records_chunks_and_index():
    records = [_record(i, 10.0, 500.0, "SR") for i in range(5)] + [_record(9, 5.0, 500.0, "SB")]
    log = ExclusionLog()
    chunks = list(windows_from_labelled_records(records, CFG, chunk_size=2, exclusions=log, progress=False))
    assert [len(w) for w, _ in chunks] == [2, 2, 1]
    index = pd.concat([df for _, df in chunks], ignore_index=True)
    assert list(index["record_id"]) == [f"r{i}" for i in range(5)]
    assert set(index["window_start"]) == {226}
    assert index["split"].isna().all()
    np.testing.assert_array_equal(chunks[0][0][1], labelled_window(records[1].signal, 500.0, CFG))
    excluded = log.to_frame()
    assert list(excluded["record_id"]) == ["r9"] and list(excluded["reason"]) == ["too_short"]


def test_windows_from_labelled_records_raises_without_log_and_on_missing_label():
    with pytest.raises(ValueError, match="r9.*fewer than window_length"):
        list(windows_from_labelled_records([_record(9, 5.0, 500.0, "SB")], CFG, progress=False))
    with pytest.raises(ValueError, match="has no label"):
        list(windows_from_labelled_records([_record(1, 10.0, 500.0, None)], CFG, progress=False))


def test_windows_from_unlabelled_records_is_deterministic_and_order_free():
    cfg = PreprocessConfig(windows_per_recording=4)
    records = [_record(i, 60.0, fs, None) for i, fs in enumerate([250.0, 500.0, 250.0])]

    def collect(recs, chunk_size):
        chunks = list(windows_from_unlabelled_records(recs, cfg, seed=7, chunk_size=chunk_size, progress=False))
        return np.concatenate([w for w, _ in chunks]), pd.concat([d for _, d in chunks], ignore_index=True)

    w1, i1 = collect(records, 5)
    w2, i2 = collect(records[::-1], 100)
    assert w1.shape == (12, 2048)
    key = ["record_id", "window_in_record"]
    order1 = i1.sort_values(key).index.to_numpy()
    order2 = i2.sort_values(key).index.to_numpy()
    np.testing.assert_array_equal(w1[order1], w2[order2])
    np.testing.assert_array_equal(i1.loc[order1, "window_start"], i2.loc[order2, "window_start"])
    w3, _ = collect(records, 5)
    np.testing.assert_array_equal(w1, w3)
    assert set(i1["source_fs"]) == {250.0, 500.0}
    assert i1["label"].isna().all()
    other = np.concatenate([w for w, _ in windows_from_unlabelled_records(records, cfg, seed=8, progress=False)])
    assert not np.array_equal(w1, other)
