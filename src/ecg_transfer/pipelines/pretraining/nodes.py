"""Pretraining on the unlabelled corpus. The paper's CAE: early stopping on the held-out MSE, its
two reconstruction numbers, and the encoder saved as a reusable product with a model card. The
other methods of ``pretraining.methods`` (contrastive, masked; docs/pretext_tasks.md): the same
encoder trained with another pretext task, each with its own card."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ecg_transfer.models.cae import CaeConfig, ConvAutoencoder, count_parameters
from ecg_transfer.models.weights import encoder_model_card, preprocessing_card
from ecg_transfer.signals.leads import shown_channel
from ecg_transfer.runs import fingerprint, result_settings, run_record
from ecg_transfer.study.figures import reconstruction_figure
from ecg_transfer.tracking import epoch_logger
from ecg_transfer.training.distributed import LaunchConfig, StoreSplit, fit_distributed
from ecg_transfer.training.engine import TrainConfig, fit, predict
from ecg_transfer.training.pretext_methods import PretextMethod, methods_from_params
from ecg_transfer.training.tasks import ReconstructionTask

# Keys of the pretraining parameters that do not change what the CAE learns: left out of its
# run key, so listing pretext methods (or a launch block) does not retrain or re-key the CAE.


def _autoencoder(cfg: CaeConfig, seed: int) -> ConvAutoencoder:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ConvAutoencoder(cfg)


def pretrain_autoencoder(
    unlabelled_windows, run_checkpoints, run_tracker, pretraining: dict[str, Any], preprocessing: dict[str, Any]
) -> tuple[dict, pd.DataFrame, dict, dict]:
    """Train the CAE on the corpus's train split, keep the epoch with the lowest test MSE; the
    encoder's card records what its inputs were (rate, window, normalisation, lead). The MLflow
    child run `cae-pretraining` opens when training starts and logs every epoch as it ends."""
    cfg = CaeConfig.for_windows(pretraining["cae"], unlabelled_windows)
    # nproc (processes) and the optional distributed: block change how, not what, is trained;
    # they stay out of the run key, so a run may resume with another process count.
    training = {k: v for k, v in pretraining["training"].items() if k != "nproc"}
    launch = LaunchConfig.from_params(pretraining["training"].get("nproc", 1), pretraining.get("distributed"))
    train_config = TrainConfig(**training)
    train = unlabelled_windows.split_view("train")
    test = unlabelled_windows.split_view("test")
    model = _autoencoder(cfg, train_config.seed)
    # The key hashes what changes the CAE's weights, as the configs mark it (ecg_transfer.runs):
    # not the progress bar, the thread count or the process count.
    keyed = {"cae": result_settings(cfg), "training": result_settings(train_config)}
    key = "pretraining/cae/" + fingerprint(
        keyed, unlabelled_windows.meta, unlabelled_windows.index[["record_id", "split"]].to_numpy()
    )
    progress = bool(pretraining.get("progress", True))
    params = {
        **{f"cae.{k}": v for k, v in pretraining["cae"].items()},
        **{f"train.{k}": v for k, v in pretraining["training"].items()},
        "n_train": int(train.shape[0]), "n_test": int(test.shape[0]), "n_parameters": count_parameters(model),
    }
    tags = {"stage": "pretraining", "arm": "cae"}
    live = not launch.distributed and not (run_checkpoints is not None and run_checkpoints.is_done(key))
    if launch.distributed:  # DDP over nproc processes (docs/models_and_training.md)
        splits = {name: StoreSplit(str(unlabelled_windows.path), name) for name in ("train", "test")}
        result = fit_distributed(model, ReconstructionTask(), splits["train"], {"test": splits["test"]},
                                 train_config, launch, checkpoints=run_checkpoints, run_key=key, progress=progress)
    elif live:
        with run_tracker.start("cae-pretraining", params, tags) as run:
            result = fit(model, ReconstructionTask(), train, None, {"test": (test, None)}, train_config,
                         checkpoints=run_checkpoints, run_key=key, progress=progress,
                         on_epoch_end=epoch_logger(run))
            run.finish(_reconstruction(result), params={"device": result.device})
    else:  # finished earlier: reused, logged whole
        result = fit(model, ReconstructionTask(), train, None, {"test": (test, None)}, train_config,
                     checkpoints=run_checkpoints, run_key=key, progress=progress)
    history = result.history
    reconstruction = _reconstruction(result)
    if not live:
        run_tracker.log_record(run_record("cae-pretraining", {**params, "device": result.device}, tags,
                                          history, reconstruction))
    inputs = preprocessing_card(
        preprocessing["signal"]["target_fs"], cfg.window_length, unlabelled_windows.index["lead"].unique()
    )
    card = encoder_model_card(
        model.encoder.state_dict(), cfg,
        {
            **inputs,
            "data": {
                "corpus": str(unlabelled_windows.path),
                "train_windows": int(train.shape[0]),
                "test_windows": int(test.shape[0]),
            },
            "reconstruction": reconstruction,
            "training": {**pretraining["training"], "epochs_run": int(result.epochs_run),
                         "stopped_early": bool(result.stopped_early), "device": result.device},
        },
    )
    encoder_state = {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()}
    cae_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    encoder = {"weights": encoder_state, "card": card}
    return cae_state, history, encoder, encoder


def _reconstruction(result) -> dict[str, float]:
    """The paper's two numbers at the kept (lowest held-out MSE) epoch."""
    history = result.history
    best = history[(history["split"] == "test") & (history["epoch"] == result.best_epoch)].iloc[0]
    return {
        "test_mse_per_sample": float(best["mse"]),
        "test_sse_per_window": float(best["sse_per_window"]),
        "best_epoch": int(result.best_epoch),
    }


def plot_reconstructions(
    unlabelled_windows, cae_weights: dict, pretraining: dict[str, Any], preprocessing: dict[str, Any]
) -> Figure:
    """Original vs reconstructed test windows (the paper's Fig. 4)."""
    cfg = CaeConfig.for_windows(pretraining["cae"], unlabelled_windows)
    model = ConvAutoencoder(cfg)
    model.load_state_dict(cae_weights)
    test_rows = unlabelled_windows.split_indices("test")
    rng = np.random.default_rng(int(pretraining["training"].get("seed", 0)))
    chosen = np.sort(rng.choice(test_rows, size=min(4, test_rows.size), replace=False))
    originals = unlabelled_windows.take(chosen)
    reconstructions = predict(model, originals, device="cpu")
    if originals.ndim == 3:  # windows of several leads: the figure shows lead II, else the first
        channel = shown_channel(unlabelled_windows.meta.get("leads", []))
        originals, reconstructions = originals[:, channel], np.asarray(reconstructions)[:, channel]
    return reconstruction_figure(originals, reconstructions, fs=float(preprocessing["signal"]["target_fs"]))


def pretrain_pretext_encoders(
    unlabelled_windows, run_checkpoints, run_tracker, pretraining: dict[str, Any], preprocessing: dict[str, Any]
) -> tuple[dict[str, dict], pd.DataFrame]:
    """Train the CAE's encoder with every method of ``pretraining.methods`` other than
    ``reconstruct`` (that one is the CAE of :func:`pretrain_autoencoder`): returns each
    method's ``{"weights", "card"}`` by name and their histories (a ``method`` column). Each
    run is checkpointed and resumes; its MLflow child run is ``<method>-pretraining``."""
    methods = [m for m in methods_from_params(pretraining.get("methods")).values() if m.task != "reconstruct"]
    launch = LaunchConfig.from_params(pretraining["training"].get("nproc", 1), pretraining.get("distributed"))
    if methods and launch.distributed:
        raise ValueError(
            f"pretraining.training.nproc / pretraining.distributed: distributed pretraining runs the CAE only; "
            f"the pretext methods {[m.name for m in methods]} train in one process (set nproc: 1)"
        )
    encoders, histories = {}, []
    for method in methods:
        encoders[method.name], history = _pretrain_method(
            method, unlabelled_windows, run_checkpoints, run_tracker, pretraining, preprocessing
        )
        histories.append(history.assign(method=method.name))
    if not histories:
        return encoders, pd.DataFrame(columns=["method", "epoch", "split", "loss"])
    history = pd.concat(histories, ignore_index=True)
    return encoders, history[["method"] + [c for c in history.columns if c != "method"]]


def _pretrain_method(method: PretextMethod, unlabelled_windows, run_checkpoints, run_tracker,
                     pretraining: dict[str, Any], preprocessing: dict[str, Any]) -> tuple[dict, pd.DataFrame]:
    """One method's run (as the CAE's: same encoder, corpus splits and training settings, with
    the method's overrides) and its encoder with a card naming the method and its options."""
    cfg = CaeConfig.for_windows(pretraining["cae"], unlabelled_windows)
    fs = float(preprocessing["signal"]["target_fs"])
    training = {**{k: v for k, v in pretraining["training"].items() if k != "nproc"}, **method.training}
    train_config = TrainConfig(**training)
    index = unlabelled_windows.index
    records = index["record_id"].to_numpy()
    splits = {name: unlabelled_windows.split_indices(name) for name in ("train", "test")}
    # Pairs of the held-out split come from their own seed stream, never the training pairs'.
    inputs = {name: method.inputs(unlabelled_windows.split_view(name), records[rows], train_config.seed + offset)
              for offset, (name, rows) in enumerate(splits.items())}
    with torch.random.fork_rng():
        torch.manual_seed(train_config.seed)
        model = method.build(cfg, fs)
    task = method.task_strategy()
    key = f"pretraining/{method.name}/" + fingerprint(
        method.describe(), pretraining["cae"], training, fs, unlabelled_windows.meta,
        index[["record_id", "split"]].to_numpy(),
    )
    progress = bool(pretraining.get("progress", True))
    params = {"method": method.name, "task": method.task, **{f"option.{k}": v for k, v in method.options.items()},
              **{f"train.{k}": v for k, v in training.items()}, "n_train": int(splits["train"].size),
              "n_test": int(splits["test"].size), "n_parameters": count_parameters(model)}
    tags = {"stage": "pretraining", "arm": method.name}
    run_name = f"{method.name}-pretraining"
    arguments = (model, task, inputs["train"], None, {"test": (inputs["test"], None)}, train_config)
    if run_checkpoints is not None and run_checkpoints.is_done(key):
        result = fit(*arguments, checkpoints=run_checkpoints, run_key=key, progress=progress)
        run_tracker.log_record(run_record(run_name, {**params, "device": result.device}, tags, result.history,
                                          _held_out(result)))
    else:
        with run_tracker.start(run_name, params, tags) as run:
            result = fit(*arguments, checkpoints=run_checkpoints, run_key=key, progress=progress,
                         on_epoch_end=epoch_logger(run))
            run.finish(_held_out(result), params={"device": result.device})
    inputs_card = preprocessing_card(fs, cfg.window_length, index["lead"].unique())
    card = encoder_model_card(model.encoder.state_dict(), cfg, {
        **inputs_card,
        "pretext": method.describe(),
        "data": {"corpus": str(unlabelled_windows.path), "train_windows": int(splits["train"].size),
                 "test_windows": int(splits["test"].size)},
        "held_out": _held_out(result),
        "training": {**training, "epochs_run": int(result.epochs_run), "stopped_early": bool(result.stopped_early),
                     "device": result.device},
    })
    weights = {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()}
    return {"weights": weights, "card": card}, result.history


def _held_out(result) -> dict[str, float]:
    """The pretext loss on the held-out split at the kept epoch."""
    history = result.history
    best = history[(history["split"] == "test") & (history["epoch"] == result.best_epoch)].iloc[0]
    return {"test_loss": float(best["loss"]), "best_epoch": int(result.best_epoch)}
