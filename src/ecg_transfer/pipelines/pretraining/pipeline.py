"""CAE pretraining; its encoder (weights + model card) is what the transfer arms start from. The
other methods of ``pretraining.methods`` (none by default) train the same encoder with another
pretext task (docs/pretext_tasks.md)."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import plot_reconstructions, pretrain_autoencoder, pretrain_pretext_encoders


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(pretrain_autoencoder,
                 ["unlabelled_windows", "run_checkpoints", "run_tracker", "params:pretraining",
                  "params:preprocessing"],
                 ["cae_weights", "cae_history", "pretrained_encoder@saved", "pretrained_encoder_model"],
                 name="pretrain_autoencoder"),
            node(plot_reconstructions,
                 ["unlabelled_windows", "cae_weights", "params:pretraining", "params:preprocessing"],
                 "cae_reconstruction_figure", name="plot_reconstructions"),
            node(pretrain_pretext_encoders,
                 ["unlabelled_windows", "run_checkpoints", "run_tracker", "params:pretraining",
                  "params:preprocessing"],
                 ["pretext_encoders", "pretext_histories"], name="pretrain_pretext_encoders"),
        ],
        tags=["pretraining"],
    )
