"""Kedro dataset handing nodes a :class:`CheckpointStore` rooted at a folder.

Training nodes write checkpoints as they go (every epoch), which a catalog
``save`` after the node returns could not do; so the catalog only tells the
node where the store lives, and saving through the catalog is refused.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from ecg_transfer.training.checkpoints import CheckpointStore


class CheckpointDirectoryDataset(AbstractDataset[None, CheckpointStore]):
    """``load()`` -> CheckpointStore(path); the folder is created on first checkpoint."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = PurePosixPath(path)
        self.metadata = metadata

    def load(self) -> CheckpointStore:
        return CheckpointStore(str(self._path))

    def save(self, data: Any) -> None:
        raise DatasetError(
            f"CheckpointDirectoryDataset({self._path}) is load-only: training writes checkpoints "
            "itself through the CheckpointStore that load() returns"
        )

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
