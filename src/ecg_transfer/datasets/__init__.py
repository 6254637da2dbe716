"""Kedro datasets for the formats kedro-datasets does not cover; everything else in the
catalog uses kedro-datasets."""

from .checkpoints_dataset import CheckpointDirectoryDataset
from .mlflow_runs import MlflowChildRunsDataset
from .raw_ecg import (
    ChapmanReleaseDataset,
    PhysioNetWfdbDataset,
    WfdbFolderDataset,
    WfdbLabelledFolderDataset,
)
from .torch_weights import TorchStateDictDataset
from .window_store_dataset import WindowStoreDataset

__all__ = [
    "ChapmanReleaseDataset",
    "CheckpointDirectoryDataset",
    "MlflowChildRunsDataset",
    "PhysioNetWfdbDataset",
    "TorchStateDictDataset",
    "WfdbFolderDataset",
    "WfdbLabelledFolderDataset",
    "WindowStoreDataset",
]
