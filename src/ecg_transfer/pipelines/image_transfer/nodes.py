"""The image-transfer baseline's inputs: lead-II windows -> spectrogram images -> frozen
ImageNet CNN features, computed once and cached by the catalog. The spectrogram arms' heads
train in the fine-tuning pipeline, like every other arm."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ecg_transfer.models.image_backbones import load_backbone
from ecg_transfer.models.image_features import extract_image_features, spectrogram_figure
from ecg_transfer.models.spectrogram import SpectrogramConfig
from ecg_transfer.training.engine import resolve_device


def extract_spectrogram_features(labelled_windows, image_transfer: dict[str, Any]) -> pd.DataFrame:
    """One feature vector per labelled window, keyed by record id, so every trial reuses them."""
    backbone_params = image_transfer["backbone"]
    backbone = load_backbone(backbone_params["name"], backbone_params.get("weights_path"))
    features = extract_image_features(
        labelled_windows.windows,
        SpectrogramConfig(**image_transfer["spectrogram"]),
        backbone,
        batch_size=int(image_transfer["feature_batch_size"]),
        device=resolve_device(image_transfer.get("device", "auto")),
        progress=bool(image_transfer.get("progress", True)),
    )
    columns = [f"{backbone.name}_{i:04d}" for i in range(features.shape[1])]
    table = pd.DataFrame(features, columns=columns)
    table.insert(0, "record_id", labelled_windows.index["record_id"].to_numpy())
    return table


def plot_spectrogram_examples(labelled_windows, label_classes: list[str], image_transfer: dict[str, Any]) -> Figure:
    """One example window and its spectrogram per class: what the frozen CNN is shown."""
    labels = labelled_windows.index["label"].to_numpy(dtype=object)
    first = [int(np.flatnonzero(labels == name)[0]) for name in label_classes if (labels == name).any()]
    return spectrogram_figure(
        labelled_windows.take(first), labels[first].tolist(),
        SpectrogramConfig(**image_transfer["spectrogram"]), class_order=list(label_classes),
    )
