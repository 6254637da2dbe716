"""Ingestion: the scan of every source into manifests and exclusions.

The report counting them (``ingestion_report``) is made by the preprocessing pipeline, once
decide_label_classes has said which labelled records preprocessing leaves out too.
"""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import (
    check_labelled_records,
    check_unlabelled_records,
    scan_labelled_records,
    scan_unlabelled_records,
)


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(scan_labelled_records, ["labelled_recordings", "params:preprocessing"],
                 ["scanned_labelled_manifest", "labelled_exclusions"], name="scan_labelled_records"),
            node(check_labelled_records,
                 ["labelled_recordings", "scanned_labelled_manifest", "labelled_exclusions"],
                 "labelled_manifest", name="check_labelled_records"),
            node(scan_unlabelled_records,
                 ["unlabelled_recordings", "scanned_labelled_manifest", "params:preprocessing"],
                 ["scanned_unlabelled_manifest", "unlabelled_exclusions"], name="scan_unlabelled_records"),
            node(check_unlabelled_records,
                 ["unlabelled_recordings", "scanned_unlabelled_manifest", "unlabelled_exclusions"],
                 "unlabelled_manifest", name="check_unlabelled_records"),
        ],
        tags=["ingestion"],
    )
