"""Bring every ECG to the paper's input: 250 Hz, no baseline wander, 2,048-sample z-scored windows.

The paper states the steps (downsample to 250 Hz, Butterworth baseline removal, windows of
2,048 samples, zero-centred signals) but not the filter order, cut-off or window placement;
the choices made here, and why, are in docs/preprocessing.md.

Order of operations: resample first, then high-pass, then cut windows, then z-score each
window. Filtering after resampling runs the filter on half as many samples for 500 Hz
input and lets one filter design (at 250 Hz) serve every source rate. Z-scoring per window
(not per recording) is what the network sees at inference time, one window at a time.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import signal as sps
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from ecg_transfer.signals.records import EcgRecord, ExclusionLog

PLACEMENTS = ("centre", "start", "end")

# Rates are stored as floats in headers (e.g. 128.0, 360.0, 257.6); a denominator cap
# keeps the polyphase filter bank small while representing every real device rate exactly.
_MAX_RATE_DENOMINATOR = 1000


@dataclass(frozen=True)
class PreprocessConfig:
    """Every knob of the preprocessing, so that a run can be reproduced from its parameters.

    Defaults: order-2 Butterworth at 0.5 Hz applied forward and backward (an effective
    order-4, zero-phase response with -6 dB at 0.5 Hz); see docs/preprocessing.md for why.
    """

    target_fs: float = 250.0
    highpass_hz: float = 0.5
    highpass_order: int = 2
    window_length: int = 2048
    labelled_placement: str = "centre"
    windows_per_recording: int = 100
    zscore_eps: float = 1e-6

    def __post_init__(self) -> None:
        if not self.target_fs > 0:
            raise ValueError(f"PreprocessConfig: target_fs must be positive, got {self.target_fs!r}")
        if not 0 < self.highpass_hz < self.target_fs / 2:
            raise ValueError(
                f"PreprocessConfig: highpass_hz must lie in (0, target_fs/2 = {self.target_fs / 2}), "
                f"got {self.highpass_hz!r}"
            )
        if int(self.highpass_order) != self.highpass_order or self.highpass_order < 1:
            raise ValueError(
                f"PreprocessConfig: highpass_order must be a positive integer, got {self.highpass_order!r}"
            )
        if int(self.window_length) != self.window_length or self.window_length < 2:
            raise ValueError(
                f"PreprocessConfig: window_length must be an integer >= 2, got {self.window_length!r}"
            )
        if self.labelled_placement not in PLACEMENTS:
            raise ValueError(
                f"PreprocessConfig: labelled_placement must be one of {PLACEMENTS}, "
                f"got {self.labelled_placement!r}"
            )
        if int(self.windows_per_recording) != self.windows_per_recording or self.windows_per_recording < 1:
            raise ValueError(
                "PreprocessConfig: windows_per_recording must be a positive integer, "
                f"got {self.windows_per_recording!r}"
            )
        if not self.zscore_eps > 0:
            raise ValueError(f"PreprocessConfig: zscore_eps must be positive, got {self.zscore_eps!r}")


def resampling_ratio(fs_in: float, fs_out: float) -> tuple[int, int]:
    """(up, down) with up/down = fs_out/fs_in in lowest terms, for resample_poly.

    Going through exact fractions (not floats) is what makes 128 -> 250 Hz come out as
    125/64 and the output length exact.
    """
    if not (np.isfinite(fs_in) and fs_in > 0):
        raise ValueError(f"resampling: input sampling rate must be positive, got {fs_in!r}")
    if not (np.isfinite(fs_out) and fs_out > 0):
        raise ValueError(f"resampling: output sampling rate must be positive, got {fs_out!r}")
    ratio = Fraction(fs_out).limit_denominator(_MAX_RATE_DENOMINATOR) / Fraction(fs_in).limit_denominator(
        _MAX_RATE_DENOMINATOR
    )
    return ratio.numerator, ratio.denominator


def resample(signal: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling; the anti-aliasing low-pass is built into resample_poly.

    padtype="line" extends the signal by the line through its ends instead of zeros, so an
    ECG sitting on a baseline offset does not get a step (and ringing) at each edge.
    """
    x = np.asarray(signal, dtype=np.float64)
    up, down = resampling_ratio(fs_in, fs_out)
    if up == down:
        return x.copy()
    return sps.resample_poly(x, up, down, padtype="line")


def highpass_sos(cfg: PreprocessConfig) -> np.ndarray:
    """The baseline-wander filter as second-order sections, designed at cfg.target_fs."""
    return sps.butter(cfg.highpass_order, cfg.highpass_hz, btype="highpass", fs=cfg.target_fs, output="sos")


def remove_baseline(signal: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Zero-phase Butterworth high-pass (sosfiltfilt) at cfg.target_fs.

    Zero phase keeps every QRS where it was; a causal filter would delay and distort it.
    The odd extension is made as long as three periods of the cut-off (capped by the
    signal) because scipy's default of a few samples leaves a visible start-up transient
    of a 0.5 Hz filter inside a 10 s record.
    """
    x = np.asarray(signal, dtype=np.float64)
    padlen = min(x.size - 1, int(np.ceil(3 * cfg.target_fs / cfg.highpass_hz)))
    return sps.sosfiltfilt(highpass_sos(cfg), x, padlen=padlen)


def preprocess_signal(signal: np.ndarray, fs: float, cfg: PreprocessConfig) -> np.ndarray:
    """Resampled to cfg.target_fs and high-passed; float64, not yet windowed or z-scored."""
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"preprocess_signal: expected a 1-D signal (one lead), got shape {x.shape}")
    if x.size < 2:
        raise ValueError(f"preprocess_signal: signal has {x.size} samples, too short to filter")
    if not np.all(np.isfinite(x)):
        raise ValueError("preprocess_signal: signal contains NaN or infinite values")
    return remove_baseline(resample(x, fs, cfg.target_fs), cfg)


def zscore(windows: np.ndarray, eps: float) -> np.ndarray:
    """Per-window z-score along the last axis, as float32.

    The SD is floored at eps so that a flat window becomes all zeros instead of NaN
    (readers already drop flat leads; a flat stretch inside a long recording can remain).
    """
    x = np.asarray(windows, dtype=np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    sd = x.std(axis=-1, keepdims=True)
    return ((x - mean) / np.maximum(sd, eps)).astype(np.float32)


def labelled_window_start(n_samples: int, cfg: PreprocessConfig) -> int:
    """Where the one window of a labelled record begins (in samples at cfg.target_fs)."""
    slack = n_samples - cfg.window_length
    if slack < 0:
        raise ValueError(
            f"labelled window: the preprocessed record has {n_samples} samples at {cfg.target_fs} Hz, "
            f"fewer than window_length={cfg.window_length}"
        )
    if cfg.labelled_placement == "start":
        return 0
    if cfg.labelled_placement == "end":
        return slack
    return slack // 2


def labelled_window(signal: np.ndarray, fs: float, cfg: PreprocessConfig) -> np.ndarray:
    """The one z-scored (window_length,) float32 window of a labelled record."""
    x = preprocess_signal(signal, fs, cfg)
    start = labelled_window_start(x.size, cfg)
    return zscore(x[start : start + cfg.window_length], cfg.zscore_eps)


def random_window_starts(
    n_samples: int, n_windows: int, window_length: int, rng: np.random.Generator
) -> np.ndarray:
    """Sorted starts of up to n_windows non-overlapping windows, placed uniformly at random.

    When fewer than n_windows fit, as many as fit are returned. The free samples (the
    slack left after the windows) are split into gaps by sorted uniform draws, which makes
    every non-overlapping arrangement reachable and never retries.
    """
    fit = n_samples // window_length
    k = min(int(n_windows), fit)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    slack = n_samples - k * window_length
    offsets = np.sort(rng.integers(0, slack + 1, size=k))
    return offsets + np.arange(k, dtype=np.int64) * window_length


def cut_windows(preprocessed: np.ndarray, starts: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """(len(starts), window_length) z-scored float32 windows of an already preprocessed signal."""
    starts = np.asarray(starts, dtype=np.int64)
    if starts.size == 0:
        return np.empty((0, cfg.window_length), dtype=np.float32)
    if starts.min() < 0 or starts.max() + cfg.window_length > preprocessed.size:
        raise ValueError(
            f"cut_windows: window starts must lie in [0, {preprocessed.size - cfg.window_length}], "
            f"got [{starts.min()}, {starts.max()}]"
        )
    idx = starts[:, None] + np.arange(cfg.window_length)[None, :]
    return zscore(preprocessed[idx], cfg.zscore_eps)


def unlabelled_windows(
    signal: np.ndarray, fs: float, cfg: PreprocessConfig, rng: np.random.Generator
) -> np.ndarray:
    """Up to cfg.windows_per_recording random non-overlapping z-scored windows, (k, L) float32."""
    x = preprocess_signal(signal, fs, cfg)
    starts = random_window_starts(x.size, cfg.windows_per_recording, cfg.window_length, rng)
    return cut_windows(x, starts, cfg)


def record_rng(seed: int, record_id: str) -> np.random.Generator:
    """A generator that depends only on the seed and the record, not on reading order.

    Window placement is then the same whatever the order or chunking of the records.
    """
    return np.random.default_rng([int(seed), zlib.crc32(record_id.encode("utf-8"))])


def _index_rows(record: EcgRecord, starts: np.ndarray, cfg: PreprocessConfig) -> pd.DataFrame:
    k = len(starts)
    return pd.DataFrame(
        {
            "record_id": [record.record_id] * k,
            "patient_id": [record.patient_id] * k,
            "label": [record.label] * k,
            "split": [None] * k,
            "window_start": np.asarray(starts, dtype=np.int64),
            "window_in_record": np.arange(k, dtype=np.int64),
            "source_fs": np.full(k, float(record.fs)),
            "lead": [record.lead] * k,
            "source": [record.source] * k,
        }
    )


def _too_short(
    record: EcgRecord, n_samples: int, cfg: PreprocessConfig, exclusions: ExclusionLog | None, dataset: str
) -> None:
    detail = (
        f"{n_samples} samples at {cfg.target_fs} Hz after resampling from {record.fs} Hz, "
        f"fewer than window_length={cfg.window_length}"
    )
    if exclusions is None:
        raise ValueError(f"record {record.record_id!r} ({record.source}): {detail}")
    exclusions.add(dataset, record.record_id, record.source, "too_short", detail)


def _chunked(
    pieces: Iterator[tuple[np.ndarray, pd.DataFrame]], chunk_size: int
) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    """Regroup per-record pieces into chunks of about chunk_size windows."""
    windows: list[np.ndarray] = []
    frames: list[pd.DataFrame] = []
    held = 0
    for w, df in pieces:
        windows.append(w)
        frames.append(df)
        held += len(w)
        if held >= chunk_size:
            yield np.concatenate(windows), pd.concat(frames, ignore_index=True)
            windows, frames, held = [], [], 0
    if held:
        yield np.concatenate(windows), pd.concat(frames, ignore_index=True)


def windows_from_labelled_records(
    records: Iterable[EcgRecord],
    cfg: PreprocessConfig,
    chunk_size: int = 1024,
    exclusions: ExclusionLog | None = None,
    dataset: str = "labelled",
    progress: bool = True,
) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    """Chunks of (windows (k, L) float32, index k rows), one window per labelled record.

    Lazy: one record and one chunk in memory at a time, so it can feed WindowStoreWriter.
    Records too short for a window go to `exclusions` as "too_short" (or raise without one).
    The index's "split" column is left empty; assign_splits fills it once all records are known.
    """
    if chunk_size < 1:
        raise ValueError(f"windows_from_labelled_records: chunk_size must be >= 1, got {chunk_size}")

    def pieces() -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
        for record in tqdm(records, desc="labelled windows", unit="rec", disable=not progress):
            if record.label is None:
                raise ValueError(
                    f"windows_from_labelled_records: record {record.record_id!r} ({record.source}) "
                    "has no label; use windows_from_unlabelled_records for unlabelled corpora"
                )
            x = preprocess_signal(record.signal, record.fs, cfg)
            if x.size < cfg.window_length:
                _too_short(record, x.size, cfg, exclusions, dataset)
                continue
            start = labelled_window_start(x.size, cfg)
            starts = np.array([start], dtype=np.int64)
            yield cut_windows(x, starts, cfg), _index_rows(record, starts, cfg)

    return _chunked(pieces(), chunk_size)


def windows_from_unlabelled_records(
    records: Iterable[EcgRecord],
    cfg: PreprocessConfig,
    seed: int,
    chunk_size: int = 1024,
    exclusions: ExclusionLog | None = None,
    dataset: str = "unlabelled",
    progress: bool = True,
) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    """Chunks of (windows, index) with up to cfg.windows_per_recording random windows per recording.

    Each recording's windows are drawn with record_rng(seed, record_id), so the corpus is
    the same for a given seed regardless of reading order or chunk_size. A chunk holds
    whole recordings, so it may exceed chunk_size by up to windows_per_recording - 1.
    """
    if chunk_size < 1:
        raise ValueError(f"windows_from_unlabelled_records: chunk_size must be >= 1, got {chunk_size}")

    def pieces() -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
        for record in tqdm(records, desc="unlabelled windows", unit="rec", disable=not progress):
            x = preprocess_signal(record.signal, record.fs, cfg)
            if x.size < cfg.window_length:
                _too_short(record, x.size, cfg, exclusions, dataset)
                continue
            starts = random_window_starts(
                x.size, cfg.windows_per_recording, cfg.window_length, record_rng(seed, record.record_id)
            )
            yield cut_windows(x, starts, cfg), _index_rows(record, starts, cfg)

    return _chunked(pieces(), chunk_size)
