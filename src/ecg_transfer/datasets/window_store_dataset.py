"""Kedro dataset for the on-disk window store (ecg_transfer.signals.window_store).

Saving streams: a node returns an *iterator* of (windows, index) chunks (for example
windows_from_unlabelled_records(...)) and this dataset writes it chunk by chunk, so the
2.6 M-window pretraining corpus never sits in memory. The node must be a plain function
that returns the iterator, not a generator function: Kedro saves each item of a generator
function's output separately, which would overwrite the store once per chunk.

An iterable that has a ``meta`` mapping (read once the chunks are exhausted, so it may
hold counts made while streaming) adds it to the store's meta.json, e.g. the class list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from ecg_transfer.signals.window_store import (
    META_FILE,
    RESERVED_META_KEYS,
    WindowStore,
    WindowStoreWriter,
)

# Chunk used when copying one store into another: 1,024 windows x 2,048 x 4 B = 8 MiB.
_COPY_CHUNK = 1024


class WindowStoreDataset(AbstractDataset[WindowStore | Iterable[tuple[np.ndarray, pd.DataFrame]], WindowStore]):
    """load -> WindowStore (memory-mapped); save(WindowStore | iterable of (windows, index) chunks).

    Example catalog entry::

        unlabelled_windows:
          type: ecg_transfer.datasets.WindowStoreDataset
          path: data/05_model_input/unlabelled_windows

    ``window_length`` (optional) makes a save refuse windows of another length; by default
    the store takes the length of the windows it is given.
    """

    def __init__(
        self, path: str, window_length: int | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        self._path = PurePosixPath(path)
        self._window_length = None if window_length is None else int(window_length)
        self.metadata = metadata

    def load(self) -> WindowStore:
        return WindowStore(Path(self._path))

    def save(self, data: WindowStore | Iterable[tuple[np.ndarray, pd.DataFrame]]) -> None:
        target = Path(self._path)
        if isinstance(data, WindowStore):
            if data.path.resolve() == target.resolve():
                return  # already in place (e.g. a node that added splits to the loaded store)
            extra = {k: v for k, v in data.meta.items() if k not in RESERVED_META_KEYS}
            with WindowStoreWriter(target, data.window_length, meta=extra) as writer:
                for start in range(0, len(data), _COPY_CHUNK):
                    stop = min(start + _COPY_CHUNK, len(data))
                    writer.append(np.array(data.windows[start:stop]), data.index.iloc[start:stop])
            return
        if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray):
            raise DatasetError(
                f"WindowStoreDataset {self._path}: got a single (windows, index) chunk. Save an iterable "
                "of chunks; if the node is a generator function, make it return the iterator instead "
                "(Kedro would otherwise save each chunk separately, overwriting the store)."
            )
        if not isinstance(data, Iterable) or isinstance(data, (str, bytes, np.ndarray, pd.DataFrame)):
            raise DatasetError(
                f"WindowStoreDataset {self._path}: expected a WindowStore or an iterable of "
                f"(windows, index) chunks, got {type(data).__name__}"
            )
        with WindowStoreWriter(target, self._window_length) as writer:
            for i, chunk in enumerate(data):
                if not (isinstance(chunk, tuple) and len(chunk) == 2):
                    raise DatasetError(
                        f"WindowStoreDataset {self._path}: chunk {i} is a {type(chunk).__name__}, "
                        "expected a (windows, index) tuple"
                    )
                writer.append(*chunk)
            extra = getattr(data, "meta", None)
            if isinstance(extra, Mapping):
                writer.meta.update(extra)

    def _exists(self) -> bool:
        return (Path(self._path) / META_FILE).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "window_length": self._window_length}
