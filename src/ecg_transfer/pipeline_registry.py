"""The project's pipelines, composed here so the study's shape reads in one place.

- one pipeline per stage: ``bundled_data``, ``ingestion``, ``preprocessing``, ``pretraining``,
  ``image_transfer`` (spectrogram features), ``finetuning`` (every arm, one namespace each),
  ``statistics``;
- ``study``: every stage the arms need but the bundled data, for real data (the CAE's
  pretraining only when an arm starts from its encoder, a pretext method's only when an arm
  names it, spectrogram features only for a spectrogram arm: pipelines/finetuning/input_kinds.py);
- ``starvation`` (also ``__default__``): the bundled data plus the study.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from ecg_transfer.pipelines import (
    bundled_data,
    finetuning,
    image_transfer,
    ingestion,
    preprocessing,
    pretraining,
    statistics,
)
from ecg_transfer.pipelines.configured_arms import configured_arms
from ecg_transfer.pipelines.finetuning.input_kinds import (
    IMAGE_FEATURES,
    PRETRAINING,
    pretext_methods_needed,
    stages_needed,
)

# Stages a study runs only when one of its arms needs them.
_OPTIONAL_STAGES = (PRETRAINING, IMAGE_FEATURES)


def register_pipelines() -> dict[str, Pipeline]:
    arms = configured_arms()
    stages = {
        "bundled_data": bundled_data.create_pipeline(),
        "ingestion": ingestion.create_pipeline(),
        "preprocessing": preprocessing.create_pipeline(),
        "pretraining": pretraining.create_pipeline(),
        "image_transfer": image_transfer.create_pipeline(),
        "finetuning": finetuning.create_pipeline(arms=arms),
        "statistics": statistics.create_pipeline(arms=arms),
    }
    needed = stages_needed(arms)
    # The study pretrains what its arms name: the CAE if an arm starts from it, and each pretext
    # method an arm names (`kedro run --pipeline=pretraining` trains every configured one).
    methods = pretext_methods_needed(needed)
    in_study = {**stages, "pretraining": pretraining.create_pipeline(methods=methods, cae=PRETRAINING in needed)}
    study = sum(
        (pipeline for name, pipeline in in_study.items()
         if name != "bundled_data" and (name not in _OPTIONAL_STAGES or name in needed or name == PRETRAINING)
         and pipeline.nodes),
        Pipeline([]),
    )
    starvation = stages["bundled_data"] + study
    return {**stages, "study": study, "starvation": starvation, "__default__": starvation}
