"""The image-transfer baseline's inputs: lead-II windows -> spectrogram images -> frozen
ImageNet CNN features, computed once and cached by the catalog (windows of several leads show
lead II, else their first lead: models/spectrogram.py). The spectrogram arms' heads train in the
fine-tuning pipeline, like every other arm."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ecg_transfer.models.image_backbones import load_backbone
from ecg_transfer.models.image_features import extract_image_features, spectrogram_figure
from ecg_transfer.models.spectrogram import SpectrogramConfig, spectrogram_lead
from ecg_transfer.runs import COSMETIC
from ecg_transfer.study.experiment import HeadConfig
from ecg_transfer.training.engine import resolve_device
from ecg_transfer.typed_config import config_from_params


@dataclass(frozen=True)
class BackboneConfig:
    """The frozen ImageNet CNN: its name, and where its weights are read from (None: the
    package's or torch hub's copy, models/image_backbones.py)."""

    name: str = "efficientnet_lite0"
    weights_path: str | None = None


@dataclass(frozen=True)
class ImageTransferConfig:
    """The ``image_transfer`` parameter group: spectrograms, the backbone, how the features are
    computed, and the spectrogram arms' head. The arms' run keys hash the features themselves,
    so of this group only ``head`` enters a run key directly."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    spectrogram: SpectrogramConfig = field(default_factory=SpectrogramConfig)
    feature_batch_size: int = 32
    device: str = "auto"
    head: HeadConfig = field(default_factory=HeadConfig)
    progress: bool = field(default=True, metadata=COSMETIC)

    @classmethod
    def from_params(cls, image_transfer: dict[str, Any] | None) -> ImageTransferConfig:
        return config_from_params(cls, image_transfer, "image_transfer")


def extract_spectrogram_features(labelled_windows, image_transfer: dict[str, Any]) -> pd.DataFrame:
    """One feature vector per labelled window, keyed by record id, so every trial reuses them
    (windows of several leads: of lead II when present, else the first lead; spectrogram_lead)."""
    config = ImageTransferConfig.from_params(image_transfer)
    backbone = load_backbone(config.backbone.name, config.backbone.weights_path)
    features = extract_image_features(
        _shown_lead(labelled_windows.windows, labelled_windows),
        config.spectrogram,
        backbone,
        batch_size=config.feature_batch_size,
        device=resolve_device(config.device),
        progress=config.progress,
    )
    columns = [f"{backbone.name}_{i:04d}" for i in range(features.shape[1])]
    table = pd.DataFrame(features, columns=columns)
    table.insert(0, "record_id", labelled_windows.index["record_id"].to_numpy())
    return table


def _shown_lead(windows, store) -> np.ndarray:
    """The one lead of ``windows`` (rows of ``store``) the spectrogram arm shows."""
    return spectrogram_lead(windows, store.meta.get("leads", ["II"]))[0]


def _example_rows(labelled_windows, label_classes: list[str]) -> tuple[list[int], list[str]]:
    """(row of each class's example window, the class it shows), in class order."""
    if labelled_windows.task != "multilabel":
        labels = labelled_windows.index["label"].to_numpy(dtype=object)
        first = [int(np.flatnonzero(labels == name)[0]) for name in label_classes if (labels == name).any()]
        return first, labels[first].tolist()
    targets = labelled_windows.label_targets(label_classes).astype(bool)
    alone = targets.sum(axis=1) == 1
    rows, shown = [], []
    for k, name in enumerate(label_classes):
        for candidates in (np.flatnonzero(targets[:, k] & alone), np.flatnonzero(targets[:, k])):
            if candidates.size:
                rows.append(int(candidates[0]))
                shown.append(name)
                break
    return rows, shown


def plot_spectrogram_examples(labelled_windows, label_classes: list[str], image_transfer: dict[str, Any]) -> Figure:
    """One example window and its spectrogram per class: what the frozen CNN is shown. For a
    multi-label store, a label's example is the first window carrying it, preferably alone."""
    first, shown = _example_rows(labelled_windows, list(label_classes))
    return spectrogram_figure(
        _shown_lead(labelled_windows.take(first), labelled_windows), shown,
        ImageTransferConfig.from_params(image_transfer).spectrogram, class_order=list(label_classes),
    )
