"""CAE pretraining; its encoder (weights + model card) is what the transfer arms start from."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import plot_reconstructions, pretrain_autoencoder


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(pretrain_autoencoder, ["pretraining_windows", "run_checkpoints", "params:pretraining"],
                 ["cae_weights", "cae_history", "pretrained_encoder_weights", "pretrained_encoder_card",
                  "pretraining_mlflow_run"],
                 name="pretrain_autoencoder"),
            node(plot_reconstructions, ["pretraining_windows", "cae_weights", "params:pretraining"],
                 "cae_reconstruction_figure", name="plot_reconstructions"),
        ],
        tags=["pretraining"],
    )
