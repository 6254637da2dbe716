
"""Kedro datasets for the formats kedro-datasets does not cover; everything else in the
catalog uses kedro-datasets."""

from .mlflow_runs import MlflowChildRunsDataset
from .torch_weights import TorchStateDictDataset
from .window_store_dataset import WindowStoreDataset
from .raw_ecg import ChapmanReleaseDataset, PhysioNetWfdbDataset, WfdbFolderDataset, WfdbLabelledFolderDataset
from .checkpoints_dataset import CheckpointDirectoryDataset
