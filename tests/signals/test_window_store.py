import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from ecg_transfer.atomic_files import leftover_dir, this_host
from ecg_transfer.signals.window_store import WindowStore, WindowStoreWriter

L = 64


def _chunk(start: int, k: int, label: str | None = "SR") -> tuple[np.ndarray, pd.DataFrame]:
    windows = (np.arange(start, start + k, dtype=np.float32)[:, None] + np.zeros((1, L), np.float32)) / 1000
    index = pd.DataFrame(
        {
            "record_id": [f"r{i}" for i in range(start, start + k)],
            "patient_id": [f"p{i // 2}" for i in range(start, start + k)],
            "label": [label] * k,
            "window_start": np.arange(k, dtype=np.int64),
            "source_fs": 500.0,
        }
    )
    return windows, index


def _write(path, sizes, label="SR") -> WindowStore:
    writer = WindowStoreWriter(path, window_length=L)
    start = 0
    for k in sizes:
        writer.append(*_chunk(start, k, label))
        start += k
    return writer.close()


def test_round_trip_over_chunks(tmp_path):
    store = _write(tmp_path / "store", [3, 5, 2])
    assert len(store) == 10
    assert store.windows.shape == (10, L) and store.windows.dtype == np.float32
    np.testing.assert_allclose(store.windows[:, 0], np.arange(10) / 1000, rtol=1e-6)
    reopened = WindowStore(tmp_path / "store")
    assert list(reopened.index["record_id"]) == [f"r{i}" for i in range(10)]
    assert list(reopened.index.columns[:4]) == ["record_id", "patient_id", "label", "split"]
    assert all(v is None for v in reopened.index["split"])
    assert list(reopened.labels) == ["SR"] * 10
    np.testing.assert_array_equal(reopened.label_codes(["SB", "SR"]), np.full(10, 1))
    with pytest.raises(TypeError, match="needs the class list"):
        reopened.label_codes(None)


def test_unlabelled_labels_are_none(tmp_path):
    store = _write(tmp_path / "store", [4], label=None)
    assert all(v is None for v in store.labels)
    with pytest.raises(ValueError, match="labels not among the classes"):
        store.label_codes(["SR"])


def test_windows_are_a_lazy_read_only_memmap_sized_like_the_file(tmp_path):
    store = _write(tmp_path / "store", [7])
    raw = tmp_path / "store" / "windows.f32"
    assert raw.stat().st_size == 7 * L * 4
    assert store._windows is None  # nothing opened before first use
    windows = store.windows
    assert isinstance(windows, np.memmap)
    with pytest.raises(ValueError):
        windows[0, 0] = 1.0


def test_take_by_mask_and_by_unsorted_indices(tmp_path):
    store = _write(tmp_path / "store", [10])
    picked = store.take(np.array([7, 2, 9, 2]))
    assert not isinstance(picked, np.memmap)
    np.testing.assert_allclose(picked[:, 0], np.array([7, 2, 9, 2]) / 1000, rtol=1e-6)
    mask = np.zeros(10, bool)
    mask[[1, 4]] = True
    np.testing.assert_allclose(store.take(mask)[:, 0], [0.001, 0.004], rtol=1e-6)
    with pytest.raises(IndexError):
        store.take([10])
    with pytest.raises(ValueError, match="boolean mask"):
        store.take(np.ones(3, bool))


def test_with_splits_rewrites_the_index(tmp_path):
    store = _write(tmp_path / "store", [4])
    store.with_splits(pd.Series(["train", "test", "val", "train"]))
    reopened = WindowStore(tmp_path / "store")
    assert list(reopened.index["split"]) == ["train", "test", "val", "train"]
    np.testing.assert_array_equal(reopened.split_indices("train"), [0, 3])
    with pytest.raises(ValueError, match="split values"):
        store.with_splits(["train", "oops", "val", "train"])
    with pytest.raises(ValueError, match="indexed 0..N-1"):
        store.with_splits(pd.Series(["train"] * 4, index=[3, 2, 1, 0]))
    with pytest.raises(ValueError, match="3 split values for 4"):
        store.with_splits(["train"] * 3)


def test_interrupted_write_leaves_no_store(tmp_path):
    writer = WindowStoreWriter(tmp_path / "store", window_length=L)
    writer.append(*_chunk(0, 3))
    # The process dies here: close() never runs.
    assert not (tmp_path / "store").exists()
    with pytest.raises(FileNotFoundError, match="no such directory"):
        WindowStore(tmp_path / "store")
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".store.partial-")]
    assert len(partial) == 1
    with pytest.raises(FileNotFoundError, match="meta.json missing"):
        WindowStore(partial[0])
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_exception_inside_context_discards_and_keeps_the_old_store(tmp_path):
    _write(tmp_path / "store", [2])
    with pytest.raises(RuntimeError, match="boom"):
        with WindowStoreWriter(tmp_path / "store", window_length=L) as writer:
            writer.append(*_chunk(100, 5))
            raise RuntimeError("boom")
    store = WindowStore(tmp_path / "store")
    assert len(store) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_successful_rewrite_replaces_the_old_store(tmp_path):
    _write(tmp_path / "store", [2])
    store = _write(tmp_path / "store", [5])
    assert len(store) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_refuses_to_replace_a_folder_that_is_not_a_store(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(FileExistsError, match="not a window store"):
        WindowStoreWriter(tmp_path / "data", window_length=L)


def test_append_validates_input(tmp_path):
    writer = WindowStoreWriter(tmp_path / "store", window_length=L)
    windows, index = _chunk(0, 3)
    with pytest.raises(TypeError, match="float32"):
        writer.append(windows.astype(np.float64), index)
    with pytest.raises(ValueError, match=r"shape \(k, 64\)"):
        writer.append(windows[:, :10], index)
    with pytest.raises(ValueError, match="3 windows but 2 index rows"):
        writer.append(windows, index.iloc[:2])
    with pytest.raises(ValueError, match="required columns"):
        writer.append(windows, index.drop(columns="patient_id"))
    with pytest.raises(ValueError, match="unknown columns"):
        writer.append(windows, index.assign(colour="red"))
    bad = windows.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        writer.append(bad, index)
    with pytest.raises(ValueError, match="no windows were appended"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_store_with_truncated_file_is_refused(tmp_path):
    _write(tmp_path / "store", [3])
    raw = tmp_path / "store" / "windows.f32"
    raw.write_bytes(raw.read_bytes()[:-4])
    with pytest.raises(ValueError, match="bytes, expected"):
        WindowStore(tmp_path / "store")


def test_metadata_records_shape_and_dtype(tmp_path):
    _write(tmp_path / "store", [3])
    meta = json.loads((tmp_path / "store" / "meta.json").read_text())
    assert meta["n_windows"] == 3 and meta["window_length"] == L and meta["dtype"] == "<f4"


def test_labelled_records_to_store_with_splits(tmp_path):
    from ecg_transfer.signals.preprocess import PreprocessConfig, windows_from_labelled_records
    from ecg_transfer.signals.records import EcgRecord
    from ecg_transfer.signals.splits import assign_splits

    rng = np.random.default_rng(0)
    labels = ["SR"] * 10 + ["SB"] * 10 + ["AVRT"] * 3
    records = [
        EcgRecord(f"r{i}", f"p{i}", rng.standard_normal(5000), 500.0, "II", label, f"/x/r{i}")
        for i, label in enumerate(labels)
    ]
    cfg = PreprocessConfig()
    with WindowStoreWriter(tmp_path / "store", cfg.window_length) as writer:
        for windows, index in windows_from_labelled_records(records, cfg, chunk_size=4, progress=False):
            writer.append(windows, index)
    store = WindowStore(tmp_path / "store")
    store.with_splits(assign_splits(store.index, seed=0))
    assert len(store) == 23
    table = pd.crosstab(store.index["label"], store.index["split"])
    assert (table >= 1).all().all()  # AVRT's three patients: one in each split
    test_rows = store.split_indices("test")
    np.testing.assert_array_equal(store.take(test_rows), store.windows[test_rows])
    assert list(store.label_codes(["SB", "SR", "AVRT"])[:1]) == [1]


def test_split_view_reads_exactly_the_rows_of_its_split(tmp_path):
    splits = ["train", "test", "train", "val", "train", "test", "train", "train", "val", "test"]
    store = _write(tmp_path / "store", [4, 6]).with_splits(pd.Series(splits))
    windows = np.array(store.windows)
    train_rows = [i for i, split in enumerate(splits) if split == "train"]
    view = store.split_view("train")
    assert view.shape == (len(train_rows), L) and len(view) == len(train_rows)
    np.testing.assert_array_equal(view[np.array([3, 0, 4])], windows[[train_rows[3], train_rows[0], train_rows[4]]])
    np.testing.assert_array_equal(view[1:3], windows[train_rows[1:3]])
    np.testing.assert_array_equal(view[2], windows[train_rows[2]])


def test_the_class_list_and_other_metadata_are_stored_in_meta(tmp_path):
    writer = WindowStoreWriter(tmp_path / "store", window_length=L, meta={"classes": ["SR", "SB"]})
    writer.append(*_chunk(0, 3))
    writer.meta["stats"] = {"padded": 0}
    store = writer.close()
    assert store.classes == ("SR", "SB")
    assert store.meta["stats"] == {"padded": 0}
    np.testing.assert_array_equal(store.label_codes(store.classes), [0, 0, 0])
    assert _write(tmp_path / "other", [2]).classes is None
    writer = WindowStoreWriter(tmp_path / "bad", window_length=L, meta={"n_windows": 5})
    writer.append(*_chunk(0, 1))
    with pytest.raises(ValueError, match=r"may not set \['n_windows'\]"):
        writer.close()
    assert not (tmp_path / "bad").exists()


def test_window_length_is_taken_from_the_first_chunk_when_not_given(tmp_path):
    writer = WindowStoreWriter(tmp_path / "store")
    writer.append(*_chunk(0, 2))
    with pytest.raises(ValueError, match=r"shape \(k, 64\)"):
        writer.append(np.zeros((1, 10), np.float32), _chunk(0, 1)[1])
    assert writer.close().window_length == L


def test_with_splits_leaves_no_temporary_file(tmp_path):
    store = _write(tmp_path / "store", [3])
    store.with_splits(["train", "val", "test"])
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["index.parquet", "meta.json", "windows.f32"]


_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np, pandas as pd
    from ecg_transfer.signals.window_store import WindowStoreWriter
    writer = WindowStoreWriter(sys.argv[1], window_length=8)
    writer.append(np.zeros((2, 8), np.float32),
                  pd.DataFrame({"record_id": ["a", "b"], "patient_id": ["p", "p"], "label": [None, None]}))
    os.kill(os.getpid(), signal.SIGTERM)   # killed mid-write: close() never runs
    """
)


def test_a_writer_killed_by_sigterm_leaves_a_partial_that_the_next_write_removes(tmp_path):
    target = tmp_path / "store"
    done = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], stderr=subprocess.PIPE, text=True)
    _, stderr = done.communicate(timeout=120)
    assert done.returncode == -signal.SIGTERM, stderr
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".store.partial-")]
    assert len(leftovers) == 1 and f"-{done.pid}-" in leftovers[0].name and not target.exists()

    # Partials of writers that may still be running are left alone: this process (alive) and
    # another machine sharing the folder (its processes cannot be checked from here).
    ours = leftover_dir(target, "partial")
    ours.mkdir()
    elsewhere = tmp_path / f".store.partial-{this_host()}x-{done.pid}-{'0' * 12}"
    elsewhere.mkdir()

    store = _write(target, [3])
    assert len(store) == 3
    assert not leftovers[0].exists()
    assert ours.exists() and elsewhere.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["store", ours.name, elsewhere.name])
    os.rmdir(ours)
