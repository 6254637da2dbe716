"""Preprocessing: splits by patient, then windows streamed to memory-mappable stores."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import (
    assign_labelled_splits,
    assign_unlabelled_splits,
    window_labelled_records,
    window_unlabelled_records,
)


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(assign_labelled_splits, ["labelled_manifest", "params:preprocessing"],
                 "labelled_splits", name="assign_labelled_splits"),
            node(assign_unlabelled_splits, ["unlabelled_manifest", "params:preprocessing"],
                 "unlabelled_splits", name="assign_unlabelled_splits"),
            node(window_labelled_records, ["chapman_release", "labelled_splits", "params:preprocessing"],
                 "labelled_windows", name="window_labelled_records"),
            node(window_unlabelled_records, ["monitor_corpus", "unlabelled_splits", "params:preprocessing"],
                 "pretraining_windows", name="window_unlabelled_records"),
        ]
    )
