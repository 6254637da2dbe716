import numpy as np
import pandas as pd
import pytest
from scipy import signal as sps

from ecg_transfer.signals.preprocess import (
    PreprocessConfig,
    WindowingStats,
    cut_windows,
    finite_stretches,
    highpass_sos,
    labelled_record_windows,
    labelled_window,
    labelled_window_start,
    labelled_window_starts,
    preprocess_signal,
    random_window_starts,
    remove_baseline,
    resample,
    resampled_length,
    resampling_ratio,
    unlabelled_record_windows,
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
        (np.zeros((2, 2, 100)), "1-D"),  # (leads, samples) is valid since issue 19; 3-D is not
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


# ---------------------------------------------------------------- typed parameters


def test_config_from_params_types_the_yaml_values_once():
    cfg = PreprocessConfig.from_params({"target_fs": 250, "window_length": 2048.0, "labelled_placement": "spread"})
    assert isinstance(cfg.target_fs, float) and cfg.target_fs == 250.0
    assert isinstance(cfg.window_length, int) and cfg.window_length == 2048
    assert PreprocessConfig.from_params(None) == PreprocessConfig()
    with pytest.raises(ValueError, match=r"preprocessing.signal: unknown parameter\(s\) \['windows'\]"):
        PreprocessConfig.from_params({"windows": 3})
    with pytest.raises(TypeError, match="preprocessing.signal.window_length: expected an integer, got 'long'"):
        PreprocessConfig.from_params({"window_length": "long"})
    with pytest.raises(TypeError, match="pad_short: expected true or false"):
        PreprocessConfig.from_params({"pad_short": "yes"})
    with pytest.raises(ValueError, match="windows_per_record must be a positive integer"):
        PreprocessConfig(windows_per_record=0)


@pytest.mark.parametrize("fs_in", [500.0, 250.0, 360.0, 128.0, 257.6])
@pytest.mark.parametrize("n", [1, 2047, 2500, 5001])
def test_resampled_length_predicts_resample(fs_in, n):
    assert resampled_length(n, fs_in, 250.0) == resample(np.zeros(n), fs_in, 250.0).size


# ---------------------------------------------------------------- labelled records, several windows


def test_one_window_per_record_is_the_centred_window_as_before():
    x = np.random.default_rng(5).standard_normal(5000)
    y = preprocess_signal(x, 500.0, CFG)
    expected = zscore(y[226 : 226 + 2048], CFG.zscore_eps)
    windows, starts = labelled_record_windows(x, 500.0, CFG)
    assert list(starts) == [226] and windows.shape == (1, 2048)
    np.testing.assert_array_equal(windows[0], expected)  # bit-identical, not merely close
    np.testing.assert_array_equal(labelled_window(x, 500.0, PreprocessConfig(labelled_placement="spread")), expected)


@pytest.mark.parametrize(
    ("placement", "expected"),
    [
        ("start", [0, 2048, 4096]),
        ("end", [3856, 5904, 7952]),
        ("centre", [1928, 3976, 6024]),
        ("spread", [964, 3976, 6988]),  # gaps of 964 samples before, between and after
    ],
)
def test_labelled_window_starts_for_three_windows(placement, expected):
    cfg = PreprocessConfig(windows_per_record=3, labelled_placement=placement)
    starts = labelled_window_starts(10_000, cfg)
    assert list(starts) == expected
    assert np.all(np.diff(starts) >= 2048) and starts[-1] + 2048 <= 10_000


def test_labelled_records_give_as_many_windows_as_fit_up_to_windows_per_record():
    cfg = PreprocessConfig(windows_per_record=5, labelled_placement="spread")
    assert len(labelled_window_starts(3 * 2048 + 10, cfg)) == 3
    assert len(labelled_window_starts(2048, cfg)) == 1
    assert len(labelled_window_starts(100_000, cfg)) == 5


def test_windows_of_a_record_stay_together_in_the_index():
    cfg = PreprocessConfig(windows_per_record=3, labelled_placement="spread")
    records = [_record(i, 40.0, 500.0, "SR") for i in range(3)] + [_record(7, 10.0, 500.0, "SB")]
    stats = WindowingStats()
    chunks = list(windows_from_labelled_records(records, cfg, chunk_size=4, progress=False, stats=stats))
    windows = np.concatenate([w for w, _ in chunks])
    index = pd.concat([d for _, d in chunks], ignore_index=True)
    assert list(index["record_id"]) == ["r0"] * 3 + ["r1"] * 3 + ["r2"] * 3 + ["r7"]
    assert list(index["window_in_record"]) == [0, 1, 2] * 3 + [0]
    assert stats.windows == 10 and stats.records == 4
    x = preprocess_signal(records[1].signal, 500.0, cfg)
    np.testing.assert_array_equal(windows[3:6], cut_windows(x, index["window_start"].to_numpy()[3:6], cfg))


@pytest.mark.parametrize(("placement", "before"), [("centre", 399), ("start", 0), ("end", 798)])
def test_pad_short_zero_pads_a_short_record_around_its_z_scored_samples(placement, before):
    cfg = PreprocessConfig(pad_short=True, labelled_placement=placement)
    x = np.random.default_rng(1).standard_normal(2500)  # 5 s at 500 Hz -> 1,250 samples at 250 Hz
    windows, starts = labelled_record_windows(x, 500.0, cfg)
    assert windows.shape == (1, 2048) and list(starts) == [-before]
    w = windows[0]
    assert np.all(w[:before] == 0) and np.all(w[before + 1250 :] == 0)
    np.testing.assert_array_equal(w[before : before + 1250], zscore(preprocess_signal(x, 500.0, cfg), cfg.zscore_eps))


def test_short_labelled_records_are_counted_as_padded_or_too_short():
    records = [_record(1, 10.0, 500.0, "SR"), _record(2, 5.0, 500.0, "SB")]
    stats = WindowingStats()
    chunks = list(windows_from_labelled_records(records, PreprocessConfig(pad_short=True), progress=False, stats=stats))
    assert sum(len(w) for w, _ in chunks) == 2 and stats.padded == 1 and stats.too_short == 0
    log, stats = ExclusionLog(), WindowingStats()
    chunks = list(windows_from_labelled_records(records, CFG, exclusions=log, progress=False, stats=stats))
    assert sum(len(w) for w, _ in chunks) == 1 and stats.too_short == 1 and log.count("too_short") == 1


# ---------------------------------------------------------------- unlabelled recordings with gaps


def test_finite_stretches():
    x = np.array([np.nan, 1, 2, np.nan, np.inf, 3, 4, 5, np.nan])
    assert finite_stretches(x) == [(1, 3), (5, 8)]
    assert finite_stretches(np.ones(4)) == [(0, 4)]
    assert finite_stretches(np.full(3, np.nan)) == []


def test_a_recording_without_gaps_gives_the_same_windows_as_before():
    x = np.random.default_rng(2).standard_normal(60 * 250)
    got = unlabelled_record_windows(x, 250.0, PreprocessConfig(windows_per_recording=4), np.random.default_rng(9))
    y = preprocess_signal(x, 250.0, CFG)
    starts = random_window_starts(y.size, 4, 2048, np.random.default_rng(9))
    np.testing.assert_array_equal(got.starts, starts)
    np.testing.assert_array_equal(got.windows, cut_windows(y, starts, CFG))
    assert not got.had_gaps and got.samples_dropped == 0


def test_a_recording_with_nan_gaps_gives_windows_from_its_finite_stretches():
    fs = 500.0
    x = np.random.default_rng(3).standard_normal(int(120 * fs))
    x[1500:2000] = np.nan  # the first stretch, 1,500 samples = 750 at 250 Hz, is too short for a window
    x[40_000:40_010] = np.inf
    cfg = PreprocessConfig(windows_per_recording=6)
    got = unlabelled_record_windows(x, fs, cfg, np.random.default_rng(0))
    assert got.had_gaps and got.windows.shape == (6, 2048)
    assert np.all(np.isfinite(got.windows))
    np.testing.assert_allclose(got.windows.std(axis=1), 1.0, atol=1e-4)
    assert got.samples_dropped == 1500 + 500 + 10
    # No window reaches into a gap (starts are at 250 Hz from the start of the recording).
    bad = [(750, 1000), (20_000, 20_005)]
    for start in got.starts:
        assert all(start + 2048 <= a or start >= b for a, b in bad), start
    again = unlabelled_record_windows(x, fs, cfg, np.random.default_rng(0))
    np.testing.assert_array_equal(got.windows, again.windows)


def test_unlabelled_stream_counts_gaps_and_recordings_left_without_windows():
    gappy = _record(1, 60.0, 250.0, None)
    gappy.signal[5000:5100] = np.nan
    hopeless = _record(2, 60.0, 250.0, None)
    hopeless.signal[::1000] = np.nan  # no stretch as long as a window
    stats = WindowingStats()
    chunks = list(
        windows_from_unlabelled_records(
            [gappy, hopeless, _record(3, 60.0, 250.0, None)], PreprocessConfig(windows_per_recording=3),
            seed=1, progress=False, stats=stats,
        )
    )
    index = pd.concat([d for _, d in chunks], ignore_index=True)
    assert sorted(index["record_id"].unique()) == ["r1", "r3"]
    assert stats.recordings_with_gaps == 2 and stats.recordings_without_windows == 1
    assert stats.gap_samples_dropped == 100 + 15_000
    assert stats.windows == 6


# ---------------------------------------------------------------- errors name the record


def test_errors_while_windowing_name_the_record():
    bad = _record(5, 10.0, 500.0, "SR")
    bad.signal[100] = np.inf
    with pytest.raises(ValueError, match=r"record 'r5' \(/data/r5.hea\): preprocess_signal: signal contains NaN"):
        list(windows_from_labelled_records([_record(1, 10.0, 500.0, "SR"), bad], CFG, progress=False))
    huge = _record(6, 10.0, 500.0, "SR")
    huge.signal[2500] = 1e300  # would otherwise become a window of zeros
    with pytest.raises(ValueError, match=r"record 'r6'.*standard deviation is not finite"):
        list(windows_from_labelled_records([huge], CFG, progress=False))
    huge_unlabelled = _record(7, 60.0, 250.0, None)
    huge_unlabelled.signal[:] *= 1e300
    with pytest.raises(ValueError, match=r"record 'r7'"):
        list(windows_from_unlabelled_records([huge_unlabelled], CFG, seed=0, progress=False))
