"""The starvation study end to end: data, pretraining, every arm at every training fraction,
statistics. ``kedro run --pipeline=starvation``."""

from kedro.pipeline import Pipeline

from ecg_transfer.pipelines.finetuning.pipeline import create_pipeline as finetuning
from ecg_transfer.pipelines.image_transfer.pipeline import create_pipeline as image_transfer
from ecg_transfer.pipelines.ingestion.pipeline import create_pipeline as ingestion
from ecg_transfer.pipelines.preprocessing.pipeline import create_pipeline as preprocessing
from ecg_transfer.pipelines.pretraining.pipeline import create_pipeline as pretraining
from ecg_transfer.pipelines.statistics.pipeline import create_pipeline as statistics


def create_pipeline(**kwargs) -> Pipeline:
    return ingestion() + preprocessing() + pretraining() + finetuning() + image_transfer() + statistics()
