"""Only the generation of the offline default data (its nodes live with ingestion)."""

from kedro.pipeline import Pipeline

from ecg_transfer.pipelines.ingestion.pipeline import create_bundled_data_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    return create_bundled_data_pipeline()
