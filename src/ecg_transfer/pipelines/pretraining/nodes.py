"""CAE pretraining on the unlabelled corpus: early stopping on the held-out MSE, the paper's
two reconstruction numbers, and the encoder saved as a reusable product with a model card."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ecg_transfer.models.cae import CaeConfig, ConvAutoencoder, count_parameters
from ecg_transfer.models.weights import encoder_model_card
from ecg_transfer.study.experiment import fingerprint
from ecg_transfer.study.figures import reconstruction_figure
from ecg_transfer.training.engine import TrainConfig, fit, predict


def _autoencoder(cfg: CaeConfig, seed: int) -> ConvAutoencoder:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ConvAutoencoder(cfg)


def pretrain_autoencoder(
    pretraining_windows, run_checkpoints, pretraining: dict[str, Any]
) -> tuple[dict, pd.DataFrame, dict, dict, list[dict[str, Any]]]:
    """Train the CAE on the corpus's train split, keep the epoch with the lowest test MSE."""
    cfg = CaeConfig.from_dict(pretraining["cae"])
    train_config = TrainConfig(**pretraining["training"])
    train = pretraining_windows.split_view("train")
    test = pretraining_windows.split_view("test")
    model = _autoencoder(cfg, train_config.seed)
    key = "pretraining/cae/" + fingerprint(
        pretraining, pretraining_windows.meta, pretraining_windows.index[["record_id", "split"]].to_numpy()
    )
    result = fit(
        model, "reconstruction", train, None, {"test": (test, None)}, train_config,
        checkpoints=run_checkpoints, run_key=key, progress=bool(pretraining.get("progress", True)),
    )
    history = result.history
    best = history[(history["split"] == "test") & (history["epoch"] == result.best_epoch)].iloc[0]
    reconstruction = {
        "test_mse_per_sample": float(best["mse"]),
        "test_sse_per_window": float(best["sse_per_window"]),
        "best_epoch": int(result.best_epoch),
    }
    card = encoder_model_card(
        model.encoder.state_dict(), cfg,
        {
            "data": {
                "corpus": str(pretraining_windows.path),
                "train_windows": int(train.shape[0]),
                "test_windows": int(test.shape[0]),
            },
            "reconstruction": reconstruction,
            "training": {**pretraining["training"], "epochs_run": int(result.epochs_run),
                         "stopped_early": bool(result.stopped_early), "device": result.device},
        },
    )
    mlflow_run = {
        "run_name": "cae-pretraining",
        "params": {
            **{f"cae.{k}": v for k, v in pretraining["cae"].items()},
            **{f"train.{k}": v for k, v in pretraining["training"].items()},
            "n_train": int(train.shape[0]), "n_test": int(test.shape[0]),
            "n_parameters": count_parameters(model), "device": result.device,
        },
        "tags": {"stage": "pretraining", "arm": "cae"},
        "history": history,
        "metrics": reconstruction,
    }
    encoder_state = {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()}
    cae_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return cae_state, history, encoder_state, card, [mlflow_run]


def plot_reconstructions(pretraining_windows, cae_weights: dict, pretraining: dict[str, Any]) -> Figure:
    """Original vs reconstructed test windows (the paper's Fig. 4)."""
    cfg = CaeConfig.from_dict(pretraining["cae"])
    model = ConvAutoencoder(cfg)
    model.load_state_dict(cae_weights)
    test_rows = pretraining_windows.split_indices("test")
    rng = np.random.default_rng(int(pretraining["training"].get("seed", 0)))
    chosen = np.sort(rng.choice(test_rows, size=min(4, test_rows.size), replace=False))
    originals = pretraining_windows.take(chosen)
    reconstructions = predict(model, originals, device="cpu")
    return reconstruction_figure(originals, reconstructions, fs=250.0)
