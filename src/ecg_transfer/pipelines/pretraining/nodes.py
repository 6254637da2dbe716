"""Pretraining on the unlabelled corpus. The paper's CAE: early stopping on the held-out MSE, its
two reconstruction numbers, and the encoder saved as a reusable product with a model card. The
other methods of ``pretraining.methods`` (contrastive, masked; docs/pretext_tasks.md): the same
encoder trained with another pretext task, each with its own card."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial, update_wrapper
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ecg_transfer.models.cae import CaeConfig, ConvAutoencoder, count_parameters
from ecg_transfer.models.weights import encoder_model_card, preprocessing_card
from ecg_transfer.runs import COSMETIC, fingerprint, result_settings, run_record
from ecg_transfer.signals.leads import shown_channel
from ecg_transfer.study.figures import reconstruction_figure
from ecg_transfer.tracking import epoch_logger
from ecg_transfer.training.checkpoints import run_once
from ecg_transfer.training.engine import TrainConfig, fit, predict
from ecg_transfer.training.launcher import LaunchConfig, StoreSplit, fit_distributed
from ecg_transfer.training.pretext_methods import PretextMethod, methods_from_params
from ecg_transfer.training.tasks import ReconstructionTask
from ecg_transfer.typed_config import config_from_params

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainingSettings:
    """What the pretraining nodes read of ``params:pretraining``, typed once by
    :func:`~ecg_transfer.typed_config.config_from_params`: the CAE, its training, how it is
    launched and the progress bar. ``training.nproc`` (processes) and the optional
    ``distributed:`` block (:class:`LaunchConfig`) change how, not what, is trained, and
    ``progress`` only draws a bar: none of them is in a run key, so a run may resume with
    another process count or without its bar. ``methods`` is read by
    :func:`~ecg_transfer.training.pretext_methods.methods_from_params`."""

    cae: CaeConfig
    training: TrainConfig
    launch: LaunchConfig = field(default_factory=LaunchConfig, metadata=COSMETIC)
    progress: bool = field(default=True, metadata=COSMETIC)

    @classmethod
    def from_params(cls, pretraining: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
                    ) -> PretrainingSettings:
        """``overrides``: a pretext method's own training settings, over ``training``'s."""
        training = {k: v for k, v in (pretraining.get("training") or {}).items() if k != "nproc"}
        typed = config_from_params(
            cls, {"cae": pretraining.get("cae"), "training": {**training, **(overrides or {})},
                  **({"progress": pretraining["progress"]} if "progress" in pretraining else {})}, "pretraining",
        )
        nproc = (pretraining.get("training") or {}).get("nproc", 1)
        return replace(typed, launch=LaunchConfig.from_params(nproc, pretraining.get("distributed")))


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
    settings = PretrainingSettings.from_params(pretraining)
    train_config, launch, progress = settings.training, settings.launch, settings.progress
    cfg = CaeConfig.for_windows(pretraining["cae"], unlabelled_windows)  # in_channels: the corpus's leads
    train = unlabelled_windows.split_view("train")
    test = unlabelled_windows.split_view("test")
    model = _autoencoder(cfg, train_config.seed)
    # The key hashes what changes the CAE's weights, as the configs mark it (ecg_transfer.runs):
    # not the progress bar, the thread count or the process count.
    keyed = {"cae": result_settings(cfg), "training": result_settings(train_config)}
    key = "pretraining/cae/" + fingerprint(
        keyed, unlabelled_windows.meta, unlabelled_windows.index[["record_id", "split"]].to_numpy()
    )
    params = {
        **{f"cae.{k}": v for k, v in pretraining["cae"].items()},
        **{f"train.{k}": v for k, v in pretraining["training"].items()},
        "n_train": int(train.shape[0]), "n_test": int(test.shape[0]), "n_parameters": count_parameters(model),
    }
    tags = {"stage": "pretraining", "arm": "cae"}
    if launch.distributed:  # DDP over nproc processes (docs/models_and_training.md)
        splits = {name: StoreSplit(str(unlabelled_windows.path), name) for name in ("train", "test")}
        result = fit_distributed(model, ReconstructionTask(), splits["train"], {"test": splits["test"]},
                                 train_config, launch, checkpoints=run_checkpoints, run_key=key, progress=progress)
        outcome = "reused"
    else:
        # Claimed like the arms' runs: of two workers on one folder, one trains the CAE and
        # the other waits for its result (checkpoints.run_once).
        result, outcome = _train_once(model, train, test, train_config, run_checkpoints, run_tracker, key, progress,
                                      (params, tags))
    history = result.history
    reconstruction = _reconstruction(result)
    if outcome == "reused":  # finished earlier: logged whole; a run another worker trained is its log's
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


def _train_once(model, train, test, train_config: TrainConfig, run_checkpoints, run_tracker, key: str,
                progress: bool, identity: tuple[dict, dict]):
    """The CAE's run, trained by one worker only: ``(result, outcome)``, the outcome "trained"
    (here, with its MLflow child run fed every epoch), "reused" (finished before this call) or
    "collected" (another worker trained it while this one waited)."""
    params, tags = identity
    done_before = run_checkpoints is not None and run_checkpoints.is_done(key)
    arguments = (model, ReconstructionTask(), train, None, {"test": (test, None)}, train_config)

    def train_it(_index: int):
        if run_checkpoints is not None and run_checkpoints.is_done(key):
            result = fit(*arguments, checkpoints=run_checkpoints, run_key=key, progress=progress)
            return result, "reused" if done_before else "collected"
        with run_tracker.start("cae-pretraining", params, tags) as run:
            result = fit(*arguments, checkpoints=run_checkpoints, run_key=key, progress=progress,
                         on_epoch_end=epoch_logger(run))
            run.finish(_reconstruction(result), params={"device": result.device})
        return result, "trained"

    return run_once(run_checkpoints, [key], train_it)[0]


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
    settings = PretrainingSettings.from_params(pretraining)
    model = ConvAutoencoder(CaeConfig.for_windows(pretraining["cae"], unlabelled_windows))
    model.load_state_dict(cae_weights)
    test_rows = unlabelled_windows.split_indices("test")
    rng = np.random.default_rng(settings.training.seed)
    chosen = np.sort(rng.choice(test_rows, size=min(4, test_rows.size), replace=False))
    originals = unlabelled_windows.take(chosen)
    reconstructions = predict(model, originals, device="cpu")
    if originals.ndim == 3:  # windows of several leads: the figure shows lead II, else the first
        channel = shown_channel(unlabelled_windows.meta.get("leads", []))
        originals, reconstructions = originals[:, channel], np.asarray(reconstructions)[:, channel]
    return reconstruction_figure(originals, reconstructions, fs=float(preprocessing["signal"]["target_fs"]))


def pretrain_pretext_encoder(
    method_name: str, unlabelled_windows, run_checkpoints, run_tracker, pretraining: dict[str, Any],
    preprocessing: dict[str, Any],
) -> tuple[dict, pd.DataFrame, dict]:
    """Train the CAE's encoder with method ``method_name`` of ``pretraining.methods`` (not the
    ``reconstruct`` one: that is :func:`pretrain_autoencoder`). Returns its ``{"weights",
    "card"}`` (saved, and logged as an MLflow model) and its history. The run is checkpointed
    and resumes; its MLflow child run is ``<method>-pretraining``. With ``training.nproc`` > 1
    (or ``distributed.launch: external``) it trains under DDP as the CAE does, and its MLflow
    run is logged whole when the workers are done."""
    methods = methods_from_params(pretraining.get("methods"))
    if method_name not in methods or methods[method_name].task == "reconstruct":
        known = sorted(name for name, method in methods.items() if method.task != "reconstruct")
        raise ValueError(
            f"pretraining.methods: the pipeline was built for pretext method {method_name!r}, but this run's "
            f"pretraining.methods has {known} besides the CAE. Methods shape the pipeline: set them in "
            "conf/base or conf/local, or in an environment (--env), not with --params."
        )
    encoder, history = _pretrain_method(
        methods[method_name], unlabelled_windows, run_checkpoints, run_tracker, pretraining, preprocessing
    )
    history = history.assign(method=method_name)
    return encoder, history[["method"] + [c for c in history.columns if c != "method"]], encoder


def pretext_trainer(method_name: str):
    """The node function of one pretext method, bound to its name and named for kedro-viz."""
    bound = update_wrapper(partial(pretrain_pretext_encoder, method_name), pretrain_pretext_encoder)
    bound.__name__ = bound.__qualname__ = "pretrain_pretext_encoder"
    bound.__doc__ = f"Pretrain the encoder with pretext method `{method_name}` (pretraining.methods)."
    return bound


def _pretrain_method(method: PretextMethod, unlabelled_windows, run_checkpoints, run_tracker,
                     pretraining: dict[str, Any], preprocessing: dict[str, Any]) -> tuple[dict, pd.DataFrame]:
    """One method's run (as the CAE's: same encoder, corpus splits and training settings, with
    the method's overrides) and its encoder with a card naming the method and its options."""
    settings = PretrainingSettings.from_params(pretraining, method.training)
    train_config = settings.training
    cfg = CaeConfig.for_windows(pretraining["cae"], unlabelled_windows)  # in_channels: the corpus's leads
    fs = float(preprocessing["signal"]["target_fs"])
    training = {**{k: v for k, v in pretraining["training"].items() if k != "nproc"}, **method.training}
    index = unlabelled_windows.index
    splits = {name: unlabelled_windows.split_indices(name) for name in ("train", "test")}
    with torch.random.fork_rng():
        torch.manual_seed(train_config.seed)
        model = method.build(cfg, fs)
    # As the CAE's key: what changes the weights, as the configs mark it (not the progress bar,
    # the thread count or the process count), the method with its options, and the corpus.
    # A same_record key also says that a record's windows are no negatives of each other: runs
    # from before that fix (their own window among the negatives) are not reused.
    key = f"pretraining/{method.name}/" + fingerprint(
        method.describe(), result_settings(cfg), result_settings(train_config), fs, unlabelled_windows.meta,
        index[["record_id", "split"]].to_numpy(), *(["negatives: other records"] if method.paired else []),
    )
    params = {"method": method.name, "task": method.task, **{f"option.{k}": v for k, v in method.options.items()},
              **{f"train.{k}": v for k, v in training.items()}, "n_train": int(splits["train"].size),
              "n_test": int(splits["test"].size), "n_parameters": count_parameters(model)}
    result = _run_method(method, model, (cfg, fs), unlabelled_windows, settings, run_checkpoints, run_tracker, key,
                         (params, {"stage": "pretraining", "arm": method.name}))
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


def _run_method(method: PretextMethod, model, architecture: tuple[CaeConfig, float], unlabelled_windows,
                settings: PretrainingSettings, run_checkpoints, run_tracker, key: str, identity: tuple[dict, dict]):
    """Fit ``model`` with the method's task: reused when done, under DDP when the launch says so
    (its MLflow run logged whole afterwards, as the CAE's), else here with a live MLflow run.
    The held-out split's pairs (``same_record``) come from their own seed, never the training
    pairs': seed + 0 for train, seed + 1 for test, in either path."""
    params, tags = identity
    train_config, launch, progress = settings.training, settings.launch, settings.progress
    task, run_name = method.task_strategy(), f"{method.name}-pretraining"
    seeds = {"train": train_config.seed, "test": train_config.seed + 1}
    if method.paired:
        _warn_single_record_splits(method, unlabelled_windows, list(seeds))
    if launch.distributed:
        splits = {name: StoreSplit(str(unlabelled_windows.path), name, seed if method.paired else None)
                  for name, seed in seeds.items()}
        result = fit_distributed(model, task, splits["train"], {"test": splits["test"]}, train_config, launch,
                                 checkpoints=run_checkpoints, run_key=key, progress=progress,
                                 model_spec=method.model_spec(*architecture))
        run_tracker.log_record(run_record(run_name, {**params, "device": result.device}, tags, result.history,
                                          _held_out(result)))
        return result
    records = unlabelled_windows.index["record_id"].to_numpy()
    inputs = {name: method.inputs(unlabelled_windows.split_view(name),
                                  records[unlabelled_windows.split_indices(name)], seed)
              for name, seed in seeds.items()}
    arguments = (model, task, *inputs["train"], {"test": inputs["test"]}, train_config)
    if run_checkpoints is not None and run_checkpoints.is_done(key):
        result = fit(*arguments, checkpoints=run_checkpoints, run_key=key, progress=progress)
        run_tracker.log_record(run_record(run_name, {**params, "device": result.device}, tags, result.history,
                                          _held_out(result)))
        return result
    with run_tracker.start(run_name, params, tags) as run:
        result = fit(*arguments, checkpoints=run_checkpoints, run_key=key, progress=progress,
                     on_epoch_end=epoch_logger(run))
        run.finish(_held_out(result), params={"device": result.device})
    return result


def _warn_single_record_splits(method: PretextMethod, unlabelled_windows, splits: list[str]) -> None:
    """A same_record split of one record has no negatives (a record's windows are none of each
    other's): its loss is 0 at every epoch, so it can neither train nor choose an epoch."""
    records = unlabelled_windows.index["record_id"].to_numpy()
    for name in splits:
        n_records = np.unique(records[unlabelled_windows.split_indices(name)]).size
        if n_records < 2:
            logger.warning(
                "pretraining.methods.%s: the corpus's %s split holds %d record(s); with positives: same_record "
                "its windows have no negatives (other records), so its loss is 0 and means nothing. Use a corpus "
                "with more records (preprocessing.unlabelled_splits) or another method.", method.name, name, n_records,
            )


def _held_out(result) -> dict[str, float]:
    """The pretext loss on the held-out split at the kept epoch."""
    history = result.history
    best = history[(history["split"] == "test") & (history["epoch"] == result.best_epoch)].iloc[0]
    return {"test_loss": float(best["loss"]), "best_epoch": int(result.best_epoch)}
