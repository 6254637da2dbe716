"""ECG windows as spectrogram images, the input of the paper's image-transfer baseline.

The paper turns every lead-II window into a 2-D time-frequency picture so that a CNN trained
on photographs can describe it. It does not say how; the choices below are this project's,
made for 2,048-sample windows at 250 Hz and explained in docs/image_transfer.md.

Windows of several leads (``preprocessing.leads``) give one image per window too, of one
lead (:func:`spectrogram_lead`): lead II when the windows hold it, else their first lead. The
frozen ImageNet CNN takes one 3-channel picture, and this arm is the paper's lead-II baseline;
tiling twelve spectrograms into one picture would shrink each to a twelfth of the CNN's
input and describe a picture unlike either the paper's or the photographs it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F

from ecg_transfer.signals.leads import shown_channel

__all__ = [
    "SpectrogramConfig",
    "spectrogram",
    "spectrogram_axes",
    "spectrogram_images",
    "check_windows",
    "spectrogram_lead",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

# The torchvision convention for ImageNet-trained networks, on [0, 1] pixels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SpectrogramConfig:
    """How a window becomes an image.

    nperseg=128 (512 ms) is the compromise between seeing beats and seeing atrial waves:
    its Hann main lobe is about 8 Hz wide, narrow enough to keep flutter/fibrillation energy
    (4-9 Hz) apart from QRS energy (10-25 Hz), and its effective width (~250 ms) still
    separates beats up to ~200 bpm. A 16-sample hop (64 ms) gives 121 columns, about as many
    as the image has pixels after resizing anyway. nfft=256 interpolates the frequency axis
    to 0.98 Hz bins so that 0.5-40 Hz spans 40 rows instead of 20.

    Power is shown in dB on a fixed range [db_max - db_range, db_max]. Windows are z-scored
    upstream, so their total power is fixed and a fixed range keeps "more power" meaning
    "brighter" across windows; per-image min-max would stretch a flat, noisy window to full
    contrast. The default range covers the 1st-99th percentile of real lead-II windows
    (PhysioNet Chapman/Georgia/PTB-XL samples: per-window maxima -11..+4 dB, 1st
    percentiles -66..-42 dB).
    """

    fs: float = 250.0
    window_length: int = 2048
    window: str = "hann"
    nperseg: int = 128
    noverlap: int = 112
    nfft: int = 256
    fmin: float = 0.5
    fmax: float = 40.0
    db_max: float = 0.0
    db_range: float = 60.0
    power_floor: float = 1e-12  # keeps log10 finite for an all-zero segment
    image_size: int = 224
    colormap: str | None = "viridis"  # None: grey replicated to three channels

    def __post_init__(self) -> None:
        if not 0 < self.nperseg <= self.window_length:
            raise ValueError(
                f"SpectrogramConfig: nperseg={self.nperseg} must be in 1..window_length={self.window_length}"
            )
        if not 0 <= self.noverlap < self.nperseg:
            raise ValueError(
                f"SpectrogramConfig: noverlap={self.noverlap} must be in 0..nperseg-1={self.nperseg - 1}"
            )
        if self.nfft < self.nperseg:
            raise ValueError(f"SpectrogramConfig: nfft={self.nfft} is smaller than nperseg={self.nperseg}")
        if not 0 <= self.fmin < self.fmax <= self.fs / 2:
            raise ValueError(
                f"SpectrogramConfig: need 0 <= fmin < fmax <= fs/2, got fmin={self.fmin}, "
                f"fmax={self.fmax}, fs={self.fs}"
            )
        if self.db_range <= 0:
            raise ValueError(f"SpectrogramConfig: db_range must be positive, got {self.db_range}")
        if self.image_size < 1:
            raise ValueError(f"SpectrogramConfig: image_size must be positive, got {self.image_size}")


def spectrogram_lead(windows, leads: Sequence[str]) -> tuple[np.ndarray, str]:
    """The (N, L) windows of the one lead the spectrogram arm shows, and its name: lead II
    when ``leads`` (the channel order of (N, C, L) windows) holds it, else the first lead.
    One-lead (N, L) windows pass unchanged (``leads``: their one name)."""
    leads = list(leads)
    if np.ndim(windows) == 2:
        return windows, leads[0] if leads else "II"
    if len(leads) != windows.shape[1]:
        raise ValueError(f"spectrogram_lead: {windows.shape[1]} channels but {len(leads)} lead names {leads}")
    channel = shown_channel(leads)
    return windows[:, channel], leads[channel]


def check_windows(windows: np.ndarray, cfg: SpectrogramConfig, what: str = "windows") -> np.ndarray:
    """Return windows as a float (N, L) array, or raise naming what is wrong with them.

    A NaN would silently turn a whole image into the floor colour, and a window of the wrong
    length would give an image of a different time span: both must fail here.
    """
    array = np.asarray(windows)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{what}: expected a (N, {cfg.window_length}) array, got shape {array.shape}")
    if array.shape[1] != cfg.window_length:
        raise ValueError(
            f"{what}: windows have {array.shape[1]} samples, the spectrogram config expects "
            f"{cfg.window_length} (window_length)"
        )
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"{what}: {bad_rows.size} window(s) hold NaN or inf values (first at row {bad_rows[0]})"
        )
    return array


def _frequency_mask(freqs: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    return (freqs >= cfg.fmin) & (freqs <= cfg.fmax)


def spectrogram_axes(cfg: SpectrogramConfig) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (Hz) of the rows and times (s, segment centres) of the columns."""
    freqs = np.fft.rfftfreq(cfg.nfft, d=1.0 / cfg.fs)
    hop = cfg.nperseg - cfg.noverlap
    n_frames = (cfg.window_length - cfg.nperseg) // hop + 1
    times = (np.arange(n_frames) * hop + cfg.nperseg / 2) / cfg.fs
    return freqs[_frequency_mask(freqs, cfg)], times


def _power_db(windows: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    """(N, L) -> (N, F, T) power spectral density in dB, band-limited to fmin..fmax."""
    freqs, _, power = scipy.signal.spectrogram(
        windows,
        fs=cfg.fs,
        window=cfg.window,
        nperseg=cfg.nperseg,
        noverlap=cfg.noverlap,
        nfft=cfg.nfft,
        # The windows are already high-passed at 0.5 Hz and z-scored; a per-segment detrend
        # would erase the slow P/T-wave content that the low rows are meant to show.
        detrend=False,
        scaling="density",
        mode="psd",
        axis=-1,
    )
    power = power[..., _frequency_mask(freqs, cfg), :]
    return 10.0 * np.log10(np.maximum(power, cfg.power_floor))


def spectrogram(window: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    """One window's power spectral density in dB, shape (freq, time), low frequencies first.

    Returns dB before the fixed-range clipping so that plots and tests see real levels;
    the axes come from spectrogram_axes(cfg).
    """
    array = np.asarray(window)
    if array.ndim != 1:
        raise ValueError(f"spectrogram: expected one 1-D window, got shape {array.shape}")
    return _power_db(check_windows(array, cfg, what="spectrogram input"), cfg)[0]


_COLORMAP_LEVELS = 256


def _colormap_table(name: str) -> torch.Tensor:
    """(256, 3) RGB lookup table of a matplotlib colormap."""
    from matplotlib import colormaps

    try:
        cmap = colormaps[name]
    except KeyError as error:
        raise ValueError(f"SpectrogramConfig.colormap: unknown matplotlib colormap {name!r}") from error
    return torch.from_numpy(cmap(np.linspace(0.0, 1.0, _COLORMAP_LEVELS))[:, :3].astype(np.float32))


def spectrogram_images(
    windows: np.ndarray,
    cfg: SpectrogramConfig,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """(N, L) windows -> (N, 3, S, S) float32 images ready for a backbone.

    mean and std are the backbone's own input normalisation (Backbone.mean / .std) applied
    to [0, 1] pixel values: the images must look to the network like the photographs it
    was trained on. The ImageNet defaults fit torchvision models; EfficientNet-Lite wants
    its own, so pass the backbone's (extract_image_features does). The scalar dB image is
    resized before the colormap is applied, so that bilinear interpolation blends power
    levels, not colours. Low frequencies sit at the bottom of the image, as in every
    plotted spectrogram.
    """
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"spectrogram_images: mean and std need 3 values, got {mean!r}, {std!r}")
    array = check_windows(windows, cfg, what="spectrogram_images input")
    power_db = _power_db(array.astype(np.float64, copy=False), cfg)
    low = cfg.db_max - cfg.db_range
    scaled = np.clip((power_db - low) / cfg.db_range, 0.0, 1.0)[:, ::-1, :]
    images = torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32)).unsqueeze(1)
    images = F.interpolate(
        images, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False
    ).clamp_(0.0, 1.0)
    if cfg.colormap is None:
        rgb = images.expand(-1, 3, -1, -1)
    else:
        levels = (images[:, 0] * (_COLORMAP_LEVELS - 1)).round_().long()
        rgb = _colormap_table(cfg.colormap)[levels].permute(0, 3, 1, 2)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((rgb - mean_t) / std_t).contiguous()
