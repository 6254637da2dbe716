"""A file dataset of kedro-datasets (parquet, JSON, CSV...) written so that a reader in another
process sees the old file or the new one, never half of one, and not rewritten when the new
content is the same bytes.

Why: two ``kedro run`` on one project folder (two workers of one study) both write the shared,
deterministic stage outputs (``labelled_manifest.parquet``, ``bootstrap_samples.parquet``...);
written in place, one run read a file while the other was rewriting it and failed. Written to
a hidden temporary file beside the target and renamed over it
(:func:`ecg_transfer.atomic_files.atomic_write`), and left alone when unchanged, the second
writer changes nothing that the first one's readers see.

Catalog::

    labelled_manifest:
      type: ecg_transfer.datasets.AtomicFileDataset
      dataset: {type: pandas.ParquetDataset, filepath: data/02_intermediate/labelled_manifest.parquet}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import parse_dataset_definition

from ecg_transfer.atomic_files import atomic_write

logger = logging.getLogger(__name__)


def _same_bytes(a: Path, b: Path) -> bool:
    if not a.is_file() or not b.is_file() or a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as left, open(b, "rb") as right:
        while True:
            chunk = left.read(1 << 20)
            if chunk != right.read(1 << 20):
                return False
            if not chunk:
                return True


class AtomicFileDataset(AbstractDataset[Any, Any]):
    """``dataset``: the definition of a file dataset with a local ``filepath`` (any kedro-datasets
    type); it loads as that dataset does, and saves through a temporary file renamed over the
    target, or not at all when the bytes are the same."""

    def __init__(self, dataset: dict[str, Any], metadata: dict[str, Any] | None = None):
        if "filepath" not in dataset:
            raise DatasetError(f"AtomicFileDataset: the wrapped dataset needs a `filepath`, got {dataset}")
        self._class, self._kwargs = parse_dataset_definition(dict(dataset))
        self._filepath = Path(str(self._kwargs["filepath"]))
        self._dataset = self._class(**self._kwargs)
        self.metadata = metadata

    def _load(self) -> Any:
        return self._dataset.load()

    def _save(self, data: Any) -> None:
        target = self._filepath

        def write(tmp: Path) -> None:
            self._class(**{**self._kwargs, "filepath": str(tmp)}).save(data)

        def write_if_changed(tmp: Path) -> None:
            write(tmp)
            if _same_bytes(tmp, target):
                raise _Unchanged

        try:
            atomic_write(target, write_if_changed)
        except _Unchanged:
            logger.debug("%s unchanged: not rewritten", target)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"dataset": self._class.__name__, "filepath": str(self._filepath), "atomic": True}


class _Unchanged(Exception):
    """Raised inside the atomic write to leave the target as it is (the temporary file goes)."""

