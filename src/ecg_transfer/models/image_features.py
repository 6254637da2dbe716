"""Feature vectors of the image-transfer arm: window -> spectrogram image -> frozen CNN.

The features are computed once per window and stored; the arm's classifier is then trained
on them by the common training engine like any other arm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from ecg_transfer.models.image_backbones import Backbone
from ecg_transfer.models.spectrogram import (
    SpectrogramConfig,
    check_windows,
    spectrogram,
    spectrogram_axes,
    spectrogram_images,
)
from ecg_transfer.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere

__all__ = ["extract_image_features", "spectrogram_figure"]


def extract_image_features(
    windows: np.ndarray,
    spec_cfg: SpectrogramConfig,
    backbone: Backbone,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """(N, L) windows -> (N, backbone.feature_dim) float32 features.

    Works batch by batch so that a memmapped corpus is read lazily and only batch_size
    images exist at a time (64 images of 3x224x224 float32 are 38 MB; the whole labelled
    set at once would be 6 GB). The backbone is moved to device and stays there.
    """
    if batch_size < 1:
        raise ValueError(f"extract_image_features: batch_size must be positive, got {batch_size}")
    if np.ndim(windows) != 2:
        raise ValueError(
            f"extract_image_features: expected (N, {spec_cfg.window_length}) windows, "
            f"got shape {np.shape(windows)}"
        )
    if spec_cfg.image_size != backbone.input_size:
        raise ValueError(
            f"extract_image_features: spectrogram image_size={spec_cfg.image_size} but backbone "
            f"{backbone.name} expects {backbone.input_size}"
        )
    n_windows = len(windows)
    features = np.empty((n_windows, backbone.feature_dim), dtype=np.float32)
    backbone.to(device)
    backbone.module.eval()
    starts = range(0, n_windows, batch_size)
    with torch.inference_mode():
        for start in tqdm(starts, desc=f"{backbone.name} features", unit="batch", disable=not progress):
            stop = min(start + batch_size, n_windows)
            batch = check_windows(
                np.asarray(windows[start:stop]), spec_cfg, what=f"windows[{start}:{stop}]"
            )
            images = spectrogram_images(batch, spec_cfg, mean=backbone.mean, std=backbone.std)
            images = images.to(device, memory_format=torch.channels_last)  # matches _freeze
            features[start:stop] = backbone.module(images).float().cpu().numpy()
    return features


def spectrogram_figure(
    windows: np.ndarray,
    labels: Sequence[str],
    cfg: SpectrogramConfig,
    class_order: Sequence[str] | None = None,
) -> Figure:
    """One row per rhythm present: the first window of that rhythm and its spectrogram.

    Lets a reader see what the frozen CNN is shown for each class. class_order fixes the
    row order (pass the study's class list, ``label_classes``); classes absent from labels
    are skipped.
    """
    labels = list(labels)
    if len(labels) != len(windows):
        raise ValueError(
            f"spectrogram_figure: {len(windows)} windows but {len(labels)} labels"
        )
    present = list(dict.fromkeys(labels))
    order = [c for c in class_order if c in present] if class_order is not None else sorted(present)
    if not order:
        raise ValueError("spectrogram_figure: no windows to draw (empty labels or no class of class_order present)")

    freqs, times = spectrogram_axes(cfg)
    seconds = np.arange(cfg.window_length) / cfg.fs
    figure = Figure(figsize=(11, 1.9 * len(order)), layout="constrained")
    axes = figure.subplots(len(order), 2, squeeze=False, sharex=True)
    for row, rhythm in enumerate(order):
        window = check_windows(np.asarray(windows[labels.index(rhythm)]), cfg, what=f"{rhythm} window")[0]
        power_db = spectrogram(window, cfg)
        wave_ax, spec_ax = axes[row]
        wave_ax.plot(seconds, window, linewidth=0.6, color="black")
        wave_ax.set_ylabel(f"{rhythm}\nz-score")
        mesh = spec_ax.pcolormesh(
            times, freqs, power_db, shading="nearest", cmap=cfg.colormap or "gray",
            vmin=cfg.db_max - cfg.db_range, vmax=cfg.db_max,
        )
        spec_ax.set_ylabel("Hz")
        figure.colorbar(mesh, ax=spec_ax, label="dB")
    axes[0, 0].set_title("lead II window (z-scored)")
    axes[0, 1].set_title(f"spectrogram (Hann {cfg.nperseg}, hop {cfg.nperseg - cfg.noverlap})")
    axes[-1, 0].set_xlabel("time (s)")
    axes[-1, 1].set_xlabel("time (s)")
    return figure
