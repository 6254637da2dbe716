"""The on-disk corpus of preprocessed windows: a raw float32 file, its index and its metadata.

The paper pretrains on 2.6 M windows (21 GB as float32), more than the RAM of the machines
this project targets. The store is therefore written chunk by chunk (the final count is
not known in advance) and read back as a read-only np.memmap, so neither writing nor
training holds the corpus in memory.

Layout of a store directory::

    windows.f32     N x window_length little-endian float32, row-major, no header
                    (N x C x window_length for windows of C leads)
    index.parquet   one row per window (record_id, patient_id, label, split, window_start, ...)
    meta.json       {"format": ..., "n_windows": N, "window_length": L, "dtype": "<f4",
                     "windows_sha1": ..., "classes": [...] or null, ...}
                    plus "n_channels": C when the windows hold C > 1 leads

A one-lead store is (N, L) and its meta.json has no ``n_channels``, as every store had
before several leads were possible (so the default study's stores and fingerprints are
unchanged); a store of C leads is (N, C, L). One window takes C x L x 4 bytes.

meta.json is written last and the directory is built under a temporary name and renamed
into place, so a store that exists under its own name is complete; an interrupted write
leaves only a ".<name>.partial-<host>-<pid>-<id>" directory, which WindowStore refuses to
open and which the next writer of the same store removes once its writer process is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ecg_transfer.atomic_files import (
    atomic_write,
    leftover_dir,
    remove_stale_leftovers,
    replace_directory,
)
from ecg_transfer.signals.classes import target_matrix

FORMAT = "ecg_transfer.window_store/1"
WINDOWS_FILE = "windows.f32"
INDEX_FILE = "index.parquet"
META_FILE = "meta.json"
DTYPE = np.dtype("<f4")
SPLITS = ("train", "val", "test")

# The index schema is fixed so that chunks written hours apart (and chunks where a column
# happens to be all-null, such as "label" of an unlabelled corpus) always agree.
INDEX_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("patient_id", pa.string()),
        ("label", pa.string()),
        ("split", pa.string()),
        ("window_start", pa.int64()),
        ("window_in_record", pa.int64()),
        ("source_fs", pa.float64()),
        ("lead", pa.string()),
        ("source", pa.string()),
    ]
)
REQUIRED_INDEX_COLUMNS = ("record_id", "patient_id", "label")
# Keys of meta.json that the writer owns; extra metadata may not override them.
RESERVED_META_KEYS = ("format", "n_windows", "window_length", "dtype", "windows_sha1", "n_channels")
_STRING_COLUMNS = [f.name for f in INDEX_SCHEMA if f.type == pa.string()]


def _to_object_strings(index: pd.DataFrame) -> pd.DataFrame:
    """String columns as Python str / None, whatever pandas' default string dtype is."""
    for col in _STRING_COLUMNS:
        if col in index.columns:
            values = index[col].astype(object)
            index[col] = values.where(pd.notna(values), None)
    return index


class WindowStore:
    """A complete window store on disk; windows are memory-mapped, nothing is read eagerly."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        meta_path = self.path / META_FILE
        if not self.path.is_dir():
            raise FileNotFoundError(f"window store {self.path}: no such directory")
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"window store {self.path}: {META_FILE} missing, so the store is incomplete "
                "(an interrupted write?) or not a window store"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"window store {meta_path}: unreadable metadata ({exc})") from exc
        if meta.get("format") != FORMAT:
            raise ValueError(f"window store {meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        if np.dtype(meta["dtype"]) != DTYPE:
            raise ValueError(f"window store {meta_path}: dtype {meta['dtype']!r}, expected {DTYPE.str!r}")
        self.n_windows = int(meta["n_windows"])
        self.window_length = int(meta["window_length"])
        self.n_channels = int(meta.get("n_channels", 1))
        self.meta = meta
        expected = self.n_windows * self.n_channels * self.window_length * DTYPE.itemsize
        actual = (self.path / WINDOWS_FILE).stat().st_size
        if actual != expected:
            raise ValueError(
                f"window store {self.path / WINDOWS_FILE}: {actual} bytes, expected {expected} "
                f"for {self.n_windows} windows of {self.n_channels} x {self.window_length} float32 samples"
            )
        self._windows: np.memmap | None = None
        self._index: pd.DataFrame | None = None

    def __len__(self) -> int:
        return self.n_windows

    def __repr__(self) -> str:
        return f"WindowStore({str(self.path)!r}, n_windows={self.n_windows}, window_length={self.window_length})"

    @property
    def window_shape(self) -> tuple[int, ...]:
        """The shape of one window: (L,) for one lead, (C, L) for C leads."""
        return (self.window_length,) if self.n_channels == 1 else (self.n_channels, self.window_length)

    @property
    def windows(self) -> np.memmap:
        """(N, L) float32 ((N, C, L) for C leads), read-only; pages are read only when touched."""
        if self._windows is None:
            self._windows = np.memmap(
                self.path / WINDOWS_FILE, dtype=DTYPE, mode="r", shape=(self.n_windows, *self.window_shape)
            )
        return self._windows

    @property
    def index(self) -> pd.DataFrame:
        """One row per window, in window order; label and split are str or None."""
        if self._index is None:
            index = _to_object_strings(pq.read_table(self.path / INDEX_FILE).to_pandas())
            if len(index) != self.n_windows:
                raise ValueError(
                    f"window store {self.path / INDEX_FILE}: {len(index)} rows for {self.n_windows} windows"
                )
            self._index = index
        return self._index

    @property
    def labels(self) -> np.ndarray:
        """Label of each window as an object array (None for the unlabelled corpus)."""
        return self.index["label"].to_numpy(dtype=object)

    @property
    def classes(self) -> tuple[str, ...] | None:
        """The study's class list stored with a labelled store (class index = position), else None."""
        classes = self.meta.get("classes")
        return None if classes is None else tuple(str(c) for c in classes)

    @property
    def task(self) -> str:
        """``"multilabel"`` for a store of label sets (``preprocessing.task: multilabel``), else ``"single"``."""
        return str(self.meta.get("task", "single"))

    def label_targets(self, labels: Sequence[str]) -> np.ndarray:
        """(N, K) int8 0/1 targets of a multi-label store, column k = ``labels[k]``; a window's
        ``label`` cell is its record's ``;``-joined label set (signals/classes.py)."""
        if self.task != "multilabel":
            raise ValueError(f"window store {self.path}: label_targets needs a multi-label store; this one is "
                             f"{self.task!r} (use label_codes)")
        return target_matrix(self.index["label"].tolist(), [str(name) for name in labels])

    def label_codes(self, classes: Sequence[str]) -> np.ndarray:
        """Class index (position in `classes`, e.g. ``store.classes``) of each window, int64."""
        if self.task != "single":
            raise ValueError(
                f"window store {self.path}: it holds label sets (task: {self.task}), not one class per window; "
                "use label_targets(classes). The study's fine-tuning reads one class per window"
            )
        if classes is None or isinstance(classes, str):
            raise TypeError(
                f"window store {self.path}: label_codes needs the class list (a sequence of str, "
                f"e.g. store.classes), got {classes!r}"
            )
        lookup = {name: i for i, name in enumerate(classes)}
        labels = self.index["label"]
        unknown = sorted({str(v) for v in labels if v not in lookup})
        if unknown:
            raise ValueError(f"window store {self.path}: labels not among the classes: {unknown[:10]}")
        return labels.map(lookup).to_numpy(dtype=np.int64)

    def split_indices(self, split: str) -> np.ndarray:
        """Sorted positions of the windows in one split ("train", "val" or "test")."""
        if split not in SPLITS:
            raise ValueError(f"window store {self.path}: split must be one of {SPLITS}, got {split!r}")
        return np.flatnonzero(self.index["split"].to_numpy(dtype=object) == split)

    def split_view(self, split: str) -> RowView:
        """The windows of one split as a lazy 2-D array: training on a 21 GB corpus reads
        each batch from disk instead of copying the split into memory."""
        return RowView(self.windows, self.split_indices(split))

    def take(self, selection: np.ndarray | Sequence[int] | Sequence[bool]) -> np.ndarray:
        """An in-memory copy of the selected windows, in the order given.

        Reading happens in ascending file order (one sorted fancy index) whatever order is
        asked for, so a random subset costs one pass over the touched pages. Meant for
        subsets that fit in memory; train on the memmap (.windows) with indices otherwise.
        """
        sel = np.asarray(selection)
        if sel.dtype == bool:
            if sel.shape != (self.n_windows,):
                raise ValueError(
                    f"window store {self.path}: boolean mask has shape {sel.shape}, expected ({self.n_windows},)"
                )
            return np.array(self.windows[np.flatnonzero(sel)])
        if sel.size == 0:
            return np.empty((0, *self.window_shape), dtype=DTYPE)
        if not np.issubdtype(sel.dtype, np.integer):
            raise TypeError(f"window store {self.path}: selection must be a boolean mask or integers, got {sel.dtype}")
        sel = sel.reshape(-1)
        if sel.min() < -self.n_windows or sel.max() >= self.n_windows:
            raise IndexError(f"window store {self.path}: index out of range for {self.n_windows} windows")
        sel = np.where(sel < 0, sel + self.n_windows, sel)
        order = np.argsort(sel, kind="stable")
        out = np.empty((sel.size, *self.window_shape), dtype=DTYPE)
        out[order] = self.windows[sel[order]]
        return out

    def with_splits(self, split: pd.Series | Sequence[str]) -> WindowStore:
        """Write the split of every window into the index (atomically) and return the store.

        The split is decided after windowing because it needs every patient and label of
        the corpus, which a streaming writer does not know until the end.
        """
        if isinstance(split, pd.Series) and not split.index.equals(pd.RangeIndex(len(split))):
            raise ValueError(
                f"window store {self.path}: the split Series must be indexed 0..N-1 like "
                "store.index (assign_splits(store.index) is); got another index"
            )
        values = pd.Series(split).astype(object).to_numpy()
        if len(values) != self.n_windows:
            raise ValueError(f"window store {self.path}: {len(values)} split values for {self.n_windows} windows")
        bad = sorted({str(v) for v in values if v not in SPLITS})
        if bad:
            raise ValueError(f"window store {self.path}: split values must be in {SPLITS}, got {bad}")
        index = self.index.copy()
        index["split"] = values
        table = _index_table(index, str(self.path))
        atomic_write(self.path / INDEX_FILE, lambda tmp: pq.write_table(table, tmp))
        self._index = None
        return self


class RowView:
    """Some rows of an array (a memmap of (N, L) or (N, C, L)), indexed like an array of just
    those rows.

    Supports what a training loop needs: ``shape``, ``len`` and indexing by a slice or an
    integer array; only the rows asked for are read.
    """

    def __init__(self, array: np.ndarray, rows: np.ndarray) -> None:
        self._array = array
        self._rows = np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self._rows.size), *(int(n) for n in self._array.shape[1:]))

    def __len__(self) -> int:
        return int(self._rows.size)

    def __getitem__(self, selection) -> np.ndarray:
        rows = self._rows[selection]
        if np.ndim(rows) == 0:
            return np.asarray(self._array[int(rows)])
        order = np.argsort(rows, kind="stable")
        out = np.empty((rows.size, *self._array.shape[1:]), dtype=self._array.dtype)
        out[order] = self._array[rows[order]]  # ascending file order: one pass over the pages
        return out


def _index_table(index: pd.DataFrame, where: str) -> pa.Table:
    missing = [c for c in REQUIRED_INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise ValueError(f"window store {where}: index lacks required columns {missing}")
    extra = [c for c in index.columns if c not in INDEX_SCHEMA.names]
    if extra:
        raise ValueError(f"window store {where}: index has unknown columns {extra}; allowed: {INDEX_SCHEMA.names}")
    frame = _to_object_strings(index.reset_index(drop=True).copy())
    for field in INDEX_SCHEMA:
        if field.name not in frame.columns:
            frame[field.name] = None
    frame = frame[INDEX_SCHEMA.names]
    try:
        return pa.Table.from_pandas(frame, schema=INDEX_SCHEMA, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"window store {where}: index does not fit the schema {INDEX_SCHEMA}: {exc}") from exc


class WindowStoreWriter:
    """Appends chunks of windows to a new store; close() makes it visible under its name.

    Memory use is one chunk: windows go straight to the raw file and index rows straight
    to a parquet row group. If the path already holds a store it is replaced only on a
    successful close(). Use as a context manager so that an exception discards the
    partial store. ``window_length=None`` takes the length of the first chunk.
    ``meta`` (and anything put into ``writer.meta`` before close()) is stored in meta.json
    beside the writer's own keys, e.g. ``{"classes": [...]}``.

    A writer killed mid-write (SIGTERM, SIGKILL, power loss) leaves its hidden partial
    folder; the next writer of the same store removes it if its process is gone.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        window_length: int | None = None,
        meta: Mapping[str, object] | None = None,
    ) -> None:
        if window_length is not None and (
            isinstance(window_length, bool) or int(window_length) != window_length or window_length < 1
        ):
            raise ValueError(f"WindowStoreWriter {path}: window_length must be a positive integer, got {window_length!r}")
        self.path = Path(path)
        self.window_length = None if window_length is None else int(window_length)
        self.window_shape: tuple[int, ...] | None = None  # (L,) or (C, L), from the first chunk
        self.meta: dict[str, object] = {}
        self.meta.update(meta or {})
        if self.path.exists() and not (self.path / META_FILE).is_file():
            raise FileExistsError(
                f"WindowStoreWriter {self.path}: the path exists and is not a window store; refusing to replace it"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_leftovers(self.path)
        self._tmp = leftover_dir(self.path, "partial")
        self._tmp.mkdir()
        self._windows_file = open(self._tmp / WINDOWS_FILE, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._index_writer = pq.ParquetWriter(self._tmp / INDEX_FILE, INDEX_SCHEMA)
        self.n_windows = 0
        # A digest of every window, so that results computed from a store can tell when
        # its windows changed (a new filter setting gives the same records and labels).
        self._digest = hashlib.sha1()
        self._open = True

    def append(self, windows: np.ndarray, index: pd.DataFrame) -> None:
        """Add k windows (k, window_length) float32 (or (k, C, window_length) for C leads) and
        their k index rows; every chunk has the first chunk's window shape."""
        where = str(self.path)
        if not self._open:
            raise RuntimeError(f"WindowStoreWriter {where}: already closed")
        if not isinstance(windows, np.ndarray):
            raise TypeError(f"WindowStoreWriter {where}: windows must be a numpy array, got {type(windows).__name__}")
        if windows.dtype != np.float32:
            raise TypeError(
                f"WindowStoreWriter {where}: windows must be float32, got {windows.dtype} "
                "(convert explicitly with .astype(np.float32) if that is intended)"
            )
        if self.window_length is None and windows.ndim in (2, 3) and len(windows) and windows.shape[-1] >= 1:
            self.window_length = int(windows.shape[-1])
        shape_ok = windows.ndim == 2 or (windows.ndim == 3 and windows.shape[1] > 1)
        if not shape_ok or windows.shape[-1] != self.window_length or (
            self.window_shape is not None and windows.shape[1:] != self.window_shape
        ):
            expected = "window_length" if self.window_length is None else self.window_length
            expected = ", ".join(str(n) for n in (self.window_shape or (expected,)))
            expected = f"(k, {expected})"
            raise ValueError(
                f"WindowStoreWriter {where}: windows must have shape {expected} "
                f"(or (k, C, window_length) with C > 1 leads), got {windows.shape}"
            )
        if self.window_shape is None and len(windows):
            self.window_shape = tuple(int(n) for n in windows.shape[1:])
        if not isinstance(index, pd.DataFrame):
            raise TypeError(f"WindowStoreWriter {where}: index must be a DataFrame, got {type(index).__name__}")
        if len(index) != len(windows):
            raise ValueError(f"WindowStoreWriter {where}: {len(windows)} windows but {len(index)} index rows")
        if not np.all(np.isfinite(windows)):
            raise ValueError(f"WindowStoreWriter {where}: windows contain NaN or infinite values")
        if len(windows) == 0:
            return
        table = _index_table(index, where)
        data = np.ascontiguousarray(windows, dtype=DTYPE).data
        self._windows_file.write(data)
        self._digest.update(data)
        self._index_writer.write_table(table)
        self.n_windows += len(windows)

    def close(self) -> WindowStore:
        """Finish the files, write meta.json last, and move the store into place."""
        if not self._open:
            raise RuntimeError(f"WindowStoreWriter {self.path}: already closed")
        if self.n_windows == 0:
            self.abort()
            raise ValueError(f"WindowStoreWriter {self.path}: no windows were appended; an empty store is not written")
        clash = sorted(set(self.meta) & set(RESERVED_META_KEYS))
        if clash:
            self.abort()
            raise ValueError(f"WindowStoreWriter {self.path}: extra metadata may not set {clash}")
        meta = {
            "format": FORMAT,
            "n_windows": self.n_windows,
            "window_length": self.window_length,
            "dtype": DTYPE.str,
            "windows_sha1": self._digest.hexdigest(),
            **({"n_channels": self.window_shape[0]} if len(self.window_shape) == 2 else {}),
            **self.meta,
        }
        try:
            text = json.dumps(meta, indent=2)
        except TypeError as exc:
            self.abort()
            raise ValueError(f"WindowStoreWriter {self.path}: metadata is not JSON-serialisable: {exc}") from exc
        self._windows_file.flush()
        os.fsync(self._windows_file.fileno())
        self._windows_file.close()
        self._index_writer.close()
        self._open = False
        (self._tmp / META_FILE).write_text(text)
        replace_directory(self._tmp, self.path)
        return WindowStore(self.path)

    def abort(self) -> None:
        """Discard everything written so far."""
        if self._open:
            self._windows_file.close()
            self._index_writer.close()
            self._open = False
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> WindowStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif self._open:
            self.close()
