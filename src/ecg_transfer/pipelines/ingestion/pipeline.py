"""Ingestion: bundled data generation (tag ``bundled_data``) and the scan of every source."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import (
    report_ingestion,
    scan_labelled_records,
    scan_unlabelled_records,
    simulate_labelled_release,
    simulate_unlabelled_corpus,
)


def create_bundled_data_pipeline(**kwargs) -> Pipeline:
    """Writes the offline default data; leave it out when the catalog points at real data."""
    return pipeline(
        [
            node(simulate_labelled_release, "params:bundled_data", "chapman_release",
                 name="simulate_labelled_release"),
            node(simulate_unlabelled_corpus, "params:bundled_data", "monitor_corpus",
                 name="simulate_unlabelled_corpus"),
        ],
        tags=["bundled_data"],
    )


def create_scan_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(scan_labelled_records, "chapman_release",
                 ["labelled_manifest", "labelled_exclusions"], name="scan_labelled_records"),
            node(scan_unlabelled_records, "monitor_corpus",
                 ["unlabelled_manifest", "unlabelled_exclusions"], name="scan_unlabelled_records"),
            node(report_ingestion,
                 ["labelled_manifest", "labelled_exclusions", "unlabelled_manifest", "unlabelled_exclusions"],
                 "ingestion_report", name="report_ingestion"),
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    return create_bundled_data_pipeline() + create_scan_pipeline()
