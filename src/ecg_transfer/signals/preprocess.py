"""Bring every ECG to the paper's input: 250 Hz, no baseline wander, 2,048-sample z-scored windows.

The paper states the steps (downsample to 250 Hz, Butterworth baseline removal, windows of
2,048 samples, zero-centred signals) but not the filter order, cut-off or window placement;
the choices made here, and why, are in docs/preprocessing.md.

Order of operations: resample first, then high-pass, then cut windows, then z-score each
window. Filtering after resampling runs the filter on half as many samples for 500 Hz
input and lets one filter design (at 250 Hz) serve every source rate. Z-scoring per window
(not per recording) is what the network sees at inference time, one window at a time.

A record of several leads (``preprocessing.leads``; a (C, samples) signal) goes through the
same steps lead by lead along the last axis: its windows are (C, window_length), cut at the
same places in every lead, and z-scored per window per lead, so each channel has mean 0 and
SD 1 whatever the leads' amplitudes. One lead keeps the (window_length,) windows it always had.

Every error raised while windowing a record names the record and its source file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import signal as sps

from ecg_transfer.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere
from ecg_transfer.typed_config import config_from_params

if TYPE_CHECKING:
    from ecg_transfer.signals.records import EcgRecord, ExclusionLog

# Where the windows of a labelled record sit: "centre", "start", "end" place the block of
# windows_per_record adjacent windows; "spread" spaces them evenly (equal gaps before,
# between and after). With one window, "spread" and "centre" are the same window.
PLACEMENTS = ("centre", "start", "end", "spread")

# Rates are stored as floats in headers (e.g. 128.0, 360.0, 257.6); a denominator cap
# keeps the polyphase filter bank small while representing every real device rate exactly.
_MAX_RATE_DENOMINATOR = 1000


@dataclass(frozen=True)
class PreprocessConfig:
    """Every knob of the preprocessing, so that a run can be reproduced from its parameters.

    Defaults: order-2 Butterworth at 0.5 Hz applied forward and backward (an effective
    order-4, zero-phase response with -6 dB at 0.5 Hz); see docs/preprocessing.md for why.
    Labelled records give up to ``windows_per_record`` non-overlapping windows placed by
    ``labelled_placement``; one shorter than a window is zero-padded when ``pad_short``.
    Unlabelled recordings give up to ``windows_per_recording`` random windows.
    """

    target_fs: float = 250.0
    highpass_hz: float = 0.5
    highpass_order: int = 2
    window_length: int = 2048
    labelled_placement: str = "centre"
    windows_per_record: int = 1
    pad_short: bool = False
    windows_per_recording: int = 100
    zscore_eps: float = 1e-6

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, where: str = "preprocessing.signal") -> PreprocessConfig:
        """From the ``preprocessing.signal`` parameters; unknown keys and wrong types are errors."""
        return config_from_params(cls, params, where)

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
        for name in ("windows_per_record", "windows_per_recording"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"PreprocessConfig: {name} must be a positive integer, got {value!r}")
        if not isinstance(self.pad_short, bool):
            raise ValueError(f"PreprocessConfig: pad_short must be true or false, got {self.pad_short!r}")
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


def resampled_length(n_samples: int, fs_in: float, fs_out: float) -> int:
    """Samples that resample() gives for n_samples at fs_in: ceil(n * up / down), as resample_poly."""
    up, down = resampling_ratio(fs_in, fs_out)
    if up == down:
        return int(n_samples)
    return -(-int(n_samples) * up // down)


def resample(signal: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling; the anti-aliasing low-pass is built into resample_poly.

    padtype="line" extends the signal by the line through its ends instead of zeros, so an
    ECG sitting on a baseline offset does not get a step (and ringing) at each edge.
    """
    x = np.asarray(signal, dtype=np.float64)
    up, down = resampling_ratio(fs_in, fs_out)
    if up == down:
        return x.copy()
    return sps.resample_poly(x, up, down, axis=-1, padtype="line")


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
    padlen = min(x.shape[-1] - 1, int(np.ceil(3 * cfg.target_fs / cfg.highpass_hz)))
    return sps.sosfiltfilt(highpass_sos(cfg), x, axis=-1, padlen=padlen)


def preprocess_signal(signal: np.ndarray, fs: float, cfg: PreprocessConfig) -> np.ndarray:
    """Resampled to cfg.target_fs and high-passed (each lead of a (C, samples) signal on its
    own); float64, not yet windowed or z-scored."""
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim not in (1, 2):
        raise ValueError(
            f"preprocess_signal: expected a 1-D signal (one lead) or (leads, samples), got shape {x.shape}"
        )
    if x.shape[-1] < 2:
        raise ValueError(f"preprocess_signal: signal has {x.shape[-1]} samples, too short to filter")
    if not np.all(np.isfinite(x)):
        raise ValueError("preprocess_signal: signal contains NaN or infinite values")
    return remove_baseline(resample(x, fs, cfg.target_fs), cfg)


def zscore(windows: np.ndarray, eps: float) -> np.ndarray:
    """Per-window z-score along the last axis, as float32.

    The SD is floored at eps so that a flat window becomes all zeros instead of NaN
    (readers already drop flat leads; a flat stretch inside a long recording can remain).
    """
    x = np.asarray(windows, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported just below
        mean = x.mean(axis=-1, keepdims=True)
        sd = x.std(axis=-1, keepdims=True)
    if not np.all(np.isfinite(sd)):
        raise ValueError(
            f"zscore: a window's standard deviation is not finite (largest |sample| {np.abs(x).max():.3g}); "
            "the signal holds impossible amplitudes"
        )
    return ((x - mean) / np.maximum(sd, eps)).astype(np.float32)


def labelled_window_starts(n_samples: int, cfg: PreprocessConfig) -> np.ndarray:
    """Starts (samples at cfg.target_fs) of the windows of a labelled record of n_samples.

    Up to cfg.windows_per_record non-overlapping windows, as many as fit, placed by
    cfg.labelled_placement. A record shorter than one window gets one window starting at 0
    or before (the samples outside the record are zero padding) when cfg.pad_short, and is
    an error otherwise.
    """
    length = cfg.window_length
    if n_samples < length and not cfg.pad_short:
        raise ValueError(
            f"labelled window: the preprocessed record has {n_samples} samples at {cfg.target_fs} Hz, "
            f"fewer than window_length={length}"
        )
    k = max(1, min(cfg.windows_per_record, n_samples // length))
    slack = n_samples - k * length  # negative for a padded record
    steps = np.arange(k, dtype=np.int64) * length
    if cfg.labelled_placement == "start":
        return steps
    if cfg.labelled_placement == "end":
        return steps + slack
    if cfg.labelled_placement == "centre":
        return steps + slack // 2
    return steps + (np.arange(1, k + 1, dtype=np.int64) * slack) // (k + 1)


def labelled_window_start(n_samples: int, cfg: PreprocessConfig) -> int:
    """Where the window of a one-window labelled record begins (in samples at cfg.target_fs)."""
    return int(labelled_window_starts(n_samples, dataclasses.replace(cfg, windows_per_record=1))[0])


def labelled_record_windows(signal: np.ndarray, fs: float, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """(windows (k, [C,] window_length) float32 z-scored, their starts) of one labelled record."""
    x = preprocess_signal(signal, fs, cfg)
    starts = labelled_window_starts(x.shape[-1], cfg)
    if x.shape[-1] < cfg.window_length:
        return pad_window(x, int(starts[0]), cfg)[None], starts
    return cut_windows(x, starts, cfg), starts


def labelled_window(signal: np.ndarray, fs: float, cfg: PreprocessConfig) -> np.ndarray:
    """The first z-scored (window_length,) float32 window of a labelled record."""
    return labelled_record_windows(signal, fs, cfg)[0][0]


def pad_window(preprocessed: np.ndarray, start: int, cfg: PreprocessConfig) -> np.ndarray:
    """One window of a record shorter than a window: the record z-scored, zeros around it.

    The record is z-scored on its own samples, so the zeros are its mean and its scale is
    that of any other window; ``start`` (<= 0) is where the window begins relative to the
    record, as labelled_window_starts gives it.
    """
    n = preprocessed.shape[-1]
    if n > cfg.window_length or start > 0 or start + cfg.window_length < n:
        raise ValueError(
            f"pad_window: a record of {n} samples does not fit a window of {cfg.window_length} starting at {start}"
        )
    out = np.zeros(preprocessed.shape[:-1] + (cfg.window_length,), dtype=np.float32)
    out[..., -start : -start + n] = zscore(preprocessed, cfg.zscore_eps)
    return out


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
    """(len(starts), [C,] window_length) z-scored float32 windows of an already preprocessed
    signal (one lead, or (C, samples): the same starts in every lead)."""
    starts = np.asarray(starts, dtype=np.int64)
    n = preprocessed.shape[-1]
    if starts.size == 0:
        return np.empty((0, *preprocessed.shape[:-1], cfg.window_length), dtype=np.float32)
    if starts.min() < 0 or starts.max() + cfg.window_length > n:
        raise ValueError(
            f"cut_windows: window starts must lie in [0, {n - cfg.window_length}], "
            f"got [{starts.min()}, {starts.max()}]"
        )
    idx = starts[:, None] + np.arange(cfg.window_length)[None, :]
    if preprocessed.ndim == 1:
        return zscore(preprocessed[idx], cfg.zscore_eps)
    return zscore(np.moveaxis(preprocessed[:, idx], 0, 1), cfg.zscore_eps)  # (k, C, L)


def finite_stretches(signal: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of every run of finite samples, in order (stop exclusive)."""
    finite = np.isfinite(np.asarray(signal, dtype=np.float64))
    edges = np.flatnonzero(np.diff(np.concatenate(([False], finite, [False])).astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


@dataclass
class GapWindows:
    """The windows of one unlabelled recording and what its gaps cost."""

    windows: np.ndarray
    starts: np.ndarray
    had_gaps: bool = False
    samples_dropped: int = 0  # source samples in no usable stretch (the gaps and stretches too short)


def unlabelled_record_windows(
    signal: np.ndarray, fs: float, cfg: PreprocessConfig, rng: np.random.Generator
) -> GapWindows:
    """Up to cfg.windows_per_recording random non-overlapping windows from the finite stretches.

    A recording without gaps is preprocessed whole (as unlabelled_windows always did). A long
    monitor recording with NaN (or infinite) gaps is cut at the gaps: each finite stretch
    long enough for a window is preprocessed on its own (a filter cannot run across a gap)
    and the windows are shared among the stretches by drawing, without replacement, among
    every window-sized slot the stretches offer. Starts are in samples at cfg.target_fs
    from the start of the recording.
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim not in (1, 2):
        raise ValueError(
            f"unlabelled windows: expected a 1-D signal (one lead) or (leads, samples), got shape {x.shape}"
        )
    length = cfg.window_length
    if np.all(np.isfinite(x)):
        y = preprocess_signal(x, fs, cfg)
        starts = random_window_starts(y.shape[-1], cfg.windows_per_recording, length, rng)
        return GapWindows(cut_windows(y, starts, cfg), starts)
    # A sample time is usable when every lead is finite there (x.ndim == 2: a gap in any lead).
    finite_in_all = np.isfinite(x) if x.ndim == 1 else np.isfinite(x).all(axis=0)
    usable = [
        (a, b) for a, b in finite_stretches(np.where(finite_in_all, 0.0, np.nan))
        if b - a >= 2 and resampled_length(b - a, fs, cfg.target_fs) >= length
    ]
    dropped = x.shape[-1] - sum(b - a for a, b in usable)
    fits = np.array([resampled_length(b - a, fs, cfg.target_fs) // length for a, b in usable], dtype=np.int64)
    k = int(min(cfg.windows_per_recording, fits.sum()))
    if k == 0:
        return GapWindows(np.empty((0, *x.shape[:-1], length), np.float32), np.empty(0, np.int64), True, dropped)
    slots = np.sort(rng.choice(int(fits.sum()), size=k, replace=False))
    per_stretch = np.bincount(np.searchsorted(np.cumsum(fits), slots, side="right"), minlength=len(usable))
    windows, starts = [], []
    for (a, b), n_windows in zip(usable, per_stretch):
        if n_windows == 0:
            continue
        y = preprocess_signal(x[..., a:b], fs, cfg)
        local = random_window_starts(y.shape[-1], int(n_windows), length, rng)
        windows.append(cut_windows(y, local, cfg))
        starts.append(local + resampled_length(a, fs, cfg.target_fs))
    return GapWindows(np.concatenate(windows), np.concatenate(starts), True, dropped)


def unlabelled_windows(
    signal: np.ndarray, fs: float, cfg: PreprocessConfig, rng: np.random.Generator
) -> np.ndarray:
    """Up to cfg.windows_per_recording random non-overlapping z-scored windows, (k, L) float32."""
    return unlabelled_record_windows(signal, fs, cfg, rng).windows


def record_rng(seed: int, record_id: str) -> np.random.Generator:
    """A generator that depends only on the seed and the record, not on reading order.

    Window placement is then the same whatever the order or chunking of the records.
    """
    return np.random.default_rng([int(seed), zlib.crc32(record_id.encode("utf-8"))])


def _index_rows(record: EcgRecord, starts: np.ndarray) -> pd.DataFrame:
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


@contextlib.contextmanager
def naming_record(record: EcgRecord) -> Iterator[None]:
    """Re-raise a ValueError from inside with the record and its file in front of the message."""
    try:
        yield
    except ValueError as exc:
        if record.record_id in str(exc):
            raise
        raise ValueError(f"record {record.record_id!r} ({record.source}): {exc}") from exc


@dataclass
class WindowingStats:
    """Counts made while a corpus streams past (complete once the stream is exhausted)."""

    records: int = 0
    windows: int = 0
    too_short: int = 0
    padded: int = 0
    recordings_with_gaps: int = 0
    gap_samples_dropped: int = 0
    recordings_without_windows: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


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
    stats: WindowingStats | None = None,
) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    """Chunks of (windows (k, L) float32, index k rows): up to cfg.windows_per_record windows
    per labelled record, the windows of a record adjacent in the store.

    Lazy: one record and one chunk in memory at a time, so it can feed WindowStoreWriter.
    A record too short for a window is zero-padded when cfg.pad_short; otherwise it goes to
    `exclusions` as "too_short" (or raises without one). `stats`, if given, is filled in as
    the chunks are taken. The index's "split" column is left empty; the caller attaches it.
    """
    if chunk_size < 1:
        raise ValueError(f"windows_from_labelled_records: chunk_size must be >= 1, got {chunk_size}")
    stats = stats if stats is not None else WindowingStats()

    def pieces() -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
        for record in tqdm(records, desc="labelled windows", unit="rec", disable=not progress):
            if record.label is None:
                raise ValueError(
                    f"windows_from_labelled_records: record {record.record_id!r} ({record.source}) "
                    "has no label; use windows_from_unlabelled_records for unlabelled corpora"
                )
            stats.records += 1
            with naming_record(record):
                x = preprocess_signal(record.signal, record.fs, cfg)
                if x.shape[-1] < cfg.window_length and not cfg.pad_short:
                    stats.too_short += 1
                    _too_short(record, x.shape[-1], cfg, exclusions, dataset)
                    continue
                starts = labelled_window_starts(x.shape[-1], cfg)
                if x.shape[-1] < cfg.window_length:
                    windows = pad_window(x, int(starts[0]), cfg)[None]
                    stats.padded += 1
                else:
                    windows = cut_windows(x, starts, cfg)
            stats.windows += len(windows)
            yield windows, _index_rows(record, starts)

    return _chunked(pieces(), chunk_size)


def windows_from_unlabelled_records(
    records: Iterable[EcgRecord],
    cfg: PreprocessConfig,
    seed: int,
    chunk_size: int = 1024,
    exclusions: ExclusionLog | None = None,
    dataset: str = "unlabelled",
    progress: bool = True,
    stats: WindowingStats | None = None,
) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    """Chunks of (windows, index) with up to cfg.windows_per_recording random windows per recording.

    Each recording's windows are drawn with record_rng(seed, record_id), so the corpus is
    the same for a given seed regardless of reading order or chunk_size. A chunk holds
    whole recordings, so it may exceed chunk_size by up to windows_per_recording - 1.
    A recording with NaN gaps gives windows from its finite stretches
    (unlabelled_record_windows); `stats`, if given, counts the recordings with gaps and
    the samples they lost.
    """
    if chunk_size < 1:
        raise ValueError(f"windows_from_unlabelled_records: chunk_size must be >= 1, got {chunk_size}")
    stats = stats if stats is not None else WindowingStats()

    def pieces() -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
        for record in tqdm(records, desc="unlabelled windows", unit="rec", disable=not progress):
            stats.records += 1
            with naming_record(record):
                signal = np.asarray(record.signal)
                if np.all(np.isfinite(signal)):
                    n = resampled_length(signal.shape[-1], record.fs, cfg.target_fs)
                    if n < cfg.window_length:
                        stats.too_short += 1
                        _too_short(record, n, cfg, exclusions, dataset)
                        continue
                got = unlabelled_record_windows(signal, record.fs, cfg, record_rng(seed, record.record_id))
            if got.had_gaps:
                stats.recordings_with_gaps += 1
                stats.gap_samples_dropped += got.samples_dropped
            if len(got.windows) == 0:
                stats.recordings_without_windows += 1
                continue
            stats.windows += len(got.windows)
            yield got.windows, _index_rows(record, got.starts)

    return _chunked(pieces(), chunk_size)
