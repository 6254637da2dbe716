"""Kedro datasets for the formats kedro-datasets does not cover; everything else in the
catalog uses kedro-datasets."""

from .atomic_file import AtomicFileDataset
from .checkpoints_dataset import CheckpointDirectoryDataset
from .mlflow_runs import MlflowEncoderModelDataset, MlflowRunTrackerDataset
from .raw_ecg import (
    ChapmanReleaseDataset,
    PhysioNetWfdbDataset,
    RawEcgDataset,
    WfdbFolderDataset,
    WfdbLabelledFolderDataset,
)
from .torch_weights import PretrainedEncoderDataset, TorchStateDictDataset
from .window_store_dataset import WindowStoreDataset

__all__ = [
    "AtomicFileDataset",
    "ChapmanReleaseDataset",
    "CheckpointDirectoryDataset",
    "MlflowEncoderModelDataset",
    "MlflowRunTrackerDataset",
    "PhysioNetWfdbDataset",
    "PretrainedEncoderDataset",
    "RawEcgDataset",
    "TorchStateDictDataset",
    "WfdbFolderDataset",
    "WfdbLabelledFolderDataset",
    "WindowStoreDataset",
]
