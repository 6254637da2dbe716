"""Fine-tuning: the bootstrap samples every arm shares, and one node per arm that trains it at
every fraction and trial with the one engine (study/experiment.py). What differs between arms'
inputs is said by their input kind (input_kinds.py)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial, update_wrapper
from typing import Any

import pandas as pd

from ecg_transfer.pipelines.configured_arms import check_arm_unchanged
from ecg_transfer.runs import fingerprint
from ecg_transfer.study.arms import ArmSpec
from ecg_transfer.study.bootstrap import draw_all_samples
from ecg_transfer.study.experiment import (
    FinetuningConfig,
    StudyConfig,
    arm_settings,
    bootstrap_fingerprint,
    labelled_fingerprint,
    run_arm,
    training_settings,
)

from .input_kinds import input_kind

ArmOutputs = tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]


def draw_bootstrap_samples(labelled_windows, study: dict[str, Any]) -> pd.DataFrame:
    """Every (fraction, trial) sample of the training split, drawn once for all arms; the patient
    is the unit: a drawn patient brings all their records and windows (study/bootstrap.py). A
    multi-label store's samples hold a positive of every label."""
    config = StudyConfig.from_params(study)
    train = labelled_windows.split_indices("train")
    index = labelled_windows.index
    if labelled_windows.task == "multilabel":
        labels = labelled_windows.label_targets(labelled_windows.classes)[train]
    else:
        labels = index["label"].to_numpy(dtype=object)[train]
    return draw_all_samples(
        labels, config.fractions, config.n_trials,
        config.base_seed, records=index["record_id"].to_numpy(dtype=object)[train],
        patients=index["patient_id"].to_numpy(dtype=object)[train],
    )


def train_arm(
    spec: ArmSpec,
    labelled_windows,
    label_classes: list[str],
    bootstrap_samples: pd.DataFrame,
    run_checkpoints,
    run_tracker,
    study: dict[str, Any],
    finetuning: dict[str, Any],
    **kind_inputs: Any,
) -> ArmOutputs:
    """Train arm ``spec`` at every fraction and trial; ``kind_inputs`` are what its input kind
    reads from the catalog (input_kinds.py). The store's ``task`` decides the loss: one class
    per window (cross-entropy), or under ``preprocessing.task: multilabel`` a 0/1 target per
    label of ``label_classes`` (binary cross-entropy; study/experiment.py, ``arm_task``)."""
    check_arm_unchanged(spec, study)
    design = StudyConfig.from_params(study)
    config = FinetuningConfig.from_params(finetuning)
    prepared = input_kind(spec).prepare(spec, labelled_windows, label_classes, config, **kind_inputs)
    # The run key: what changes the arm's numbers, from the settings' marks (ecg_transfer.runs).
    parameters = {"finetuning.training": training_settings(config.training),
                  "finetuning.class_weighting": {"class_weighting": config.class_weighting},
                  "finetuning.windows_per_epoch": {"windows_per_epoch": config.windows_per_epoch},
                  **prepared.parameters}
    data_fingerprint = fingerprint(
        *prepared.key_parts, parameters, label_classes,
        labelled_fingerprint(labelled_windows), bootstrap_fingerprint(bootstrap_samples),
    )
    runs = run_arm(
        spec.name, prepared.recipe, prepared.data, bootstrap_samples, config.training, label_classes,
        run_checkpoints, data_fingerprint, progress=config.progress,
        batch_trials=design.batch_trials, tracker=run_tracker,
        class_weights=config.class_weights(prepared.data.train_y, label_classes, prepared.data.task),
        windows_per_epoch=config.windows_per_epoch,
    )
    settings = arm_settings(
        spec, design, config.training, label_classes, bootstrap_samples, labelled_windows,
        prepared.encoder_fingerprint, data_fingerprint, parameters,
    )
    return runs.histories, runs.predictions, settings


def arm_trainer(spec: ArmSpec) -> Callable[..., ArmOutputs]:
    """The node function of one arm, bound to its spec and named for kedro-viz."""
    bound = update_wrapper(partial(train_arm, spec), train_arm)
    bound.__name__ = bound.__qualname__ = f"train_{spec.input}_arm"
    frozen = "frozen" if spec.freeze is True else "fine-tuned" if spec.freeze is False else f"first {spec.freeze} blocks frozen"
    bound.__doc__ = (
        f"Train arm `{spec.name}` ({spec.label}: init {spec.init}, {frozen}, {spec.head} head, "
        f"reads {spec.input}s) at every fraction and trial."
    )
    return bound
