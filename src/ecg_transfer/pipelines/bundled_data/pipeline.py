"""The generation of the offline default data; leave it out when the catalog points at real
data (the `study` pipeline does)."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import simulate_labelled_release, simulate_unlabelled_corpus


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(simulate_labelled_release, "params:bundled_data", "labelled_recordings",
                 name="simulate_labelled_release"),
            node(simulate_unlabelled_corpus, "params:bundled_data", "unlabelled_recordings",
                 name="simulate_unlabelled_corpus"),
        ],
        tags=["bundled_data"],
    )


# The name other modules imported when these nodes lived with ingestion.
create_bundled_data_pipeline = create_pipeline
