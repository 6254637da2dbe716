"""The image-transfer arm, in its own namespace like the encoder arms."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import extract_spectrogram_features, plot_spectrogram_examples, train_image_arm


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(extract_spectrogram_features, ["labelled_windows", "params:image_transfer"],
                 "image_spectrogram_features", name="extract_spectrogram_features", namespace="image"),
            node(plot_spectrogram_examples, ["labelled_windows", "params:image_transfer"],
                 "image_spectrogram_examples_figure", name="plot_spectrogram_examples", namespace="image"),
            node(train_image_arm,
                 ["image_spectrogram_features", "labelled_windows", "bootstrap_samples", "run_checkpoints",
                  "params:image_transfer", "params:finetuning"],
                 ["image_training_histories", "image_mlflow_runs"], name="train_image_arm", namespace="image"),
        ],
        tags=["image_transfer"],
    )
