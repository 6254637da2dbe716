"""Fine-tuning: the bootstrap samples every arm shares, and the three encoder arms
(``random``, ``transfer``, ``transfer_frozen``) trained on them by the one engine."""

from __future__ import annotations

from functools import partial, update_wrapper
from typing import Any

import pandas as pd

from ecg_transfer.models.cae import CaeConfig
from ecg_transfer.models.classifier import build_classifier
from ecg_transfer.models.weights import check_pretrained_encoder
from ecg_transfer.signals.records import RHYTHMS
from ecg_transfer.study.bootstrap import draw_all_samples
from ecg_transfer.study.experiment import labelled_arm_data, labelled_run_fingerprint, run_arm


def draw_bootstrap_samples(labelled_windows, study: dict[str, Any]) -> pd.DataFrame:
    """Every (fraction, trial) sample of the training split, drawn once for all arms."""
    train = labelled_windows.split_indices("train")
    labels = labelled_windows.index["label"].to_numpy(dtype=object)[train]
    return draw_all_samples(labels, study["fractions"], int(study["n_trials"]), int(study["base_seed"]))


def _train_encoder_arm(
    arm: str,
    labelled_windows,
    bootstrap_samples: pd.DataFrame,
    run_checkpoints,
    pretraining: dict[str, Any],
    finetuning: dict[str, Any],
    encoder_weights: dict | None = None,
    encoder_card: dict | None = None,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    cfg = CaeConfig.from_dict(pretraining["cae"])
    state = None
    if arm != "random":
        state = check_pretrained_encoder(encoder_weights, encoder_card, cfg)
    head = finetuning["head"]

    def make_model(seed: int):
        return build_classifier(
            arm, cfg, state, n_classes=len(RHYTHMS), seed=seed,
            head_hidden=int(head["hidden"]), dropout=float(head["dropout"]),
        )

    data = labelled_arm_data(labelled_windows)
    data_fingerprint = labelled_run_fingerprint(
        labelled_windows, bootstrap_samples, pretraining["cae"], finetuning, state or {}, labelled_windows.meta
    )
    return run_arm(
        arm, make_model, data, bootstrap_samples, finetuning["training"], run_checkpoints,
        data_fingerprint, progress=bool(finetuning.get("progress", True)),
    )


def encoder_arm_trainer(arm: str):
    """The node function of one encoder arm: a named function, so kedro-viz shows which."""
    trainer = update_wrapper(partial(_train_encoder_arm, arm), _train_encoder_arm)
    trainer.__name__ = f"train_{arm}_arm"
    trainer.__qualname__ = trainer.__name__
    trainer.__doc__ = f"Train the `{arm}` classifier at every fraction and trial."
    return trainer



