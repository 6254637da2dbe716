"""What an arm reads, as a small registry: one :class:`InputKind` per ``input`` of ``study.arms``.

A kind says what the arm's node needs from the catalog besides what every arm reads, which
stages must run before it, and how its data, its models and its run key are made
(:meth:`InputKind.prepare`). The node (nodes.py) and the pipelines (finetuning, statistics, the
registry) read only this table, so a new kind of input is one entry here, and a study whose
arms do not need a stage does not run it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ecg_transfer.models.cae import CaeConfig
from ecg_transfer.models.classifier import build_classifier, build_feature_classifier
from ecg_transfer.models.weights import (
    CARD_DEFAULTS,
    check_card_inputs,
    check_pretrained_encoder,
    preprocessing_card,
)
from ecg_transfer.pipelines.image_transfer.nodes import ImageTransferConfig
from ecg_transfer.runs import fingerprint, result_settings
from ecg_transfer.study.arms import ArmSpec, check_arm_methods
from ecg_transfer.study.experiment import ArmData, FinetuningConfig, ModelRecipe, labelled_arm_data
from ecg_transfer.training.pretext_methods import methods_from_params

# Stages a kind may need before its arms train (names of pipeline_registry's stages).
PRETRAINING = "pretraining"
IMAGE_FEATURES = "image_transfer"
# A pretext method's pretraining (its node in pipelines/pretraining): "pretext:<method>".
PRETEXT_STAGE = "pretext:"


def pretext_stage(method_name: str) -> str:
    return PRETEXT_STAGE + method_name


def pretext_methods_needed(stages: Iterable[str]) -> list[str]:
    """The pretext methods whose pretraining ``stages`` include, sorted."""
    return sorted(stage[len(PRETEXT_STAGE):] for stage in stages if stage.startswith(PRETEXT_STAGE))

# What of an encoder card changes a run's numbers besides the weights: the architecture and the
# inputs it was made for. Where and when it was made (the corpus's path, the date, the torch
# version, the pretraining's progress bar or thread count) does not, so a moved project folder
# or a re-published identical encoder keeps the finished runs.
ENCODER_RESULT_FIELDS = ("architecture", "window_length", "sampling_rate_hz", "normalisation", "lead")


@dataclass(frozen=True)
class PreparedArm:
    """An arm ready for :func:`~ecg_transfer.study.experiment.run_arm`: its data, how its models
    are made, what its run key hashes (``key_parts``), and the result-changing settings of each
    parameter group it read (compared across arms by the statistics)."""

    data: ArmData
    recipe: ModelRecipe
    key_parts: tuple[Any, ...]
    parameters: dict[str, dict[str, Any]]
    encoder_fingerprint: str | None = None


@dataclass(frozen=True)
class InputKind:
    """One kind of arm input. ``inputs(spec)``: node argument -> catalog entry, besides the
    shared ones; ``stages(spec)``: the stages that must run first; ``prepare(spec, labelled_windows,
    classes, finetuning, **inputs)``: the :class:`PreparedArm`."""

    name: str
    inputs: Callable[[ArmSpec], dict[str, str]]
    stages: Callable[[ArmSpec], frozenset[str]]
    prepare: Callable[..., PreparedArm]


def encoder_fingerprint(state: Mapping[str, Any], card: Mapping[str, Any]) -> str:
    """The encoder as far as results go: its weights and the card's :data:`ENCODER_RESULT_FIELDS`."""
    return fingerprint(state, {key: card.get(key, CARD_DEFAULTS.get(key)) for key in ENCODER_RESULT_FIELDS})


def _window_inputs(spec: ArmSpec) -> dict[str, str]:
    """The CAE's encoder is ``pretrained_encoder@finetuning`` (the study's own or one given on
    the command line); a method's is ``<method>.pretext_encoder``, written by its pretraining."""
    inputs = {"pretraining": "params:pretraining"}
    if spec.uses_encoder:
        encoder = f"{spec.pretext_method}.pretext_encoder" if spec.pretext_method else "pretrained_encoder@finetuning"
        inputs.update(preprocessing="params:preprocessing", pretrained_encoder=encoder)
    return inputs


def _window_stages(spec: ArmSpec) -> frozenset[str]:
    if not spec.uses_encoder:
        return frozenset()
    return frozenset({pretext_stage(spec.pretext_method) if spec.pretext_method else PRETRAINING})


def _checked_encoder(spec, cae: CaeConfig, labelled_windows, preprocessing, pretrained_encoder):
    """The encoder's weights after checking them and its card against the architecture and data."""
    card = pretrained_encoder["card"]
    source = (f"arm {spec.name}: the encoder of pretraining method {spec.pretext_method!r}" if spec.pretext_method
              else f"arm {spec.name}: the pretrained encoder")
    state = check_pretrained_encoder(pretrained_encoder["weights"], card, cae, source=source)
    expected = preprocessing_card(
        preprocessing["signal"]["target_fs"], cae.window_length, labelled_windows.index["lead"].unique()
    )
    check_card_inputs(card, expected, source)
    return state, encoder_fingerprint(state, card)


def _prepare_window(spec: ArmSpec, labelled_windows, classes, finetuning: FinetuningConfig, pretraining,
                    preprocessing=None, pretrained_encoder=None) -> PreparedArm:
    cae = CaeConfig.for_windows(pretraining["cae"], labelled_windows)
    check_arm_methods([spec], methods_from_params(pretraining.get("methods")))
    if not isinstance(spec.freeze, bool) and spec.freeze > cae.n_blocks:
        raise ValueError(
            f"study.arms.{spec.name}.freeze: {spec.freeze} residual blocks, but the encoder "
            f"(pretraining.cae.n_blocks) has {cae.n_blocks}"
        )
    state, encoder = (None, None)
    if spec.uses_encoder:
        state, encoder = _checked_encoder(spec, cae, labelled_windows, preprocessing, pretrained_encoder)
    head = finetuning.head.for_arm(spec)

    def build(seed: int):
        init = "pretrained" if spec.uses_encoder else "random"  # from `state`, the CAE's or a method's
        return build_classifier(cae, len(classes), seed, init=init, freeze=spec.freeze, encoder_state=state,
                                head_hidden=head.hidden, dropout=head.dropout, init_scheme=spec.init_scheme)

    parameters = {"finetuning.head": result_settings(finetuning.head), "pretraining.cae": result_settings(cae)}
    # A frozen encoder's head standardises the code with the run's own bootstrap sample's mean and
    # SD (FrozenEncoderClassifier), never with records it does not train on.
    frozen = spec.freeze is True
    return PreparedArm(
        data=labelled_arm_data(labelled_windows, classes),
        recipe=ModelRecipe(build, fit_to_sample=_fit_code_scaling if frozen else None),
        key_parts=(spec.result_spec(), parameters, encoder, "code scaling: per bootstrap sample" if frozen else None),
        parameters=parameters,
        encoder_fingerprint=encoder,
    )


def _fit_code_scaling(model, rows: np.ndarray) -> None:
    model.fit_input_scaling(rows)


def _prepare_spectrogram(spec: ArmSpec, labelled_windows, classes, finetuning: FinetuningConfig,
                         image_spectrogram_features: pd.DataFrame, image_transfer) -> PreparedArm:
    configured = ImageTransferConfig.from_params(image_transfer).head
    head = configured.for_arm(spec)
    record_ids = labelled_windows.index["record_id"].to_numpy()
    features = image_spectrogram_features.set_index("record_id")
    missing = set(record_ids) - set(features.index)
    if missing:
        raise ValueError(
            f"image features lack {len(missing)} labelled records (e.g. {sorted(missing)[:3]}): "
            "the cached features are stale; delete data/04_feature/spectrogram_features.parquet"
        )
    matrix = features.loc[record_ids].to_numpy(dtype=np.float32)

    def build(seed: int):
        return build_feature_classifier(matrix.shape[1], len(classes), seed, head.hidden, head.dropout)

    parameters = {"image_transfer.head": result_settings(configured)}
    # Raw CNN features: each run's head standardises them with its own bootstrap sample's mean and
    # SD (ScaledFeatureClassifier), never with records it does not train on. The features are
    # content here, so how they were made (backbone, device, weights' path) needs no key of its own.
    return PreparedArm(
        data=labelled_arm_data(labelled_windows, classes, inputs=matrix),
        recipe=ModelRecipe(build, fit_to_sample=_fit_code_scaling),
        key_parts=("input scaling: per bootstrap sample", spec.result_spec(), parameters, matrix),
        parameters=parameters,
    )


INPUT_KINDS: dict[str, InputKind] = {
    "window": InputKind(
        name="window",
        inputs=_window_inputs,
        stages=_window_stages,
        prepare=_prepare_window,
    ),
    "spectrogram": InputKind(
        name="spectrogram",
        inputs=lambda spec: {"image_spectrogram_features": "image_spectrogram_features",
                             "image_transfer": "params:image_transfer"},
        stages=lambda spec: frozenset({IMAGE_FEATURES}),
        prepare=_prepare_spectrogram,
    ),
}


def input_kind(spec: ArmSpec) -> InputKind:
    return INPUT_KINDS[spec.input]


def stages_needed(arms: Iterable[ArmSpec]) -> frozenset[str]:
    """The optional stages the arms need (the CAE's pretraining, each named pretext method's,
    image features)."""
    return frozenset().union(*(input_kind(spec).stages(spec) for spec in arms))
