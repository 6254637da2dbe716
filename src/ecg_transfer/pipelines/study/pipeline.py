"""The study without the bundled data: for real data (``--env=paper``), so that a run never
writes simulated files over a user's own."""

from kedro.pipeline import Pipeline

from ecg_transfer.pipelines.ingestion.pipeline import create_bundled_data_pipeline
from ecg_transfer.pipelines.starvation.pipeline import create_pipeline as starvation


def create_pipeline(**kwargs) -> Pipeline:
    return starvation() - create_bundled_data_pipeline()
