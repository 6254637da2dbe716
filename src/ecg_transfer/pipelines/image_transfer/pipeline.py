"""The image-transfer baseline's features: spectrograms through the frozen ImageNet CNN, once
for every spectrogram arm (their heads train in ``finetuning``)."""

from kedro.pipeline import Pipeline, node

from .nodes import extract_spectrogram_features, plot_spectrogram_examples


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(extract_spectrogram_features, ["labelled_windows", "params:image_transfer"],
                 "image_spectrogram_features", name="extract_spectrogram_features"),
            node(plot_spectrogram_examples, ["labelled_windows", "label_classes", "params:image_transfer"],
                 "image_spectrogram_examples_figure", name="plot_spectrogram_examples"),
        ],
        tags=["image_transfer"],
    )
