"""The image-transfer baseline: lead-II windows -> spectrogram images -> frozen ImageNet CNN
features (computed once, cached by the catalog) -> a classifier head trained exactly like the
other arms, on the same bootstrap samples and seeds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ecg_transfer.models.classifier import FeatureClassifier
from ecg_transfer.models.image_backbones import load_backbone
from ecg_transfer.models.image_features import extract_image_features, spectrogram_figure
from ecg_transfer.models.spectrogram import SpectrogramConfig
from ecg_transfer.signals.records import RHYTHMS
from ecg_transfer.study.experiment import (
    ArmData,
    labelled_arm_data,
    labelled_run_fingerprint,
    run_arm,
)
from ecg_transfer.training.engine import resolve_device


def extract_spectrogram_features(labelled_windows, image_transfer: dict[str, Any]) -> pd.DataFrame:
    """One feature vector per labelled window, keyed by record id, so ten trials reuse them."""
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


def plot_spectrogram_examples(labelled_windows, image_transfer: dict[str, Any]) -> Figure:
    """One example window and its spectrogram per rhythm: what the frozen CNN is shown."""
    labels = labelled_windows.index["label"].to_numpy(dtype=object)
    first = [int(np.flatnonzero(labels == rhythm)[0]) for rhythm in RHYTHMS if (labels == rhythm).any()]
    return spectrogram_figure(
        labelled_windows.take(first), labels[first].tolist(),
        SpectrogramConfig(**image_transfer["spectrogram"]), class_order=RHYTHMS,
    )


def _standardise(data: ArmData) -> ArmData:
    """Scale features by the training split's mean and SD (CNN activations vary in scale by
    orders of magnitude; the test split never informs the scaling)."""
    mean = data.train_x.mean(axis=0)
    sd = data.train_x.std(axis=0) + 1e-6
    return ArmData(
        ((data.train_x - mean) / sd).astype(np.float32), data.train_y,
        ((data.val_x - mean) / sd).astype(np.float32), data.val_y,
        ((data.test_x - mean) / sd).astype(np.float32), data.test_y,
    )


def train_image_arm(
    spectrogram_features: pd.DataFrame,
    labelled_windows,
    bootstrap_samples: pd.DataFrame,
    run_checkpoints,
    image_transfer: dict[str, Any],
    finetuning: dict[str, Any],
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Train the head on frozen CNN features at every fraction and trial, with the encoder
    arms' optimiser, epochs, batch size and seeds (``finetuning.training``)."""
    record_ids = labelled_windows.index["record_id"].to_numpy()
    features = spectrogram_features.set_index("record_id")
    missing = set(record_ids) - set(features.index)
    if missing:
        raise ValueError(
            f"image features lack {len(missing)} labelled records (e.g. {sorted(missing)[:3]}): "
            "the cached features are stale; delete data/04_feature/spectrogram_features.parquet"
        )
    matrix = features.loc[record_ids].to_numpy(dtype=np.float32)
    data = _standardise(labelled_arm_data(labelled_windows, inputs=matrix))
    head = image_transfer["head"]

    def make_model(seed: int) -> FeatureClassifier:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return FeatureClassifier(matrix.shape[1], len(RHYTHMS), int(head["hidden"]), float(head["dropout"]))

    data_fingerprint = labelled_run_fingerprint(
        labelled_windows, bootstrap_samples, image_transfer, finetuning["training"], matrix
    )
    return run_arm(
        "image", make_model, data, bootstrap_samples, finetuning["training"], run_checkpoints,
        data_fingerprint, progress=bool(finetuning.get("progress", True)),
    )
