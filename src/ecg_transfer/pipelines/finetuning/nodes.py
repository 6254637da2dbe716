"""Fine-tuning: the bootstrap samples every arm shares, and one node per arm that trains it at
every fraction and trial with the one engine (study/experiment.py)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial, update_wrapper
from typing import Any

import numpy as np
import pandas as pd

from ecg_transfer.models.cae import CaeConfig
from ecg_transfer.models.classifier import build_classifier, build_feature_classifier
from ecg_transfer.models.weights import (
    check_card_inputs,
    check_pretrained_encoder,
    preprocessing_card,
)
from ecg_transfer.pipelines.configured_arms import check_arm_unchanged
from ecg_transfer.study.arms import ArmSpec
from ecg_transfer.study.bootstrap import draw_all_samples
from ecg_transfer.study.experiment import (
    FinetuningConfig,
    HeadConfig,
    arm_settings,
    bootstrap_fingerprint,
    fingerprint,
    labelled_arm_data,
    labelled_fingerprint,
    run_arm,
)

ArmOutputs = tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]


def draw_bootstrap_samples(labelled_windows, study: dict[str, Any]) -> pd.DataFrame:
    """Every (fraction, trial) sample of the training split, drawn once for all arms; the patient
    is the unit: a drawn patient brings all their records and windows (study/bootstrap.py)."""
    train = labelled_windows.split_indices("train")
    index = labelled_windows.index
    return draw_all_samples(
        index["label"].to_numpy(dtype=object)[train], study["fractions"], int(study["n_trials"]),
        int(study["base_seed"]), records=index["record_id"].to_numpy(dtype=object)[train],
        patients=index["patient_id"].to_numpy(dtype=object)[train],
    )


def _train_window_arm(
    spec: ArmSpec,
    labelled_windows,
    label_classes: list[str],
    bootstrap_samples: pd.DataFrame,
    run_checkpoints,
    run_tracker,
    study: dict[str, Any],
    finetuning: dict[str, Any],
    pretraining: dict[str, Any],
    preprocessing: dict[str, Any],
    pretrained_encoder: dict[str, Any] | None = None,
) -> ArmOutputs:
    check_arm_unchanged(spec, study)
    config = FinetuningConfig.from_params(finetuning)
    cae = CaeConfig.from_dict(pretraining["cae"])
    state, card = None, None
    if spec.uses_encoder:
        card = pretrained_encoder["card"]
        source = f"arm {spec.name}: the pretrained encoder"
        state = check_pretrained_encoder(pretrained_encoder["weights"], card, cae, source=source)
        expected = preprocessing_card(
            preprocessing["signal"]["target_fs"], cae.window_length, labelled_windows.index["lead"].unique()
        )
        check_card_inputs(card, expected, source)

    def make_model(seed: int):
        return build_classifier(
            cae, len(label_classes), seed, init=spec.init, freeze=spec.freeze, encoder_state=state,
            head_hidden=config.head.hidden, dropout=config.head.dropout, init_scheme=spec.init_scheme,
        )

    # The card's date and torch version say when, not what: a re-published, identical encoder
    # keeps the finished runs.
    encoder_fingerprint = (
        fingerprint(state, {k: v for k, v in card.items() if k not in ("date", "torch_version")})
        if state is not None else None
    )
    # A frozen encoder's head standardises the code per bootstrap sample (FrozenEncoderClassifier).
    scaling = "code scaling: per bootstrap sample" if spec.freeze else None
    data_fingerprint = fingerprint(
        spec.init, spec.freeze, spec.init_scheme, scaling, pretraining["cae"], finetuning, label_classes, encoder_fingerprint,
        labelled_fingerprint(labelled_windows), bootstrap_fingerprint(bootstrap_samples),
    )
    data = labelled_arm_data(labelled_windows, label_classes)
    return _run(spec, make_model, data, labelled_windows, label_classes, bootstrap_samples, run_checkpoints,
                run_tracker, study, config, encoder_fingerprint, data_fingerprint)


def _train_spectrogram_arm(
    spec: ArmSpec,
    labelled_windows,
    label_classes: list[str],
    bootstrap_samples: pd.DataFrame,
    run_checkpoints,
    run_tracker,
    study: dict[str, Any],
    finetuning: dict[str, Any],
    image_spectrogram_features: pd.DataFrame,
    image_transfer: dict[str, Any],
) -> ArmOutputs:
    check_arm_unchanged(spec, study)
    config = FinetuningConfig.from_params(finetuning)
    head = HeadConfig.from_params(image_transfer["head"])
    record_ids = labelled_windows.index["record_id"].to_numpy()
    features = image_spectrogram_features.set_index("record_id")
    missing = set(record_ids) - set(features.index)
    if missing:
        raise ValueError(
            f"image features lack {len(missing)} labelled records (e.g. {sorted(missing)[:3]}): "
            "the cached features are stale; delete data/04_feature/spectrogram_features.parquet"
        )
    matrix = features.loc[record_ids].to_numpy(dtype=np.float32)
    # Raw CNN features: each run's head standardises them with its own bootstrap sample's mean
    # and SD (ScaledFeatureClassifier), never with records it does not train on.
    data = labelled_arm_data(labelled_windows, label_classes, inputs=matrix)

    def make_model(seed: int):
        return build_feature_classifier(matrix.shape[1], len(label_classes), seed, head.hidden, head.dropout)

    data_fingerprint = fingerprint(
        "input scaling: per bootstrap sample", image_transfer, finetuning["training"], label_classes, matrix,
        config.class_weighting,
        labelled_fingerprint(labelled_windows), bootstrap_fingerprint(bootstrap_samples),
    )
    return _run(spec, make_model, data, labelled_windows, label_classes, bootstrap_samples, run_checkpoints,
                run_tracker, study, config, None, data_fingerprint)


def _run(spec, make_model, data, labelled_windows, label_classes, bootstrap_samples, run_checkpoints,
         run_tracker, study, config: FinetuningConfig, encoder_fingerprint, data_fingerprint) -> ArmOutputs:
    runs = run_arm(
        spec.name, make_model, data, bootstrap_samples, config.training, label_classes, run_checkpoints,
        data_fingerprint, progress=config.progress, batch_trials=study.get("batch_trials", "auto"), tracker=run_tracker,
        class_weights=config.class_weights(data.train_y, len(label_classes)),
    )
    settings = arm_settings(
        spec, study, config.training, label_classes, bootstrap_samples, labelled_windows,
        encoder_fingerprint, data_fingerprint,
    )
    return runs.histories, runs.predictions, settings


def arm_trainer(spec: ArmSpec) -> Callable[..., ArmOutputs]:
    """The node function of one arm, bound to its spec and named for kedro-viz."""
    trainer = _train_window_arm if spec.input == "window" else _train_spectrogram_arm
    bound = update_wrapper(partial(trainer, spec), trainer)
    bound.__name__ = bound.__qualname__ = f"train_{spec.input}_arm"
    bound.__doc__ = (
        f"Train arm `{spec.name}` ({spec.label}: init {spec.init}, "
        f"{'frozen' if spec.freeze else 'fine-tuned'}, reads {spec.input}s) at every fraction and trial."
    )
    return bound
