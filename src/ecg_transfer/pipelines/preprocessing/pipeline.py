"""Preprocessing: the class list, splits by patient, then windows streamed to memory-mappable stores;
and the report of what became of every record."""

from kedro.pipeline import Pipeline, node, pipeline

from ecg_transfer.pipelines.ingestion.nodes import report_ingestion

from .nodes import (
    assign_labelled_splits,
    assign_unlabelled_splits,
    decide_label_classes,
    find_labelled_overlap,
    tabulate_label_classes,
    window_labelled_records,
    window_unlabelled_records,
)


def create_pipeline(**kwargs) -> Pipeline:
    labelled = pipeline(
        [
            node(decide_label_classes, ["labelled_manifest", "params:preprocessing"],
                 ["label_classes", "labelled_class_exclusions"], name="decide_label_classes"),
            node(tabulate_label_classes, "label_classes", "label_class_table", name="tabulate_label_classes"),
            node(assign_labelled_splits, ["labelled_manifest", "labelled_class_exclusions", "params:preprocessing"],
                 "labelled_splits", name="assign_labelled_splits"),
            node(window_labelled_records,
                 ["labelled_recordings", "labelled_splits", "label_classes", "labelled_manifest",
                  "params:preprocessing"],
                 "labelled_windows", name="window_labelled_records"),
        ],
        tags=["labelled"],
    )
    unlabelled = pipeline(
        [
            node(find_labelled_overlap,
                 ["unlabelled_manifest", "labelled_manifest", "labelled_splits", "params:preprocessing"],
                 "unlabelled_overlap", name="find_labelled_overlap"),
            node(assign_unlabelled_splits, ["unlabelled_manifest", "unlabelled_overlap", "params:preprocessing"],
                 "unlabelled_splits", name="assign_unlabelled_splits"),
            node(window_unlabelled_records,
                 ["unlabelled_recordings", "unlabelled_splits", "unlabelled_manifest", "params:preprocessing"],
                 "unlabelled_windows", name="window_unlabelled_records"),
        ],
        tags=["unlabelled"],
    )
    # The report of what became of every record: ingestion's exclusions and the labelled
    # records preprocessing leaves out or pads, so it waits for decide_label_classes.
    report = pipeline(
        [
            node(report_ingestion,
                 ["labelled_manifest", "labelled_exclusions", "unlabelled_manifest",
                  "unlabelled_exclusions", "labelled_class_exclusions", "unlabelled_overlap"],
                 "ingestion_report", name="report_ingestion"),
        ],
    )
    return pipeline(labelled + unlabelled + report, tags=["preprocessing"])
