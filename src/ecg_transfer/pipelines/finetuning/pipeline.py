"""Fine-tuning: bootstrap samples, then one namespace per encoder arm (kedro-viz shows each)."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import draw_bootstrap_samples, encoder_arm_trainer

_SHARED = ["labelled_windows", "bootstrap_samples", "run_checkpoints", "params:pretraining", "params:finetuning"]
_ENCODER = ["pretrained_encoder_weights", "pretrained_encoder_card"]


def create_pipeline(**kwargs) -> Pipeline:
    nodes = [
        node(draw_bootstrap_samples, ["labelled_windows", "params:study"], "bootstrap_samples",
             name="draw_bootstrap_samples"),
    ]
    for arm in ("random", "transfer", "transfer_frozen"):
        inputs = _SHARED + (_ENCODER if arm != "random" else [])
        nodes.append(
            node(encoder_arm_trainer(arm), inputs,
                 [f"{arm}_training_histories", f"{arm}_mlflow_runs"],
                 name=f"train_{arm}_arm", namespace=arm)
        )
    return pipeline(nodes, tags=["finetuning"])
