"""Fine-tuning: the shared bootstrap samples, then one template pipeline per arm, each in its
own namespace (kedro-viz shows one collapsible box per arm; ``kedro run --namespaces=<arm>``
runs one arm). The arms come from ``study.arms`` (see configured_arms.py); what each arm's node
reads besides the shared data is its input kind's (input_kinds.py)."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from ecg_transfer.pipelines.configured_arms import configured_arms
from ecg_transfer.study.arms import ArmRegistry, ArmSpec

from .input_kinds import input_kind
from .nodes import arm_trainer, draw_bootstrap_samples

ARM_OUTPUTS = ["training_histories", "run_predictions", "arm_settings"]
# Node argument -> catalog entry, for what every arm reads.
_SHARED = {
    "labelled_windows": "labelled_windows", "label_classes": "label_classes",
    "bootstrap_samples": "bootstrap_samples", "run_checkpoints": "run_checkpoints", "run_tracker": "run_tracker",
    "study": "params:study", "finetuning": "params:finetuning",
}


def arm_inputs(spec: ArmSpec) -> dict[str, str]:
    """What an arm's node reads: the shared data, and what its input kind needs besides."""
    return {**_SHARED, **input_kind(spec).inputs(spec)}


def arm_pipeline(spec: ArmSpec) -> Pipeline:
    """The template (one node, outputs named for what they hold) put in the arm's namespace:
    its outputs become ``<arm>.training_histories`` etc., its inputs stay shared."""
    inputs = arm_inputs(spec)
    template = Pipeline([node(arm_trainer(spec), inputs, ARM_OUTPUTS, name="train_arm")])
    return Pipeline(
        template,
        namespace=spec.name,
        inputs={name for name in inputs.values() if not name.startswith("params:")},
        parameters={name for name in inputs.values() if name.startswith("params:")},
        tags=["finetuning", f"arm_{spec.name}"],
    )


def create_pipeline(arms: ArmRegistry | None = None, **kwargs) -> Pipeline:
    arms = arms if arms is not None else configured_arms()
    bootstrap = Pipeline(
        [node(draw_bootstrap_samples, ["labelled_windows", "params:study"], "bootstrap_samples",
              name="draw_bootstrap_samples")],
        tags=["finetuning"],
    )
    return bootstrap + sum((arm_pipeline(spec) for spec in arms), Pipeline([]))
